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
import os

import jax
import numpy as np
from absl import flags

from seal_jax.cli.common import build_model, define_config_flag, run
from seal_jax.cli.settings import domain_for, preflight
from seal_jax.domains.arc.evaluation import evaluate as evaluate_arc
from seal_jax.domains.knowledge.evaluation import condition_docs, continual, load_completions, run_conditions
from seal_jax.domains.knowledge.passages import load_passages
from seal_jax.runtime.plots import plot_conditions, plot_forgetting, plot_rl
from seal_jax.runtime.workdir import Workdir, restore_generator

FLAGS = flags.FLAGS
CONTINUAL_FOLDS = (77, 78)  # the continual evaluation's keys: fold_in(key, these) for its documents, its updates


def define_flags() -> None:
    define_config_flag("configs/knowledge_eval.py[:preset] or configs/arc_eval.py[:preset]")
    flags.DEFINE_string("out", None, "Output directory for eval.json and plots.", required=True)


def conditions_of(c) -> tuple[str, ...]:
    return tuple(x.strip() for x in c.eval.conditions.split(","))


def evaluate_knowledge(c, domain, cfg, params, tok, generator, out_dir: str) -> tuple[dict, list[str]]:
    settings = domain.settings
    if domain.settings.eval_source:  # SEAL's evaluation passages (its validation set, shuffled with seed 42)
        passages = domain.eval_passages()
    else:
        passages = load_passages(c.data.source)[c.data.offset:][: c.data.limit or None]
    completions = load_completions(c.eval.completions_file) if c.eval.completions_file else None
    key = jax.random.PRNGKey(c.seed)
    learner = generator if c.eval.learner == "generator" else params
    result = {"passages": len(passages), "mode": c.eval.mode, "grader": c.eval.grader}
    result["accuracy"] = run_conditions(learner, generator, cfg, tok, passages, settings, key, conditions_of(c),
                                        completions, c.eval.mode, c.eval.cpt_n)
    plots = [plot_conditions(result["accuracy"], os.path.join(out_dir, "conditions.png"))]
    if c.eval.continual:
        cond = c.eval.continual_condition
        docs = condition_docs(cond, passages, settings, generator, cfg, tok, completions,
                              jax.random.fold_in(key, CONTINUAL_FOLDS[0]))
        acc = continual(learner, cfg, tok, passages, docs, settings, jax.random.fold_in(key, CONTINUAL_FOLDS[1]))
        result["continual"] = {"condition": cond, "matrix": acc.tolist(),
                               "mean_on_earlier_after_last": float(np.nanmean(acc[-1]))}
        plots.append(plot_forgetting(acc, os.path.join(out_dir, "forgetting.png")))
    return result, plots


def evaluate_arc_tasks(c, domain, cfg, params, tok, generator, out_dir: str) -> tuple[dict, list[str]]:
    _, tasks = domain.load_data()
    success = evaluate_arc(params, cfg, tok, tasks, domain.settings, jax.random.PRNGKey(c.seed), generator,
                           conditions_of(c))
    plot = plot_conditions(success, os.path.join(out_dir, "conditions.png"), f"ARC success rate ({len(tasks)} tasks)")
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
