"""A Llama / Qwen2 decoder in Flax NNX, used through pure parameter pytrees.

The modules (`Decoder` > `DecoderLayer` > `Attention`, `MLP`, `RMSNorm`; projections are `nnx.Linear`,
the embedding `nnx.Embed`) state every shape once. The layer stack is built under `nnx.split_rngs` +
`nnx.vmap`, so each layer parameter has a leading layer axis and one `lax.scan` runs the stack. Their
pure state (`nnx.to_pure_dict(nnx.state(model))`) is the parameter pytree every jitted function takes:

    {"embed": {"embedding": [V, D]},
     "layers": {"attn_norm": {"scale": [L, D]}, "mlp_norm": {"scale": [L, D]},
                "attn": {"q_proj": {"kernel": [L, D, Hq*Dh], "bias"?: [L, Hq*Dh]}, "k_proj", "v_proj", "o_proj"},
                "mlp": {"gate_proj", "up_proj": {"kernel": [L, D, F]}, "down_proj": {"kernel": [L, F, D]}}},
     "final_norm": {"scale": [D]},
     "lm_head"?: {"kernel": [D, V]}}          # absent when embeddings are tied

Inside a traced function `bind(params, cfg)` merges them with the config's graphdef (`nnx.merge`: free
at run time, a few Python calls at trace time); `jax.jit` (not `nnx.jit`) wraps the callers, `cfg` being
their static argument, one-to-one with the graphdef. LoRA is a separate pytree keyed by projection name
(`lora.py`), passed down the stack beside the layer parameters.

`forward` returns final hidden states, never `[B, S, V]` logits; `token_logprobs` turns hidden states into
per-token log-probs chunk by chunk. Keys come from the current tokens (training, scoring) or from a KV
cache (`kv_cache.py`, sampling); one masking rule serves both: a query at slot i sees key slot j iff
j <= i and key j is a real token.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from seal_jax.model.config import ATTENTION_IMPLS, ModelConfig

# Which module holds each LoRA-able projection: the path is ("layers", group, name).
PROJECTION_GROUP = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn",
                    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_INIT = nnx.initializers.normal(0.02)  # random weights for tests and smoke runs; real ones are loaded

# ---- building blocks ------------------------------------------------------------------------------


def lora_delta(x, a, b, scale: float):
    """scale * (x @ A) @ B for x [B, S, in]. a: [in, r] shared, or [B, in, r] one adapter per batch row."""
    if a.ndim == 2:
        h = jnp.einsum("...i,ir->...r", x, a.astype(x.dtype))
        return scale * jnp.einsum("...r,ro->...o", h, b.astype(x.dtype))
    h = jnp.einsum("bsi,bir->bsr", x, a.astype(x.dtype))
    return scale * jnp.einsum("bsr,bro->bso", h, b.astype(x.dtype))


LORA_IMPLS = ("auto", "dense", "ragged")  # per-token LoRA (`lora_delta_per_token`); auto: dense


def lora_delta_per_token(x, a, b, token_adapter, scale: float, impl: str = "auto"):
    """scale * (x @ A_e) @ B_e where e = token_adapter [B, S] names each token's adapter in a stack a [E, in, r],
    b [E, r, out] shared by the rows, or one stack per row, a [B, E, in, r], b [B, E, r, out] (packed rows on a
    mesh: each row's own edits). Tokens must come sorted by adapter (packed rows are laid out edit by edit).

    impl dense (auto): two dense matmuls against all E adapters side by side ([tokens, E*r]) with each token's
    other adapters masked out: no gathers, no padding, E x the adapters' FLOPs (a few % of the layer's at r=32).
    impl ragged: two `lax.ragged_dot`s, one grouped matmul each. Compiled for the targets, dense moves fewer
    bytes everywhere: XLA:CPU and XLA:GPU lower ragged_dot to a dense [E, tokens, in] form, and in the knowledge
    `:paper` step on a v5e it read 1.3x dense's bytes per layer (docs/planning.md, "Packed inner updates")."""
    impl = resolve_lora_impl(impl)
    grouped = grouped_masked if impl == "dense" else grouped_ragged
    a, b = a.astype(x.dtype), b.astype(x.dtype)
    if a.ndim == 4:  # one stack per row: per device's rows (`over_rows`), their stacks as one, ids offset by row
        def rows_as_one(x, a, b, ids):  # x [G, S, in], a [G, E, in, r], b [G, E, r, out], ids [G, S] (sorted)
            G, E = a.shape[:2]
            ids = ids + E * jnp.arange(G, dtype=ids.dtype)[:, None]
            out = grouped(x.reshape(-1, x.shape[-1]), a.reshape(G * E, *a.shape[2:]), b.reshape(G * E, *b.shape[2:]),
                          ids.reshape(-1))
            return out.reshape(*x.shape[:-1], b.shape[-1])
        return scale * over_rows(rows_as_one, x, a, b, token_adapter)
    xf, ids = x.reshape(-1, x.shape[-1]), token_adapter.reshape(-1)
    return scale * grouped(xf, a, b, ids).reshape(*x.shape[:-1], b.shape[-1])


