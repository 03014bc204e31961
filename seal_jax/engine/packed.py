"""Packed inner steps: compute follows real tokens, not edits x longest document.

The vmapped inner loop (`inner.py`) runs every edit at every step at the step's longest document. Here the host
plans each step once: the documents the chunk's *active* edits train on at step t (same per-epoch shuffle,
same schedule as the vmapped loop) are laid end to end, edit by edit, in one packed row of a bucketed length
T, each document with its own segment id (attention is block-diagonal and causal within a document; positions
restart per document). Each token's LoRA delta uses its own edit's adapter (`transformer.lora_delta_per_token`,
`inner.lora_impl`: ragged = two `lax.ragged_dot` grouped matmuls, the TPU/GPU form; dense = masked matmuls
against the E adapters side by side, the CPU form). The loss is each edit's own mean over its own loss tokens
and the objective their sum, so each edit's gradient is exactly its gradient alone. LoRA and AdamW state stay one stack updated by a
vmap over edits, with inactive steps and non-finite edits masked as in the vmapped loop.

    step batch   tokens, positions, segment_ids, weight, token_adapter [1, T]; token_edit [T] (E on the tail)
    state        lora, opt_state: leaves [E, ...]; ok bool [E]

One jitted step per distinct T; a Python loop walks the steps (dispatch is asynchronous). Attention follows
`model.attention_impl` (`transformer.resolve_attention_impl`): on TPU splash attention with the segment ids
(tiles above the diagonal and beyond the step's band skipped), on GPU cuDNN's fused attention (causal, banded,
the segments as its mask), elsewhere XLA's banded attention (`transformer.attend_banded`), T x (span + 64) per
row. Useful and kernel FLOPs of a step: `engine/flops.py`.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from seal_jax.engine.inner import (InnerConfig, PackedEdits, _lengths, all_finite, epoch_order, keep_if,
                                   lr_multiplier, optimizer, round_up)
from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import init_lora
from seal_jax.model.transformer import forward, token_logprobs
from seal_jax.runtime import sharding


def row_bucket(n: int) -> int:
    """Row lengths a step may take: multiples of 1/8 of n's power of two (at least 16), so padding stays under
    12.5% and a run compiles about 8 row lengths per doubling of the step's token count."""
    return round_up(n, max(16, 1 << max(0, int(n).bit_length() - 4)))


BLOCK = 64  # query block of banded attention (`transformer.attend_banded`)


def step_span(longest: int) -> int:
    """How far back a query of a step whose longest document has `longest` tokens must see, in whole blocks:
    per step, so a step of short lines gets a 64-token band even when the chunk also holds 400-token passages."""
    return round_up(max(int(longest) - 1, 1), BLOCK)


def attention_window(T: int, span: int) -> tuple[int, Optional[tuple[int, int]]]:
    """(row length, window): banded attention when each query block's window (the step's longest document
    before it, `span`, plus the block) is shorter than the row; else full attention over the row (None)."""
    if T <= span + BLOCK:
        return T, None
    return round_up(T, BLOCK), (BLOCK, span)


