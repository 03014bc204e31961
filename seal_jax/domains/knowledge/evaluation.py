"""SEAL's knowledge-incorporation evaluation (paper Table 2), each condition scored on questions asked *without*
the passage:

  base             no update (the base model)
  passage          train on the passage only (SEAL's "Train on Passage")
  self_edit_base   train on the passage + self-edits the base model writes
  file             train on the passage + self-edits read from a file (SEAL's synthetic-data format: records
                   with `completions: [str]`, e.g. GPT-4.1-written data); the first k non-empty ones (SEAL: k=1)
  self_edit_rl     train the RL-trained model on the passage + self-edits it writes (SEAL's row; its TTT server
                   serves the RL checkpoint as generator and learner)
  self_edit        the generator (a run's, if given) writes; `learner` is updated (the general form)

Modes (SEAL's two columns): `single`, one LoRA per passage, k=1 self-edit, accuracy averaged per passage
(query_server.py lines 221-280); `cpt`, one LoRA over n passages jointly: k=5 whole completions per passage, the
passage appended once per completion, question-weighted accuracy, its own LoRA settings (CPT.py, CPT.sh).
`continual` is SEAL's forgetting protocol (continual_self_edits.py): sequences of K random passages; row 0 is the
no-edit model; at step k the *current merged* model writes the self-edit for passage k, a LoRA is trained on it,
every passage so far is re-scored, and the LoRA is merged. SEAL ran it as 8 jobs (seeds 42..49) of 8 sequences
each and reported the mean of the jobs' means and the mean of the jobs' standard deviations (average_results.py).

Self-edits in evaluation are SEAL's: the first k non-empty of 5 samples per passage (its evaluation files hold 5
completions per passage, query_server.py and CPT.py take the first k non-empty), drawn lazily (`seal_self_edits`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random
from typing import Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.knowledge.passages import Passage, json_lines
from seal_jax.domains.knowledge.self_edit import DocOptions, build_documents, self_edit_prompt_ids
from seal_jax.domains.knowledge.settings import KnowledgeSettings
from seal_jax.domains.knowledge.updates import Item, adapt_and_grade, baseline
from seal_jax.engine.inner import inner_train_edits, pack_edits, tokenize_document
from seal_jax.engine.sampling import sample_self_edits
from seal_jax.model.lora import merge_lora

log = logging.getLogger(__name__)

CONDITIONS = ("base", "passage", "self_edit_base", "file", "self_edit_rl", "self_edit")
MODES = ("single", "cpt")

# Paper Table 2 (%), as issue 15 quotes it: single passage (n=1) and continued pretraining (n=200).
PAPER_TABLE2 = {
    "single": {"base": 32.7, "passage": 33.5, "self_edit_base": 39.7, "file": 46.3, "self_edit_rl": 47.0},
    "cpt": {"passage": 36.0, "self_edit_base": 50.6, "file": 59.4, "self_edit_rl": 58.2},
}
# The same rows in SEAL's stored result files (knowledge-incorporation/results/query_server/eval/{base,naive,
# gpt4_1,iter2}.json, results/cpt/cpt_{base,naive,gpt4_1,iter2}.json), in %.
SEAL_RESULT_FILES = {
    "single": {"base": 32.67, "passage": 33.51, "self_edit_base": 39.68, "file": 46.31, "self_edit_rl": 46.99},
    "cpt": {"base": 32.55, "passage": 32.24, "self_edit_base": 40.97, "file": 39.43, "self_edit_rl": 43.84},
}
ROW_NAMES = {"base": "Base model", "passage": "Train on passage", "self_edit_base": "Passage + self-edits (base model)",
             "file": "Passage + external self-edits (file)", "self_edit_rl": "SEAL: self-edits after RL",
             "self_edit": "Passage + self-edits (generator)"}


@dataclasses.dataclass(frozen=True)
class CptSettings:
    """SEAL's CPT run (CPT.sh line 25; cpt_naive.json): k=5 completions, one LoRA over all n passages, 3 epochs,
    lr 1e-3 (passage only: 1e-4), effective batch 8 (4 x accumulation 2), whole completions (no line split)."""
    n: int = 0                    # passages per LoRA (0: all)
    k: int = 5
    epochs: int = 3
    lr: float = 1e-3
    passage_lr: float = 1e-4
    batch_size: int = 8


# Completions per passage in SEAL's evaluation files (data/synthetic_data/eval/{base,iter2}_val.json.meta "k": 5,
# scripts/make_squad_data.sh:22): the pool its first-k-non-empty rule draws from.
SEAL_EVAL_POOL = 5


@dataclasses.dataclass(frozen=True)
class ContinualSettings:
    """SEAL's continual runs (continual_self_edits.sh): `runs` jobs, job j drawing `sequences` sequences of K
    passages with random.sample seeded `seed + j` (SEAL: 8 jobs, seeds 42..49, x 8 sequences); one self-edit per
    step from the current merged model, split into lines; one inner update each."""
    sequences: int = 8
    k: int = 8
    seed: int = 42
    condition: str = "self_edit"  # self_edit (the current model writes) | passage | file
    runs: int = 1


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


def documents_of(p: Passage, completions: Sequence[str], opts: DocOptions, cpt: bool) -> list[str]:
    """Training documents for passage `p` from its completions. CPT (SEAL): each completion's documents with the
    passage appended, so k copies of the passage. Single: k=1 is SEAL's; for k > 1 the completions' documents
    go into one update with the passage once (SEAL would train on each apart and average)."""
    if not completions:
        return build_documents(p.title, p.context, "", opts)  # SEAL's passage-only set
    if cpt or len(completions) == 1:
        return [d for c in completions for d in build_documents(p.title, p.context, c, opts)]
    body = [d for c in completions for d in build_documents(p.title, p.context, c, dataclasses.replace(
        opts, append_passage=False))]
    return body + build_documents(p.title, p.context, "", dataclasses.replace(opts, split_lines=True))


def file_completions(p: Passage, completions: Optional[dict], k: int) -> list[str]:
    """SEAL's choice from a synthetic-data file: the first k non-empty completions (query_server.py line 202)."""
    if completions is None:
        raise ValueError("condition 'file' needs --config.eval.completions_file")
    if p.context not in completions:
        raise ValueError(f"no completions in the file for passage {p.id} ({p.title!r})")
    chosen = [c for c in completions[p.context] if c.strip()][:k]
    if not chosen:
        raise ValueError(f"the file's completions for passage {p.id} ({p.title!r}) are all empty")
    return chosen