def resolve_lora_impl(impl: str) -> str:
    """auto -> dense, on every platform (`lora_delta_per_token` says why)."""
    if impl not in LORA_IMPLS:
        raise ValueError(f"inner.lora_impl={impl!r}; choose one of {LORA_IMPLS}")
    return "dense" if impl == "auto" else impl


def grouped_masked(x, a, b, ids):  # x [M, in], a [E, in, r], b [E, r, out], ids int [M] -> [M, out]
    h = jnp.einsum("ti,eir->ter", x, a) * jax.nn.one_hot(ids, a.shape[0], dtype=x.dtype)[..., None]
    return jnp.einsum("ter,ero->to", h, b)


def grouped_ragged(x, a, b, ids):  # the same with ids sorted, as two grouped matmuls
    sizes = jnp.bincount(ids, length=a.shape[0]).astype(jnp.int32)
    return jax.lax.ragged_dot(jax.lax.ragged_dot(x, a, sizes), b, sizes)


class TokenAdapters(NamedTuple):
    """Per-token adapters of a packed row: ids int [B, S] into the stack (sorted), and the static `LORA_IMPLS` form."""
    ids: jax.Array
    impl: str


def project(linear: nnx.Linear, x, lora: Optional[dict], scale: float, token_adapter=None):
    """x @ W (+ b) (+ the LoRA delta when this projection has an adapter)."""
    y = linear(x)
    if lora is None:
        return y
    if token_adapter is not None:  # a TokenAdapters
        return y + lora_delta_per_token(x, lora["a"], lora["b"], token_adapter.ids, scale,
                                        token_adapter.impl).astype(y.dtype)
    return y + lora_delta(x, lora["a"], lora["b"], scale).astype(y.dtype)


class RMSNorm(nnx.Module):
    """HF's RMSNorm: normalise in float32, cast back, then scale (nnx.RMSNorm scales before the cast)."""

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


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


def attend(q, k, v, mask, query_chunk: int = 0, unroll: bool = False):
    """Grouped-query attention. q: [B, S, Hq, Dh]; k, v: [B, Hkv, T, Dh]; mask: bool [B, S, T] -> [B, S, Hq*Dh].

    Query head i reads key/value head i // (Hq / Hkv), as HF's `repeat_kv`. Keys are head-major, the KV
    cache's layout, so neither einsum needs a transposed copy. Scores and softmax are float32.
    query_chunk > 0 and < S: `attend_query_chunks`, the same values with [B, H, chunk, T] scores at a time.
    """
    if 0 < query_chunk < q.shape[1]:
        return attend_query_chunks(q, k, v, mask, query_chunk, unroll)
    B, S, Hq, Dh = q.shape
    Hkv = k.shape[1]
    qg = q.reshape(B, S, Hkv, Hq // Hkv, Dh)
    scores = jnp.einsum("bskgd,bktd->bkgst", qg, k, preferred_element_type=jnp.float32) / jnp.sqrt(Dh)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)  # a row with no key: uniform
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgst,bktd->bkgsd", probs, v)  # [B, Hkv, G, S, Dh]: v stays the contiguous operand
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, Hq * Dh)


