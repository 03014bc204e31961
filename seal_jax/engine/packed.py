"""Packed inner steps: compute follows real tokens, not edits x longest document.

The vmapped inner loop (`inner.py`) runs every edit at every step at the step's longest document. Here the host
plans a chunk once (`plan_steps`): every edit keeps its own steps (same per-epoch shuffle, same HF step count
and schedule as the vmapped loop), and each packed step lays the next step's documents of several edits end to
end in G rows of one length T per chunk (`row_length`), each document with its own segment id (attention is
block-diagonal and causal within a document; positions restart per document). Rows are filled up to T, edits
with the most steps left first, so a chunk takes as many packed steps as its longest training and one compiled
step serves it. Row g holds the edits [g E/G, (g+1) E/G): on a mesh, G is the ("edit", "fsdp") device count and
the edit stack is sharded alike, so each device trains its own adapters on its own row (`balanced_order` deals
long and short trainings evenly to rows first). Each token's LoRA delta uses its own edit's adapter
(`transformer.lora_delta_per_token`, `inner.lora_impl`: ragged = two `lax.ragged_dot` grouped matmuls, the
TPU/GPU form; dense = masked matmuls against the row's adapters side by side, the CPU form). The loss is each
edit's own mean over its own loss tokens and the objective their sum, so each edit's gradient is exactly its
gradient alone. LoRA and AdamW state stay one stack updated by a vmap over edits; edits without a step in a
packed step, and non-finite edits, keep their state as in the vmapped loop.

    step batch   tokens, positions, segment_ids, weight, token_edit (E on the tail), token_adapter [G, T]
    per edit     active, lr [E]; state lora, opt_state: layer-major, leaves [L, E, ...] (`edit_axis`); ok bool [E]
    capped rows  slots [G, K]: with `inner.step_edits` = K, the K edits each row carries this step; their
                 adapters and AdamW state are gathered in and scattered back (token ids count in slots)

Attention follows `model.attention_impl` (`transformer.resolve_attention_impl`): on TPU splash attention with
the segment ids, on GPU cuDNN's fused attention (causal, the segments as its mask), elsewhere XLA's banded
attention (`transformer.attend_banded`) over the chunk's window, T x (span + 64) per row. Useful and kernel
FLOPs of a step: `engine/flops.py`; a round's cost on a target: `engine/packed_plan.py`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from seal_jax.engine.inner import (InnerConfig, PackedEdits, _lengths, epoch_order, guarded_update, lr_multiplier,
                                   optimizer, round_up)
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
    per_epoch = np.maximum(-(-n_docs // batch_size), 1)
    epochs = int(max((-(-packed.edit_steps // per_epoch)).max(initial=0), 1))  # epochs any training begins
    orders = np.asarray(_epoch_orders(jnp.asarray(keys), jnp.asarray(packed.seq_valid), epochs=epochs))
    out = []
    for e in range(packed.num_edits):
        n, total, k = int(n_docs[e]), int(packed.edit_steps[e]), int(per_epoch[e])  # total: HF's max_steps
        out.append([orders[e, t // k][(t % k) * batch_size:][:min(batch_size, n - (t % k) * batch_size)]
                    for t in range(total if n else 0)])
    return out


@functools.partial(jax.jit, static_argnames=("epochs",))
def _epoch_orders(keys, seq_valid, *, epochs: int):
    """keys [E, 2], seq_valid bool [E, N] -> int [E, epochs, N]: each edit's document order in each epoch, drawn
    as the vmapped loop draws it (its shuffle key, `epoch_order`); one compiled program, not one per primitive."""
    def one(key, valid):
        k_shuffle = jax.random.split(key)[1]
        return jax.vmap(lambda ep: epoch_order(k_shuffle, valid, ep))(jnp.arange(epochs))
    return jax.vmap(one)(keys, seq_valid)


def row_length(step_tokens: list[list[int]], rows: int, step_edits: int = 0) -> int:
    """One row length T for a whole chunk: enough that each row's tokens fit in as many packed steps as its
    longest training has optimiser steps, or as its steps take `step_edits` (> 0) at a time (the fewest
    possible), and never shorter than one step's documents; bucketed (`row_bucket`). One T per chunk: one
    compiled step serves it."""
    per_row = len(step_tokens) // rows
    longest_step = max((n for e in step_tokens for n in e), default=1)
    fullest, steps = 1, 1
    for g in range(rows):
        row = step_tokens[g * per_row:(g + 1) * per_row]
        fullest = max(fullest, sum(sum(e) for e in row))
        steps = max(steps, max((len(e) for e in row), default=1),
                    -(-sum(len(e) for e in row) // step_edits) if step_edits else 1)
    return row_bucket(max(longest_step, -(-fullest // steps)))


def step_slots(icfg: InnerConfig, per_row: int) -> int:
    """Adapters a packed row carries per step: `icfg.step_edits` where it is set and below the row's edits (a
    step then gathers its edits' adapters and AdamW state in and scatters them back), else all the row's."""
    return min(icfg.step_edits, per_row) if icfg.step_edits else per_row


def plan_steps(packed: PackedEdits, keys, icfg: InnerConfig, rows: int = 1,
               row_tokens: Optional[int] = None) -> list[dict]:
    """Host-side packed batches (numpy), one per packed step, each carrying per-edit `active`, `lr` and
    `edit_step` (the edit's own optimiser step it runs, -1 if none).

    Every edit runs its own steps in its own order (`edit_schedules`: the vmapped loop's order, HF's step count
    and schedule), but a packed step need not be step t of every edit: each of the G rows (row g: edits
    [g E/G, (g+1) E/G), the edits a device owns when the edit axis is sharded over G devices) is filled up to T
    tokens (`row_length`, or `row_tokens`) with the next step of its edits, those with the most steps left first,
    so rows stay full and the chunk takes as few packed steps as its longest training. An edit appears at most
    once per packed step, so its updates stay sequential and equal its training alone. Attention: one window for
    the chunk (`attention_window` over its longest document).

    With `icfg.step_edits` = K below a row's edits (`step_slots`), a row trains at most K edits per step and the
    batch names the K edits each row carries, `slots` [G, K] (indices into the row's edits: the chosen ones in
    order, then idle ones); token_adapter and token_edit then count in slots (row g's slot k: g K + k)."""
    E = packed.num_edits
    if E % rows:
        raise ValueError(f"{E} edits do not split into {rows} packed rows; pad the chunk to a multiple of {rows}")
    per_row = E // rows
    K = step_slots(icfg, per_row)
    slotted = K < per_row
    schedules = edit_schedules(packed, keys, icfg.batch_size)
    lengths = _lengths(packed.loss_mask)  # [E, N]
    step_tokens = [[int(sum(lengths[e, d] for d in docs)) for docs in schedules[e]] for e in range(E)]
    totals = np.asarray([len(s) for s in schedules])
    most = int(totals.max(initial=0))
    T = row_tokens or row_length(step_tokens, rows, K if slotted else 0)
    if most and T < max(n for e in step_tokens for n in e):
        raise ValueError(f"row_tokens={T} is shorter than one step's documents ({max(map(max, filter(None, step_tokens)))})")
    longest = max((int(lengths[e, d]) for e in range(E) for docs in schedules[e] for d in docs), default=1)
    T, window = attention_window(T, step_span(longest))
    lr_mult = np.asarray(jax.vmap(lambda tot: jax.vmap(lambda t: lr_multiplier(icfg, t, tot))(jnp.arange(max(most, 1))))(
        jnp.asarray(totals)))  # [E, most]: the edit's schedule at its own step t
    done, plans = np.zeros(E, np.int64), []
    while (done < totals).any():
        batch = {"tokens": np.zeros((rows, T), np.int32), "positions": np.zeros((rows, T), np.int32),
                 "segment_ids": np.zeros((rows, T), np.int32), "weight": np.zeros((rows, T), np.float32),
                 "token_edit": np.zeros((rows, T), np.int32), "token_adapter": np.zeros((rows, T), np.int32)}
        slots = np.zeros((rows, K), np.int32)
        edit_step, lens = np.full(E, -1, np.int32), []
        for g in range(rows):
            left, chosen, mine = T, [], range(g * per_row, (g + 1) * per_row)
            for e in sorted((e for e in mine if done[e] < totals[e]),
                            key=lambda e: (done[e] - totals[e], e)):  # most steps left first
                if step_tokens[e][done[e]] <= left and len(chosen) < K:
                    chosen.append(e)
                    left -= step_tokens[e][done[e]]
            chosen.sort()  # laid out edit by edit: adapter ids sorted along the row
            # the row's adapters this step: its chosen edits, then (slotted) idle edits of the row up to K
            carried = (chosen + [e for e in mine if e not in chosen][:K - len(chosen)]) if slotted else list(mine)
            slots[g] = np.asarray(carried) - g * per_row
            pos = seg = 0
            for e in chosen:
                k = carried.index(e)  # the edit's adapter in the row's stack, and in the whole step's (g K + k)
                edit_step[e] = done[e]
                for d in schedules[e][done[e]]:
                    n = int(lengths[e, d])
                    sl = slice(pos, pos + n)
                    batch["tokens"][g, sl], batch["positions"][g, sl] = packed.tokens[e, d, :n], np.arange(n)
                    batch["segment_ids"][g, sl], batch["token_edit"][g, sl] = seg, g * K + k
                    batch["token_adapter"][g, sl] = k
                    batch["weight"][g, pos + 1:pos + n] = packed.loss_mask[e, d, 1:n]  # targets inside the document
                    lens.append(n)
                    pos, seg = pos + n, seg + 1
            batch["segment_ids"][g, pos:] = seg          # the tail: one segment of its own, no loss
            batch["token_edit"][g, pos:] = rows * K      # ... counted in no edit's loss
            batch["token_adapter"][g, pos:] = K - 1      # ... and the last adapter, keeping ids sorted
        active = edit_step >= 0
        done += active
        lr = np.where(active, packed.lr * lr_mult[np.arange(E), np.maximum(edit_step, 0)], 0.0)
        if slotted:
            batch["slots"] = slots
        plans.append({"real_tokens": sum(lens), "lengths": lens, "window": window, "edit_step": edit_step, **batch,
                      "active": active, "lr": lr.astype(np.float32)})
    return plans


HOST_ONLY = ("real_tokens", "lengths", "window", "edit_step")  # plan entries that are not step inputs


def edit_axis(x) -> int:
    """The edit axis of a packed step's edit stack: 1 on layer-stacked leaves (LoRA and AdamW moments,
    [L, E, ...]: the forward's layer scan takes each layer's adapters of every edit as one slice, no transpose),
    0 on per-edit scalars (AdamW's step count, [E])."""
    return 1 if x.ndim > 1 else 0


def layer_major(tree):
    """An edit-major stack (leaves [E, L, ...], as `init_lora` vmapped and the answering phase take it) as the
    packed step keeps it (`edit_axis`)."""
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1) if x.ndim > 1 else x, tree)


