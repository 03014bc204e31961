"""SEAL knowledge incorporation with ReST-EM, resumable.

One iteration:
  E-step  draw C passages; the generator samples K self-edits each (one batched sampler call); every
          self-edit becomes training documents and a LoRA (vmapped inner loop, in chunks); each adapted
          model answers its passage's questions without the passage; reward = fraction correct. Records
          are appended to DIR/records.jsonl chunk by chunk, so a restart skips finished work.
  M-step  keep the best self-edit per passage (ties to the earlier sample; must beat the baseline by
          `rl.threshold`), SFT the generator on (prompt -> self-edit) with loss on the self-edit only:
          the same LoRA update as the inner loop, one "edit" holding all kept examples, then merged.
The merged model is the next generator and the next inner-loop learner.
"""
from __future__ import annotations

import logging
import functools
import time
from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from seal_jax.domains import knowledge as K
from seal_jax.engine.inner import (InnerConfig, inner_config, pack_edits, summarize, take_edits, tokenize_document,
                            train_in_chunks)
from seal_jax.engine.outer import keep_best, outer_update
from seal_jax.engine.sampling import SamplingConfig, generate_in_batches
from seal_jax.engine.answering import answer_questions
from seal_jax.tokenizer import chat_prompt
from seal_jax.runtime.workdir import Workdir

log = logging.getLogger(__name__)


def doc_options(c) -> K.DocOptions:
    return K.DocOptions(c.split_lines, c.drop_preamble, c.prefix_title, c.append_passage)


def self_edit_prompt(tok, p: K.Passage, prompt: str) -> list[int]:
    return chat_prompt(tok, K.PROMPTS[prompt].format(title=p.title, context=p.context))


def sample_self_edits(params, cfg, tok, passages: Sequence[K.Passage], k: int, sec, key) -> list[list[str]]:
    """[C][K] self-edit texts, one batched sampler call per `sec.batch` prompts (deterministic in key)."""
    prompts = [self_edit_prompt(tok, p, sec.prompt) for p in passages for _ in range(k)]
    texts = generate_in_batches(params, cfg, tok, prompts, SamplingConfig(sec.max_new_tokens, sec.temperature,
                                                                         sec.top_p), sec.batch, key,
                                "sampling self-edits")
    return [texts[i * k:(i + 1) * k] for i in range(len(passages))]


@functools.lru_cache(maxsize=1)
def model_judge(path: str):
    """A seal-jax model as judge, loaded once per process (the one cache in this module)."""
    from seal_jax.judge import ModelJudge
    from seal_jax.weights import load_model
    cfg, params, tok = load_model(path)
    return ModelJudge(params, cfg, tok)


def grade_answers(ev, questions: Sequence[str], preds: Sequence[str],
                  golds: Sequence[str]) -> tuple[list[float], list[bool]]:
    """Scores in [0, 1] and per-answer judge-failure flags, by `ev.grader`: a string grader, judge-http (an
    OpenAI-compatible endpoint) or judge-model (a seal-jax model path or name as the judge)."""
    if ev.grader in ("judge-http", "judge-model") and not ev.judge_model:
        raise ValueError(f"grader {ev.grader} needs --config.eval.judge_model")
    if ev.grader == "judge-http":
        from seal_jax.judge import HttpJudge
        if not ev.judge_url:
            raise ValueError("grader judge-http needs --config.eval.judge_url")
        return HttpJudge(ev.judge_url, ev.judge_model)(questions, preds, golds)
    if ev.grader == "judge-model":
        return model_judge(ev.judge_model)(questions, preds, golds)
    return K.grade(preds, golds, ev.grader), [False] * len(preds)


def baseline(params, cfg, tok, passages: Sequence[K.Passage], ev) -> dict[str, dict]:
    """No-update answers and accuracy per passage: computed once per context and reused."""
    qs = [(p, q, a) for p in passages for q, a in p.questions]
    out = answer_questions(params, cfg, tok, [K.QUESTION_TEMPLATE.format(title=p.title, question=q) for p, q, _ in qs],
                           max_new_tokens=ev.max_new_tokens)
    scores, failed = grade_answers(ev, [q for _, q, _ in qs], out.texts, [a for _, _, a in qs])
    res: dict[str, dict] = {}
    for (p, _, _), text, s, f in zip(qs, out.texts, scores, failed):
        r = res.setdefault(p.id, {"answers": [], "scores": [], "judge_failures": 0})
        r["answers"].append(text)
        r["scores"].append(s)
        r["judge_failures"] += int(f)
    for r in res.values():
        r["accuracy"] = float(np.mean(r["scores"]))
    return res