def attend_query_chunks(q, k, v, mask, chunk: int, unroll: bool = False):
    """`attend` over `chunk` queries at a time (a scan), each chunk rematerialised in the backward: the live
    scores are [B, H, chunk, T], not [B, H, S, T] (at S = T = 8192 and 32 heads: 0.5 GB against 8.6 GB per row).
    Exact: every query row's softmax sees all its keys. Padded queries (S not a multiple of chunk) see no key.
    unroll: the scan unrolled (`ModelConfig.unroll_loops`, planning: XLA's cost model counts a loop body once)."""
    B, S, Hq, Dh = q.shape
    n = -(-S // chunk)
    pad = n * chunk - S
    qc = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(B, n, chunk, Hq, Dh).swapaxes(0, 1)
    mc = jnp.pad(mask, ((0, 0), (0, pad), (0, 0))).reshape(B, n, chunk, mask.shape[-1]).swapaxes(0, 1)
    out = chunk_map(jax.checkpoint(lambda qm: attend(qm[0], k, v, qm[1])), (qc, mc), unroll)  # [n, B, chunk, Hq*Dh]
    return out.swapaxes(0, 1).reshape(B, n * chunk, Hq * Dh)[:, :S]


def chunk_map(fn, xs, unroll: bool = False):
    """`lax.map(fn, xs)` over the leading axis; unroll=True unrolls it, so XLA's cost model counts every chunk."""
    n = jax.tree.leaves(xs)[0].shape[0]
    return jax.lax.scan(lambda _, x: (None, fn(x)), None, xs, unroll=n if unroll else 1)[1]


def windows(x, block: int, span: int, axis: int, fill=0):
    """Blocks of `block` slots along `axis`, each with the `span` slots before it: [..., S, ...] ->
    [..., S / block, span + block, ...]. Static slices of the left-padded array, so the backward is pads and adds
    (no gather / scatter)."""
    nb, nw = x.shape[axis] // block, span // block
    pad = [(0, 0)] * x.ndim
    pad[axis] = (span, 0)
    xp = jnp.pad(x, pad, constant_values=fill)
    xb = xp.reshape(*x.shape[:axis], nb + nw, block, *x.shape[axis + 1:])
    parts = [jax.lax.slice_in_dim(xb, s, s + nb, axis=axis) for s in range(nw + 1)]  # each [.., nb, block, ..]
    return jnp.concatenate(parts, axis=axis + 1)


def banded_mask(segment_ids, token_mask, block: int, span: int):
    """Which keys each query sees in a packed row, by query block: bool [B, S/block, block, span + block].

    Query slot i = n*block + c sees window slot j (key slot n*block - span + j) iff that key exists, is not after
    i, is a real token, and lies in i's segment. Exact whenever no segment is longer than `span` + 1 tokens."""
    B, S = segment_ids.shape
    q_slot = jnp.arange(S).reshape(S // block, block)[:, :, None]                        # [nb, C, 1]
    k_slot = windows(jnp.arange(S), block, span, 0, fill=-1)[:, None, :]                # [nb, 1, W+C]
    seg_q = segment_ids.reshape(B, S // block, block)[..., None]
    seg_k = windows(segment_ids, block, span, 1, fill=-1)[:, :, None, :]
    valid_k = windows(token_mask, block, span, 1, fill=False)[:, :, None, :]
    return (k_slot >= 0) & (k_slot <= q_slot) & (seg_q == seg_k) & valid_k


def attend_banded(q, k, v, mask):
    """`attend` over each query block's window of keys only. q: [B, S, Hq, Dh]; k, v: [B, Hkv, S, Dh];
    mask: bool [B, nb, C, W+C] from `banded_mask` -> [B, S, Hq*Dh]. Work per row: S x (W+C), not S x S."""
    B, S, Hq, Dh = q.shape
    Hkv, (nb, C, WC) = k.shape[1], mask.shape[1:]
    qb = q.reshape(B, nb, C, Hkv, Hq // Hkv, Dh)
    kw, vw = windows(k, C, WC - C, 2), windows(v, C, WC - C, 2)                           # [B, Hkv, nb, W+C, Dh]
    scores = jnp.einsum("bnckgd,bknjd->bkgncj", qb, kw, preferred_element_type=jnp.float32) / jnp.sqrt(Dh)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgncj,bknjd->bnckgd", probs, vw)
    return out.reshape(B, S, Hq * Dh)


class PackedAttention(NamedTuple):
    """The mask of a packed row for a fused kernel, never materialised at [S, S] by us: the kernel applies it.
    segment_ids int [B, S] (`kernel_segments`: padding folded in), span: static look-back (banded) or None
    (causal over the row), impl: splash | cudnn."""
    segment_ids: jax.Array
    span: Optional[int]
    impl: str


def resolve_attention_impl(impl: str, platform: Optional[str] = None, dtype=None) -> str:
    """`ModelConfig.attention_impl` for a target: auto -> splash on TPU, cudnn on an NVIDIA GPU when the
    activations are bf16/f16 (cuDNN's fused attention has no f32 form), xla elsewhere. platform: the target's
    (`jax.Device.platform`; default: the running backend), so an AOT plan for a TPU picks splash on a CPU host."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"model.attention_impl={impl!r}; choose one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    platform = platform or jax.default_backend()
    if platform == "tpu":
        return "splash"
    half = dtype is None or jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if platform in ("gpu", "cuda") and half else "xla"


def kernel_segments(segment_ids, token_mask):  # int [B, S], bool [B, S] -> int [B, S]
    """Segment ids with every padding token made a segment of its own (-1 - slot): a kernel's mask is causal
    within a segment, so no real query sees a pad and every row keeps one key (itself)."""
    return jnp.where(token_mask, segment_ids, -1 - jnp.arange(segment_ids.shape[-1], dtype=segment_ids.dtype))


def attend_packed(q, k, v, mask: PackedAttention):
    """Block-diagonal causal attention of a packed row by a fused kernel. q: [B, S, Hq, Dh]; k, v: [B, Hkv, S,
    Dh] -> [B, S, Hq*Dh]; equal to `attend` with the block-diagonal mask (tests/test_kernels.py). On a mesh with
    "tp" each device runs its own heads."""
    kernels = {"splash": attend_splash, "cudnn": attend_cudnn}
    if mask.impl not in kernels:
        raise ValueError(f"attend_packed: unknown kernel {mask.impl!r}; choose splash or cudnn")
    return over_rows(functools.partial(kernels[mask.impl], span=mask.span), q, k, v, mask.segment_ids,
                     heads=(2, 1, 1, None), out_heads=(3, 2))  # q [B, S, Hq, Dh], k/v [B, Hkv, S, Dh] -> [B, S, Hq*Dh]


ROW_AXES = ("edit", "fsdp")  # the mesh axes packed rows are sharded over (`packed.packed_rows`)


def over_rows(fn, *rows, heads=None, out_heads=None):
    """fn(*rows) per device's own rows (every argument's leading axis) under the mesh in context (`jax.set_mesh`),
    as a `shard_map` over ROW_AXES: a Pallas/Mosaic kernel cannot be partitioned by XLA, and each row's
    attention is its own. heads: per argument, its axis sharded over the mesh's "tp" (None: replicated there);
    out_heads: the result's (ndim, that axis); None: the result is shaped like rows[0], replicated over "tp".
    Without such a mesh in context, fn(*rows)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(ROW_AXES) <= set(mesh.axis_names):
        return fn(*rows)
    tp = "tp" if "tp" in mesh.axis_names else None

    def spec(ndim, head_axis):
        axes = [ROW_AXES] + [None] * (ndim - 1)
        if head_axis is not None:
            axes[head_axis] = tp
        return jax.sharding.PartitionSpec(*axes)

    heads = heads or (None,) * len(rows)
    in_specs = tuple(spec(x.ndim, h) for x, h in zip(rows, heads))
    out_spec = spec(*out_heads) if out_heads is not None else spec(rows[0].ndim, None)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_spec, check_vma=False)(*rows)


SPLASH_BLOCKS = (512, 256, 128)  # query / key tile sides tried, largest first; rows are padded to 128


def splash_block(T: int) -> int:
    """The splash tile side for a row of T tokens (a multiple of 128): the largest of SPLASH_BLOCKS dividing T."""
    return next(b for b in SPLASH_BLOCKS if T % b == 0)


def splash_row(S: int) -> int:
    """The row length splash runs at: S rounded up to a multiple of 128 (its smallest tile)."""
    return -(-S // SPLASH_BLOCKS[-1]) * SPLASH_BLOCKS[-1]


def attend_splash(q, k, v, segment_ids, span: Optional[int]):
    """TPU splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`) with SegmentIds: a static causal
    (or causal band of `span` keys back: `LocalMask`) tile mask whose empty tiles the kernel skips, and the
    segment ids masking inside each tile. Grouped-query heads natively; rows padded to `splash_row` with
    singleton segments. On TPU the Mosaic kernel, elsewhere the same kernel in Pallas interpret mode (exact, slow:
    for tests) - chosen per lowering platform (`lax.platform_dependent`), so an AOT compile for a TPU gets the
    kernel even on a CPU host."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa
    B, S, Hq, Dh = q.shape
    T = splash_row(S)
    pad = lambda x, axis: jnp.pad(x, [(0, T - S) if a == axis else (0, 0) for a in range(x.ndim)])
    seg = jnp.concatenate([segment_ids, jnp.broadcast_to(-1 - jnp.arange(S, T, dtype=segment_ids.dtype), (B, T - S))],
                          axis=1)
    qh = pad((q.astype(jnp.float32) / jnp.sqrt(Dh)).astype(q.dtype), 1).transpose(0, 2, 1, 3)  # [B, Hq, T, Dh]
    kh, vh = pad(k, 2), pad(v, 2)                                                                 # [B, Hkv, T, Dh]
    tile = sa.CausalMask((T, T)) if span is None else sa.LocalMask((T, T), (span, 0), 0)
    n = splash_block(T)
    blocks = sa.BlockSizes(block_q=n, block_kv=n, block_kv_compute=n, block_q_dkv=n, block_kv_dkv=n,
                           block_kv_dkv_compute=n, block_q_dq=n, block_kv_dq=n)

    def run(interpret: bool):
        kernel = sa.make_splash_mha(sa.MultiHeadMask([tile] * Hq), block_sizes=blocks, head_shards=1,
                                    q_seq_shards=1, interpret=interpret)
        return lambda q, k, v, s: jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=sa.SegmentIds(s, s)))(
            q, k, v, s)

    out = jax.lax.platform_dependent(qh, kh, vh, seg, tpu=run(False), default=run(True))  # [B, Hq, T, Dh]
    return out[:, :, :S].transpose(0, 2, 1, 3).reshape(B, S, Hq * Dh)


def attend_cudnn(q, k, v, segment_ids, span: Optional[int], implementation: str = "cudnn"):
    """`jax.nn.dot_product_attention` with cuDNN's fused flash attention: causal (tiles above the diagonal
    skipped), banded by `local_window_size` (tiles further back than `span` skipped), and the segments as its
    boolean `mask` [B, 1, S, S] (the public API takes segment ids no other way; cuDNN reads it as a bias, so that
    one mask per row is materialised, bf16, shared by all heads and layers). implementation="xla" runs the same
    arguments through JAX's reference on any backend (how the arguments are tested on CPU)."""
    B, S, Hq, Dh = q.shape
    same = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    out = jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask=same,
                                       is_causal=True, local_window_size=None if span is None else (span, 0),
                                       implementation=implementation)
    return out.reshape(B, S, Hq * Dh)


# ---- modules --------------------------------------------------------------------------------------


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        linear = functools.partial(nnx.Linear, use_bias=False, kernel_init=_INIT, bias_init=_INIT,
                                   param_dtype=param_dtype, rngs=rngs)
        D = cfg.hidden_size
        self.q_proj = linear(D, cfg.q_dim, use_bias=cfg.qkv_bias)
        self.k_proj = linear(D, cfg.kv_dim, use_bias=cfg.qkv_bias)
        self.v_proj = linear(D, cfg.kv_dim, use_bias=cfg.qkv_bias)
        self.o_proj = linear(cfg.q_dim, D)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.query_chunk, self.unroll_chunks = cfg.query_chunk, cfg.unroll_loops

    def __call__(self, x, lora: dict, scale: float, positions, inv_freq, mask, kv=None, token_adapter=None):
        """x: [B, S, D] -> ([B, S, D], cache); mask: bool [B, S, T], which keys each query sees (or, banded, [B, S/C,
        C, W+C]: `banded_mask`; or a `PackedAttention` for a fused kernel). kv: None, or
        (k, v, layer, index) with the whole cache k, v [L, B, Hkv, T, Dh]: this step's keys/values are written
        at slot `index` of `layer`, in place."""
        B, S, _ = x.shape
        heads_first = lambda t: t.transpose(0, 2, 1, 3)  # [B, S, H, Dh] -> [B, H, S, Dh]
        proj = lambda name, x: project(getattr(self, name), x, lora.get(name), scale, token_adapter)
        q = proj("q_proj", x).reshape(B, S, self.num_heads, self.head_dim)
        k = proj("k_proj", x).reshape(B, S, self.num_kv_heads, self.head_dim)
        v = proj("v_proj", x).reshape(B, S, self.num_kv_heads, self.head_dim)
        q, k, v = apply_rope(q, positions, inv_freq), heads_first(apply_rope(k, positions, inv_freq)), heads_first(v)
        new_kv = None
        if kv is not None:  # write into the cache, attend over this layer's whole cache
            k_all, v_all, layer, index = kv
            k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, 0, index, 0))
            v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, 0, index, 0))
            k, v, new_kv = k_all[layer].astype(q.dtype), v_all[layer].astype(q.dtype), (k_all, v_all)
        if isinstance(mask, PackedAttention):  # packed rows, a fused kernel
            out = attend_packed(q, k, v, mask)
        elif mask.ndim == 4:  # [B, nb, C, W+C]: packed rows, by query block
            out = attend_banded(q, k, v, mask)
        else:
            out = attend(q, k, v, mask, self.query_chunk, self.unroll_chunks)
        return proj("o_proj", out), new_kv


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        linear = functools.partial(nnx.Linear, use_bias=False, kernel_init=_INIT, param_dtype=param_dtype, rngs=rngs)
        D, F = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj, self.up_proj, self.down_proj = linear(D, F), linear(D, F), linear(F, D)

    def __call__(self, x, lora: dict, scale: float, token_adapter=None):  # SwiGLU
        proj = lambda name, x: project(getattr(self, name), x, lora.get(name), scale, token_adapter)
        return proj("down_proj", jax.nn.silu(proj("gate_proj", x)) * proj("up_proj", x))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.attn = Attention(cfg, rngs=rngs, param_dtype=param_dtype)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = MLP(cfg, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, h, lora: Optional[dict], scale: float, positions, inv_freq, mask, kv=None, token_adapter=None):
        lora = lora or {}
        a, new_kv = self.attn(self.attn_norm(h), lora, scale, positions, inv_freq, mask, kv, token_adapter)
        h = h + a
        return h + self.mlp(self.mlp_norm(h), lora, scale, token_adapter), new_kv


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    saveable = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[policy]
    return jax.checkpoint(fn, policy=saveable)


class Decoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=_INIT, param_dtype=param_dtype,
                               rngs=rngs)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=0, out_axes=0)
        def layer_stack(rngs):  # every parameter gets a leading [L] axis
            return DecoderLayer(cfg, rngs=rngs, param_dtype=param_dtype)

        self.layers = layer_stack(rngs)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(cfg.hidden_size, cfg.vocab_size, use_bias=False, kernel_init=_INIT,
                                      param_dtype=param_dtype, rngs=rngs)

    def __call__(self, tokens, positions, token_mask, *, lora: Optional[dict] = None, lora_scale: float = 0.0,
                 cache: Optional[dict] = None, segment_ids=None, token_adapter=None, window=None,
                 lora_impl: str = "auto"):
        """(hidden [B, S, D] after the final norm, updated cache or None); see `forward`."""
        cfg = self.cfg
        token_adapter = None if token_adapter is None else TokenAdapters(token_adapter, resolve_lora_impl(lora_impl))
        B, S = tokens.shape
        h = self.embed(tokens)
        inv_freq = rope_inv_freq(cfg)
        if cache is None:
            q_slot, key_valid = jnp.arange(S), token_mask
        else:
            q_slot = cache["index"] + jnp.arange(S)
            key_valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], token_mask, cache["index"], axis=1)
        k_slot = jnp.arange(key_valid.shape[1])
        kernel = resolve_attention_impl(cfg.attention_impl, dtype=h.dtype) if segment_ids is not None else "xla"
        if kernel != "xla" and cache is None:  # packed documents, a fused kernel skipping empty tiles
            mask = PackedAttention(kernel_segments(segment_ids, token_mask), None if window is None else window[1],
                                   kernel)
        elif window is not None:  # packed documents, each query block against its window of keys
            mask = banded_mask(segment_ids, token_mask, *window)  # [B, S/C, C, W+C]
        else:
            mask = (k_slot[None, :] <= q_slot[:, None])[None] & key_valid[:, None, :]  # [B, S, T]
        if segment_ids is not None and window is None and not isinstance(mask, PackedAttention):  # block-diagonal
            mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
        layer_def, layer_params = nnx.split(self.layers)
        unroll = cfg.num_layers if cfg.unroll_loops else 1

        def layer_fn(h, params, lo, kv):
            layer = nnx.merge(layer_def, params)
            return layer(h, lo, lora_scale, positions, inv_freq, mask, kv, token_adapter)

        if cache is None:
            h, _ = jax.lax.scan(_remat(lambda h, xs: (layer_fn(h, *xs, None)[0], None), cfg.remat), h,
                                (layer_params, lora), unroll=unroll)
        else:  # the cache rides in the carry, so each layer updates it in place

            def body(carry, xs):
                h, k_all, v_all = carry
                params, lo, layer = xs
                h, (k_all, v_all) = layer_fn(h, params, lo, (k_all, v_all, layer, cache["index"]))
                return (h, k_all, v_all), None

            (h, k_all, v_all), _ = jax.lax.scan(body, (h, cache["k"], cache["v"]),
                                                (layer_params, lora, jnp.arange(cfg.num_layers)), unroll=unroll)
            cache = {"k": k_all, "v": v_all, "valid": key_valid, "index": cache["index"] + S}
        return self.final_norm(h), cache


