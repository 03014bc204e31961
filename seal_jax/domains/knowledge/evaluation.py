"""SEAL's knowledge-incorporation evaluation, each condition scored on questions asked *without* the passage:

  base             no update
  passage          train on the passage only
  self_edit        train on the passage + self-edits sampled from the generator
  file             train on the passage + self-edits read from a file (SEAL's synthetic-data format: records
                   with `completions: [str]`, e.g. GPT-4.1-written data)

Modes: `single` (one LoRA per passage), `cpt` (one LoRA over n passages jointly). `continual` applies the
updates one passage after another, merged into the weights, and records accuracy on every earlier passage
(the forgetting matrix).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.knowledge.passages import Passage, json_lines
from seal_jax.domains.knowledge.self_edit import passage_document, self_edit_documents, self_edit_prompt_ids
from seal_jax.domains.knowledge.settings import KnowledgeSettings
from seal_jax.domains.knowledge.updates import Item, adapt_and_grade, baseline
from seal_jax.engine.inner import inner_train_edits, pack_edits, tokenize_document
from seal_jax.engine.sampling import sample_self_edits
from seal_jax.model.lora import merge_lora

log = logging.getLogger(__name__)

CONDITIONS = ("base", "passage", "self_edit", "file")


def load_completions(path: str) -> dict[str, list[str]]:
    """passage text -> completions, from a SEAL synthetic-data file (JSON list or JSONL)."""
    with open(path) as f:
        text = f.read()
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = json_lines(text, path)
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


def condition_docs(condition: str, passages: Sequence[Passage], settings: KnowledgeSettings, generator=None,
                   cfg=None, tok=None, completions: Optional[dict] = None, key=None) -> list[list[str]]:
    """Training documents per passage for a condition; `generator` (params) writes the self_edit condition's."""
    opts = settings.documents
    passage_only = [[passage_document(p)] for p in passages]
    if condition == "passage":
        return passage_only
    if condition == "self_edit":
        prompts = [self_edit_prompt_ids(tok, p, settings.prompt, settings.chat) for p in passages]
        edits = sample_self_edits(generator, cfg, tok, prompts, settings.eval_self_edits, settings.self_edits, key)
        return [[d for e in es for d in self_edit_documents(p, e, settings.prompt, opts)[:-1]] + only
                if opts.append_passage else
                [d for e in es for d in self_edit_documents(p, e, settings.prompt, opts)]
                for p, es, only in zip(passages, edits, passage_only)]
    if condition == "file":
        if completions is None:
            raise ValueError("condition 'file' needs --config.eval.completions_file")
        docs = []
        for p, only in zip(passages, passage_only):
            if p.context not in completions:
                raise ValueError(f"no completions in the file for passage {p.id} ({p.title!r})")
            body = [d for e in completions[p.context] for d in self_edit_documents(p, e, settings.prompt, opts)
                    if d != only[0]]
            docs.append(body + (only if opts.append_passage else []))
        return docs
    raise ValueError(f"unknown condition {condition!r}; choose among {CONDITIONS}")


def accuracy_of(learner, cfg, tok, passages: Sequence[Passage], docs: Sequence[Sequence[str]],
                settings: KnowledgeSettings, key, mode: str = "single", cpt_n: int = 0, desc: str = "eval") -> float:
    """Mean accuracy over the passages' questions after the updates (single: one LoRA per passage)."""
    if mode == "single":
        items = [Item(i, (p,), tuple(d)) for i, (p, d) in enumerate(zip(passages, docs))]
    elif mode == "cpt":
        n = cpt_n or len(passages)
        items = [Item(i, tuple(passages[j:j + n]), tuple(x for d in docs[j:j + n] for x in d))
                 for i, j in enumerate(range(0, len(passages), n))]
    else:
        raise ValueError(f"mode {mode!r}; choose single or cpt")
    scores, weights, judge_failures = [], [], 0
    for chunk in adapt_and_grade(learner, cfg, tok, items, settings, key, desc=desc):
        for r in chunk:
            scores.append(r.reward)
            weights.append(sum(len(p.questions) for p in r.item.passages))
            judge_failures += r.judge_failures
    warn_judge_failures(judge_failures, desc)
    return float(np.average(scores, weights=weights))


def warn_judge_failures(n: int, what: str) -> None:
    if n:
        log.warning("%s: %d judge calls failed (endpoint down or no yes/no reply); those answers count as wrong",
                    what, n)


def run_conditions(learner, generator, cfg, tok, passages: Sequence[Passage], settings: KnowledgeSettings, key,
                   conditions: Sequence[str] = ("base", "passage", "self_edit"), completions: Optional[dict] = None,
                   mode: str = "single", cpt_n: int = 0) -> dict:
    """{condition: accuracy}. `learner` is updated; `generator` writes the self_edit condition's self-edits."""
    out = {}
    for i, cond in enumerate(conditions):
        k = jax.random.fold_in(key, i)
        if cond == "base":
            base = baseline(learner, cfg, tok, passages, settings)
            warn_judge_failures(sum(b["judge_failures"] for b in base.values()), "eval: base")
            out[cond] = float(np.average([base[p.id]["accuracy"] for p in passages],
                                         weights=[len(p.questions) for p in passages]))
            continue
        if mode == "cpt":  # CPT keeps each generation whole (SEAL), one document per self-edit
            settings = dataclasses.replace(settings, documents=dataclasses.replace(settings.documents,
                                                                                   split_lines=False))
        docs = condition_docs(cond, passages, settings, generator, cfg, tok, completions, k)
        out[cond] = accuracy_of(learner, cfg, tok, passages, docs, settings, k, mode, cpt_n, f"eval: {cond}")
    return out


def continual(params, cfg, tok, passages: Sequence[Passage], docs: Sequence[Sequence[str]],
              settings: KnowledgeSettings, key) -> np.ndarray:
    """Sequential updates merged into the weights; acc[i, j] = accuracy on passage j after update i (j <= i)."""
    icfg = settings.adapt.inner
    n = len(passages)
    acc = np.full((n, n), np.nan)
    for i in range(n):
        packed = pack_edits([[tokenize_document(tok, d) for d in docs[i]]], [settings.lr], [settings.epochs],
                            batch_size=icfg.batch_size, max_len=settings.adapt.max_len)
        edits, hparams = packed.arrays()
        lora, _ = inner_train_edits(params, edits, np.asarray(jax.random.fold_in(key, i))[None], hparams, cfg=cfg,
                                    icfg=icfg, steps=packed.steps)
        params = merge_lora(params, jax.tree.map(lambda x: x[0], lora), icfg.lora)
        base = baseline(params, cfg, tok, passages[:i + 1], settings)
        acc[i, :i + 1] = [base[p.id]["accuracy"] for p in passages[:i + 1]]
    return acc
