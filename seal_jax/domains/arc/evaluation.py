"""Few-shot ARC evaluation (SEAL's table 2): success rates over tasks, without RL or with it.

  icl           no update: the demonstrations in context, predictions under views, voted
  ttt_default   test-time training with a fixed default self-edit
  oracle        test-time training with the best fixed configuration (settings.oracle)
  self_edit     test-time training with self-edits sampled from the generator: the fraction of
                (task, self-edit) pairs that solve their task (an invalid self-edit fails)
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from seal_jax.domains.arc.self_edit import DEFAULT_SELF_EDIT, self_edit_prompt
from seal_jax.domains.arc.settings import ArcSettings
from seal_jax.domains.arc.tasks import ArcTask
from seal_jax.domains.arc.updates import Item, adapt_and_solve, icl_solved, parse
from seal_jax.engine.sampling import sample_self_edits
from seal_jax.tokenizer import chat_prompt

CONDITIONS = ("icl", "ttt_default", "oracle", "self_edit")
SAMPLE_FOLD, SELF_EDIT_FOLD = 7, 9  # the self_edit condition's keys: fold_in(key, these)


def evaluate(params, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings, key, generator=None,
             conditions: Sequence[str] = CONDITIONS) -> dict:
    """{condition: success rate}; `generator` (default: params) samples the self_edit condition's self-edits."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown ARC conditions {sorted(unknown)}; choose among {CONDITIONS}")
    res = {}
    if "icl" in conditions:
        res["icl"] = float(np.mean(icl_solved(params, cfg, tok, tasks, settings)))
    for j, (name, edit) in enumerate({"ttt_default": DEFAULT_SELF_EDIT, "oracle": settings.oracle}.items()):
        if name in conditions:
            items = [Item(i, t, edit) for i, t in enumerate(tasks)]
            res[name] = float(np.mean([r.solved for chunk in adapt_and_solve(params, cfg, tok, items, settings,
                                                                             jax.random.fold_in(key, j), desc=name)
                                       for r in chunk]))
    if "self_edit" in conditions:
        res["self_edit"] = self_edit_success(params, generator if generator is not None else params, cfg, tok,
                                             tasks, settings, key)
    return res


def self_edit_success(params, generator, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings, key) -> float:
    n = settings.eval_self_edits
    texts = sample_self_edits(generator, cfg, tok, [chat_prompt(tok, self_edit_prompt(t)) for t in tasks], n,
                              settings.self_edits, jax.random.fold_in(key, SAMPLE_FOLD))
    items, outcomes = [], []
    for i, t in enumerate(tasks):
        for s, text in enumerate(texts[i]):
            edit, _ = parse(settings, text, t)
            if edit is None:
                outcomes.append(False)
            else:
                items.append(Item(i * n + s, t, edit))
    outcomes += [r.solved for chunk in adapt_and_solve(params, cfg, tok, items, settings,
                                                       jax.random.fold_in(key, SELF_EDIT_FOLD), desc="self-edits")
                 for r in chunk]
    return float(np.mean(outcomes)) if outcomes else 0.0