# ---- the pure-pytree boundary -------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _graph_and_shapes(cfg: ModelConfig, dtype: str):
    abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(dtype)))
    graphdef, state = nnx.split(abstract)
    return graphdef, nnx.to_pure_dict(state)


def abstract_params(cfg: ModelConfig, dtype=jnp.float32) -> dict:
    """The parameter pytree as `jax.ShapeDtypeStruct`s: shapes without allocating anything."""
    return _graph_and_shapes(cfg, jnp.dtype(dtype).name)[1]


def bind(params: dict, cfg: ModelConfig) -> Decoder:
    """The `Decoder` whose parameters are `params` (call inside a traced function; nothing is copied). Its graph
    is built for the parameters' dtype, so activations and matmuls run in that dtype (bf16 weights: bf16
    compute; scores, softmax, norms and log-probs stay float32): a float32 graph would make the embedding
    lookup, and with it every projection, promote bf16 weights to float32."""
    return nnx.merge(_graph_and_shapes(cfg, param_dtype(params).name)[0], params)


def init_params(key, cfg: ModelConfig, dtype=jnp.float32) -> dict:
    """Random parameters (normal, std 0.02; norms 1), the layout above. For tests and smoke runs."""
    make = lambda k: nnx.to_pure_dict(nnx.state(Decoder(cfg, rngs=nnx.Rngs(k), param_dtype=dtype)))
    return jax.jit(make)(key)


