"""SEAL's test-time-training data for an ARC task, and the chat text both TTT and inference use.

`pseudo_tasks` follows get_test_time_train_data (few-shot/self-edit.py:268-314) for one leave-n:
  1. leave-n tasks: for each demonstration i, and each choice of n-1 others, the query is demonstration i and the
     demonstrations are the rest, in their order (n=1: N tasks; n=2: N(N-1), ordered pairs: zero demonstrations
     when N = 2, as in SEAL);
  2. every chosen augmenter applied to every leave-n task, kept if no grid is over 30; the originals are kept too;
     deduplicated;
  3. one copy of each with permuted colours (only when augmenters were chosen) and shuffled demonstrations, all
     from one RandomState(seed); the union with the unpermuted set, deduplicated.
`ttt_examples` does that for leave-1 and leave-2, renders each pseudo-task as a chat (`messages`), drops those of
`max_tokens` tokens or more, and, when more than `cap` remain, shuffles them with RandomState(seed) and keeps
`cap` (process_task, self-edit.py:341-366). The length counted is SEAL's (`seal_token_count`, self-edit.py:236-256,
335): the whole chat with the answer, then a trailing assistant header (add_generation_prompt=True), tokenized
with the tokenizer's own special tokens (for Llama-3 a second BOS before the template's): 5 tokens more than the
prompt, the answer and its end-of-turn.

SEAL deduplicates with Python sets of numpy bytes, whose order is salted per process; we keep the first occurrence
in a fixed order instead, so the data are reproducible (which colour permutation a task gets, and which 250
survive the cap, differ from any one SEAL run, as SEAL's differ between its own runs).

Chat text (SEAL's GPTTextMessageRepresenterV2 with python-array grids, self-edit.py:409-419): the system turn holds
the instruction and the demonstrations as `[[a b]\\n [c d]] -> [[...]]#` lines, the user turn the query input and
` -> `, the assistant turn the output grid and `#`, in the model's own chat template. For a Llama-3 template the
date is pinned (`DATE`): SEAL's template stamps the day of the run.

Answers are parsed as SEAL parses them (`parse_grid_str`; eval-self-edits.py:304-323, representers.py:33-58,
620-636): every `#` deleted (not cut at the first), double spaces collapsed, the text between the first two
``` fences if there are any, stripped; then the brackets dropped, every whitespace-separated word read with int()
(any integer, cast to int8 as SEAL's array is), and the words reshaped to (lines, words // lines). A count that
does not reshape, or a word int() rejects, is no answer. No size or digit check: `[[0 0]]# [[1 2]]` reads
((0, 0, 1, 2),) and `[[1 1 1]\\n [1]]#` reads ((1, 1), (1, 1)); an empty answer reads a 1x0 grid, voted as SEAL
votes it.
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
    """A grid (int8) from the model's answer, parsed as SEAL parses it (see the module doc), or None."""
    text = text.replace("#", "").replace("  ", " ")
    if "```" in text:
        text = text.split("```")[1].strip()
    text = text.strip()
    try:
        words = [int(w) for w in text.replace("[", "").replace("]", "").split()]
        rows = text.count("\n") + 1
        return np.array(words).reshape((rows, len(words) // rows)).astype(np.int8)
    except (ValueError, OverflowError, TypeError):
        return None


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


def seal_token_count(tok, msgs: list[dict], answer: str) -> int:
    """SEAL's total_tokens of a TTT example (self-edit.py:236-256): the chat with the answer as the assistant's
    turn and a trailing assistant header (add_generation_prompt=True), tokenized with the tokenizer's own special
    tokens (Llama-3: a second BOS)."""
    return len(tok.encode(render_prompt(tok, [*msgs, {"role": "assistant", "content": answer}])))


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
            t = aug(t, seed)
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
            if seal_token_count(tok, msgs, answer) < max_tokens:
                out.append((render_prompt(tok, msgs), answer))
    if len(out) > cap:
        order = list(range(len(out)))
        np.random.RandomState(seed).shuffle(order)
        out = [out[i] for i in order[:cap]]
    return out