def adapt_and_grade(params, cfg, tok, items: Sequence[dict], icfg: InnerConfig, inner, ev, key, desc: str, mesh=None):
    """Train one LoRA per item, answer its passages' questions without the passages, grade.

    An item is `{"uid": int, "docs": [str], "passages": [Passage]}`: one passage for a single-passage
    update, several for continued pre-training (CPT) on n passages jointly. Yields per chunk a list of
    result dicts; `reward` is the accuracy over all the item's questions, averaged over `ev.eval_repeats`
    training seeds.
    """
    reps = max(1, ev.eval_repeats)
    if not items:
        return
    flat = [(it, r) for it in items for r in range(reps)]
    examples = [[tokenize_document(tok, d) for d in it["docs"]] for it, _ in flat]
    packed = pack_edits(examples, [inner.lr] * len(flat), [inner.epochs] * len(flat),
                        batch_size=icfg.batch_size, max_len=inner.max_len)
    keys = np.stack([np.asarray(jax.random.fold_in(jax.random.fold_in(key, it["uid"]), r)) for it, r in flat])
    chunk = inner.edits_per_chunk * reps  # whole items per chunk, so results stream item by item
    bar = tqdm(total=len(items), desc=desc, leave=False)
    for start, stop, lora, metrics in train_in_chunks(params, cfg, icfg, packed, keys, chunk, mesh):
        rows = [(i - start, p, q, a) for i in range(start, stop) for p in flat[i][0]["passages"] for q, a in p.questions]
        out = answer_questions(params, cfg, tok, [K.QUESTION_TEMPLATE.format(title=p.title, question=q) for _, p, q, _ in rows],
                               max_new_tokens=ev.max_new_tokens, lora=lora, lora_scale=icfg.lora.scale,
                               adapter_of_row=[r for r, _, _, _ in rows])
        scores, failed = grade_answers(ev, [q for _, _, q, _ in rows], out.texts, [a for *_, a in rows])
        summary = summarize(metrics)
        per_edit: dict[int, dict] = {}
        for (r, *_), text, s, f in zip(rows, out.texts, scores, failed):
            e = per_edit.setdefault(r, {"answers": [], "scores": [], "judge_failures": 0})
            e["answers"].append(text)
            e["scores"].append(s)
            e["judge_failures"] += int(f)
        results = []
        for j in range(0, stop - start, reps):
            it = flat[start + j][0]
            accs = [float(np.mean(per_edit[j + r]["scores"])) if summary[j + r]["ok"] else 0.0 for r in range(reps)]
            failed = [summary[j + r]["reason"] for r in range(reps) if not summary[j + r]["ok"]]
            results.append({"item": it, "reward": float(np.mean(accs)), "repeat_rewards": accs,
                            "answers": per_edit[j]["answers"],
                            "train_tokens": take_edits(packed, start + j, start + j + reps).train_tokens(),
                            "ok": not failed, "reason": failed[0] if failed else None,
                            "final_loss": summary[j]["last_loss"], "truncated_docs": packed.truncated,
                            "judge_failures": sum(per_edit[j + r]["judge_failures"] for r in range(reps))})
        bar.update(len(results))
        yield results
    bar.close()