def seal_self_edits(generator, cfg, tok, prompts: Sequence[Sequence[int]], k: int, settings: KnowledgeSettings,
                    key, pool: int = SEAL_EVAL_POOL) -> list[list[str]]:
    """Per prompt, the first k non-empty of max(k, pool) samples (SEAL: query_server.py:202, CPT.py:117 over its
    5-completion files), drawn lazily: k first, then one more per missing self-edit per round while the pool
    lasts (round r samples with fold_in(key, r)). A prompt whose pool is all empty gets [] (SEAL's CPT then
    trains on the passage alone, CPT.py:119-120)."""
    pool = max(k, pool)
    drawn = sample_self_edits(generator, cfg, tok, prompts, k, settings.self_edits, key)
    used = [k] * len(prompts)
    chosen = [[e for e in es if e.strip()] for es in drawn]
    for r in range(1, pool - k + 1):
        short = [i for i, es in enumerate(chosen) if len(es) < k and used[i] < pool]
        if not short:
            break
        asks = [i for i in short for _ in range(min(k - len(chosen[i]), pool - used[i]))]
        more = sample_self_edits(generator, cfg, tok, [prompts[i] for i in asks], 1, settings.self_edits,
                                 jax.random.fold_in(key, r), desc="resampling empty self-edits")
        for i, (text,) in zip(asks, more):
            used[i] += 1
            if text.strip():
                chosen[i].append(text)
    return chosen


