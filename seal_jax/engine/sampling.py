"""Batched generation with a KV cache: one jitted prefill + `lax.while_loop` decode.

Prompts of different lengths are left-padded into one `[B, P]` batch, so every row writes the same cache
slot at every step. B and P are rounded up to buckets (B: 1, 2, 4, then multiples of 4; P: powers of two)
and `max_new_tokens` is static, so a run that keeps its settings compiles once. Rows stop independently on
any stop token; the loop ends when all rows have stopped. An optional LoRA is either shared by all rows or
picked per row from a stack of adapters (`adapter_of_row`: the index of each prompt's adapter), which is how E
self-edits are scored at once: gathered per row ([L, B, ...], B adapters read per decode step; on a mesh each
device holds its rows' adapters, which is what the plans cost), or, off a mesh with fewer adapters than rows
(several questions per adapter), kept as the stack, each token masked to its row's adapter
(`transformer.lora_delta_per_token`, dense form: E adapters read per step).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seal_jax.model import kv_cache
from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import rows_lora
from seal_jax.model.transformer import forward, logits_from_hidden, param_dtype, positions_from_mask
from seal_jax.engine.inner import round_up
from seal_jax.runtime.sharding import batch_multiple, on_mesh, place_batch, to_host
from seal_jax.runtime.terminal import progress
from seal_jax.tokenizer import stop_token_ids


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0   # 0 -> greedy
    top_p: float = 1.0


@dataclasses.dataclass(frozen=True)
class SelfEditSampling:
    """How a generator writes self-edits: its decoding settings, and prompts per sampler call."""
    sampling: SamplingConfig
    batch: int                 # prompts per `generate` call: one compiled shape for the whole E-step


@dataclasses.dataclass
class Generation:
    tokens: list[list[int]]    # generated ids per prompt, stop token excluded
    texts: list[str]
    num_tokens: list[int]      # generated tokens per prompt, stop token included when it was produced


def bucket(n: int, minimum: int = 1) -> int:
    """Next power of two >= max(n, minimum): the shapes one run compiles for."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def row_bucket(n: int) -> int:
    """Batch rows compiled for n prompts: 1, 2, 4, then multiples of 4 (12 questions run as 12 rows, not 16:
    a filler row costs a full row of prefill and decode, and a few more shapes compile once each)."""
    return bucket(n) if n <= 4 else round_up(n, 4)


def _pick(logits, key, temperature, top_p, greedy: bool):  # logits: f32 [B, V] -> int32 [B]
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / jnp.maximum(temperature, 1e-6)
    probs = jax.nn.softmax(logits, axis=-1)
    cutoff = nucleus_cutoff(probs, top_p)
    logits = jnp.where(probs >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def nucleus_cutoff(probs, top_p, iters: int = 40):  # probs: f32 [B, V] -> [B, 1]
    """Largest c with mass(p >= c) >= top_p: keeping p >= c is the smallest set reaching top_p.

    Bisection over the threshold costs `iters` reductions over V instead of a [B, V] sort per decode step
    (a sort of 49k-152k entries per row dominates a CPU decode step).
    """
    def body(_, lo_hi):
        lo, hi = lo_hi
        mid = 0.5 * (lo + hi)
        ok = jnp.sum(jnp.where(probs >= mid, probs, 0.0), axis=-1, keepdims=True) >= top_p
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    hi = jnp.max(probs, axis=-1, keepdims=True)
    lo, _ = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(hi), hi * (1 + 1e-6)))
    return jnp.where(top_p >= 1.0, 0.0, jnp.minimum(lo, hi))  # top_p = 1: everything, whatever the rounding


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "greedy", "lora_scale", "stack_lora"))
def _generate(params, lora, adapter_of_row, tokens, mask, stop_ids, key, temperature, top_p, *, cfg: ModelConfig,
              max_new_tokens: int, greedy: bool, lora_scale: float, stack_lora: bool = False):
    """tokens, mask: [B, P] left-padded. Returns (out [B, M] int32, n_generated [B] int32).
    stack_lora: answer from the stack itself (see the module docstring) rather than per-row copies of it."""
    rows = None
    if lora is not None and adapter_of_row is not None:
        if stack_lora:  # stack [E, L, ...] -> layer-major [L, E, ...], each row's tokens masked to its adapter
            lora, rows = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), lora), adapter_of_row
        else:  # stack [E, L, ...] -> per-row [L, B, ...]
            lora = rows_lora(lora, adapter_of_row)
    static = dict(cfg=cfg, max_new_tokens=max_new_tokens, greedy=greedy, lora_scale=lora_scale)
    state = prefill(params, lora, tokens, mask, stop_ids, key, temperature, top_p, rows=rows, **static)
    return decode(params, lora, state, stop_ids, temperature, top_p, rows=rows, **static)


