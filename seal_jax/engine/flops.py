"""FLOPs of a packed inner step, counted by hand: the model's useful work, and what a fused attention kernel runs.

XLA's cost model does not see inside a Pallas kernel (a splash-attention training step compiled for v5e reports
~0 FLOPs for its attention) nor, on GPU, inside cuDNN's fused attention (a custom call; `cost_analysis()` answers
None there at all). So attention is counted here, in one function (`attention_flops`), from the number of
(query, key) score entries it covers:

    useful     each document's causal pairs n (n + 1) / 2 (`causal_pairs`): real tokens, within their document
    kernel     the pairs of every tile the kernel visits (`kernel_pairs`): whole block_q x block_kv tiles that
               meet the causal band; tiles above the diagonal or further back than the step's span are skipped,
               segment ids mask inside a tile but skip none

and `useful_step_flops` is a packed step's useful work: real tokens only, each trained once, no padding, no
rematerialisation, no masked-out scores. A plan reports compiled FLOPs (XLA's count plus
`kernel_attention_flops` for a step whose attention is a kernel) against this, so a ratio cannot improve by work
moving out of the cost model's sight.

Counting rule: a matmul [M, K] x [K, N] is 2 M K N FLOPs; elementwise work (norms, softmax, RoPE, the optimiser)
is not counted. Per trained token, the base model's matmul weights run forward (2 x weights) and backward for
the activation gradient only (2 x weights: LoRA trains no base weight), the LM head likewise on every position
that predicts a trained token, and each LoRA adapter forward (x A, then B) and backward (input and A, B
gradients: 3 x its forward).
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import PROJECTION_GROUP, projection_shape, splash_block, splash_row

CUDNN_TILE = 128  # the tile side assumed for cuDNN's fused attention (its Hopper flash kernels use 64-128 rows)


def causal_pairs(lengths: Iterable[int]) -> int:
    """Score entries of causal attention within each document: sum of n (n + 1) / 2."""
    return int(sum(int(n) * (int(n) + 1) // 2 for n in lengths))


def kernel_pairs(T: int, span: Optional[int], block_q: int, block_kv: int) -> int:
    """Score entries a tiled kernel computes over a row of T tokens (a multiple of both blocks): every tile with
    at least one query i and key j such that j <= i and (span is None or j >= i - span), in full."""
    if T % block_q or T % block_kv:
        raise ValueError(f"row of {T} tokens is not a multiple of the tiles ({block_q}, {block_kv})")
    q_lo = np.arange(T // block_q)[:, None] * block_q
    k_lo = np.arange(T // block_kv)[None, :] * block_kv
    visited = k_lo <= q_lo + block_q - 1                        # some key at or before some query of the tile
    if span is not None:
        visited &= k_lo + block_kv - 1 >= q_lo - span           # some key within span of some query
    return int(visited.sum()) * block_q * block_kv


def attention_flops(cfg: ModelConfig, pairs: int, *, backward: bool = True, recompute: bool = False) -> float:
    """THE count of attention FLOPs, all layers, over `pairs` (query, key) score entries per layer and head
    group: 2 x Hq x Dh per entry per matmul. Forward: QK^T and PV (2 matmuls). backward: dP = dO V^T, dV = P^T dO,
    dQ = dS K, dK = dS^T Q (4 more). recompute: a flash kernel's backward recomputes QK^T (1 more; not useful)."""
    matmuls = 2 + ((4 + int(recompute)) if backward else 0)
    return 2.0 * cfg.num_heads * cfg.head_dim * float(pairs) * matmuls * cfg.num_layers


def kernel_tile(impl: str, T: int) -> tuple[int, int]:
    """(row length the kernel runs at, tile side): splash pads rows to 128 and picks its tile
    (`transformer.splash_block`); cuDNN: rows as given, `CUDNN_TILE`."""
    if impl == "splash":
        row = splash_row(T)
        return row, splash_block(row)
    if impl == "cudnn":
        row = -(-T // CUDNN_TILE) * CUDNN_TILE
        return row, CUDNN_TILE
    raise ValueError(f"no kernel tiles for attention_impl={impl!r}; kernels: splash, cudnn")


def kernel_attention_flops(cfg: ModelConfig, impl: str, T: int, span: Optional[int]) -> float:
    """FLOPs a fused attention kernel executes in one packed training step (forward, backward with its QK^T
    recompute, all layers) over a row of T tokens banded to `span` (None: causal over the row), plus the
    forward run again in the backward pass under per-layer remat (`cfg.remat` full or dots). What XLA's cost
    model misses on a splash / cuDNN step: add it to the compiled count."""
    row, tile = kernel_tile(impl, T)
    pairs = kernel_pairs(row, span, tile, tile)
    remat_forward = attention_flops(cfg, pairs, backward=False) if cfg.remat != "none" else 0.0
    return attention_flops(cfg, pairs, backward=True, recompute=True) + remat_forward


def layer_matmul_weights(cfg: ModelConfig) -> int:
    """Weights one token multiplies in one decoder layer: q, k, v, o, gate, up, down kernels."""
    return int(sum(np.prod(projection_shape(cfg, name)) for name in PROJECTION_GROUP))


def lora_flops_per_token(cfg: ModelConfig, spec: LoraSpec) -> float:
    """One token's LoRA forward, all layers: (x A) then (h B) for every target, 2 r (in + out) each."""
    return float(cfg.num_layers * sum(2 * spec.rank * sum(projection_shape(cfg, name)) for name in spec.targets))


def useful_step_flops(cfg: ModelConfig, spec: LoraSpec, lengths: Iterable[int],
                      predictions: Optional[int] = None) -> float:
    """Useful FLOPs of one packed step (forward and backward) whose real documents have `lengths` tokens:
    every real token through the layers, `predictions` positions (default: n - 1 per document, each predicting
    the next token of its document) through the LM head, attention over each document's causal pairs.
    Padding, remat and masked scores count nothing. A round's useful FLOPs: the sum over its steps."""
    lengths = [int(n) for n in lengths]
    tokens = sum(lengths)
    predictions = sum(max(n - 1, 0) for n in lengths) if predictions is None else int(predictions)
    layers = 2 * 2 * cfg.num_layers * layer_matmul_weights(cfg) * tokens     # forward + activation gradient
    head = 2 * 2 * cfg.hidden_size * cfg.vocab_size * predictions
    lora = 3 * lora_flops_per_token(cfg, spec) * tokens
    return float(layers + head + lora) + attention_flops(cfg, causal_pairs(lengths), backward=True)
