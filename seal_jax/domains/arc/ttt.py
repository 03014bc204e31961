"""SEAL's test-time-training data for an ARC task, and the chat text both TTT and inference use.

`pseudo_tasks` follows get_test_time_train_data (few-shot/self-edit.py:268-314) for one leave-n:
  1. leave-n tasks: for each demonstration i, and each choice of n-1 others, the query is demonstration i and the
     demonstrations are the rest, in their order (n=1: N tasks; n=2: N(N-1), ordered pairs: zero demonstrations
     when N = 2, as in SEAL);
  2. every chosen augmenter applied to every leave-n task, kept if no grid is over 30; the originals are kept too;
     deduplicated;
  3. one copy of each with permuted colours (only when augmenters were chosen) and shuffled demonstrations, all
     from one RandomState(seed); the union with the unpermuted set, deduplicated.
`ttt_examples` does that for leave-1 and leave-2, renders each pseudo-task as a chat (`render`), drops those of
`max_tokens` tokens or more, and, when more than `cap` remain, shuffles them with RandomState(seed) and keeps
`cap` (process_task, self-edit.py:341-366).

SEAL deduplicates with Python sets of numpy bytes, whose order is salted per process; we keep the first occurrence
in a fixed order instead, so the data are reproducible (which colour permutation a task gets, and which 250
survive the cap, differ from any one SEAL run, as SEAL's differ between its own runs).

Chat text (SEAL's GPTTextMessageRepresenterV2 with python-array grids, self-edit.py:409-419): the system turn holds
the instruction and the demonstrations as `[[a b]\\n [c d]] -> [[...]]#` lines, the user turn the query input and
` -> `, the assistant turn the output grid and `#`, in the model's own chat template. For a Llama-3 template the
date is pinned (`DATE`): SEAL's template stamps the day of the run.
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import numpy as np

from seal_jax.domains.arc.augment import (Augmenter, PseudoTask, max_side, permute_colours, permute_demonstrations,
                                          task_key)

MAX_SIDE = 30
DATE = "26 Jul 2024"  # the Llama-3 template's own fallback date, pinned so prompts do not change from day to day
INSTRUCTION = ("Figure out the underlying transformation in the following examples and apply it to the test case. "
               "Here are some examples from this transformation, your answer must follow the format.\n"
               "The input-output grids are provided as python arrays:\n")


def grid_str(g) -> str:
    """numpy's str of a grid of digits: `[[3 3 8]\\n [3 7 0]]`."""
    return "[[" + "]\n [".join(" ".join(str(int(v)) for v in row) for row in np.asarray(g)) + "]]"


def parse_grid_str(text: str) -> Optional[np.ndarray]:
    """A grid from the model's answer (SEAL's parse_numpy_from_str after dropping '#'), or None."""
    text = text.split("#", 1)[0].replace("[", "").replace("]", "").strip()
    if not text:
        return None
    rows = [r.split() for r in text.split("\n")]
    if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
        return None
    if not all(c.isascii() and c.isdigit() and len(c) == 1 for r in rows for c in r):
        return None
    if len(rows) > MAX_SIDE or len(rows[0]) > MAX_SIDE:
        return None
    return np.array([[int(c) for c in r] for r in rows], dtype=np.int64)


def messages(task: PseudoTask) -> tuple[list[dict], str]:
    """(system and user messages, the assistant's answer) of a pseudo-task."""
    demos, (qi, qo) = task
    system = INSTRUCTION + "".join(f"{grid_str(a)} -> {grid_str(b)}#\n" for a, b in demos)
    return [{"role": "system", "content": system}, {"role": "user", "content": f"{grid_str(qi)} -> "}], f"{grid_str(qo)}#"


def render_prompt(tok, msgs: list[dict]) -> str:
    """The chat text up to the assistant's turn, in the model's template (no template: plain text)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, date_string=DATE)
    return "".join(m["content"] for m in msgs)


def leave_n_tasks(demos: Sequence, query_of: Callable[[int], object], n: int) -> list[tuple[tuple, object]]:
    """For each i and each choice of n-1 other indices: (the remaining demonstrations in order, query_of(i))."""
    N = len(demos)
    out = []
    for i in range(N):
        others = [j for j in range(N) if j != i]
        for drop in itertools.combinations(others, n - 1):
            out.append((tuple(demos[j] for j in others if j not in drop), query_of(i)))
    return out


def _dedup(tasks: Sequence[PseudoTask]) -> list[PseudoTask]:
    seen, out = set(), []
    for t in tasks:
        k = task_key(t)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


def pseudo_tasks(demos: Sequence, augmenters: Sequence[Augmenter], n: int, seed: int = 0) -> list[PseudoTask]:
    """SEAL's get_test_time_train_data for leave-n (see the module doc)."""
    rng = np.random.RandomState(seed)
    initial = leave_n_tasks(demos, lambda i: demos[i], n)
    augmented = []
    for aug in augmenters:
        for t in initial:
            t = aug(t)
            if max_side(t) <= MAX_SIDE:
                augmented.append(t)
    base = _dedup(augmented + initial)
    permuted = []
    for t in base:
        if augmenters:
            t = permute_colours(t, rng)
        permuted.append(permute_demonstrations(t, rng))
    return _dedup(permuted + base)


def ttt_examples(demos: Sequence, augmenters: Sequence[Augmenter], tok, *, leave_n: Sequence[int] = (1, 2),
                 max_tokens: int = 8192, cap: int = 250, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt text, answer text) pairs: SEAL's process_task (see the module doc)."""
    out = []
    for n in leave_n:
        for t in pseudo_tasks(demos, augmenters, n, seed):
            msgs, answer = messages(t)
            prompt = render_prompt(tok, msgs)
            count = len(tok.encode(prompt, add_special_tokens=False)) + len(tok.encode(answer, add_special_tokens=False)) + 1
            if count < max_tokens:
                out.append((prompt, answer))
    if len(out) > cap:
        order = list(range(len(out)))
        np.random.RandomState(seed).shuffle(order)
        out = [out[i] for i in order[:cap]]
    return out