def prefill(params, lora, tokens, mask, stop_ids, key, temperature, top_p, rows=None, *, cfg: ModelConfig,
            max_new_tokens: int, greedy: bool, lora_scale: float):
    """The prompts through the model into a fresh cache, and the first token: the decode loop's state.
    rows: None, or int [B]: `lora` is a layer-major stack and row b uses its adapter rows[b].

    Separate from `decode` (both run inside `_generate`) so a plan can cost each (`engine/aot.py`)."""
    B, P = tokens.shape
    cache = kv_cache.init_cache(cfg, B, P + max_new_tokens, param_dtype(params))
    positions = positions_from_mask(mask)
    hidden, cache = forward(params, cfg, tokens, positions, mask, lora=lora, lora_scale=lora_scale, cache=cache,
                            **row_adapters(rows, P))
    key, sub = jax.random.split(key)
    first = _pick(logits_from_hidden(params, hidden[:, -1]), sub, temperature, top_p, greedy)
    out = jnp.zeros((B, max_new_tokens), jnp.int32).at[:, 0].set(first)
    return (jnp.int32(1), cache, first, positions[:, -1] + 1, out, _is_stop(first, stop_ids), key)


def _is_stop(t, stop_ids):  # t [B] -> bool [B]
    return jnp.any(t[:, None] == stop_ids[None, :], axis=-1)


def row_adapters(rows, S: int) -> dict:
    """`forward`'s per-token adapter arguments for S tokens of every row: none, or each row's adapter id."""
    return {} if rows is None else dict(token_adapter=jnp.broadcast_to(rows[:, None], (rows.shape[0], S)),
                                        lora_impl="dense")


def decode(params, lora, state, stop_ids, temperature, top_p, rows=None, *, cfg: ModelConfig, max_new_tokens: int,
           greedy: bool, lora_scale: float):
    """The `lax.while_loop` from `prefill`'s state until every row stopped or M tokens: (out [B, M], n [B])."""
    B = state[2].shape[0]

    def cond(s):
        step, *_, done, _ = s
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(s):
        step, cache, last, pos, out, done, key = s
        hidden, cache = forward(params, cfg, last[:, None], pos[:, None], jnp.ones((B, 1), bool),
                                lora=lora, lora_scale=lora_scale, cache=cache, **row_adapters(rows, 1))
        key, sub = jax.random.split(key)
        nxt = _pick(logits_from_hidden(params, hidden[:, 0]), sub, temperature, top_p, greedy)
        nxt = jnp.where(done, 0, nxt)
        out = out.at[:, step].set(nxt)
        return step + 1, cache, nxt, pos + 1, out, done | _is_stop(nxt, stop_ids), key

    step, _, _, _, out, done, _ = jax.lax.while_loop(cond, body, state)
    # number generated = index of first stop + 1, or all `step` tokens if none
    stop_at = jnp.where(is_stop_matrix(out, stop_ids), jnp.arange(max_new_tokens)[None, :], max_new_tokens)
    n = jnp.minimum(jnp.min(stop_at, axis=-1) + 1, step)
    return out, n


def is_stop_matrix(out, stop_ids):  # out [B, M] -> bool [B, M]
    return jnp.any(out[..., None] == stop_ids, axis=-1)