def edit_schedules(packed: PackedEdits, keys, batch_size: int) -> list[list[np.ndarray]]:
    """Per edit, per step, the document indices it trains on: the vmapped loop's order (`epoch_order`)."""
    n_docs = packed.seq_valid.sum(-1)
    out = []
    for e in range(packed.num_edits):
        n, total = int(n_docs[e]), int(packed.edit_steps[e])  # total: HF's max_steps (a partial last epoch)
        if n == 0 or total == 0:
            out.append([])
            continue
        k_shuffle = jax.random.split(jnp.asarray(keys[e]))[1]
        per_epoch = -(-n // batch_size)
        orders = np.asarray(jax.vmap(lambda ep: epoch_order(k_shuffle, jnp.asarray(packed.seq_valid[e]), ep))(
            jnp.arange(-(-total // per_epoch))))
        out.append([orders[t // per_epoch][(t % per_epoch) * batch_size:][:min(batch_size, n - (t % per_epoch) * batch_size)]
                    for t in range(total)])
    return out


def plan_steps(packed: PackedEdits, keys, icfg: InnerConfig, rows: int = 1) -> list[dict]:
    """Host-side packed batches, one per step (numpy), plus per-edit `active` and `lr` of the step.

    rows: G packed rows per step, row g holding the documents of edits [g E/G, (g+1) E/G) (E a multiple of G):
    the edits a device owns when the edit axis is sharded over G devices, so each row trains only its own
    adapters. All rows of a step share one length T (the fullest row's bucket) and one attention window."""
    E = packed.num_edits
    if E % rows:
        raise ValueError(f"{E} edits do not split into {rows} packed rows; pad the chunk to a multiple of {rows}")
    per_row = E // rows
    schedules = edit_schedules(packed, keys, icfg.batch_size)
    lengths = _lengths(packed.loss_mask)  # [E, N]
    totals = np.asarray([len(s) for s in schedules])
    steps = int(totals.max(initial=0))
    lr_mult = np.asarray(jax.vmap(lambda tot: jax.vmap(lambda t: lr_multiplier(icfg, t, tot))(jnp.arange(max(steps, 1))))(
        jnp.asarray(totals)))  # [E, steps]
    plans = []
    for t in range(steps):
        docs = [[(e, int(d)) for e in range(g * per_row, (g + 1) * per_row) if t < totals[e] for d in schedules[e][t]]
                for g in range(rows)]  # per row: (edit, document)
        n_docs = [[int(lengths[e, d]) for e, d in row] for row in docs]
        longest = max((n for row in n_docs for n in row), default=1)  # how far back a query looks at most
        T, window = attention_window(row_bucket(max(sum(row) for row in n_docs)), step_span(longest))
        batch = {"tokens": np.zeros((rows, T), np.int32), "positions": np.zeros((rows, T), np.int32),
                 "segment_ids": np.zeros((rows, T), np.int32), "weight": np.zeros((rows, T), np.float32),
                 "token_edit": np.full((rows, T), E, np.int32), "token_adapter": np.zeros((rows, T), np.int32)}
        for g, row in enumerate(docs):
            pos = 0
            for seg, (e, d) in enumerate(row):
                n = int(lengths[e, d])
                sl = slice(pos, pos + n)
                batch["tokens"][g, sl], batch["positions"][g, sl] = packed.tokens[e, d, :n], np.arange(n)
                batch["segment_ids"][g, sl], batch["token_edit"][g, sl] = seg, e
                batch["token_adapter"][g, sl] = e - g * per_row
                batch["weight"][g, pos + 1:pos + n] = packed.loss_mask[e, d, 1:n]  # targets inside the document
                pos += n
            batch["segment_ids"][g, pos:] = len(row)          # the tail: one segment of its own, no loss
            batch["token_adapter"][g, pos:] = per_row - 1     # ... and the last adapter, keeping ids sorted
        plans.append({"real_tokens": sum(map(sum, n_docs)), "lengths": [n for row in n_docs for n in row],
                      "window": window, **batch,
                      "active": t < totals, "lr": (packed.lr * lr_mult[:, t]).astype(np.float32)})
    return plans


HOST_ONLY = ("real_tokens", "lengths", "window")  # plan entries that are not step inputs


def row_major(lora, rows: int):
    """An edit stack [E, L, ...] as the forward's per-row stacks [L, G, E/G, ...] (row g: edits g E/G ...)."""
    def one(x):
        x = x.reshape(rows, x.shape[0] // rows, *x.shape[1:])  # [G, E/G, L, ...]
        return jnp.moveaxis(x, 2, 0)                           # [L, G, E/G, ...]
    return jax.tree.map(one, lora)


@functools.partial(jax.jit, static_argnames=("cfg", "icfg", "window"), donate_argnums=(1, 2))
def packed_step(base, lora, opt_state, ok, batch, *, cfg: ModelConfig, icfg: InnerConfig, window=None):
    """One optimiser step of every edit on its own documents of G packed rows. lora, opt_state: [E, ...];
    batch: tokens, positions, segment_ids, weight, token_edit, token_adapter [G, T]; active, lr [E].
    window: static (block, span) for banded attention (`attention_window`), or None."""
    E, rows = ok.shape[0], batch["tokens"].shape[0]

    def objective(lora):
        hidden, _ = forward(base, cfg, batch["tokens"], batch["positions"], jnp.ones_like(batch["tokens"], bool),
                            lora=row_major(lora, rows), lora_scale=icfg.lora.scale, segment_ids=batch["segment_ids"],
                            token_adapter=batch["token_adapter"], window=window, lora_impl=icfg.lora_impl)
        lp = token_logprobs(base, hidden[:, :-1], batch["tokens"][:, 1:], icfg.loss_chunk)  # [G, T-1]
        w, edit = batch["weight"][:, 1:].reshape(-1), batch["token_edit"][:, 1:].reshape(-1)
        nll = jax.ops.segment_sum(-lp.reshape(-1) * w, edit, num_segments=E + 1)[:E]
        n = jax.ops.segment_sum(w, edit, num_segments=E + 1)[:E]
        losses = nll / jnp.maximum(n, 1)  # [E]: each edit's mean over its own loss tokens
        return jnp.sum(jnp.where(batch["active"] & ok, losses, 0.0)), (losses, n)

    (_, (losses, n)), grads = jax.value_and_grad(objective, has_aux=True)(lora)
    opt = optimizer(icfg)

    def update(lora, opt_state, g, lr, loss, n, active, ok):  # one edit: as `inner_train_one`'s step
        updates, new_state = opt.update(g, opt_state, lora)
        new_lora = jax.tree.map(lambda p, u: p - lr * u, lora, updates)
        active = active & (n > 0) & ok
        finite = jnp.isfinite(loss) & all_finite(new_lora)
        lora, opt_state = keep_if(active & finite, (new_lora, new_state), (lora, opt_state))
        return lora, opt_state, ok & (finite | ~active), jnp.where(active, loss, 0.0), active

    return jax.vmap(update)(lora, opt_state, grads, batch["lr"], losses, n, batch["active"], ok)


@functools.partial(jax.jit, static_argnames=("cfg", "icfg", "num_edits"))
def init_state(keys, *, cfg: ModelConfig, icfg: InnerConfig, num_edits: int):
    """Each edit's fresh LoRA (the same draw as `inner_train_one`) and AdamW state."""
    lora = jax.vmap(lambda k: init_lora(jax.random.split(k)[0], cfg, icfg.lora))(keys[:num_edits])
    return lora, jax.vmap(optimizer(icfg).init)(lora)


def packed_rows(mesh) -> int:
    """Packed rows per step on a mesh: one per device of its ("edit", "fsdp") axes, which shard the rows and the
    edit stack alike (each device trains its own edits' adapters on its own row); 1 without a mesh."""
    return 1 if mesh is None else mesh.shape["edit"] * mesh.shape["fsdp"]


def train_packed(base, cfg: ModelConfig, icfg: InnerConfig, packed: PackedEdits, keys, mesh=None,
                 rows: Optional[int] = None):
    """(lora stack [E, ...], metrics) like `inner.inner_train_edits`: loss, active [E, steps], ok [E].
    rows: packed rows per step (default `packed_rows(mesh)`); with a mesh, rows and the edit axis are sharded
    over its ("edit", "fsdp") devices."""
    rows = rows or packed_rows(mesh)
    plans = plan_steps(packed, np.asarray(keys), icfg, rows)
    E = packed.num_edits
    place = (lambda tree: tree) if mesh is None else (lambda tree: sharding.batch_sharded(tree, mesh))
    lora, opt_state = place(init_state(jnp.asarray(keys), cfg=cfg, icfg=icfg, num_edits=E))
    ok = place(jnp.ones((E,), bool))
    losses, active = [], []
    for plan in plans:
        batch = place({k: v for k, v in plan.items() if k not in HOST_ONLY})
        lora, opt_state, ok, loss, act = packed_step(base, lora, opt_state, ok, batch, cfg=cfg, icfg=icfg,
                                                     window=plan["window"])
        losses.append(loss)
        active.append(act)
    stack = lambda xs: jnp.stack(xs, axis=1) if xs else jnp.zeros((E, 0))
    return lora, {"loss": stack(losses), "active": stack(active).astype(bool), "ok": ok}


def slots_and_tokens(packed: PackedEdits, keys, icfg: InnerConfig, rows: int = 1) -> tuple[int, int]:
    """(token slots computed, real tokens trained) over the chunk's steps."""
    plans = plan_steps(packed, np.asarray(keys), icfg, rows)
    return sum(p["tokens"].size for p in plans), sum(p["real_tokens"] for p in plans)
