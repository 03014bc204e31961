"""One ARC update, SEAL's way: a self-edit's TTT data -> a LoRA -> leave-one-out queries under views -> vote.

An `Item` pairs a task with a parsed self-edit (`protocol.TttConfig`). Its training data are SEAL's
(ttt.ttt_examples: the chosen augmentation groups, leave-1 and leave-2, capped), then SEAL's step guard; a
0-epoch self-edit trains nothing and its untrained adapter (the base model) is evaluated, as SEAL evaluates it.
The adapted model answers every test input's queries greedily (inference.queries); answers are mapped back and
voted to two attempts per test input, and the item is solved only if every test input is. All items of a chunk
train in one vmapped call through `engine.adapt`: lr, epochs and loss mode are per-item data.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.arc import inference
from seal_jax.domains.arc.augment import augmenters
from seal_jax.domains.arc.protocol import TttConfig, step_guard
from seal_jax.domains.arc.settings import ArcSettings
from seal_jax.domains.arc.tasks import ArcTask
from seal_jax.domains.arc.ttt import messages, parse_grid_str, render_prompt, ttt_examples
from seal_jax.engine.adapt import Adapted, Request, adapt_and_answer
from seal_jax.engine.answering import answer_per_edit
from seal_jax.engine.inner import tokenize_document


@dataclasses.dataclass(frozen=True)
class Item:
    uid: int                      # the item's training key derives from it
    task: ArcTask
    edit: TttConfig
    sample: int = 0               # which self-edit of its task (E-step items)
    self_edit: str = ""           # the reply the edit was parsed from


@dataclasses.dataclass(frozen=True)
class Solved:
    item: Item
    edit: TttConfig               # the edit as trained: after SEAL's step guard
    ok: bool
    reason: Optional[str]
    solved: bool
    attempts: list                # per test input, the two voted grids, as lists
    train_examples: int
    dropped_too_long: int         # examples longer than the inner max_len: dropped, not cut
    train_tokens: int


@dataclasses.dataclass(frozen=True)
class Queries:
    """A task's inference prompts: token ids, and for each its test input and view category."""
    prompts: list[list[int]]
    test_index: list[int]
    category: list[str]


def task_queries(tok, task: ArcTask, settings: ArcSettings) -> Queries:
    prompts, tests, cats = [], [], []
    for k in range(len(task.tests)):
        for cat, pseudo in inference.queries(task, k, settings.seed, settings.ttt.orders):
            msgs, _ = messages(pseudo)
            prompts.append(tok.encode(render_prompt(tok, msgs), add_special_tokens=False))
            tests.append(k)
            cats.append(cat)
    return Queries(prompts, tests, cats)


def attempts_from(texts: Sequence[str], q: Queries, n_tests: int) -> list[tuple]:
    """Per test input, the two voted attempts from the answers to its queries (unparseable answers dropped)."""
    preds: list[list] = [[] for _ in range(n_tests)]
    for text, k, cat in zip(texts, q.test_index, q.category):
        g = parse_grid_str(text)
        if g is not None:
            preds[k].append((cat, inference.to_answer(inference.back(cat, g))))
    return [inference.vote(p) for p in preds]


def training_data(tok, settings: ArcSettings, item: Item) -> tuple[TttConfig, list, int]:
    """(the edit after SEAL's step guard, tokenized TTT examples that fit max_len, how many were dropped)."""
    examples = ttt_examples(item.task.train, augmenters(item.edit.groups), tok, leave_n=settings.ttt.leave_n,
                            max_tokens=settings.ttt.max_tokens, cap=settings.ttt.cap, seed=settings.seed)
    edit = step_guard(item.edit, len(examples))
    tokens = [tokenize_document(tok, ex, edit.loss) for ex in examples]
    # an example cut at max_len would lose its output grid, the part that is trained: drop it instead
    kept = [t for t in tokens if len(t[0]) <= settings.adapt.max_len]
    return edit, kept, len(tokens) - len(kept)


def adapt_and_solve(params, cfg, tok, items: Sequence[Item], settings: ArcSettings, key, *, mesh=None,
                    desc: str = "TTT") -> Iterator[list[Solved]]:
    """Train each item's TTT LoRA, answer its queries, vote; results chunk by chunk."""
    data = [training_data(tok, settings, item) for item in items]
    queries = [task_queries(tok, item.task, settings) for item in items]
    requests = [[Request(docs, edit.lr, edit.epochs, np.asarray(jax.random.fold_in(key, item.uid)), q.prompts)]
                for item, (edit, docs, _), q in zip(items, data, queries)]
    for chunk in adapt_and_answer(params, cfg, tok, requests, settings.adapt, mesh=mesh, desc=desc):
        yield [_solve(items[i], data[i], queries[i], reps[0]) for i, reps in zip(chunk.items, chunk.adapted)]


def _solve(item: Item, data, q: Queries, adapted: Adapted) -> Solved:
    edit, kept, dropped = data
    attempts = attempts_from(adapted.answers, q, len(item.task.tests))
    return Solved(item, edit, adapted.ok, adapted.reason, bool(adapted.ok and inference.solved(attempts, item.task)),
                  [[list(map(list, a)) for a in pair] for pair in attempts], len(kept), dropped, adapted.train_tokens)


def icl_solved(params, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings) -> list[bool]:
    """No update: the same queries answered by the base model, the same vote."""
    qs = [task_queries(tok, t, settings) for t in tasks]
    answers = answer_per_edit(params, cfg, tok, [q.prompts for q in qs], settings.adapt.answer,
                              max_rows=settings.adapt.answer_rows)
    return [inference.solved(attempts_from(texts, q, len(t.tests)), t) for t, texts, q in zip(tasks, answers, qs)]
