"""A Llama / Qwen2 decoder as pure functions over a parameter pytree.

Parameters (leaves stacked over the L layers so one `lax.scan` runs the stack):

    {"embed": [V, D],
     "layers": {"attn_norm": [L, D], "mlp_norm": [L, D],
                "q_proj": {"w": [L, D, Hq*Dh], "b"?: [L, Hq*Dh]}, "k_proj": ..., "v_proj": ...,
                "o_proj": {"w": [L, Hq*Dh, D]}, "gate_proj", "up_proj": {"w": [L, D, F]}, "down_proj": {"w": [L, F, D]}},
     "final_norm": [D],
     "lm_head"?: [D, V]}            # absent when embeddings are tied

`forward` returns final hidden states, never `[B, S, V]` logits; `token_logprobs` turns hidden states into
per-token log-probs chunk by chunk along the sequence. Attention keys come either from the current tokens
(training, scoring) or from a KV cache (`kv_cache.py`, sampling); both share one masking rule: a query at
slot i sees key slot j iff j <= i and key j is a real token.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import lora_delta

# ---- parameters ---------------------------------------------------------------------------------


def init_params(key, cfg: ModelConfig, dtype=jnp.float32) -> dict:
    """Random parameters (normal, std 0.02), the layout above. For tests and smoke runs."""
    L, D, F = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
    shapes = {"q_proj": (D, cfg.q_dim), "k_proj": (D, cfg.kv_dim), "v_proj": (D, cfg.kv_dim),
              "o_proj": (cfg.q_dim, D), "gate_proj": (D, F), "up_proj": (D, F), "down_proj": (F, D)}
    keys = iter(jax.random.split(key, 2 * len(shapes) + 2))
    normal = lambda shape: (0.02 * jax.random.normal(next(keys), shape)).astype(dtype)
    layers = {name: {"w": normal((L, *s))} for name, s in shapes.items()}
    if cfg.qkv_bias:
        for name in ("q_proj", "k_proj", "v_proj"):
            layers[name]["b"] = normal((L, shapes[name][1]))
    layers["attn_norm"] = jnp.ones((L, D), dtype)
    layers["mlp_norm"] = jnp.ones((L, D), dtype)
    params = {"embed": normal((cfg.vocab_size, D)), "layers": layers, "final_norm": jnp.ones((D,), dtype)}
    if not cfg.tie_embeddings:
        params["lm_head"] = normal((D, cfg.vocab_size))
    return params


def output_embedding(params: dict):  # -> [D, V]
    return params["lm_head"] if "lm_head" in params else params["embed"].T


# ---- building blocks ------------------------------------------------------------------------------


def rms_norm(x, w, eps: float):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * w.astype(jnp.float32)).astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig):  # -> [Dh/2] float32
    """HF's inverse frequencies, with Llama-3 smooth scaling when configured."""
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
    s = cfg.rope_scaling
    if s is None:
        return inv
    low_wl = s.original_max_position_embeddings / s.low_freq_factor
    high_wl = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * jnp.pi / inv
    scaled = jnp.where(wavelen > low_wl, inv / s.factor, inv)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x, positions, inv_freq):
    """Rotate-half RoPE (HF convention). x: [B, S, H, Dh], positions: [B, S] int."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [B, S, Dh/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, S, 1, Dh]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x.astype(jnp.float32) * jnp.cos(emb) + rotated * jnp.sin(emb)).astype(x.dtype)


def positions_from_mask(mask):  # mask: bool [B, S], True on real tokens
    """0-based positions that skip left padding."""
    pos = jnp.cumsum(mask, axis=-1)
    return pos - (pos >= 1)


def _proj(x, p: dict, lora: Optional[dict], scale: float):
    y = jnp.einsum("bsi,io->bso", x, p["w"])
    if "b" in p:
        y = y + p["b"]
    if lora is not None:
        y = y + lora_delta(x, lora["a"], lora["b"], scale).astype(y.dtype)
    return y


def attend(q, k, v, mask):
    """Grouped-query attention. q: [B, S, Hq, Dh]; k, v: [B, Hkv, T, Dh]; mask: bool [B, S, T] -> [B, S, Hq*Dh].

    Query head i reads key/value head i // (Hq / Hkv), as HF's `repeat_kv`. Keys are head-major, the KV
    cache's layout, so neither einsum needs a transposed copy. Scores and softmax are float32.
    """
    B, S, Hq, Dh = q.shape
    Hkv = k.shape[1]
    qg = q.reshape(B, S, Hkv, Hq // Hkv, Dh)
    scores = jnp.einsum("bskgd,bktd->bkgst", qg, k, preferred_element_type=jnp.float32) / jnp.sqrt(Dh)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)  # a row with no key: uniform
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgst,bktd->bkgsd", probs, v)  # [B, Hkv, G, S, Dh]: v stays the contiguous operand
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, Hq * Dh)


def _layer(cfg: ModelConfig, lora_scale: float, h, lp, lora, kv, positions, key_valid, q_slot, inv_freq):
    """One decoder layer. h: [B, S, D]. kv: None, or (k, v, layer, index) with the whole cache k, v
    [L, B, Hkv, T, Dh]: this step's keys/values are written at slot `index` of `layer`, in place."""
    B, S, _ = h.shape
    lo = lambda name: None if lora is None else lora.get(name)
    heads_first = lambda t: t.transpose(0, 2, 1, 3)  # [B, S, H, Dh] -> [B, H, S, Dh]
    x = rms_norm(h, lp["attn_norm"], cfg.rms_norm_eps)
    q = _proj(x, lp["q_proj"], lo("q_proj"), lora_scale).reshape(B, S, cfg.num_heads, cfg.head_dim)
    k = _proj(x, lp["k_proj"], lo("k_proj"), lora_scale).reshape(B, S, cfg.num_kv_heads, cfg.head_dim)
    v = _proj(x, lp["v_proj"], lo("v_proj"), lora_scale).reshape(B, S, cfg.num_kv_heads, cfg.head_dim)
    q, k, v = apply_rope(q, positions, inv_freq), heads_first(apply_rope(k, positions, inv_freq)), heads_first(v)
    new_kv = None
    if kv is not None:  # write into the cache, attend over this layer's whole cache
        k_all, v_all, layer, index = kv
        k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, 0, index, 0))
        v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, 0, index, 0))
        k, v, new_kv = k_all[layer].astype(q.dtype), v_all[layer].astype(q.dtype), (k_all, v_all)
    k_slot = jnp.arange(k.shape[2])
    mask = (k_slot[None, :] <= q_slot[:, None])[None] & key_valid[:, None, :]  # [B, S, T]
    h = h + _proj(attend(q, k, v, mask), lp["o_proj"], lo("o_proj"), lora_scale)
    x = rms_norm(h, lp["mlp_norm"], cfg.rms_norm_eps)
    gate = _proj(x, lp["gate_proj"], lo("gate_proj"), lora_scale)
    up = _proj(x, lp["up_proj"], lo("up_proj"), lora_scale)
    h = h + _proj(jax.nn.silu(gate) * up, lp["down_proj"], lo("down_proj"), lora_scale)
    return h, new_kv


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    saveable = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[policy]
    return jax.checkpoint(fn, policy=saveable)


