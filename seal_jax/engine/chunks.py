"""Many self-edits' inner updates, a chunk at a time, by one of two step forms (`InnerConfig.step_form`).

    vmapped   `inner.inner_train_edits`: one jitted scan per chunk, vmapped over edits; every edit computes
              every step at the step's longest document. Edit-parallel on a mesh's "edit" axis.
    packed    `packed.train_packed`: each step's real documents end to end in packed rows; compute follows real
              tokens. On a mesh, one row per device of the ("edit", "fsdp") axes, each holding the documents of
              the edits (and adapters) that device owns.

Both give the same adapters (tested to float32 rounding) and the same per-edit metrics, so callers choose by
speed alone. Chunks bound memory whatever the number of edits; every chunk has the same edit count (the last
is padded with dummy edits whose results are dropped), so one compiled program serves a whole run.

A chunk runs as many steps as its longest training, each at its longest row (packed) or document (vmapped), so
callers put like trainings together first (`chunk_order`): each edit's result depends only on its own documents
and key, never on its chunk.
"""
from __future__ import annotations

from typing import Iterator

import jax
import numpy as np

from seal_jax.engine.inner import (InnerConfig, PackedEdits, inner_train_edits, length_buckets, pad_edits, step_plan,
                                   take_edits)
from seal_jax.engine.packed import packed_rows, slots_and_tokens, train_packed
from seal_jax.model.config import ModelConfig
from seal_jax.runtime import sharding


def chunk_order(steps, tokens, group: int = 1) -> np.ndarray:
    """A permutation of E edits (steps, tokens: int [E], each edit's optimiser steps and real tokens per epoch)
    that puts like trainings in the same chunks: groups of `group` consecutive edits (one item's repeats, kept
    together) ordered by their first edit's steps, then its tokens, most first (ties keep their order). On
    SEAL's length mixes a round runs about half the packed steps it runs as drawn (docs/planning.md)."""
    steps, tokens = np.asarray(steps), np.asarray(tokens)
    ranked = sorted(range(0, len(steps), group), key=lambda e: (-int(steps[e]), -int(tokens[e]), e))
    return np.asarray([i for e in ranked for i in range(e, min(e + group, len(steps)))], np.int64)


def _chunks(packed: PackedEdits, keys, edits_per_chunk: int, multiple: int = 1):
    """(start, stop, the chunk padded to its width, its keys) for each chunk. Width: `edits_per_chunk`, or the
    call's edits if fewer (4 edits train as 4, not 6), rounded up to `multiple` (the mesh's)."""
    keys = np.asarray(keys)
    width = -(-min(edits_per_chunk, packed.num_edits) // multiple) * multiple
    for start in range(0, packed.num_edits, edits_per_chunk):
        stop = min(start + edits_per_chunk, packed.num_edits)
        k = np.concatenate([keys[start:stop], np.repeat(keys[:1], width - (stop - start), 0)])
        yield start, stop, pad_edits(take_edits(packed, start, stop), width), k


def token_slots(packed: PackedEdits, keys, icfg: InnerConfig, edits_per_chunk: int) -> int:
    """Token positions the training steps compute (real tokens plus padding), in the configured step form."""
    total = 0
    for _, _, chunk, k in _chunks(packed, keys, edits_per_chunk):
        if icfg.step_form == "packed":
            total += slots_and_tokens(chunk, k, icfg)[0]
            continue
        edits, hparams = chunk.arrays()
        plan = np.asarray(step_plan(edits, k, hparams, icfg=icfg, steps=packed.steps))
        sizes = np.asarray(length_buckets(chunk.tokens.shape[-1], icfg.length_buckets))
        total += int(sizes[plan[plan >= 0]].sum()) * chunk.num_edits * icfg.batch_size
    return total


def train_in_chunks(base, cfg: ModelConfig, icfg: InnerConfig, packed: PackedEdits, keys,
                    edits_per_chunk: int, mesh=None) -> Iterator[tuple[int, int, dict, dict]]:
    """Yield (start, stop, lora_stack [C, ...], metrics) per chunk; every chunk has the same shapes.

    keys: [E, 2] PRNG keys, one per edit. The last chunk is padded with dummy edits (results dropped); a call
    with fewer edits than `edits_per_chunk` runs one chunk of just its edits (dummy edits cost a packed step its
    adapters' optimiser pass and per-token LoRA, so a held-out evaluation of 4 items does not train 6).
    With a mesh, chunks are rounded up to a multiple of its "edit" axis (packed: of its packed rows) and placed
    edit-sharded;
    `base` should already be placed (`sharding.shard_params`).
    """
    m = packed_rows(mesh) if icfg.step_form == "packed" else sharding.edit_multiple(mesh)
    cfg = cfg.replace(remat=icfg.remat) if icfg.remat else cfg  # the inner updates' own remat, where set
    for start, stop, chunk, k in _chunks(packed, keys, edits_per_chunk, m):
        if icfg.step_form == "packed":
            lora, metrics = train_packed(base, cfg, icfg, chunk, k, mesh)
        else:
            edits, hparams = chunk.arrays()
            if mesh is not None:
                edits, k, hparams = sharding.edit_sharded((edits, k, hparams), mesh)
            lora, metrics = inner_train_edits(base, edits, k, hparams, cfg=cfg, icfg=icfg, steps=packed.steps)
        n = stop - start
        yield start, stop, jax.tree.map(lambda x: x[:n], lora), jax.tree.map(lambda x: sharding.to_host(x)[:n], metrics)