def condition_docs(condition: str, passages: Sequence[Passage], settings: KnowledgeSettings, generator=None,
                   cfg=None, tok=None, completions: Optional[dict] = None, key=None, k: int = 0,
                   cpt: bool = False) -> list[list[str]]:
    """Training documents per passage for a condition; `generator` (params) writes the self-edit conditions'
    k self-edits per passage (k=0: settings.eval_self_edits). CPT keeps each completion whole (SEAL)."""
    k = k or settings.eval_self_edits
    opts = dataclasses.replace(settings.documents, split_lines=False) if cpt else settings.documents
    if condition == "passage":
        return [documents_of(p, [], opts, cpt) for p in passages]
    if condition in ("self_edit", "self_edit_base", "self_edit_rl"):
        prompts = [self_edit_prompt_ids(tok, p, settings.prompt, settings.chat) for p in passages]
        edits = seal_self_edits(generator, cfg, tok, prompts, k, settings, key)
        return [documents_of(p, es, opts, cpt) for p, es in zip(passages, edits)]
    if condition == "file":
        return [documents_of(p, file_completions(p, completions, k), opts, cpt) for p in passages]
    raise ValueError(f"unknown condition {condition!r}; choose among {CONDITIONS}")


def accuracy_of(learner, cfg, tok, passages: Sequence[Passage], docs: Sequence[Sequence[str]],
                settings: KnowledgeSettings, key, mode: str = "single", cpt_n: int = 0, desc: str = "eval", *,
                mesh=None) -> float:
    """Accuracy on the passages' questions after the updates. single: one LoRA per passage, the mean over passages
    of each passage's accuracy (SEAL's macro average); cpt: one LoRA per `cpt_n` passages (0: all), accuracy
    over all their questions. With a mesh, the updates run edit-parallel on it (`learner` placed there)."""
    if mode == "single":
        items = [Item(i, (p,), tuple(d)) for i, (p, d) in enumerate(zip(passages, docs))]
    elif mode == "cpt":
        n = cpt_n or len(passages)
        items = [Item(i, tuple(passages[j:j + n]), tuple(x for d in docs[j:j + n] for x in d))
                 for i, j in enumerate(range(0, len(passages), n))]
    else:
        raise ValueError(f"mode {mode!r}; choose single or cpt")
    scores, weights, judge_failures = [], [], 0
    for chunk in adapt_and_grade(learner, cfg, tok, items, settings, key, mesh=mesh, desc=desc):
        for r in chunk:
            scores.append(r.reward)
            weights.append(1 if mode == "single" else sum(len(p.questions) for p in r.item.passages))
            judge_failures += r.judge_failures
    warn_judge_failures(judge_failures, desc)
    return float(np.average(scores, weights=weights))


def warn_judge_failures(n: int, what: str) -> None:
    if n:
        log.warning("%s: %d judge calls failed after their retries; those answers count as wrong", what, n)


def base_accuracy(params, cfg, tok, passages: Sequence[Passage], settings: KnowledgeSettings, mode: str) -> float:
    """No-update accuracy: per-passage mean (single) or over all questions (cpt), as SEAL reports each."""
    base = baseline(params, cfg, tok, passages, settings)
    warn_judge_failures(sum(b["judge_failures"] for b in base.values()), "eval: base")
    weights = [1 if mode == "single" else len(p.questions) for p in passages]
    return float(np.average([base[p.id]["accuracy"] for p in passages], weights=weights))


