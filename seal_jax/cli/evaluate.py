"""Evaluate a model, or a run's generator, on SEAL's conditions: `python -m seal_jax.cli.evaluate --config=... --out=DIR`.

    python -m seal_jax.cli.evaluate --config=configs/knowledge_eval.py:demo --out=runs/eval \
        --config.generator_workdir=runs/demo --config.eval.conditions=base,passage,self_edit
    python -m seal_jax.cli.evaluate --config=configs/arc_eval.py:demo --out=runs/arc_eval

Flags: --config (required; any field overridable as --config.<section>.<field>=value) and --out (required; the
output directory). It takes no --workdir: a training run to evaluate is --config.generator_workdir=DIR.

Knowledge: domains/knowledge/evaluation.py (base, passage, self_edit, file; single or CPT; continual).
ARC: domains/arc/evaluation.py (icl, ttt_default, oracle, self_edit). Results go to DIR/eval.json with PNG
plots beside it.

Mesh and hosts as `train` (`cli.common.start_run`): --config.mesh (the :paper presets: every device, base
weights fsdp-sharded) places the model on a mesh and runs inner updates edit-parallel; on a multi-host slice
every process runs this same command and process 0 alone writes and prints. The config, data, mesh, model and
generator all load before DIR is created.
"""
from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np
from absl import flags

from seal_jax.cli.common import define_config_flag, run, start_run, start_step
from seal_jax.cli.settings import domain_for, preflight
from seal_jax.domains.arc.evaluation import evaluate as evaluate_arc, table_1
from seal_jax.domains.knowledge.evaluation import (ContinualSettings, CptSettings, continual, format_table2,
                                                  load_completions, run_conditions, table2)
from seal_jax.domains.knowledge.passages import load_passages
from seal_jax.runtime.plots import plot_conditions, plot_forgetting, plot_rl, plot_table2
from seal_jax.runtime.terminal import say
from seal_jax.runtime.workdir import Workdir, check_path, is_writer, restore_generator

FLAGS = flags.FLAGS
log = logging.getLogger("seal_jax.cli.evaluate")
CONTINUAL_FOLDS = (77, 78)  # the continual evaluation's key: fold_in(key, CONTINUAL_FOLDS[1])


def define_flags() -> None:
    define_config_flag("configs/knowledge_eval.py[:preset] or configs/arc_eval.py[:preset].")
    flags.DEFINE_string("out", None, "(required) Output directory for eval.json and plots (created once the model "
                        "has loaded). A run to evaluate is --config.generator_workdir=DIR.", required=True)


def conditions_of(c) -> tuple[str, ...]:
    return tuple(x.strip() for x in c.eval.conditions.split(","))


def nan_to_null(x):
    """Nested lists of floats with NaN (a cell not measured) as null, so eval.json is strict JSON."""
    if isinstance(x, list):
        return [nan_to_null(v) for v in x]
    return None if isinstance(x, float) and np.isnan(x) else x


def knowledge_data(c, domain) -> dict:
    """The evaluated passages, the completions file's records and the continual pool, read before any model."""
    settings, ev = domain.settings, c.eval
    if settings.eval_source:  # SEAL's evaluation passages (its validation set, shuffled with seed 42)
        passages = domain.eval_passages()
    else:
        passages = load_passages(c.data.source)[c.data.offset:][: c.data.limit or None]
    completions = load_completions(ev.completions_file) if ev.completions_file else None
    pool = None
    if ev.continual:
        pool = load_passages(settings.eval_source) if settings.eval_source else passages
    return {"passages": passages, "completions": completions, "pool": pool}


def arc_data(c, domain) -> dict:
    _, tasks = domain.load_data()
    return {"tasks": tasks}


