"""One ARC update: a self-edit's test-time-training data -> a LoRA -> predictions under views -> vote -> solved.

An `Item` pairs a task with a parsed self-edit. Its training data are leave-one-out tasks built from the
demonstrations under the self-edit's augmentations (self_edit.ttt_examples), minus any too long to keep their
output grid; the adapted model answers the test input under several invertible views (tasks.views), the
answers are mapped back and voted, and the item is solved if an attempt equals the solution. All items of a
chunk train in one vmapped call through `engine.adapt`: lr, epochs and loss mode are per-item data.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.arc.self_edit import SelfEdit, check_budget, parse_self_edit, ttt_examples
from seal_jax.domains.arc.settings import ArcSettings
from seal_jax.domains.arc.tasks import ArcTask, Transform, predict_from_texts, solved, views
from seal_jax.engine.adapt import Adapted, Request, adapt_and_answer
from seal_jax.engine.answering import answer_per_edit
from seal_jax.engine.inner import tokenize_document


@dataclasses.dataclass(frozen=True)
class Item:
    uid: int                      # the item's TTT data and training key derive from it
    task: ArcTask
    edit: SelfEdit
    sample: int = 0               # which self-edit of its task (E-step items)
    self_edit: str = ""           # the text the edit was parsed from


@dataclasses.dataclass(frozen=True)
class Solved:
    item: Item
    ok: bool
    reason: Optional[str]
    solved: bool
    attempts: list                # the voted grids, as lists
    train_examples: int
    dropped_too_long: int         # examples longer than the inner max_len: dropped, not cut
    train_tokens: int


def training_data(settings: ArcSettings, task: ArcTask, edit: SelfEdit, rng: np.random.Generator):
    return ttt_examples(task, edit, rng, leave_two_out=settings.ttt.leave_two_out,
                        colour_perms=settings.ttt.colour_perms, max_examples=settings.ttt.max_examples)


def parse(settings: ArcSettings, text: str, task: ArcTask) -> tuple[Optional[SelfEdit], Optional[str]]:
    """(SelfEdit, None), or (None, why): malformed, out of the limits, or more optimiser steps than the budget."""
    edit, why = parse_self_edit(text, settings.limits)
    if edit is not None:
        n = len(training_data(settings, task, edit, np.random.default_rng(0)))
        why = check_budget(edit, n, settings.adapt.inner.batch_size, settings.limits)
        edit = None if why else edit
    return edit, why


def view_prompts(tok, task: ArcTask, n_views: int) -> tuple[list[list[int]], list[Transform]]:
    """The test input under `n_views` views: (raw prompt token ids, the view transforms)."""
    vs = views(task, n_views)
    return [tok.encode(p, add_special_tokens=False) for p, _ in vs], [t for _, t in vs]


def _documents(settings: ArcSettings, tok, item: Item) -> tuple[list, int]:
    """(tokenized TTT examples that fit max_len, how many were dropped for length)."""
    rng = np.random.default_rng([settings.seed, item.uid])
    tokens = [tokenize_document(tok, d, item.edit.loss) for d in training_data(settings, item.task, item.edit, rng)]
    # an example cut at max_len would lose its output grid, the part that is trained: drop it instead
    kept = [t for t in tokens if len(t[0]) <= settings.adapt.max_len]
    return kept, len(tokens) - len(kept)


def adapt_and_solve(params, cfg, tok, items: Sequence[Item], settings: ArcSettings, key, *, mesh=None,
                    desc: str = "TTT") -> Iterator[list[Solved]]:
    """Train each item's TTT LoRA, predict under views, vote; results chunk by chunk."""
    documents = [_documents(settings, tok, item) for item in items]
    prompts = [view_prompts(tok, item.task, settings.ttt.views) for item in items]
    requests = [[Request(docs, item.edit.lr, item.edit.epochs, np.asarray(jax.random.fold_in(key, item.uid)), p)]
                for item, (docs, _), (p, _) in zip(items, documents, prompts)]
    for chunk in adapt_and_answer(params, cfg, tok, requests, settings.adapt, mesh=mesh, desc=desc):
        yield [_solve(settings, items[i], documents[i], prompts[i][1], reps[0]) for i, reps in zip(chunk.items,
                                                                                                 chunk.adapted)]


def _solve(settings: ArcSettings, item: Item, documents, transforms, adapted: Adapted) -> Solved:
    attempts = predict_from_texts(adapted.answers, transforms, settings.ttt.attempts)
    kept, dropped = documents
    return Solved(item, adapted.ok, adapted.reason, bool(adapted.ok and solved(attempts, item.task.test_output)),
                  [a.tolist() for a in attempts], len(kept), dropped, adapted.train_tokens)


def icl_solved(params, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings) -> list[bool]:
    """No update: predict from the demonstrations in context, same views and vote."""
    prompts = [view_prompts(tok, t, settings.ttt.views) for t in tasks]
    answers = answer_per_edit(params, cfg, tok, [p for p, _ in prompts], settings.adapt.answer)
    return [solved(predict_from_texts(texts, transforms, settings.ttt.attempts), t.test_output)
            for t, texts, (_, transforms) in zip(tasks, answers, prompts)]
