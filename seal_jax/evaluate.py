"""Evaluate knowledge incorporation: `python -m seal_jax.evaluate --config=configs/knowledge_eval.py --out=DIR`.

Conditions (SEAL's tables), each scored on questions asked *without* the passage:
  base             no update
  passage          train on the passage only
  self_edit        train on the passage + self-edits sampled from the generator
  file             train on the passage + self-edits read from a file (SEAL's synthetic-data format: records
                   with `completions: [str]`, e.g. GPT-4.1-written data)
Modes: `single` (one LoRA per passage), `cpt` (one LoRA over n passages jointly). `continual` applies the
updates one passage after another, merged into the weights, and records accuracy on every earlier passage
(the forgetting matrix). Results go to DIR/eval.json with PNG plots beside it.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import jax
import numpy as np

from seal_jax.domains import knowledge as K
from seal_jax.engine.inner import inner_config
from seal_jax.knowledge_rl import adapt_and_grade, baseline, doc_options, sample_self_edits

log = logging.getLogger(__name__)

CONDITIONS = ("base", "passage", "self_edit", "file")


def load_completions(path: str) -> dict[str, list[str]]:
    """title+context -> completions, from a SEAL synthetic-data file (JSON list or JSONL)."""
    with open(path) as f:
        text = f.read()
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = K.json_lines(text, path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of records, got {type(records).__name__}")
    out = {}
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("completions"), list):
            raise ValueError(f"{path}: record {i} has no 'completions' list")
        if not str(r.get("context", "")).strip():
            raise ValueError(f"{path}: record {i} has no 'context' (the passage its completions are about)")
        out[str(r["context"]).strip()] = [str(x) for x in r["completions"]]
    return out


def condition_docs(condition: str, passages: Sequence[K.Passage], c, generator=None, completions=None, key=None):
    """Training documents per passage for a condition: list[list[str]]."""
    opts = doc_options(c.self_edit)
    passage_only = [[f"{p.title}\n{p.context}"] for p in passages]
    if condition == "passage":
        return passage_only
    if condition == "self_edit":
        params, cfg, tok = generator
        edits = sample_self_edits(params, cfg, tok, passages, c.eval.self_edits, c.self_edit, key)
        return [[d for e in es for d in K.self_edit_documents(p, e, c.self_edit.prompt, opts)[:-1]] + only
                if opts.append_passage else
                [d for e in es for d in K.self_edit_documents(p, e, c.self_edit.prompt, opts)]
                for p, es, only in zip(passages, edits, passage_only)]
    if condition == "file":
        if completions is None:
            raise ValueError("condition 'file' needs --config.eval.completions_file")
        docs = []
        for p, only in zip(passages, passage_only):
            if p.context not in completions:
                raise ValueError(f"no completions in the file for passage {p.id} ({p.title!r})")
            body = [d for e in completions[p.context] for d in K.self_edit_documents(p, e, c.self_edit.prompt, opts)
                    if d != only[0]]
            docs.append(body + (only if opts.append_passage else []))
        return docs
    raise ValueError(f"unknown condition {condition!r}; choose among {CONDITIONS}")


def accuracy_of(learner, cfg, tok, passages, docs, c, key, mode: str = "single", cpt_n: int = 0, desc="eval"):
    """Mean accuracy over the passages' questions after the updates (single: one LoRA per passage)."""
    icfg = inner_config(c.inner)
    if mode == "single":
        items = [{"uid": i, "docs": d, "passages": [p]} for i, (p, d) in enumerate(zip(passages, docs))]
    elif mode == "cpt":
        n = cpt_n or len(passages)
        items = [{"uid": i, "docs": [x for d in docs[j:j + n] for x in d], "passages": list(passages[j:j + n])}
                 for i, j in enumerate(range(0, len(passages), n))]
    else:
        raise ValueError(f"mode {mode!r}; choose single or cpt")
    scores, weights, judge_failures = [], [], 0
    for chunk in adapt_and_grade(learner, cfg, tok, items, icfg, c.inner, c.eval, key, desc):
        for r in chunk:
            scores.append(r["reward"])
            weights.append(sum(len(p.questions) for p in r["item"]["passages"]))
            judge_failures += r["judge_failures"]
    warn_judge_failures(judge_failures, desc)
    return float(np.average(scores, weights=weights))


def warn_judge_failures(n: int, what: str) -> None:
    if n:
        log.warning("%s: %d judge calls failed (endpoint down or no yes/no reply); those answers count as wrong", what, n)


def run_conditions(learner, generator, cfg, tok, passages, c, key, conditions=("base", "passage", "self_edit"),
                   completions=None, mode="single", cpt_n=0) -> dict:
    """{condition: accuracy}; `generator` is (params, cfg, tok) for self_edit."""
    out = {}
    for i, cond in enumerate(conditions):
        k = jax.random.fold_in(key, i)
        if cond == "base":
            base = baseline(learner, cfg, tok, passages, c.eval)
            warn_judge_failures(sum(b["judge_failures"] for b in base.values()), "eval: base")
            out[cond] = float(np.average([base[p.id]["accuracy"] for p in passages],
                                         weights=[len(p.questions) for p in passages]))
            continue
        if mode == "cpt":  # CPT keeps each generation whole (SEAL), one document per self-edit
            c = c.copy_and_resolve_references()
            with c.unlocked():
                c.self_edit.split_lines = False
        docs = condition_docs(cond, passages, c, generator, completions, k)
        out[cond] = accuracy_of(learner, cfg, tok, passages, docs, c, k, mode, cpt_n, f"eval: {cond}")
    return out