def cpt_settings(settings: KnowledgeSettings, cpt: CptSettings, condition: str) -> KnowledgeSettings:
    """The inner update of SEAL's CPT run: its epochs, lr (passage only: its own) and batch."""
    inner = dataclasses.replace(settings.adapt.inner, batch_size=cpt.batch_size)
    return dataclasses.replace(settings, epochs=cpt.epochs, lr=cpt.passage_lr if condition == "passage" else cpt.lr,
                               adapt=dataclasses.replace(settings.adapt, inner=inner))


def run_conditions(learner, generator, cfg, tok, passages: Sequence[Passage], settings: KnowledgeSettings, key,
                   conditions: Sequence[str] = ("base", "passage", "self_edit"), completions: Optional[dict] = None,
                   mode: str = "single", cpt_n: int = 0, cpt: Optional[CptSettings] = None, *, mesh=None) -> dict:
    """{condition: accuracy}. `learner` is the base model (updated by base/passage/file/self_edit_base/self_edit);
    `generator` writes self_edit's self-edits and is both generator and learner for self_edit_rl. With a mesh
    (both placed on it), inner updates run edit-parallel there."""
    out = {}
    for i, cond in enumerate(conditions):
        k = jax.random.fold_in(key, i)
        if cond == "base":
            out[cond] = base_accuracy(learner, cfg, tok, passages, settings, mode)
            continue
        writer = {"self_edit_base": learner, "self_edit_rl": generator, "self_edit": generator}.get(cond)
        trained = generator if cond == "self_edit_rl" else learner
        s, n_edits = settings, 0
        if mode == "cpt":
            cpt = cpt or CptSettings(n=cpt_n)
            s, n_edits = cpt_settings(settings, cpt, cond), cpt.k
        docs = condition_docs(cond, passages, s, writer, cfg, tok, completions, k, n_edits, cpt=mode == "cpt")
        out[cond] = accuracy_of(trained, cfg, tok, passages, docs, s, k, mode, cpt.n if mode == "cpt" else cpt_n,
                                f"eval {mode}: {cond}", mesh=mesh)
    return out


def table2(accuracy_by_mode: dict[str, dict[str, float]]) -> list[dict]:
    """Paper Table 2 rows beside ours (%, ours rounded to 0.1): one row per (mode, condition) evaluated."""
    rows = []
    for mode, acc in accuracy_by_mode.items():
        for cond, value in acc.items():
            rows.append({"mode": mode, "condition": cond, "row": ROW_NAMES.get(cond, cond),
                         "ours": round(100 * value, 1), "paper": PAPER_TABLE2.get(mode, {}).get(cond),
                         "seal_result_files": SEAL_RESULT_FILES.get(mode, {}).get(cond)})
    return rows


def format_table2(rows: Sequence[dict]) -> str:
    lines = [f"{'mode':7s} {'row':40s} {'ours':>6s} {'paper':>6s} {'SEAL files':>10s}"]
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        lines.append(f"{r['mode']:7s} {r['row']:40s} {fmt(r['ours']):>6s} {fmt(r['paper']):>6s} "
                     f"{fmt(r['seal_result_files']):>10s}")
    return "\n".join(lines)


def continual_step(params, cfg, tok, docs: Sequence[str], settings: KnowledgeSettings, key):
    """One inner update on `docs`, merged into `params`."""
    icfg = settings.adapt.inner
    packed = pack_edits([[tokenize_document(tok, d) for d in docs]], [settings.lr], [settings.epochs],
                        batch_size=icfg.batch_size, max_len=settings.adapt.max_len)
    edits, hparams = packed.arrays()
    lora, _ = inner_train_edits(params, edits, np.asarray(key)[None], hparams, cfg=cfg, icfg=icfg, steps=packed.steps)
    return merge_lora(params, jax.tree.map(lambda x: x[0], lora), icfg.lora)


