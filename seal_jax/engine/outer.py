"""The outer loop's domain-free half (ReST-EM M-step): filter scored self-edits, SFT the generator on them.

`keep_best` / `keep_successful` filter E-step records (the domains' keep rules). `outer_update` trains a LoRA
on (prompt -> kept self-edit) with loss on the self-edit tokens only and merges it into the generator. The
update is `chunks.train_in_chunks` (in `step_form`) with one "edit" that holds every kept example: one AdamW /
schedule / masking implementation serves both loops.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seal_jax.engine.chunks import train_in_chunks
from seal_jax.engine.inner import InnerConfig, pack_edits, round_up, summarize
from seal_jax.model.lora import LoraSpec, merge_lora
from seal_jax.model.transformer import sequence_logprobs
from seal_jax.runtime.sharding import batch_multiple, on_mesh, place_batch

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OuterConfig:
    """The M-step: SEAL's LoRA SFT of the generator (mode "lora", merged after) or full fine-tuning ("full")."""
    lora: LoraSpec                # mode lora
    lr: float
    epochs: int
    batch_size: int
    max_len: int                  # examples (prompt + self-edit) are cut to this many tokens
    mode: str = "lora"
    schedule: str = "linear"      # mode lora: linear | cosine | constant (SEAL's ARC M-step: cosine)
    step_form: str = "vmapped"    # mode lora: vmapped | packed (`engine/chunks.py`; packed off a mesh only)

    def __post_init__(self):
        if self.mode not in ("lora", "full"):
            raise ValueError(f"rl.mode {self.mode!r}; choose lora or full")
        if self.step_form not in ("vmapped", "packed"):
            raise ValueError(f"rl.step_form {self.step_form!r}; choose vmapped or packed")


def keep_best(records: Sequence[dict], group: str, threshold: float, min_reward: float) -> list[dict]:
    """Best self-edit per `group` value (ties to the earlier sample), kept if ok, reward >= baseline +
    threshold (when the record has a baseline) and reward >= min_reward."""
    best: dict = {}
    for r in sorted(records, key=lambda r: (r[group], r["sample"])):
        if r[group] not in best or r["reward"] > best[r[group]]["reward"]:
            best[r[group]] = r
    return [r for r in best.values() if r["ok"] and r["reward"] >= r.get("baseline", 0.0) + threshold
            and r["reward"] >= min_reward]


def keep_successful(records: Sequence[dict], group: str, min_reward: float) -> list[dict]:
    """Every ok self-edit with reward >= min_reward, in (group, sample) order (ARC: all that solved the task)."""
    return [r for r in sorted(records, key=lambda r: (r[group], r["sample"])) if r["ok"] and r["reward"] >= min_reward]


def sft_documents(tok, examples: Sequence[tuple[list[int], str]]) -> list[tuple[list[int], list[int]]]:
    """(tokens, loss mask) per (prompt token ids, completion text): the prompt carries no loss, the completion and
    EOS do. The completion is trained as given: a domain's `m_step_target` decides it (knowledge: stripped)."""
    docs = []
    for prompt_ids, completion in examples:
        c = tok.encode(completion, add_special_tokens=False) + [tok.eos_token_id]
        docs.append((list(prompt_ids) + c, [0] * len(prompt_ids) + [1] * len(c)))
    return docs


def outer_update(params, cfg, tok, examples: Sequence[tuple[list[int], str]], outer: OuterConfig, key):
    """SFT the generator on (prompt token ids -> self-edit text), loss on the self-edit + EOS: (params, summary).

    outer.mode "lora": a LoRA trained by the inner-loop machinery (in `outer.step_form`: packed steps lay each
    step's examples end to end, vmapped ones run batch_size rows at the longest example), then merged.
    "full": every weight trained with optax AdamW (linear decay), one jitted step per batch with params and
    state donated.
    """
    docs = sft_documents(tok, examples)
    if outer.mode == "full":
        return full_update(params, cfg, docs, outer, key)
    form = "vmapped" if on_mesh(params) else outer.step_form
    if form != outer.step_form:
        log.info("M-step: packed steps run off a mesh only; this one runs vmapped")
    ocfg = InnerConfig(lora=outer.lora, batch_size=outer.batch_size, schedule=outer.schedule, step_form=form,
                       length_buckets=1)  # one edit, compiled anew each iteration: buckets would cost more than save
    packed = pack_edits([docs], [outer.lr], [outer.epochs], batch_size=outer.batch_size, max_len=outer.max_len)
    [(_, _, lora, metrics)] = train_in_chunks(params, cfg, ocfg, packed, jnp.asarray(key)[None], edits_per_chunk=1)
    s = summarize(metrics)[0]
    if not s["ok"]:
        raise FloatingPointError("the outer (M-step) update diverged: non-finite loss; lower rl.lr")
    return merge_lora(params, jax.tree.map(lambda x: x[0], lora), ocfg.lora), s


def full_update(params, cfg, docs, outer: OuterConfig, key):
    """Full fine-tuning of the generator on tokenized (tokens, loss_mask) docs: shuffled batches, AdamW."""
    packed = pack_edits([docs], [outer.lr], [outer.epochs], batch_size=outer.batch_size, max_len=outer.max_len)
    tokens, mask = packed.tokens[0], packed.loss_mask[0]
    n, bs = len(docs), outer.batch_size
    per_epoch = -(-n // bs)
    width = round_up(bs, batch_multiple(params))  # rows shard evenly over ("edit", "fsdp"); pads are masked
    opt = optax.adamw(optax.linear_schedule(outer.lr, 0.0, per_epoch * outer.epochs), weight_decay=0.0)

    def loss_fn(p, t, m):
        lp = sequence_logprobs(p, cfg, t, m)
        return -jnp.sum(lp) / jnp.maximum(jnp.sum(m[:, 1:]), 1)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, state, t, m):
        loss, grads = jax.value_and_grad(loss_fn)(p, t, m)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    params = jax.tree.map(jnp.array, params)  # a private copy: the step donates its input buffers
    state, losses = opt.init(params), []
    rng = np.random.default_rng(np.asarray(key).ravel().tolist())  # a raw uint32 PRNGKey seeds the shuffles
    for _ in range(outer.epochs):
        order = rng.permutation(n)
        for b in range(per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            rows = np.pad(idx, (0, width - len(idx)))              # one batch shape: pad, then mask the pads
            m = mask[rows] * (np.arange(width) < len(idx))[:, None]
            params, state, loss = step(params, state, *place_batch((tokens[rows], m), params))
            losses.append(float(loss))
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError("the outer (M-step) full fine-tuning diverged: non-finite loss; lower rl.lr")
    return params, {"steps": len(losses), "ok": True, "first_loss": losses[0], "last_loss": losses[-1], "reason": None}