def projection_shape(cfg: ModelConfig, name: str) -> tuple[int, int]:
    """(in, out) of a layer projection, read off the modules."""
    return abstract_params(cfg)["layers"][PROJECTION_GROUP[name]][name]["kernel"].shape[1:]


def param_dtype(params: dict):
    return params["embed"]["embedding"].dtype


def forward(params: dict, cfg: ModelConfig, tokens, positions, token_mask, *, lora: Optional[dict] = None,
            lora_scale: float = 0.0, cache: Optional[dict] = None, segment_ids=None, token_adapter=None,
            window: Optional[tuple[int, int]] = None, lora_impl: str = "auto"):
    """Run the decoder; return (hidden [B, S, D] after the final norm, updated cache or None).

    tokens, positions: int [B, S]; token_mask: bool [B, S] (False on padding).
    lora: None, a shared adapter (leaves [L, in, r]), one adapter per row (leaves [L, B, in, r]), or with
      `token_adapter` int [B, S] a stack (leaves [L, E, in, r]) of which each token uses its own adapter
      (tokens sorted by adapter; `lora_delta_per_token`, in the form `lora_impl` names: `LORA_IMPLS`).
    cache: None, or a KV cache from `kv_cache.init_cache`; tokens are written at `cache["index"]`.
    segment_ids: None, or int [B, S]: tokens attend only within their own segment (packed documents); with no
      cache, by the kernel `cfg.attention_impl` resolves to (`resolve_attention_impl`; xla: the masks below).
    window: None, or static (block C, span W) with segment_ids and no cache: each block of C queries scores only
      the W keys before it and its own (`attend_banded`), exact while no segment is longer than W + 1 tokens;
      S must be a multiple of C and W of C.
    """
    if window is not None and (segment_ids is None or cache is not None or tokens.shape[1] % window[0]
                               or window[1] % window[0]):
        raise ValueError(f"window {window} needs segment_ids, no cache, and S ({tokens.shape[1]}) and the span "
                         f"multiples of the block")
    return bind(params, cfg)(tokens, positions, token_mask, lora=lora, lora_scale=lora_scale, cache=cache,
                             segment_ids=segment_ids, token_adapter=token_adapter, window=window,
                             lora_impl=lora_impl)