def edit_major(tree):
    """`layer_major`'s inverse."""
    return jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0) if x.ndim > 1 else x, tree)


def row_major(lora, rows: int):
    """The layer-major stack [L, E, ...] as the forward's per-row stacks [L, G, E/G, ...] (row g: edits g E/G
    ...): a reshape."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0], rows, x.shape[1] // rows, *x.shape[2:]), lora)


@functools.partial(jax.jit, static_argnames=("cfg", "icfg", "window"), donate_argnums=(1, 2))
def packed_step(base, lora, opt_state, ok, batch, *, cfg: ModelConfig, icfg: InnerConfig, window=None):
    """One optimiser step of every edit on its own documents of G packed rows. lora, opt_state: the layer-major
    edit stack (`edit_axis`: [L, E, ...], per-edit scalars [E]);
    batch: tokens, positions, segment_ids, weight, token_edit, token_adapter [G, T]; active, lr [E]; and, where
    rows carry K of their edits (`plan_steps`), slots [G, K]: those edits' adapters and AdamW state are gathered
    into a [L, G K, ...] stack, stepped, and scattered back, so a step costs its own edits, not the chunk's.
    window: static (block, span) for banded attention (`attention_window`), or None.
    Returns (lora, opt_state, ok, loss [E], active [E])."""
    if "slots" not in batch:
        return _step(base, lora, opt_state, ok, batch, batch["active"], batch["lr"], cfg, icfg, window)
    slots = batch["slots"]
    take = lambda tree: jax.tree.map(lambda x: _gather_slots(x, slots, edit_axis(x)), tree)
    put = lambda full, part: jax.tree.map(lambda x, v: _scatter_slots(x, slots, v, edit_axis(x)), full, part)
    lora_k, opt_k, ok_k, active_k, lr_k = take((lora, opt_state, ok, batch["active"], batch["lr"]))
    lora_k, opt_k, ok_k, loss_k, act_k = _step(base, lora_k, opt_k, ok_k, batch, active_k, lr_k, cfg, icfg, window)
    idle = (jnp.zeros_like(batch["lr"]), jnp.zeros_like(batch["active"]))  # edits outside the slots: no step
    return put(lora, lora_k), put(opt_state, opt_k), put(ok, ok_k), put(idle[0], loss_k), put(idle[1], act_k)


def _rows_of(x, axis: int, G: int):  # the edit axis split into (G rows, the row's edits)
    return x.reshape(*x.shape[:axis], G, x.shape[axis] // G, *x.shape[axis + 1:])


def _gather_slots(x, slots, axis: int):
    """x's edits named by slots [G, K] (per row, indices into its own edits), as a G K edit axis at `axis`:
    a gather within each row, so on a mesh each device gathers from its own shard."""
    G, K = slots.shape
    take = jax.vmap(lambda xg, i: jnp.take(xg, i, axis=axis), in_axes=(axis, 0), out_axes=axis)
    out = take(_rows_of(x, axis, G), slots)
    return out.reshape(*x.shape[:axis], G * K, *x.shape[axis + 1:])


def _scatter_slots(x, slots, values, axis: int):
    """`_gather_slots`' inverse: x with the slots' edits replaced by values (edit axis G K at `axis`)."""
    G, K = slots.shape
    at = lambda i: (slice(None),) * axis + (i,)
    out = jax.vmap(lambda xg, i, vg: xg.at[at(i)].set(vg), in_axes=(axis, 0, axis), out_axes=axis)(
        _rows_of(x, axis, G), slots, _rows_of(values, axis, G))
    return out.reshape(x.shape)


def _step(base, lora, opt_state, ok, batch, active, lr, cfg: ModelConfig, icfg: InnerConfig, window):
    """`packed_step` on the stack the rows carry (E' = G x its adapters per row; token_edit and token_adapter
    count in it): the loss of every edit, its gradient, and a guarded AdamW step per edit."""
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
        return jnp.sum(jnp.where(active & ok, losses, 0.0)), (losses, n)

    (_, (losses, n)), grads = jax.value_and_grad(objective, has_aux=True)(lora)
    opt = optimizer(icfg)

    def update(lora, opt_state, g, lr, loss, n, active, ok):  # one edit: as `inner_train_one`'s step
        active = active & (n > 0) & ok
        lora, opt_state, finite = guarded_update(opt, lora, opt_state, g, lr, loss, active)
        return lora, opt_state, ok & (finite | ~active), jnp.where(active, loss, 0.0), active

    axes = lambda tree: jax.tree.map(edit_axis, tree)
    return jax.vmap(update, in_axes=(axes(lora), axes(opt_state), axes(grads), 0, 0, 0, 0, 0),
                    out_axes=(axes(lora), axes(opt_state), 0, 0, 0))(lora, opt_state, grads, lr, losses, n, active, ok)


@functools.partial(jax.jit, static_argnames=("cfg", "icfg", "num_edits"))
def init_state(keys, *, cfg: ModelConfig, icfg: InnerConfig, num_edits: int):
    """Each edit's fresh LoRA (the same draw as `inner_train_one`) and AdamW state, layer-major (`edit_axis`)."""
    lora = jax.vmap(lambda k: init_lora(jax.random.split(k)[0], cfg, icfg.lora))(keys[:num_edits])
    return layer_major(lora), layer_major(jax.vmap(optimizer(icfg).init)(lora))