# ---- the model ------------------------------------------------------------------------------------


def forward(params: dict, cfg: ModelConfig, tokens, positions, token_mask, *, lora: Optional[dict] = None,
            lora_scale: float = 0.0, cache: Optional[dict] = None):
    """Run the decoder; return (hidden [B, S, D] after the final norm, updated cache or None).

    tokens, positions: int [B, S]; token_mask: bool [B, S] (False on padding).
    lora: None, a shared adapter (leaves [L, in, r]) or one adapter per row (leaves [L, B, in, r]).
    cache: None, or a KV cache from `kv_cache.init_cache`; tokens are written at `cache["index"]`.
    """
    B, S = tokens.shape
    h = params["embed"][tokens]
    inv_freq = rope_inv_freq(cfg)
    if cache is None:
        q_slot, key_valid = jnp.arange(S), token_mask
    else:
        q_slot = cache["index"] + jnp.arange(S)
        key_valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], token_mask, cache["index"], axis=1)
    layer_fn = lambda h, lp, lo, kv: _layer(cfg, lora_scale, h, lp, lo, kv, positions, key_valid, q_slot, inv_freq)
    if cache is None:
        h, _ = jax.lax.scan(_remat(lambda h, xs: (layer_fn(h, *xs, None)[0], None), cfg.remat), h,
                            (params["layers"], lora))
    else:  # the cache rides in the carry, so each layer updates it in place

        def body(carry, xs):
            h, k_all, v_all = carry
            lp, lo, layer = xs
            h, (k_all, v_all) = layer_fn(h, lp, lo, (k_all, v_all, layer, cache["index"]))
            return (h, k_all, v_all), None

        (h, k_all, v_all), _ = jax.lax.scan(body, (h, cache["k"], cache["v"]),
                                            (params["layers"], lora, jnp.arange(cfg.num_layers)))
        cache = {"k": k_all, "v": v_all, "valid": key_valid, "index": cache["index"] + S}
    return rms_norm(h, params["final_norm"], cfg.rms_norm_eps), cache


def logits_from_hidden(params: dict, hidden):  # hidden [..., D] -> float32 [..., V]
    return jnp.einsum("...d,dv->...v", hidden, output_embedding(params)).astype(jnp.float32)


def token_logprobs(params: dict, hidden, targets, chunk: Optional[int] = 128):
    """log p(targets) per position, float32 [B, S], from hidden [B, S, D].

    With `chunk`, logits exist only for `chunk` positions at a time (and are recomputed in the backward
    pass), so peak memory holds [B, chunk, V] rather than [B, S, V].
    """
    def one(h, t):  # h [B, c, D], t [B, c]
        logits = logits_from_hidden(params, h)
        picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    B, S = targets.shape
    if chunk is None or S <= chunk:
        return one(hidden, targets)
    n = -(-S // chunk)
    pad = n * chunk - S
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(B, n, chunk, -1).swapaxes(0, 1)
    t = jnp.pad(targets, ((0, 0), (0, pad))).reshape(B, n, chunk).swapaxes(0, 1)
    out = jax.lax.map(lambda ht: jax.checkpoint(one)(*ht), (h, t))  # [n, B, chunk]
    return out.swapaxes(0, 1).reshape(B, n * chunk)[:, :S]


def sequence_logprobs(params: dict, cfg: ModelConfig, tokens, loss_mask, *, lora=None, lora_scale=0.0,
                      chunk: Optional[int] = 128):
    """Next-token log-probs of right-padded sequences: float32 [B, S-1], zero where loss_mask[:, 1:] is 0.

    tokens: int [B, S]; loss_mask: [B, S], 1 on tokens whose probability counts (prediction targets).
    Right padding needs no attention mask: under the causal rule no real token sees a later pad.
    """
    B, S = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(S), (B, S))
    hidden, _ = forward(params, cfg, tokens, positions, jnp.ones((B, S), bool), lora=lora, lora_scale=lora_scale)
    lp = token_logprobs(params, hidden[:, :-1], tokens[:, 1:], chunk)
    return lp * loss_mask[:, 1:]