def logits_from_hidden(params: dict, hidden):  # hidden [..., D] -> float32 [..., V]
    """hidden @ lm_head, or @ embedding^T when tied: contracted as stored, since an explicit `.T` made XLA:CPU
    copy the [V, D] table into [D, V] once per training step (113 MB for SmolLM2)."""
    f32 = dict(preferred_element_type=jnp.float32)  # bf16 weights: accumulate and return float32 logits
    if "lm_head" in params:
        return jnp.einsum("...d,dv->...v", hidden, params["lm_head"]["kernel"], **f32)
    return jnp.einsum("...d,vd->...v", hidden, params["embed"]["embedding"], **f32)


def token_logprobs(params: dict, hidden, targets, chunk: Optional[int] = 128, unroll: bool = False):
    """log p(targets) per position, float32 [B, S], from hidden [B, S, D].

    With `chunk`, logits exist only for `chunk` positions at a time (and are recomputed in the backward
    pass), so peak memory holds [B, chunk, V] rather than [B, S, V]. unroll: as `chunk_map`'s (planning).
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
    out = chunk_map(lambda ht: jax.checkpoint(one)(*ht), (h, t), unroll)  # [n, B, chunk]
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
    lp = token_logprobs(params, hidden[:, :-1], tokens[:, 1:], chunk, cfg.unroll_loops)
    return lp * loss_mask[:, 1:]
