"""The domain-free ReST-EM loop of SEAL: resumable E-steps, M-steps, metrics, checkpoints, final evaluation.

One iteration `it`:
  E-step  draw `contexts` contexts (seeded by it); the generator samples `samples` self-edits for each (kept in
          DIR/samples/it.json, so a restart reuses them); the domain turns the self-edits not yet scored into
          items, trains and answers them in chunks (engine/adapt.py) and rewards them; every chunk's records
          are appended to DIR/records.jsonl as it finishes, so a restart skips finished work.
  M-step  the domain's keep rule picks records; the generator is fine-tuned on (its self-edit prompt -> the
          record's target) with loss on the target only (engine/outer.py), and is the next iteration's model.
Metrics are logged before the checkpoint (a kill in between re-runs the M-step and loses nothing), and every
random choice of iteration it derives from the saved key and it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.base import Domain, EStepTiming, sample_acceptable
from seal_jax.engine.outer import OuterConfig, outer_update
from seal_jax.engine.sampling import sample_self_edits
from seal_jax.runtime.plots import plot_conditions, plot_rl
from seal_jax.runtime.sharding import check_processes_agree
from seal_jax.runtime.terminal import progress, say
from seal_jax.runtime.workdir import Workdir

log = logging.getLogger(__name__)

FINAL_EVAL_FOLD = 10_000  # the final evaluation's key: fold_in(run key, this)


@dataclasses.dataclass(frozen=True)
class RestemConfig:
    iterations: int
    contexts: int                 # contexts drawn per iteration
    samples: int                  # self-edits sampled per context
    seed: int                     # the run's key, and which contexts each iteration draws
    outer: OuterConfig            # the M-step
    final_eval: bool = True
    draw: str = "random"          # random: `contexts` drawn per iteration (seeded by it); disjoint: iteration it
                                  # takes contexts [it * contexts, (it + 1) * contexts) in order (SEAL's knowledge RL)


def draw_contexts(contexts: Sequence, it: int, config: RestemConfig) -> list:
    """The contexts iteration `it` works on."""
    if config.draw == "disjoint":
        lo, hi = it * config.contexts, (it + 1) * config.contexts
        if hi > len(contexts):
            raise ValueError(f"iteration {it} needs contexts [{lo}, {hi}) but there are {len(contexts)}: "
                             "fewer iterations or contexts per iteration, or more passages")
        return list(contexts[lo:hi])
    if config.draw != "random":
        raise ValueError(f"rl.draw {config.draw!r}; choose random or disjoint")
    rng = np.random.default_rng([config.seed, it])
    return [contexts[i] for i in rng.choice(len(contexts), size=min(config.contexts, len(contexts)), replace=False)]


def iteration(it: int, domain: Domain, params, cfg, tok, contexts: Sequence, config: RestemConfig, wd: Workdir,
              key, mesh=None) -> tuple[dict, dict]:
    """E-step (resumable) + M-step of iteration `it`: (the new generator's params, metrics)."""
    t0 = time.perf_counter()
    chosen = draw_contexts(contexts, it, config)
    k_sample, k_inner, k_outer = jax.random.split(jax.random.fold_in(key, it), 3)
    records = wd.records(iteration=it)  # scored before a restart; this iteration's rows are added as they come
    done = {(r[domain.context_field], r["sample"]) for r in records}
    prompts = [domain.prompt_ids(tok, c) for c in chosen]
    texts = wd.cached_json(f"samples/{it}.json", lambda: sample_acceptable(domain, params, cfg, tok, prompts,
                                                                           config.samples, k_sample,
                                                                           sample=sample_self_edits))
    baseline = domain.baseline(params, cfg, tok, chosen)
    todo = [(i, s) for i, c in enumerate(chosen) for s in range(config.samples) if (c.id, s) not in done]
    if done:
        log.info("iteration %d: resuming, %d of %d self-edits already scored", it, len(done),
                 len(chosen) * config.samples)
    items, rejected = domain.items(it, chosen, texts, todo)
    wd.append_records(rejected)
    records += rejected
    t_inner, inner_tokens = time.perf_counter(), 0
    for results in domain.score(params, cfg, tok, items, k_inner, mesh=mesh, desc=f"iter {it} inner updates"):
        inner_tokens += sum(r.train_tokens for r in results)
        rows = [domain.record(it, r, baseline) for r in results]
        wd.append_records(rows)
        records += rows
    timing = EStepTiming(time.perf_counter() - t0, inner_tokens / max(1e-9, time.perf_counter() - t_inner))
    kept = domain.keep(records)
    metrics = domain.metrics(records, kept, chosen, baseline, timing)
    if kept:
        by_id = {c.id: c for c in chosen}
        examples = [(domain.prompt_ids(tok, by_id[r[domain.context_field]]), domain.m_step_target(r))
                    for r in kept]
        with progress(total=1, desc=f"iter {it} M-step ({len(kept)} examples)") as bar:
            params, s = outer_update(params, cfg, tok, examples, config.outer, k_outer)
            bar.update()
        metrics.update(m_step_first_loss=s["first_loss"], m_step_last_loss=s["last_loss"])
    else:
        log.warning("iteration %d: %s", it, domain.nothing_kept)
    metrics["iteration_s"] = time.perf_counter() - t0
    return params, metrics


def train(domain: Domain, params, cfg, tok, config: RestemConfig, wd: Workdir, *, mesh=None) -> dict:
    """Run (or resume) ReST-EM in `wd` to `config.iterations`, then the final evaluation; its results."""
    contexts, held_out = domain.load_data()
    key = jax.random.PRNGKey(config.seed)
    initial = params
    step, state = wd.restore({"params": params, "key": np.asarray(key)})
    start = 0
    if step is not None:
        params, start = state["params"], step
        log.info("resumed from the checkpoint after iteration %d", step - 1)
    for it in range(start, config.iterations):
        params, metrics = iteration(it, domain, params, cfg, tok, contexts, config, wd, key, mesh)
        check_processes_agree(metrics, f"iteration {it}")
        wd.log_metrics(it, metrics)  # before the checkpoint: a kill in between re-runs the M-step, loses nothing
        wd.save(it + 1, {"params": params, "key": np.asarray(key)})
        say(f"iteration {it}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    result = {"iterations": config.iterations}
    if config.final_eval:
        result = final_evaluation(domain, initial, params, cfg, tok, held_out, config, wd,
                                  jax.random.fold_in(key, FINAL_EVAL_FOLD))
    wd.close()
    say(f"records: {wd.records_path}\nmetrics: {wd.metrics_path}\ntensorboard: {os.path.join(wd.path, 'tb')}")
    return result


def final_evaluation(domain: Domain, initial, params, cfg, tok, held_out: Sequence, config: RestemConfig,
                     wd: Workdir, key) -> dict:
    """The domain's held-out evaluation, written to eval.json and metrics.jsonl, plotted and printed."""
    result = domain.final_eval(initial, params, cfg, tok, held_out, key)
    wd.write_json("eval.json", result)
    plots: list[Optional[str]] = [plot_conditions(result, os.path.join(wd.path, "eval.png")),
                                  plot_rl(wd.metrics_path, os.path.join(wd.path, "rl.png"))]
    wd.log_metrics(config.iterations, {f"eval/{k}": v for k, v in result.items()})
    say(f"held-out results ({len(held_out)} {domain.name} items):")
    for name, v in result.items():
        say(f"  {name:22s} {v:.3f}")
    say("plots: " + ", ".join(p for p in plots if p))
    return result
