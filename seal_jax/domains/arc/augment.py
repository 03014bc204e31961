"""SEAL's ARC augmentations (few-shot/arclib/augmenters.py, grouped as in self-edit.py:get_augmenters).

A pseudo-task is (demonstrations, query): a tuple of (input, output) grid pairs and one (input, output) pair. An
augmenter maps every grid of a pseudo-task, inputs and outputs alike. The four groups a self-edit switches on:

    basic   rot90, rot270, rot180, flip0, flip1, the four reflections (mirror above, left, below, right),
            a random translation (np.roll by 0-3 cells, cyclic), transpose                             11
    size    2x resolution, 2x height, 2x width                                                       3
    chain   each of rot90, rot270, rot180, flip0, flip1, transpose followed by the 2x resolution      6
    repeat  tiled twice vertically, twice horizontally, 2x2                                          3

`rot90` is numpy's counter-clockwise rotation; `flip0` reverses rows (np.flipud), `flip1` columns (np.fliplr).
The random translation draws its shifts as SEAL's RandomTranslateXY does under get_test_time_train_data
(self-edit.py:268-283, augmenters.py:66-85,532-548): every example starts from a copy of the same fresh
RandomState(seed), the seed of the TTT data (`ttt.pseudo_tasks`, passed to the call; no augmenter before it draws,
so the state is fresh); the input takes draws 1-2 (rows, columns) and the output draws 3-4, each from
randint(0, min(4, size)), so input and output may move differently, and the shifts depend only on the grid sizes
and the seed. Colour permutation (0 fixed) and demonstration shuffling follow PermuteColors and
PermuteExamples, and `INVERSES` are the inverses SEAL uses to map predictions under a view back.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

Pair = tuple[np.ndarray, np.ndarray]
PseudoTask = tuple[tuple[Pair, ...], Pair]  # (demonstrations, query)


@dataclasses.dataclass(frozen=True)
class Augmenter:
    name: str
    grid: Optional[Callable[[np.ndarray], np.ndarray]] = None  # the same map for every grid
    steps: tuple["Augmenter", ...] = ()                        # a chain: these, one after the other
    random_translate: bool = False                             # the random translation (see the module doc)

    def __call__(self, task: PseudoTask, seed: int = 0) -> PseudoTask:
        """The augmented pseudo-task; `seed`: the random translation's RandomState seed (the TTT data's)."""
        if self.steps:
            for step in self.steps:
                task = step(task, seed)
            return task
        demos, query = task
        if self.random_translate:
            return tuple(_translate(p, seed) for p in demos), _translate(query, seed)
        return tuple((self.grid(a), self.grid(b)) for a, b in demos), (self.grid(query[0]), self.grid(query[1]))


def _roll(g: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    rows = rng.randint(0, min(4, g.shape[0]))   # randint(0, 1) draws nothing and gives 0, as in numpy
    cols = rng.randint(0, min(4, g.shape[1]))
    return np.roll(g, (rows, cols), axis=(0, 1))


def _translate(pair: Pair, seed: int) -> Pair:
    rng = np.random.RandomState(seed)  # a fresh copy per example: every example sees the same draws
    return _roll(pair[0], rng), _roll(pair[1], rng)


def _g(name, f):
    return Augmenter(name, grid=f)


ROT90 = _g("rot90", lambda g: np.rot90(g, 1))
ROT270 = _g("rot270", lambda g: np.rot90(g, 3))
ROT180 = _g("rot180", lambda g: np.rot90(g, 2))
FLIP0 = _g("flip0", np.flipud)
FLIP1 = _g("flip1", np.fliplr)
TRANSPOSE = _g("transpose", np.transpose)
RES2 = _g("resolution2", lambda g: np.repeat(np.repeat(g, 2, axis=0), 2, axis=1))

BASIC = (ROT90, ROT270, ROT180, FLIP0, FLIP1,
         _g("reflect0_above", lambda g: np.concatenate((np.flipud(g), g), axis=0)),
         _g("reflect1_left", lambda g: np.concatenate((np.fliplr(g), g), axis=1)),
         _g("reflect0_below", lambda g: np.concatenate((g, np.flipud(g)), axis=0)),
         _g("reflect1_right", lambda g: np.concatenate((g, np.fliplr(g)), axis=1)),
         Augmenter("translate", random_translate=True), TRANSPOSE)
SIZE = (RES2, _g("height2", lambda g: np.repeat(g, 2, axis=0)), _g("width2", lambda g: np.repeat(g, 2, axis=1)))
CHAIN = tuple(Augmenter(f"{a.name}+resolution2", steps=(a, RES2)) for a in (ROT90, ROT270, ROT180, FLIP0, FLIP1,
                                                                            TRANSPOSE))
REPEAT = (_g("repeat0", lambda g: np.concatenate([g, g], axis=0)),
          _g("repeat1", lambda g: np.concatenate([g, g], axis=1)),
          _g("repeat2x2", lambda g: np.tile(g, (2, 2))))
GROUPS = {"basic": BASIC, "size": SIZE, "chain": CHAIN, "repeat": REPEAT}
GROUP_KEYS = {"basic": "use_basic_augmentations", "size": "use_size_augmentations",
              "chain": "use_chain_augmentations", "repeat": "use_repeat_augmentations"}

# inference views (SEAL's get_leave_n_test_task) and the inverse that maps a prediction back (augmenters.inverse)
VIEWS = (TRANSPOSE, FLIP0, FLIP1, ROT90, ROT180)
INVERSES = {"transpose": np.transpose, "flip0": np.flipud, "flip1": np.fliplr, "rot90": lambda g: np.rot90(g, 3),
            "rot180": lambda g: np.rot90(g, 2)}


def augmenters(groups: Sequence[str]) -> list[Augmenter]:
    """The augmenters of the chosen groups, in SEAL's order (basic, size, chain, repeat)."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown augmentation groups {sorted(unknown)}; choose among {sorted(GROUPS)}")
    return [a for name in GROUPS if name in groups for a in GROUPS[name]]


