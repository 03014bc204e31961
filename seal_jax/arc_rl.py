"""SEAL few-shot ARC with ReST-EM, on the same inner loop, workdir and M-step as the knowledge domain.

E-step: for C training tasks the generator samples K self-edits (JSON: augmentations, loss mode, lr, epochs).
Each valid self-edit becomes test-time-training data from the task's demonstrations; all LoRAs of a chunk
train in one vmapped call (per-edit lr, epochs and loss mode are data); each adapted model predicts the
held-out test output under several invertible views, votes, and the reward is 1 if an attempt is right.
Malformed or over-budget self-edits score 0 with the reason recorded. M-step: SFT on the self-edits that
solved their task (loss on the JSON only), merged into the generator.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import jax
import numpy as np

from seal_jax.domains import arc as A
from seal_jax.engine.inner import inner_config, pack_edits, summarize, tokenize_document, train_in_chunks
from seal_jax.engine.outer import keep_successful, outer_update
from seal_jax.engine.sampling import SamplingConfig, generate, generate_in_batches
from seal_jax.tokenizer import chat_prompt
from seal_jax.runtime.workdir import Workdir

log = logging.getLogger(__name__)


def limits(c) -> A.Limits:
    return A.Limits(lr_min=c.lr_min, lr_max=c.lr_max, epochs_max=c.epochs_max, max_steps=c.max_steps)


def load_data(c):
    """(training tasks for RL, held-out tasks for evaluation)."""
    if c.data.source == "synthetic":
        tasks = A.synthetic_tasks(c.data.limit or 4, c.seed)
        return tasks, tasks
    train = A.load_tasks(tuple(c.data.train_ids.split(",")) if c.data.train_ids else (), "train", c.data.limit)
    held = A.load_tasks(tuple(c.data.eval_ids.split(",")) if c.data.eval_ids else (), c.data.eval_split,
                        c.data.eval_limit) if (c.data.eval_ids or c.data.eval_limit) else train
    return train, held


def adapt_and_solve(params, cfg, tok, items: Sequence[dict], c, key, desc="TTT", mesh=None):
    """Items `{"uid", "task", "edit": SelfEdit}` -> yields per chunk [{"item", "solved", "attempts", ...}]."""
    from tqdm.auto import tqdm
    icfg = inner_config(c.inner)
    if not items:
        return
    examples, too_long = [], []
    for it in items:
        rng = np.random.default_rng([c.seed, it["uid"]])
        docs = A.ttt_examples(it["task"], it["edit"], rng, leave_two_out=c.ttt.leave_two_out,
                              colour_perms=c.ttt.colour_perms, max_examples=c.ttt.max_examples)
        toks = [tokenize_document(tok, d, it["edit"].loss) for d in docs]
        # an example cut at max_len would lose its output grid, the part that is trained: drop it instead
        examples.append([t for t in toks if len(t[0]) <= c.inner.max_len])
        too_long.append(len(toks) - len(examples[-1]))
    packed = pack_edits(examples, [it["edit"].lr for it in items], [it["edit"].epochs for it in items],
                        batch_size=icfg.batch_size, max_len=c.inner.max_len)
    keys = np.stack([np.asarray(jax.random.fold_in(key, it["uid"])) for it in items])
    bar = tqdm(total=len(items), desc=desc, leave=False)
    for start, stop, lora, metrics in train_in_chunks(params, cfg, icfg, packed, keys, c.inner.edits_per_chunk, mesh):
        summary = summarize(metrics)
        vs = [A.views(items[i]["task"], c.ttt.views) for i in range(start, stop)]
        prompts = [tok.encode(p, add_special_tokens=False) for v in vs for p, _ in v]
        rows = [j for j, v in enumerate(vs) for _ in v]
        out = generate(params, cfg, tok, prompts, SamplingConfig(c.ttt.max_new_tokens), lora=lora,
                       lora_scale=icfg.lora.scale, adapter_of_row=rows)
        results, pos = [], 0
        for j, v in enumerate(vs):
            texts = out.texts[pos:pos + len(v)]
            pos += len(v)
            attempts = A.predict_from_texts(texts, [t for _, t in v], c.ttt.attempts)
            it = items[start + j]
            ok = summary[j]["ok"]
            results.append({"item": it, "ok": ok, "reason": summary[j]["reason"],
                            "solved": bool(ok and A.solved(attempts, it["task"].test_output)),
                            "attempts": [a.tolist() for a in attempts], "train_examples": len(examples[start + j]),
                            "dropped_too_long": too_long[start + j]})
        bar.update(len(results))
        yield results
    bar.close()


def icl_solved(params, cfg, tok, tasks, c) -> list[bool]:
    """No update: predict from the demonstrations in context, same views and vote."""
    vs = [A.views(t, c.ttt.views) for t in tasks]
    prompts = [tok.encode(p, add_special_tokens=False) for v in vs for p, _ in v]
    out = generate(params, cfg, tok, prompts, SamplingConfig(c.ttt.max_new_tokens))
    res, pos = [], 0
    for t, v in zip(tasks, vs):
        attempts = A.predict_from_texts(out.texts[pos:pos + len(v)], [tr for _, tr in v], c.ttt.attempts)
        pos += len(v)
        res.append(A.solved(attempts, t.test_output))
    return res


def sample_self_edits(params, cfg, tok, tasks, k, c, key) -> list[list[str]]:
    prompts = [chat_prompt(tok, A.self_edit_prompt(t)) for t in tasks for _ in range(k)]
    s = c.self_edit
    texts = generate_in_batches(params, cfg, tok, prompts, SamplingConfig(s.max_new_tokens, s.temperature, s.top_p),
                                s.batch, key, "sampling self-edits")
    return [texts[i * k:(i + 1) * k] for i in range(len(tasks))]


def _parse(text: str, task: A.ArcTask, c):
    edit, why = A.parse_self_edit(text, limits(c.self_edit))
    if edit is not None:
        n = len(A.ttt_examples(task, edit, np.random.default_rng(0), leave_two_out=c.ttt.leave_two_out,
                               colour_perms=c.ttt.colour_perms, max_examples=c.ttt.max_examples))
        why = A.check_budget(edit, n, c.inner.batch_size, limits(c.self_edit))
        edit = None if why else edit
    return edit, why


def run_iteration(it: int, params, cfg, tok, tasks: Sequence[A.ArcTask], c, wd: Workdir, key, mesh=None):
    t0 = time.perf_counter()
    rng = np.random.default_rng([c.seed, it])
    chosen = [tasks[i] for i in rng.choice(len(tasks), size=min(c.rl.contexts, len(tasks)), replace=False)]
    k_sample, k_inner, k_outer = jax.random.split(jax.random.fold_in(key, it), 3)
    records = wd.records(iteration=it)  # scored before a restart; this iteration's rows are added as they come
    done = {(r["task_id"], r["sample"]) for r in records}
    texts = wd.cached_json(f"samples/{it}.json", lambda: sample_self_edits(params, cfg, tok, chosen, c.rl.samples, c,
                                                                           k_sample))
    items, invalid = [], []
    for i, task in enumerate(chosen):
        for s, text in enumerate(texts[i]):
            if (task.id, s) in done:
                continue
            edit, why = _parse(text, task, c)
            base = {"iteration": it, "task_id": task.id, "sample": s, "self_edit": text}
            if edit is None:
                invalid.append({**base, "parsed": None, "reward": 0.0, "ok": False, "reason": why, "attempts": []})
            else:
                items.append({"uid": i * c.rl.samples + s, "task": task, "edit": edit, "record": base})
    wd.append_records(invalid)
    records += invalid
    for results in adapt_and_solve(params, cfg, tok, items, c, k_inner, f"iter {it} TTT", mesh):
        rows = [{**r["item"]["record"], "parsed": r["item"]["edit"].__dict__, "reward": float(r["solved"]),
                 "ok": r["ok"], "reason": r["reason"], "attempts": r["attempts"], "train_examples": r["train_examples"],
                 "dropped_too_long": r["dropped_too_long"]} for r in results]
        wd.append_records(rows)
        records += rows
    kept = keep_successful(records, "task_id", c.rl.min_reward)
    metrics = {"reward_mean": float(np.mean([r["reward"] for r in records])),
               "valid_fraction": float(np.mean([r["parsed"] is not None for r in records])),
               "tasks_solved": len({r["task_id"] for r in records if r["reward"] >= 1}),
               "kept": len(kept), "kept_fraction": len(kept) / max(1, len(records)),
               "e_step_s": time.perf_counter() - t0}
    if kept:
        by_id = {t.id: t for t in chosen}  # target: the self-edit's JSON alone, not the prose around it
        examples = [(chat_prompt(tok, A.self_edit_prompt(by_id[r["task_id"]])), A.SelfEdit.from_record(r["parsed"]).to_json())
                    for r in kept]
        params, s = outer_update(params, cfg, tok, examples, c.rl, k_outer)
        metrics.update(m_step_first_loss=s["first_loss"], m_step_last_loss=s["last_loss"])
    else:
        log.warning("iteration %d: no self-edit solved its task; the M-step is skipped, the generator unchanged", it)
    metrics["iteration_s"] = time.perf_counter() - t0
    return params, metrics


CONDITIONS = ("icl", "ttt_default", "oracle", "self_edit")


def evaluate(params, cfg, tok, tasks, c, key, generator=None, conditions: Sequence[str] = CONDITIONS) -> dict:
    """Success rates: ICL (no update), TTT with the default self-edit, TTT with the oracle configuration, and
    TTT with N self-edits sampled from the generator (fraction of (task, self-edit) pairs that solve)."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown ARC conditions {sorted(unknown)}; choose among {CONDITIONS}")
    res = {}
    if "icl" in conditions:
        res["icl"] = float(np.mean(icl_solved(params, cfg, tok, tasks, c)))
    fixed = {"ttt_default": A.DEFAULT_SELF_EDIT,
             "oracle": A.SelfEdit(tuple(c.eval.oracle_augmentations.split(",")), c.eval.oracle_loss,
                                  c.eval.oracle_lr, c.eval.oracle_epochs)}
    for j, (name, edit) in enumerate(fixed.items()):
        if name not in conditions:
            continue
        items = [{"uid": i, "task": t, "edit": edit} for i, t in enumerate(tasks)]
        solved = [r["solved"] for ch in adapt_and_solve(params, cfg, tok, items, c, jax.random.fold_in(key, j), name)
                  for r in ch]
        res[name] = float(np.mean(solved))
    if "self_edit" not in conditions:
        return res
    gen = params if generator is None else generator
    texts = sample_self_edits(gen, cfg, tok, tasks, c.eval.self_edits, c, jax.random.fold_in(key, 7))
    items, outcomes = [], []
    for i, t in enumerate(tasks):
        for s, text in enumerate(texts[i]):
            edit, _ = _parse(text, t, c)
            if edit is None:
                outcomes.append(False)
            else:
                items.append({"uid": i * c.eval.self_edits + s, "task": t, "edit": edit})
    outcomes += [r["solved"] for ch in adapt_and_solve(params, cfg, tok, items, c, jax.random.fold_in(key, 9),
                                                        "self-edits") for r in ch]
    res["self_edit"] = float(np.mean(outcomes)) if outcomes else 0.0
    return res


def final_eval(initial, params, cfg, tok, held_out, c, key) -> dict:
    before = evaluate(initial, cfg, tok, held_out, c, key)
    after = evaluate(params, cfg, tok, held_out, c, key, conditions=("self_edit",))
    return {"icl": before["icl"], "ttt_default": before["ttt_default"], "oracle": before["oracle"],
            "self_edit_before_rl": before["self_edit"], "self_edit_after_rl": after["self_edit"]}
