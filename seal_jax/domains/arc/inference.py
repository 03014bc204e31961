"""SEAL's ARC inference: leave-one-out queries under views, and the hierarchical vote to two attempts.

Queries (inference/preprocess.py:get_leave_n_test_task, n=1, permute_n=2, seed 0), for each test input: every
leave-one-out set of demonstrations (N-1, in order) with the real test input as the query, each followed by 2
copies with shuffled demonstrations (one RandomState(0)), deduplicated; then for each view (transpose, flip0,
flip1, rot90, rot180) one of those queries drawn at random and seen under the view (skipped if it equals an
existing query). Answers under a view are mapped back by the view's inverse and voted in its category.

The vote (arclib/voting.py) works on answers as tuples of row tuples, with Python sets as SEAL does (their order is
fixed for tuples of ints, so ties break as in SEAL): per category ("all", identity, then one per view) the three
most common answers, with row- and column-wise majority grids standing in when fewer distinct answers exist; then
the same top-3 over those candidates; attempt 1 is the first, attempt 2 the second, or the third when they tie and
the identity category does not favour the second. A task counts as solved only if every test input is solved.
"""
from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np

from seal_jax.domains.arc.augment import INVERSES, VIEWS, PseudoTask, permute_demonstrations, task_key
from seal_jax.domains.arc.tasks import ArcTask

Answer = tuple  # a grid as a tuple of row tuples
IDENTITY = "identity"
CATEGORY_ORDER = ("all", IDENTITY, "transpose", "flip0", "flip1", "rot180", "rot90")  # SEAL's order of inverters
NO_ANSWER = ((0,),)  # what SEAL submits when nothing could be voted


def to_answer(g) -> Answer:
    return tuple(tuple(int(v) for v in row) for row in np.asarray(g))


def queries(task: ArcTask, test_index: int, seed: int = 0, permutations: int = 2) -> list[tuple[str, PseudoTask]]:
    """(category, query pseudo-task) for test input `test_index`: the query's output is the solution if known
    (else the input, unused), and a view's query is the whole pseudo-task under the view."""
    rng = np.random.RandomState(seed)
    q_in, q_out = task.tests[test_index]
    query = (q_in, q_in if q_out is None else q_out)
    N = len(task.train)
    plain: list[PseudoTask] = []
    for (left,) in itertools.combinations(range(N), 1):
        t = (tuple(task.train[j] for j in range(N) if j != left), query)
        plain.append(t)
        for _ in range(permutations):
            plain.append(permute_demonstrations(t, rng))
    plain = [c_t[1] for c_t in _dedup([(IDENTITY, t) for t in plain])]
    keys = {task_key(t) for t in plain}
    viewed = []
    for view in VIEWS:
        t = view(plain[rng.choice(len(plain))])
        if task_key(t) not in keys:
            viewed.append((view.name, t))
    return _dedup(viewed + [(IDENTITY, t) for t in plain])


def _dedup(tagged: Sequence[tuple[str, PseudoTask]]) -> list[tuple[str, PseudoTask]]:
    """First occurrence of each pseudo-task, in order (SEAL: a set)."""
    seen, out = set(), []
    for c, t in tagged:
        if task_key(t) not in seen:
            seen.add(task_key(t))
            out.append((c, t))
    return out


def back(category: str, grid: np.ndarray) -> np.ndarray:
    """A prediction made under a view, in the task's own frame."""
    return grid if category == IDENTITY else INVERSES[category](grid)


def _shape(a: Answer) -> tuple[int, ...]:
    """numpy's shape, as SEAL's row_base_majority_voting takes it (an empty answer () is (0,), and shapes tie
    in a set's order)."""
    return np.array(a).shape


def _row_majority(outputs: Sequence[Answer], transpose: bool = False) -> Answer:
    if transpose:
        outputs = [to_answer(np.array(o).T) for o in outputs]
    shapes = [_shape(o) for o in outputs]
    shape = max(set(shapes), key=shapes.count)
    rows = []
    for r in range(shape[0]):
        cands = [o[r] for o in outputs if len(o) > r and len(o[r]) == shape[1]]
        rows.append(max(set(cands), key=cands.count))
    grid = np.array(rows)
    return to_answer(grid.T if transpose else grid)


def top3(outputs: Sequence[Answer]) -> tuple[Optional[Answer], Optional[Answer], Optional[Answer]]:
    """SEAL's get_all_type_of_votingsv2: the three most common answers, majority grids filling in."""
    if not outputs:
        return None, None, None
    outputs = list(outputs)
    unique = list(set(outputs))
    counts = [outputs.count(u) for u in unique]
    first = unique[int(np.argmax(counts))]
    second = third = first
    by_rows, by_cols = _row_majority(outputs), _row_majority(outputs, transpose=True)
    order = np.argsort(counts)
    if len(unique) > 2:
        second, third = unique[order[-2]], unique[order[-3]]
    elif len(unique) > 1:
        second = unique[order[-2]]
    if second == first:
        second = by_rows if by_rows != first else by_cols
    if third in (first, second):
        third = by_rows if by_rows not in (first, second) else by_cols
    return first, second, third


def vote(predictions: Sequence[tuple[str, Answer]]) -> tuple[Answer, Answer]:
    """Two attempts from (category, answer in the task's frame) predictions (SEAL's voting.vote)."""
    if not predictions:
        return NO_ANSWER, NO_ANSWER
    by_cat: dict[str, list[Answer]] = {}
    for cat, ans in predictions:
        by_cat.setdefault(cat, []).append(ans)
    by_cat["all"] = [a for answers in list(by_cat.values()) for a in answers]
    candidates = [c for cat in CATEGORY_ORDER if cat in by_cat for c in top3(by_cat[cat]) if c is not None]
    c1, c2, c3 = top3(candidates)
    if candidates.count(c2) == candidates.count(c3) and IDENTITY in by_cat:
        if not by_cat[IDENTITY].count(c2) > by_cat[IDENTITY].count(c3):
            c2 = c3
    return c1, c2


def solved(attempts: Sequence[tuple[Answer, Answer]], task: ArcTask) -> bool:
    """Every test input's solution is one of its two attempts."""
    if len(attempts) != len(task.tests):
        raise ValueError(f"task {task.id}: {len(attempts)} attempt pairs for {len(task.tests)} test inputs")
    return all(sol is not None and to_answer(sol) in pair for pair, (_, sol) in zip(attempts, task.tests))
