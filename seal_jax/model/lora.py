"""LoRA as its own pytree, with HF PEFT's exact math (applied by `transformer.lora_delta`).

    y = x @ W (+ b) + (alpha / rank) * (x @ A) @ B,     A: [in, r] small random, B: [r, out] zeros

so a fresh adapter changes nothing. The LoRA pytree mirrors the base layer stack:
`{"q_proj": {"a": [L, in, r], "b": [L, r, out]}, ...}`. A stack of E adapters (one per self-edit) adds a
leading axis: `{"a": [E, L, in, r], ...}`. The scale `alpha / rank` is static and lives in `LoraSpec`,
never in the trainable pytree.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from seal_jax.model.config import ModelConfig
from seal_jax.model.transformer import PROJECTION_GROUP, projection_shape

ALL_TARGETS = tuple(PROJECTION_GROUP)  # q, k, v, o, gate, up, down


def normalize_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """Accept `q` or `q_proj` (and `all`); return canonical names in a fixed order."""
    names = set()
    for t in targets:
        t = t.strip()
        if t == "all":
            names.update(ALL_TARGETS)
            continue
        name = t if t.endswith("_proj") else f"{t}_proj"
        if name not in ALL_TARGETS:
            raise ValueError(f"unknown LoRA target {t!r}; choose among {ALL_TARGETS} (or 'q', 'v', ..., 'all')")
        names.add(name)
    if not names:
        raise ValueError("LoRA needs at least one target module")
    return tuple(n for n in ALL_TARGETS if n in names)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self):
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {self.rank}")
        object.__setattr__(self, "targets", normalize_targets(self.targets))

    @property
    def scale(self) -> float:
        return float(self.alpha) / float(self.rank)


def init_lora(key, cfg: ModelConfig, spec: LoraSpec, dtype=jnp.float32) -> dict:
    """A: kaiming-uniform (PEFT's default, bound 1/sqrt(in)), B: zeros. Leaves [L, in, r] / [L, r, out]."""
    out = {}
    for k, name in zip(jax.random.split(key, len(spec.targets)), spec.targets):
        n_in, n_out = projection_shape(cfg, name)
        bound = 1.0 / jnp.sqrt(n_in)
        out[name] = {"a": jax.random.uniform(k, (cfg.num_layers, n_in, spec.rank), dtype, -bound, bound),
                     "b": jnp.zeros((cfg.num_layers, spec.rank, n_out), dtype)}
    return out


def merge_lora(params: dict, lora: dict, spec: LoraSpec) -> dict:
    """Base params with W <- W + scale * A @ B folded in (same pytree structure as `params`)."""
    layers = {k: dict(v) if isinstance(v, dict) else v for k, v in params["layers"].items()}
    for name, ab in lora.items():
        group = layers[PROJECTION_GROUP[name]]
        w = group[name]["kernel"]
        delta = spec.scale * jnp.einsum("lir,lro->lio", ab["a"].astype(jnp.float32), ab["b"].astype(jnp.float32))
        group[name] = {**group[name], "kernel": (w.astype(jnp.float32) + delta).astype(w.dtype)}
    return {**params, "layers": layers}


def stack_loras(loras: Sequence[dict]) -> dict:
    """[E] list of adapters -> one pytree with a leading edit axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *loras)


def rows_lora(stacked: dict, rows):
    """Per-row adapters for `transformer.forward`: stack [E, L, ...] and rows int [B] -> [L, B, ...]."""
    return jax.tree.map(lambda x: jnp.swapaxes(jnp.take(x, rows, axis=0), 0, 1), stacked)


def unstack_lora(stacked: dict, i: int) -> dict:
    return jax.tree.map(lambda x: x[i], stacked)