def grids(task: PseudoTask) -> list[np.ndarray]:
    demos, query = task
    return [g for pair in (*demos, query) for g in pair]


def max_side(task: PseudoTask) -> int:
    return max(max(g.shape) for g in grids(task))


def task_key(task: PseudoTask) -> tuple:
    """A hashable identity of a pseudo-task (SEAL dedups tasks with a set)."""
    demos, query = task
    enc = lambda g: (g.shape, np.ascontiguousarray(g, dtype=np.int64).tobytes())
    return tuple((enc(a), enc(b)) for a, b in demos), (enc(query[0]), enc(query[1]))


def permute_colours(task: PseudoTask, rng: np.random.RandomState) -> PseudoTask:
    """SEAL's PermuteColors: 0 stays; each used colour goes to an unused one while any remain (drawn from the
    end of a shuffled list of the unused colours), then to a random used one, swapped."""
    # Python set iteration orders, as SEAL's: ints hash to themselves, so the order is fixed (not salted), but it
    # is the hash table's order (e.g. {5, 9} iterates 9, 5), and the draws below depend on it
    values = set(v for g in grids(task) for v in g.ravel().tolist())
    used_set = values - {0}
    unused = list(set(list(range(1, 10))) - used_set)
    used = list(used_set)
    rng.shuffle(unused)
    swaps = rng.permutation(used).tolist() if used else []
    cmap = {0: 0}
    for c in used:
        if c in cmap:
            continue
        if unused:
            new = unused.pop()
        else:
            new = swaps.pop()
            cmap[new] = c
            if c in swaps:
                swaps.remove(c)
        cmap[c] = new
    lut = np.arange(10)
    for k, v in cmap.items():
        lut[k] = v
    demos, (qi, qo) = task
    return tuple((lut[a], lut[b]) for a, b in demos), (lut[qi], lut[qo])


def permute_demonstrations(task: PseudoTask, rng: np.random.RandomState) -> PseudoTask:
    """SEAL's PermuteExamples: the demonstrations in a random order (the query stays)."""
    demos, query = task
    return tuple(demos[i] for i in rng.permutation(len(demos))), query