def evaluate_knowledge(c, domain, data: dict, cfg, params, tok, generator, out_dir: str, mesh=None):
    """SEAL's Table 2 (single passage and CPT, beside the paper's numbers) and, with eval.continual, its
    forgetting protocol: (result, plots)."""
    settings, ev = domain.settings, c.eval
    passages, completions = data["passages"], data["completions"]
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
                                       conditions, completions, mode, ev.cpt_n, cpt, mesh=mesh)
    rows = table2(by_mode)
    result = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages), "mode": ev.mode,
              "grader": ev.grader, "accuracy": by_mode[modes[0]] if len(modes) == 1 else by_mode,
              "table2": rows, "skipped": skipped}
    say(format_table2(rows))
    res = None
    if ev.continual:
        cont = ContinualSettings(sequences=ev.get("continual_sequences", 8), k=ev.get("continual_k", 8),
                                 seed=ev.get("continual_seed", 42), condition=ev.continual_condition,
                                 runs=ev.get("continual_runs", 1))
        res = continual(learner, cfg, tok, data["pool"], settings, jax.random.fold_in(key, CONTINUAL_FOLDS[1]), cont,
                        completions)
        result["continual"] = {k: (nan_to_null(v.tolist()) if isinstance(v, np.ndarray) else v) for k, v in res.items()}
    plots = []
    if is_writer():  # multi-host: process 0 alone draws
        plots = [plot_conditions(acc, os.path.join(out_dir, "conditions.png" if m == "single" else f"conditions_{m}.png"),
                                 f"accuracy without the passage ({m}, {len(passages)} passages)")
                 for m, acc in by_mode.items()]
        plots.append(plot_table2(rows, os.path.join(out_dir, "table2.png")))
        if res is not None:
            plots.append(plot_forgetting(res["mean"], os.path.join(out_dir, "forgetting.png")))
    return result, plots


def evaluate_arc_tasks(c, domain, data: dict, cfg, params, tok, generator, out_dir: str, mesh=None):
    tasks = data["tasks"]
    success = evaluate_arc(params, cfg, tok, tasks, domain.settings, jax.random.PRNGKey(c.seed), generator,
                           conditions_of(c), mesh=mesh)
    plots = [plot_conditions(success, os.path.join(out_dir, "conditions.png"),
                             f"ARC success rate ({len(tasks)} tasks)")] if is_writer() else []
    say(table_1(success, len(tasks)))
    return {"tasks": [t.id for t in tasks], "success": success}, plots


def evaluate(c, out_dir: str) -> dict:
    """Evaluate as `c` says, on its mesh; write out_dir/eval.json (and plots) and return the result."""
    def check():
        check_path(out_dir)  # an object-store URL fails here, not after the evaluation
        domain = domain_for(c)
        preflight(domain)
        return domain, (arc_data if c.domain == "arc" else knowledge_data)(c, domain)

    s = start_run(c, check)
    domain, data = s.checked
    generator = s.params
    if c.generator_workdir:
        with start_step("loading the generator"):
            step, generator = restore_generator(c.generator_workdir, s.params)  # onto the params' mesh
        say(f"generator: {c.generator_workdir} after {step} RL iterations")
    os.makedirs(out_dir, exist_ok=True)
    run_domain = evaluate_arc_tasks if c.domain == "arc" else evaluate_knowledge
    result, plots = run_domain(c, domain, data, s.cfg, s.params, s.tok, generator, out_dir, mesh=s.mesh)
    if c.generator_workdir and c.domain != "arc" and is_writer():
        rl = plot_rl(os.path.join(c.generator_workdir, "metrics.jsonl"), os.path.join(out_dir, "rl.png"))
        plots += [rl] if rl else []
    result["plots"] = plots
    path = Workdir(out_dir).write_json("eval.json", result)
    say(json.dumps(result["success" if c.domain == "arc" else "accuracy"], indent=2))
    say(f"results: {path}\nplots: {', '.join(plots)}")
    return result


def main(argv):
    del argv
    evaluate(FLAGS.config, FLAGS.out)


if __name__ == "__main__":
    run(main, define_flags)