def run_iteration(it: int, params, cfg, tok, train: Sequence[K.Passage], c, wd: Workdir, key, mesh=None):
    """E-step (resumable) + M-step of iteration `it`; returns (new params, metrics)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([c.seed, it])
    chosen = [train[i] for i in rng.choice(len(train), size=min(c.rl.contexts, len(train)), replace=False)]
    k_sample, k_inner, k_outer = jax.random.split(jax.random.fold_in(key, it), 3)
    records = wd.records(iteration=it)  # scored before a restart; this iteration's rows are added as they come
    done = {(r["passage_id"], r["sample"]) for r in records}
    edits = wd.cached_json(f"samples/{it}.json", lambda: sample_self_edits(params, cfg, tok, chosen, c.rl.samples,
                                                                           c.self_edit, k_sample))
    base = baseline(params, cfg, tok, chosen, c.eval)
    items = [{"passages": [p], "sample": s, "self_edit": edits[i][s], "uid": i * c.rl.samples + s,
              "docs": K.self_edit_documents(p, edits[i][s], c.self_edit.prompt, doc_options(c.self_edit))}
             for i, p in enumerate(chosen) for s in range(c.rl.samples) if (p.id, s) not in done]
    if done:
        log.info("iteration %d: resuming, %d of %d self-edits already scored", it, len(done), len(chosen) * c.rl.samples)
    icfg = inner_config(c.inner)
    t_inner, inner_tokens = time.perf_counter(), 0
    for results in adapt_and_grade(params, cfg, tok, items, icfg, c.inner, c.eval, k_inner, f"iter {it} inner updates", mesh):
        inner_tokens += sum(r["train_tokens"] for r in results)
        rows = [{"iteration": it, "passage_id": r["item"]["passages"][0].id, "sample": r["item"]["sample"],
                 "self_edit": r["item"]["self_edit"], "reward": r["reward"],
                 "baseline": base[r["item"]["passages"][0].id]["accuracy"],
                 "gain": r["reward"] - base[r["item"]["passages"][0].id]["accuracy"], "answers": r["answers"],
                 "ok": r["ok"], "reason": r["reason"], "final_loss": r["final_loss"],
                 "judge_failures": r["judge_failures"]} for r in results]
        wd.append_records(rows)
        records += rows
    inner_s = time.perf_counter() - t_inner
    t_e = time.perf_counter() - t0
    kept = keep_best(records, "passage_id", c.rl.threshold, c.rl.min_reward)
    by_id = {p.id: p for p in chosen}
    metrics = {"reward_mean": float(np.mean([r["reward"] for r in records])),
               "reward_max": float(np.max([r["reward"] for r in records])),
               "baseline_accuracy": float(np.mean([b["accuracy"] for b in base.values()])),
               "adapted_accuracy": float(np.mean([r["reward"] for r in records])),
               "kept_fraction": len(kept) / max(1, len(chosen)), "e_step_s": t_e,
               "inner_tokens_per_s": inner_tokens / max(1e-9, inner_s),
               "failed_edits": sum(not r["ok"] for r in records),
               "judge_failures": sum(r.get("judge_failures", 0) for r in records)
               + sum(b["judge_failures"] for b in base.values())}
    if kept:
        examples = [(self_edit_prompt(tok, by_id[r["passage_id"]], c.self_edit.prompt), r["self_edit"]) for r in kept]
        with tqdm(total=1, desc=f"iter {it} M-step ({len(kept)} examples)", leave=False) as bar:
            params, s = outer_update(params, cfg, tok, examples, c.rl, k_outer)
            bar.update()
        metrics.update(m_step_first_loss=s["first_loss"], m_step_last_loss=s["last_loss"])
    else:
        log.warning("iteration %d: no self-edit beat the baseline; the generator is unchanged", it)
    metrics["iteration_s"] = time.perf_counter() - t0
    return params, metrics


def load_data(c):
    """(train passages, held-out passages) for the config."""
    passages = K.load_passages(c.data.source, c.data.limit or None)
    return K.split_passages(passages, c.data.held_out)


def final_eval(initial, params, cfg, tok, held_out, c, key) -> dict:
    """Held-out accuracy: base, passage only, passage + self-edits before and after RL."""
    from seal_jax.evaluate import run_conditions
    before = run_conditions(initial, (initial, cfg, tok), cfg, tok, held_out, c, key)
    after = run_conditions(params, (params, cfg, tok), cfg, tok, held_out, c, key, conditions=("self_edit",))
    return {"base": before["base"], "passage_only": before["passage"],
            "self_edit_before_rl": before["self_edit"], "self_edit_after_rl": after["self_edit"]}
