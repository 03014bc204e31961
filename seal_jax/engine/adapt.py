"""Adapt, then answer: the one sequence that turns inner-update requests into answers from adapted models.

    requests   [item][repeat] Request: tokenized training documents, lr, epochs, PRNG key, prompts
      pack_edits        one padded batch [E, N, S] for every request (one shape, one compile)
      train_in_chunks   C items' requests per vmapped inner update -> a LoRA stack [C x repeats, L, ...]
      answer_per_edit   every prompt of the chunk is a row of one `generate` call; row i is answered by
                        adapter `adapter_of_row[i]` of the stack
      regroup           answers and training summaries back per request, per item -> AdaptedChunk

A chunk holds whole items (every repeat of an item), like trainings together (`chunks.chunk_order`: fewer,
fuller steps), so results stream chunk by chunk, each naming its items, and a caller writes its records as each
chunk finishes. Domains build the requests and score the answers; nothing here knows what a passage or an ARC
task is.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator, Optional, Sequence

import jax
import numpy as np

from seal_jax.engine.answering import answer_per_edit
from seal_jax.engine.chunks import chunk_order, train_in_chunks
from seal_jax.engine.inner import InnerConfig, PackedEdits, pack_edits, summarize, take_edits
from seal_jax.engine.packed import take
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.runtime.terminal import progress


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    """How requests are trained and answered."""
    inner: InnerConfig            # LoRA, optimiser, batch, length buckets
    edits_per_chunk: int          # items per vmapped inner-update call (times their repeats)
    max_len: int                  # training documents are cut to this many tokens
    answer: SamplingConfig        # how the adapted models answer (greedy unless a temperature is set)
    answer_rows: int = 0          # rows per answering call (0: all of a chunk's); bounds a long prompt's prefill


@dataclasses.dataclass(frozen=True)
class Request:
    """One inner update to make, and what to ask the model it makes."""
    documents: Sequence[tuple[list[int], list[int]]]  # (tokens, loss_mask) per training document
    lr: float
    epochs: int
    key: np.ndarray                                   # uint32 [2]: the LoRA's init and the epochs' shuffles
    prompts: Sequence[list[int]]                      # token ids the adapted model answers, in order


@dataclasses.dataclass(frozen=True)
class Adapted:
    """What came of one request."""
    answers: list[str]            # one per prompt
    ok: bool                      # False: the loss, gradient or lr went non-finite (then `reason` says so)
    reason: Optional[str]
    last_loss: float              # of the last step taken (nan without one)
    train_tokens: int             # real tokens trained on, epochs counted


@dataclasses.dataclass(frozen=True)
class AdaptedChunk:
    items: list[int]              # indices into the caller's items
    adapted: list[list[Adapted]]  # [item][repeat]
    train_s: float                # wall time of this chunk's inner update (dispatch included)
    answer_s: float               # wall time of its answers


def pack_requests(requests: Sequence[Sequence[Request]], config: AdaptConfig) -> PackedEdits:
    """Every request's documents in one padded batch (item-major, repeat-minor): what the inner loop trains."""
    flat = [r for item in requests for r in item]
    return pack_edits([r.documents for r in flat], [r.lr for r in flat], [r.epochs for r in flat],
                      batch_size=config.inner.batch_size, max_len=config.max_len)


def adapt_and_answer(params, cfg, tok, requests: Sequence[Sequence[Request]], config: AdaptConfig, *, mesh=None,
                     desc: str = "inner updates") -> Iterator[AdaptedChunk]:
    """Train every request's LoRA and answer its prompts with it, `config.edits_per_chunk` items at a time.

    requests[i] are item i's repeats (the same number for every item): independent trainings whose results the
    caller combines. With a mesh, chunks are edit-sharded (`params` should already be placed on it).
    """
    if not requests:
        return
    repeats = len(requests[0])
    if repeats < 1 or any(len(r) != repeats for r in requests):
        counts = sorted({len(r) for r in requests})
        raise ValueError(f"every item needs the same number (>= 1) of requests, got {counts}")
    packed, flat = pack_requests(requests, config), [r for item in requests for r in item]
    order = chunk_order(packed.edit_steps, packed.epoch_tokens(), repeats)  # requests, item-major
    packed, flat = take(packed, order), [flat[i] for i in order]
    keys = np.stack([np.asarray(r.key) for r in flat])
    with progress(total=len(requests), desc=desc) as bar:
        t0 = time.perf_counter()  # a chunk's training time includes its slicing, padding and dispatch
        for start, stop, lora, metrics in train_in_chunks(params, cfg, config.inner, packed, keys,
                                                          config.edits_per_chunk * repeats, mesh):
            jax.block_until_ready(lora)  # lora: the chunk's adapter stack, leaves [stop - start, L, ...]
            t1 = time.perf_counter()
            answers = answer_per_edit(params, cfg, tok, [r.prompts for r in flat[start:stop]], config.answer,
                                      lora=lora, lora_scale=config.inner.lora.scale, max_rows=config.answer_rows)
            t2 = time.perf_counter()
            adapted = [Adapted(texts, s["ok"], s["reason"], s["last_loss"], take_edits(packed, i, i + 1).train_tokens())
                       for i, texts, s in zip(range(start, stop), answers, summarize(metrics))]
            bar.update((stop - start) // repeats)
            yield AdaptedChunk([int(order[j]) // repeats for j in range(start, stop, repeats)],
                               [adapted[j:j + repeats] for j in range(0, len(adapted), repeats)], t1 - t0, t2 - t1)
            t0 = time.perf_counter()  # the caller's work on this chunk is neither phase