def packed_rows(mesh) -> int:
    """Packed rows per step on a mesh: one per device of its ("edit", "fsdp") axes, which shard the rows and the
    edit stack alike (each device trains its own edits' adapters on its own row); 1 without a mesh."""
    return 1 if mesh is None else mesh.shape["edit"] * mesh.shape["fsdp"]


def balanced_order(packed: PackedEdits, rows: int) -> np.ndarray:
    """A permutation of the edits dealing them to `rows` rows (row g: positions [g E/G, (g+1) E/G)) so each row
    gets a like share of long and short trainings: edits sorted by steps then tokens, dealt back and forth. A
    step's rows all run at the fullest row's length, so unbalanced rows are padding on every other device."""
    E, tokens = packed.num_edits, packed.epoch_tokens()
    ranked = sorted(range(E), key=lambda e: (-int(packed.edit_steps[e]), -int(tokens[e]), e))
    per_row = E // rows
    slots = [[] for _ in range(rows)]
    for i, e in enumerate(ranked):
        lap, j = divmod(i, rows)
        slots[j if lap % 2 == 0 else rows - 1 - j].append(e)
    return np.asarray([e for row in slots for e in row[:per_row]])


def train_packed(base, cfg: ModelConfig, icfg: InnerConfig, packed: PackedEdits, keys, mesh=None,
                 rows: Optional[int] = None):
    """(lora stack [E, ...], metrics) like `inner.inner_train_edits`: loss, active [E, steps], ok [E].
    rows: packed rows per step (default `packed_rows(mesh)`); with a mesh, rows and the edit axis are sharded
    over its ("edit", "fsdp") devices."""
    rows = rows or packed_rows(mesh)
    order = balanced_order(packed, rows) if rows > 1 else np.arange(packed.num_edits)
    packed, keys = take(packed, order), np.asarray(keys)[order]
    plans = plan_steps(packed, keys, icfg, rows)
    E = packed.num_edits
    if mesh is None:  # committed to the base's device like the steps' outputs: the first step compiles once, not twice
        device = jax.tree.leaves(base)[0].sharding
        place = place_batch = lambda tree: jax.device_put(tree, device)
    else:  # the edit stack by its edit axis, a step's rows and per-edit vectors by their leading one
        place = lambda tree: sharding.batch_sharded(tree, mesh, edit_axis)
        place_batch = lambda tree: sharding.batch_sharded(tree, mesh)
    lora, opt_state = place(init_state(jnp.asarray(keys), cfg=cfg, icfg=icfg, num_edits=E))
    ok = place(jnp.ones((E,), bool))
    losses, active = [], []
    with contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh):  # kernels run per device's rows
        for plan in plans:
            batch = place_batch({k: v for k, v in plan.items() if k not in HOST_ONLY})
            lora, opt_state, ok, loss, act = packed_step(base, lora, opt_state, ok, batch, cfg=cfg, icfg=icfg,
                                                         window=plan["window"])
            losses.append(loss)
            active.append(act)
    back = np.argsort(order)  # the caller's edit order
    lora = jax.tree.map(lambda x: x[back], edit_major(lora))
    return lora, {k: v[back] for k, v in per_edit_steps(plans, losses, active, ok).items()}