def continual_sequence(params, cfg, tok, passages: Sequence[Passage], settings: KnowledgeSettings, key,
                       condition: str = "self_edit", completions: Optional[dict] = None) -> np.ndarray:
    """One sequence of SEAL's continual protocol: a (K+1) x K matrix, row 0 the no-edit model's accuracy on each
    passage, row r (after r edits merged) the accuracy on passages 0..r-1 (NaN elsewhere; SEAL writes 0.0)."""
    n = len(passages)
    acc = np.full((n + 1, n), np.nan)
    base = baseline(params, cfg, tok, passages, settings)
    acc[0] = [base[p.id]["accuracy"] for p in passages]
    opts = dataclasses.replace(settings.documents, split_lines=True)  # continual_self_edits.py line 262
    for i, p in enumerate(passages):
        k_docs, k_train = jax.random.split(jax.random.fold_in(key, i))
        if condition == "self_edit":  # written by the current merged model
            edit = sample_self_edits(params, cfg, tok, [self_edit_prompt_ids(tok, p, settings.prompt, settings.chat)],
                                     1, settings.self_edits, k_docs)[0][0]
            docs = build_documents(p.title, p.context, edit if edit.strip() else p.context, opts)
        elif condition == "passage":
            docs = build_documents(p.title, p.context, "", opts)
        elif condition == "file":
            docs = build_documents(p.title, p.context, file_completions(p, completions, 1)[0], opts)
        else:
            raise ValueError(f"continual condition {condition!r}; choose self_edit, passage or file")
        params = continual_step(params, cfg, tok, docs, settings, k_train)
        res = baseline(params, cfg, tok, passages[:i + 1], settings)
        acc[i + 1, :i + 1] = [res[q.id]["accuracy"] for q in passages[:i + 1]]
    return acc


def seal_average(mats: np.ndarray) -> dict:
    """SEAL's statistics of continual matrices [runs, sequences, K+1, K]: per run the mean and the sample standard
    deviation over its sequences (continual_self_edits.py:428-433; 0 for a single sequence), then the mean of the
    runs' means and the mean of the runs' standard deviations (average_results.py:124-125; SEAL rounds both to 4
    places). Cells not yet measured stay NaN (SEAL writes 0.0)."""
    run_means = mats.mean(axis=1)
    run_stds = mats.std(axis=1, ddof=1) if mats.shape[1] > 1 else np.where(np.isnan(run_means), np.nan, 0.0)
    return {"run_means": run_means, "run_stds": run_stds, "mean": run_means.mean(axis=0),
            "std": run_stds.mean(axis=0), "n_sequences": mats.shape[0] * mats.shape[1]}


def continual(params, cfg, tok, pool: Sequence[Passage], settings: KnowledgeSettings, key,
              cont: ContinualSettings = ContinualSettings(), completions: Optional[dict] = None) -> dict:
    """SEAL's continual protocol: `cont.runs` runs, run j drawing `cont.sequences` sequences of `cont.k` passages
    from `pool` (Python's random seeded `cont.seed + j`, random.sample per sequence, continual_self_edits.py:403,
    418): per-sequence matrices (run-major), SEAL's per-run and overall statistics (`seal_average`)."""
    if cont.k > len(pool):
        raise ValueError(f"continual: sequences of {cont.k} passages, but only {len(pool)} to draw from")
    sequences = []
    for run in range(cont.runs):
        rng = random.Random(cont.seed + run)
        sequences.append([rng.sample(list(pool), cont.k) for _ in range(cont.sequences)])
    mats = np.stack([np.stack([continual_sequence(params, cfg, tok, seq, settings,
                                                  jax.random.fold_in(jax.random.fold_in(key, run), s),
                                                  cont.condition, completions)
                               for s, seq in enumerate(run_sequences)])
                     for run, run_sequences in enumerate(sequences)])
    return {"condition": cont.condition, "k": cont.k, "runs": cont.runs,
            "seeds": [cont.seed + run for run in range(cont.runs)],
            "sequences": [[p.id for p in seq] for run_sequences in sequences for seq in run_sequences],
            "matrices": mats.reshape(-1, *mats.shape[2:]), **seal_average(mats)}
