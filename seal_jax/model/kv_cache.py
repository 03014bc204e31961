"""The KV cache: a plain pytree threaded through `transformer.forward`.

    {"k", "v": [L, B, Hkv, T, Dh], "valid": bool [B, T], "index": int32 []}

All rows write at the same slot `index` (prompts are left-padded), and `valid` marks which slots hold real
tokens, so rows of different prompt lengths share one cache and one compiled decode step. Heads come before
slots, the layout attention reads without a transposed copy; `transformer.forward` carries the whole
cache through its layer scan and writes each step's keys and values in place.
"""
import jax.numpy as jnp

from seal_jax.model.config import ModelConfig


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> dict:
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
            "valid": jnp.zeros((batch, length), bool), "index": jnp.zeros((), jnp.int32)}


def cache_bytes(cfg: ModelConfig, batch: int, length: int, bytes_per_elem: int = 4) -> int:
    return 2 * cfg.num_layers * batch * length * cfg.kv_dim * bytes_per_elem
