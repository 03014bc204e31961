"""Evaluate a model, or a run's generator, on SEAL's conditions: `python -m seal_jax.cli.evaluate --out=DIR ...`.

    python -m seal_jax.cli.evaluate --config=configs/knowledge_eval.py:demo --out=runs/eval \
        --config.generator_workdir=runs/demo --config.eval.conditions=base,passage,self_edit
    python -m seal_jax.cli.evaluate --config=configs/arc_eval.py:demo --out=runs/arc_eval

Knowledge: domains/knowledge/evaluation.py (base, passage, self_edit, file; single or CPT; continual).
ARC: domains/arc/evaluation.py (icl, ttt_default, oracle, self_edit). Results go to DIR/eval.json with PNG
plots beside it.
"""
from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np
from absl import flags

from seal_jax.cli.common import build_model, define_config_flag, run
from seal_jax.cli.settings import domain_for, preflight
from seal_jax.domains.arc.evaluation import evaluate as evaluate_arc, table_1
from seal_jax.domains.knowledge.evaluation import (ContinualSettings, CptSettings, continual, format_table2,
                                                  load_completions, run_conditions, table2)
from seal_jax.domains.knowledge.passages import load_passages
from seal_jax.runtime.plots import plot_conditions, plot_forgetting, plot_rl, plot_table2
from seal_jax.runtime.workdir import Workdir, restore_generator

FLAGS = flags.FLAGS
log = logging.getLogger("seal_jax.cli.evaluate")
CONTINUAL_FOLDS = (77, 78)  # the continual evaluation's key: fold_in(key, CONTINUAL_FOLDS[1])


def define_flags() -> None:
    define_config_flag("configs/knowledge_eval.py[:preset] or configs/arc_eval.py[:preset]")
    flags.DEFINE_string("out", None, "Output directory for eval.json and plots.", required=True)


def conditions_of(c) -> tuple[str, ...]:
    return tuple(x.strip() for x in c.eval.conditions.split(","))


def nan_to_null(x):
    """Nested lists of floats with NaN (a cell not measured) as null, so eval.json is strict JSON."""
    if isinstance(x, list):
        return [nan_to_null(v) for v in x]
    return None if isinstance(x, float) and np.isnan(x) else x


def evaluate_knowledge(c, domain, cfg, params, tok, generator, out_dir: str) -> tuple[dict, list[str]]:
    """SEAL's Table 2 (single passage and CPT, beside the paper's numbers) and, with eval.continual, its
    forgetting protocol."""
    settings, ev = domain.settings, c.eval
    if settings.eval_source:  # SEAL's evaluation passages (its validation set, shuffled with seed 42)
        passages = domain.eval_passages()
    else:
        passages = load_passages(c.data.source)[c.data.offset:][: c.data.limit or None]
    completions = load_completions(ev.completions_file) if ev.completions_file else None
    key = jax.random.PRNGKey(c.seed)
    learner = generator if ev.learner == "generator" else params
    conditions, skipped = [], {}
    for cond in conditions_of(c):
        if cond == "file" and completions is None:
            skipped[cond] = "no --config.eval.completions_file (SEAL's GPT-4.1 data: a file of completions)"
        elif cond == "self_edit_rl" and not c.generator_workdir:
            skipped[cond] = "no --config.generator_workdir (a seal_jax.cli.train run whose generator writes)"
        else:
            conditions.append(cond)
    for cond, why in skipped.items():
        log.warning("condition %s skipped: %s", cond, why)
    modes = tuple(m.strip() for m in ev.mode.split(","))
    cpt = CptSettings(n=ev.cpt_n, k=ev.get("cpt_k", 5), epochs=ev.get("cpt_epochs", 3), lr=ev.get("cpt_lr", 1e-3),
                      passage_lr=ev.get("cpt_passage_lr", 1e-4), batch_size=ev.get("cpt_batch_size", 8))
    by_mode = {}
    for i, mode in enumerate(modes):
        by_mode[mode] = run_conditions(learner, generator, cfg, tok, passages, settings, jax.random.fold_in(key, i),
                                       conditions, completions, mode, ev.cpt_n, cpt)
    rows = table2(by_mode)
    result = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages), "mode": ev.mode,
              "grader": ev.grader, "accuracy": by_mode[modes[0]] if len(modes) == 1 else by_mode,
              "table2": rows, "skipped": skipped}
    print(format_table2(rows))
    plots = [plot_conditions(acc, os.path.join(out_dir, "conditions.png" if m == "single" else f"conditions_{m}.png"),
                             f"accuracy without the passage ({m}, {len(passages)} passages)")
             for m, acc in by_mode.items()]
    plots.append(plot_table2(rows, os.path.join(out_dir, "table2.png")))
    if ev.continual:
        cont = ContinualSettings(sequences=ev.get("continual_sequences", 8), k=ev.get("continual_k", 8),
                                 seed=ev.get("continual_seed", 42), condition=ev.continual_condition)
        pool = load_passages(settings.eval_source) if settings.eval_source else passages
        res = continual(learner, cfg, tok, pool, settings, jax.random.fold_in(key, CONTINUAL_FOLDS[1]), cont,
                        completions)
        result["continual"] = {k: (nan_to_null(v.tolist()) if isinstance(v, np.ndarray) else v) for k, v in res.items()}
        plots.append(plot_forgetting(res["mean"], os.path.join(out_dir, "forgetting.png")))
    return result, plots


def evaluate_arc_tasks(c, domain, cfg, params, tok, generator, out_dir: str) -> tuple[dict, list[str]]:
    _, tasks = domain.load_data()
    success = evaluate_arc(params, cfg, tok, tasks, domain.settings, jax.random.PRNGKey(c.seed), generator,
                           conditions_of(c))
    plot = plot_conditions(success, os.path.join(out_dir, "conditions.png"), f"ARC success rate ({len(tasks)} tasks)")
    print(table_1(success, len(tasks)))
    return {"tasks": [t.id for t in tasks], "success": success}, [plot]


def main(argv):
    del argv
    c, out_dir = FLAGS.config, FLAGS.out
    domain = domain_for(c)
    preflight(domain)
    os.makedirs(out_dir, exist_ok=True)
    cfg, params, tok = build_model(c.model, c.seed)
    generator = params
    if c.generator_workdir:
        try:
            step, generator = restore_generator(c.generator_workdir, params)
        except FileNotFoundError as e:
            raise SystemExit(f"error: {e}")
        print(f"generator: {c.generator_workdir} after {step} RL iterations")
    evaluate = evaluate_arc_tasks if c.domain == "arc" else evaluate_knowledge
    result, plots = evaluate(c, domain, cfg, params, tok, generator, out_dir)
    if c.generator_workdir and c.domain != "arc":
        rl = plot_rl(os.path.join(c.generator_workdir, "metrics.jsonl"), os.path.join(out_dir, "rl.png"))
        plots += [rl] if rl else []
    result["plots"] = plots
    path = Workdir(out_dir).write_json("eval.json", result)
    print(json.dumps(result["success" if c.domain == "arc" else "accuracy"], indent=2))
    print(f"results: {path}\nplots: {', '.join(plots)}")


if __name__ == "__main__":
    run(main, define_flags)