def per_edit_steps(plans: list[dict], losses, active, ok) -> dict:
    """Packed steps' per-edit loss / active ([E] each) regrouped by each edit's own step: [E, steps], as the
    vmapped loop reports them."""
    E = ok.shape[0]
    where = np.asarray([p["edit_step"] for p in plans]).T if plans else np.zeros((E, 0), np.int32)  # [E, P]
    steps = int(where.max(initial=-1)) + 1
    loss, act = np.zeros((E, steps), np.float32), np.zeros((E, steps), bool)
    if plans:
        got_loss, got_act = sharding.to_host(jnp.stack(losses, 1)), sharding.to_host(jnp.stack(active, 1))  # [E, P]
        e, p = np.nonzero(where >= 0)
        loss[e, where[e, p]], act[e, where[e, p]] = got_loss[e, p], got_act[e, p]
    return {"loss": loss, "active": act, "ok": sharding.to_host(ok)}


def take(packed: PackedEdits, order) -> PackedEdits:
    """The edits of `packed` in `order`."""
    return dataclasses.replace(packed, tokens=packed.tokens[order], loss_mask=packed.loss_mask[order],
                               seq_valid=packed.seq_valid[order], lr=packed.lr[order], epochs=packed.epochs[order],
                               edit_steps=packed.edit_steps[order])


def slots_and_tokens(packed: PackedEdits, keys, icfg: InnerConfig, rows: int = 1) -> tuple[int, int]:
    """(token slots computed, real tokens trained) over the chunk's steps."""
    if rows > 1:
        order = balanced_order(packed, rows)
        packed, keys = take(packed, order), np.asarray(keys)[order]
    plans = plan_steps(packed, np.asarray(keys), icfg, rows)
    return sum(p["tokens"].size for p in plans), sum(p["real_tokens"] for p in plans)
