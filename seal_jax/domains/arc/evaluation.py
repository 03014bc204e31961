"""Few-shot ARC evaluation: SEAL's Table 1 (Llama-3.2-1B-Instruct on its 8 ARC-AGI-1 evaluation tasks).

  icl         no update: the leave-one-out queries answered in context, voted
  ttt_no_rl   test-time training with self-edits sampled from the model before RL: the fraction of
              (task, self-edit) pairs that solve their task (a reply still not SEAL's JSON after the resampling
              rounds fails)
  seal        the same with self-edits from the RL-trained generator
  oracle      test-time training with the hand-picked configuration (settings.oracle: SEAL's ttt.py)
"""
from __future__ import annotations

import types
from typing import Sequence

import jax
import numpy as np

from seal_jax.domains.arc import protocol
from seal_jax.domains.arc.settings import ArcSettings
from seal_jax.domains.arc.tasks import ArcTask
from seal_jax.domains.arc.updates import Item, adapt_and_solve, icl_solved
from seal_jax.domains.base import sample_acceptable

CONDITIONS = ("icl", "ttt_no_rl", "seal", "oracle")
PAPER_TABLE_1 = {"icl": 0.0, "ttt_no_rl": 0.20, "seal": 0.725, "oracle": 1.0}  # SEAL paper, Table 1
ROW_NAMES = {"icl": "ICL", "ttt_no_rl": "TTT + self-edit (no prior RL)", "seal": "SEAL (after RL)",
             "oracle": "Oracle TTT"}
SAMPLE_FOLD, SELF_EDIT_FOLD, ORACLE_FOLD = 7, 9, 11  # fold_in(key, these)


def evaluate(params, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings, key, generator=None,
             conditions: Sequence[str] = CONDITIONS) -> dict:
    """{condition: success rate}. ttt_no_rl samples self-edits from `params`, seal from `generator`."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown ARC conditions {sorted(unknown)}; choose among {CONDITIONS}")
    res = {}
    if "icl" in conditions:
        res["icl"] = float(np.mean(icl_solved(params, cfg, tok, tasks, settings)))
    if "ttt_no_rl" in conditions:
        res["ttt_no_rl"] = self_edit_success(params, params, cfg, tok, tasks, settings, key)
    if "seal" in conditions:
        if generator is None:
            raise ValueError("the seal condition needs the RL-trained generator (generator_workdir)")
        res["seal"] = self_edit_success(params, generator, cfg, tok, tasks, settings, key)
    if "oracle" in conditions:
        items = [Item(i, t, settings.oracle) for i, t in enumerate(tasks)]
        res["oracle"] = float(np.mean([r.solved for chunk in adapt_and_solve(
            params, cfg, tok, items, settings, jax.random.fold_in(key, ORACLE_FOLD), desc="oracle") for r in chunk]))
    return res


def sampler(settings: ArcSettings):
    """What `domains.base.sample_acceptable` needs to sample SEAL's self-edits, resampling non-JSON replies."""
    return types.SimpleNamespace(self_edits=settings.self_edits, max_resamples=settings.max_resamples,
                                 acceptable=protocol.acceptable)


def self_edit_success(params, generator, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings, key) -> float:
    n = settings.eval_self_edits
    texts = sample_acceptable(sampler(settings), generator, cfg, tok, [protocol.prompt_ids(tok, t) for t in tasks],
                              n, jax.random.fold_in(key, SAMPLE_FOLD))
    items, outcomes = [], []
    for i, t in enumerate(tasks):
        for s, text in enumerate(texts[i]):
            edit, _ = protocol.parse_reply(text)
            if edit is None:
                outcomes.append(False)
            else:
                items.append(Item(i * n + s, t, edit, s, text))
    outcomes += [r.solved for chunk in adapt_and_solve(params, cfg, tok, items, settings,
                                                       jax.random.fold_in(key, SELF_EDIT_FOLD), desc="self-edits")
                 for r in chunk]
    return float(np.mean(outcomes)) if outcomes else 0.0


def table_1(success: dict, n_tasks: int) -> str:
    """Our success rates beside SEAL's Table 1."""
    lines = [f"ARC success rate on {n_tasks} tasks (SEAL's Table 1: Llama-3.2-1B-Instruct, 8 ARC-AGI-1 tasks)",
             f"  {'condition':32s} {'ours':>7s} {'paper':>7s}"]
    for k in CONDITIONS:
        if k in success:
            lines.append(f"  {ROW_NAMES[k]:32s} {100 * success[k]:6.1f}% {100 * PAPER_TABLE_1[k]:6.1f}%")
    return "\n".join(lines)