def generate(params, cfg: ModelConfig, tokenizer, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
             *, key=None, lora=None, lora_scale: float = 0.0, adapter_of_row: Optional[Sequence[int]] = None,
             stop_ids: Optional[Sequence[int]] = None, min_batch: int = 1, min_prompt: int = 16,
             stack_lora: Optional[bool] = None) -> Generation:
    """Generate for token-id prompts. `adapter_of_row[i]` picks prompt i's adapter from a stacked `lora`, read
    from the stack itself or gathered per row (`stack_lora`; None: as the module docstring says).

    `tokenizer` decodes the texts and supplies default stop ids; with None, pass `stop_ids` (texts are empty).
    """
    if not prompts:
        return Generation([], [], [])
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    n = len(prompts)
    B = round_up(row_bucket(max(n, min_batch)), batch_multiple(params))
    P = bucket(max(len(p) for p in prompts), min_prompt)
    tokens = np.zeros((B, P), np.int32)
    mask = np.zeros((B, P), bool)
    for i, p in enumerate(prompts):
        tokens[i, P - len(p):], mask[i, P - len(p):] = p, True
    tokens[n:, -1], mask[n:, -1] = tokens[0, -1], True  # filler rows: one real token, results dropped
    rows = None
    if adapter_of_row is not None:
        if len(adapter_of_row) != n:
            raise ValueError(f"adapter_of_row has {len(adapter_of_row)} entries for {n} prompts")
        rows = np.zeros((B,), np.int32)
        rows[:n] = adapter_of_row
    if stop_ids is None and tokenizer is None:
        raise ValueError("generate without a tokenizer needs explicit stop_ids")
    stops = np.asarray(stop_ids if stop_ids is not None else stop_token_ids(tokenizer), np.int32)
    key = jax.random.PRNGKey(0) if key is None else key
    greedy = sampling.temperature <= 0.0
    tokens, mask, rows = place_batch((tokens, mask, rows), params)
    if stack_lora is None:  # off a mesh: E adapters read per decode step instead of B gathered ones, if fewer
        stack_lora = rows is not None and not on_mesh(params) and jax.tree.leaves(lora)[0].shape[0] < B
    out, count = _generate(params, lora, rows, tokens, mask, stops, key, jnp.float32(sampling.temperature),
                           jnp.float32(sampling.top_p), cfg=cfg, max_new_tokens=sampling.max_new_tokens,
                           greedy=greedy, lora_scale=float(lora_scale), stack_lora=bool(stack_lora and rows is not None))
    out, count = to_host(out)[:n], to_host(count)[:n]
    stop_set = set(int(s) for s in stops)
    ids = [[int(t) for t in row[:c] if int(t) not in stop_set] for row, c in zip(out, count)]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True) if tokenizer is not None else [""] * n
    return Generation(ids, texts, [int(c) for c in count])


def generate_in_batches(params, cfg: ModelConfig, tokenizer, prompts: Sequence[Sequence[int]],
                        sampling: SamplingConfig, batch: int, key, desc: str = "sampling", **kw) -> list[str]:
    """Texts for many prompts, `batch` at a time (one compiled shape), with a progress bar.

    Batch i samples with fold_in(key, i), so results depend only on the key and the prompt list.
    """
    texts: list[str] = []
    for i in progress(range(0, len(prompts), batch), desc=desc):
        out = generate(params, cfg, tokenizer, prompts[i:i + batch], sampling, key=jax.random.fold_in(key, i),
                       min_batch=batch, **kw)
        texts += out.texts
    return texts


def sample_self_edits(params, cfg: ModelConfig, tokenizer, prompts: Sequence[Sequence[int]], k: int,
                      how: SelfEditSampling, key, desc: str = "sampling self-edits") -> list[list[str]]:
    """k samples for each prompt, [len(prompts)][k]: each prompt repeated k times in place, `how.batch` rows per
    call (so the result depends only on the key and the prompts, not on how they split into calls)."""
    texts = generate_in_batches(params, cfg, tokenizer, [p for p in prompts for _ in range(k)], how.sampling,
                                how.batch, key, desc)
    return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]