def continual(params, cfg, tok, passages, docs, c, key) -> np.ndarray:
    """Sequential updates merged into the weights; acc[i, j] = accuracy on passage j after update i (j <= i)."""
    from seal_jax.engine.inner import inner_train_edits, pack_edits, tokenize_document
    from seal_jax.model.lora import merge_lora
    icfg = inner_config(c.inner)
    n = len(passages)
    acc = np.full((n, n), np.nan)
    for i in range(n):
        packed = pack_edits([[tokenize_document(tok, d) for d in docs[i]]], [c.inner.lr], [c.inner.epochs],
                            batch_size=icfg.batch_size, max_len=c.inner.max_len)
        e, hp = packed.arrays()
        lora, _ = inner_train_edits(params, e, np.asarray(jax.random.fold_in(key, i))[None], hp, cfg=cfg, icfg=icfg,
                                    steps=packed.steps)
        params = merge_lora(params, jax.tree.map(lambda x: x[0], lora), icfg.lora)
        base = baseline(params, cfg, tok, passages[:i + 1], c.eval)
        acc[i, :i + 1] = [base[p.id]["accuracy"] for p in passages[:i + 1]]
    return acc


# ---- plots --------------------------------------------------------------------------------------------


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_conditions(results: dict, path: str, title: str = "held-out accuracy (no passage in context)") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(results)
    bars = ax.bar(names, [results[n] for n in names], color="#4C72B0")
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rl(metrics_path: str, path: str) -> Optional[str]:
    if not os.path.exists(metrics_path):
        return None
    rows = [json.loads(l) for l in open(metrics_path) if l.strip()]
    rows = [r for r in rows if "reward_mean" in r]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    for k in ("reward_mean", "reward_max", "baseline_accuracy", "valid_fraction", "kept_fraction"):
        if all(k in r for r in rows):
            ax.plot(steps, [r[k] for r in rows], marker="o", label=k)
    ax.set_xlabel("RL iteration")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_forgetting(acc: np.ndarray, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis")
    ax.set_xlabel("passage evaluated")
    ax.set_ylabel("after update on passage")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- CLI ----------------------------------------------------------------------------------------------


def main(argv):
    del argv
    from absl import flags
    from seal_jax.train import build_model, restore_generator
    from seal_jax.runtime.workdir import Workdir
    c = flags.FLAGS.config
    out_dir = flags.FLAGS.out
    os.makedirs(out_dir, exist_ok=True)
    cfg, params, tok = build_model(c.model, c.seed)
    generator = params
    if c.generator_workdir:
        try:
            step, generator = restore_generator(c.generator_workdir, params)
        except FileNotFoundError as e:
            raise SystemExit(f"error: {e}")
        print(f"generator: {c.generator_workdir} after {step} RL iterations")
    if c.domain == "arc":
        return _main_arc(c, out_dir, cfg, params, tok, generator)
    passages = K.load_passages(c.data.source)[c.data.offset:][: c.data.limit or None]
    completions = load_completions(c.eval.completions_file) if c.eval.completions_file else None
    key = jax.random.PRNGKey(c.seed)
    conditions = tuple(x.strip() for x in c.eval.conditions.split(","))
    learner = generator if c.eval.learner == "generator" else params
    result = {"passages": len(passages), "mode": c.eval.mode, "grader": c.eval.grader}
    result["accuracy"] = run_conditions(learner, (generator, cfg, tok), cfg, tok, passages, c, key, conditions,
                                        completions, c.eval.mode, c.eval.cpt_n)
    plots = [plot_conditions(result["accuracy"], os.path.join(out_dir, "conditions.png"))]
    if c.eval.continual:
        cond = c.eval.continual_condition
        docs = condition_docs(cond, passages, c, (generator, cfg, tok), completions, jax.random.fold_in(key, 77))
        acc = continual(learner, cfg, tok, passages, docs, c, jax.random.fold_in(key, 78))
        result["continual"] = {"condition": cond, "matrix": acc.tolist(),
                               "mean_on_earlier_after_last": float(np.nanmean(acc[-1]))}
        plots.append(plot_forgetting(acc, os.path.join(out_dir, "forgetting.png")))
    if c.generator_workdir:
        rl = plot_rl(os.path.join(c.generator_workdir, "metrics.jsonl"), os.path.join(out_dir, "rl.png"))
        plots += [rl] if rl else []
    result["plots"] = plots
    path = Workdir(out_dir).write_json("eval.json", result)
    print(json.dumps(result["accuracy"], indent=2))
    print(f"results: {path}\nplots: {', '.join(plots)}")


def _main_arc(c, out_dir, cfg, params, tok, generator):
    from seal_jax import arc_rl
    from seal_jax.runtime.workdir import Workdir
    _, tasks = arc_rl.load_data(c)
    conditions = tuple(x.strip() for x in c.eval.conditions.split(","))
    acc = arc_rl.evaluate(params, cfg, tok, tasks, c, jax.random.PRNGKey(c.seed), generator, conditions)
    plot = plot_conditions(acc, os.path.join(out_dir, "conditions.png"), f"ARC success rate ({len(tasks)} tasks)")
    path = Workdir(out_dir).write_json("eval.json", {"tasks": [t.id for t in tasks], "success": acc, "plots": [plot]})
    print(json.dumps(acc, indent=2))
    print(f"results: {path}\nplots: {plot}")


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "configs/knowledge_eval.py[:preset]", lock_config=True)
    flags.DEFINE_string("out", None, "Output directory for eval.json and plots.", required=True)
    from seal_jax.cli import run as run_cli
    run_cli(main)
