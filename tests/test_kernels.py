"""The packed step's accelerator paths against the XLA reference, on shapes a CPU runs in seconds.

- splash attention (TPU): the Pallas kernel itself in interpret mode, forward and q/k/v gradients, against
  `transformer.attend` with the block-diagonal causal mask written out; banded and full; padded rows.
- cuDNN attention (GPU): the very arguments `attend_cudnn` passes (segment mask, causal, window) through
  `jax.nn.dot_product_attention`'s XLA implementation here; the cuDNN kernel itself cannot run on a CPU, so it is
  compiled for an H100 with JAX's CUDA plugin (skipped without it) and must lower to cuDNN's fused attention.
- splash compiled for a v5e with libtpu (skipped without it): Mosaic kernels, not the interpreter.
- per-token LoRA: ragged (`lax.ragged_dot`) against dense, through the whole model, forward and LoRA gradients.
- `engine/flops.py`: kernel tiles against a brute-force count over the written-out mask; useful pairs likewise.
"""
import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine import flops
from seal_jax.engine.inner import InnerConfig
from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec, init_lora
from seal_jax.model.transformer import (attend, attend_cudnn, attend_splash, forward, kernel_segments,
                                        resolve_attention_impl, token_logprobs)

CFG = preset("tiny")


def _row(rng, B, S, lengths, n_pad):
    """Segment ids [B, S] of documents `lengths` end to end, the rest one tail segment; the last n_pad slots
    are padding (token_mask False)."""
    seg = np.full((B, S), len(lengths), np.int32)
    pos = 0
    for i, n in enumerate(lengths):
        seg[:, pos:pos + n] = i
        pos += n
    mask = np.ones((B, S), bool)
    mask[:, S - n_pad:] = False
    return jnp.asarray(seg), jnp.asarray(mask)


def _qkv(rng, B, S, Hq=4, Hkv=2, Dh=16):
    n = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return n(B, S, Hq, Dh), n(B, Hkv, S, Dh), n(B, Hkv, S, Dh)


def _reference(q, k, v, seg, token_mask, span):
    """`attend` with the mask written out: causal, same segment, real key, within span."""
    S = seg.shape[1]
    i, j = np.arange(S)[:, None], np.arange(S)[None, :]
    allowed = (j <= i) & ((i - j <= span) if span is not None else True)
    mask = allowed[None] & (seg[:, :, None] == seg[:, None, :]) & token_mask[:, None, :]
    return attend(q, k, v, jnp.asarray(mask))


def _check(kernel, q, k, v, seg, token_mask, span, tol=2e-5):
    """Kernel == reference on real queries, values and q/k/v gradients of a random cotangent."""
    ct = jnp.asarray(np.random.default_rng(9).normal(size=(*q.shape[:2], q.shape[2] * q.shape[3])), jnp.float32)
    real = token_mask[..., None]
    loss = lambda f: lambda q, k, v: jnp.sum(jnp.where(real, f(q, k, v) * ct, 0.0))
    ks = kernel_segments(seg, token_mask)
    got_f = lambda q, k, v: kernel(q, k, v, ks, span)
    ref_f = lambda q, k, v: _reference(q, k, v, seg, token_mask, span)
    got, ref = jax.jit(got_f)(q, k, v), ref_f(q, k, v)
    np.testing.assert_allclose(np.where(real, got, 0), np.where(real, ref, 0), atol=tol, rtol=tol)
    g_got = jax.jit(jax.grad(loss(got_f), (0, 1, 2)))(q, k, v)
    g_ref = jax.grad(loss(ref_f), (0, 1, 2))(q, k, v)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=10 * tol, rtol=10 * tol)


@pytest.mark.parametrize("span", [None, 64])
def test_splash_interpret_equals_xla_reference(span):
    """Two rows of 200 tokens (padded to 256 inside: two 128 tiles), grouped-query heads, documents of 3-60
    tokens (<= span + 1), 5 padding slots at the end."""
    rng = np.random.default_rng(0)
    seg, token_mask = _row(rng, 2, 200, [3, 60, 17, 45, 1, 38, 20], n_pad=5)
    _check(attend_splash, *_qkv(rng, 2, 200), seg, token_mask, span)


@pytest.mark.parametrize("span", [None, 48])
def test_cudnn_arguments_equal_xla_reference(span):
    """What `attend_cudnn` hands cuDNN (segment mask, is_causal, local window), run by JAX's XLA implementation of
    the same API; a row that is not a multiple of any tile."""
    rng = np.random.default_rng(1)
    seg, token_mask = _row(rng, 1, 150, [40, 5, 49, 30], n_pad=3)
    xla = lambda q, k, v, s, span: attend_cudnn(q, k, v, s, span, implementation="xla")
    _check(xla, *_qkv(rng, 1, 150), seg, token_mask, span)


def test_auto_picks_a_kernel_per_target():
    assert resolve_attention_impl("auto", "tpu") == "splash"
    assert resolve_attention_impl("auto", "cuda", jnp.bfloat16) == "cudnn"
    assert resolve_attention_impl("auto", "gpu", jnp.float32) == "xla"  # cuDNN's fused attention has no f32
    assert resolve_attention_impl("auto", "cpu") == "xla" and resolve_attention_impl("splash", "cpu") == "splash"
    with pytest.raises(ValueError, match="attention_impl"):
        resolve_attention_impl("flash")
    with pytest.raises(ValueError, match="attention_impl"):
        CFG.replace(attention_impl="flash")
    with pytest.raises(ValueError, match="lora_impl"):
        InnerConfig(lora_impl="gather")


def _packed_objective(base, cfg, lora_impl, seg, tokens, positions, adapter, weight, E):
    """A packed row's loss as `packed.packed_step` forms it (each edit's mean, summed), of the LoRA stack."""
    def objective(lora):  # lora leaves [E, L, ...]
        hidden, _ = forward(base, cfg, tokens, positions, jnp.ones_like(tokens, bool),
                            lora=jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), lora), lora_scale=2.0,
                            segment_ids=seg, token_adapter=adapter, lora_impl=lora_impl)
        lp = token_logprobs(base, hidden[:, :-1], tokens[:, 1:], 16)[0]
        edit = adapter[0, 1:]
        nll = jax.ops.segment_sum(-lp * weight[1:], edit, num_segments=E)
        n = jax.ops.segment_sum(weight[1:], edit, num_segments=E)
        return jnp.sum(nll / jnp.maximum(n, 1)), hidden
    return objective


@pytest.mark.parametrize("attention_impl,lora_impl", [("splash", "dense"), ("xla", "ragged")])
def test_packed_model_paths_equal_xla_dense(base, attention_impl, lora_impl):
    """The tiny model on a packed row of 3 edits' documents: hidden states, loss and every LoRA gradient of the
    kernel / ragged path equal the XLA banded-free reference with dense per-token LoRA."""
    rng = np.random.default_rng(3)
    lengths, E = [20, 7, 33, 12, 9], 3
    edit_of_doc = [0, 0, 1, 2, 2]
    S = 96
    seg, _ = _row(rng, 1, S, lengths, 0)
    adapter = np.full((1, S), E - 1, np.int32)
    positions = np.zeros((1, S), np.int32)
    weight = np.zeros(S, np.float32)
    pos = 0
    for d, n in enumerate(lengths):
        adapter[0, pos:pos + n], positions[0, pos:pos + n] = edit_of_doc[d], np.arange(n)
        weight[pos + 1:pos + n] = 1.0
        pos += n
    positions[0, pos:] = np.arange(S - pos)
    tokens = jnp.asarray(rng.integers(3, CFG.vocab_size, (1, S)), jnp.int32)
    spec = LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "down"))
    lora = jax.vmap(lambda k: init_lora(k, CFG, spec))(jax.random.split(jax.random.PRNGKey(0), E))
    lora = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape), lora)  # B != 0
    args = (jnp.asarray(seg), tokens, jnp.asarray(positions), jnp.asarray(adapter), jnp.asarray(weight), E)
    ref_cfg, cfg = CFG.replace(attention_impl="xla"), CFG.replace(attention_impl=attention_impl)
    grad = lambda c, impl: jax.jit(jax.value_and_grad(_packed_objective(base, c, impl, *args), has_aux=True))(lora)
    (l_ref, h_ref), g_ref = grad(ref_cfg, "dense")
    (l_got, h_got), g_got = grad(cfg, lora_impl)
    np.testing.assert_allclose(np.asarray(h_got), np.asarray(h_ref), atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(float(l_got), float(l_ref), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4),
                 g_got, g_ref)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g_ref))  # every adapter is trained


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="splash's TPU compile needs libtpu")
def test_splash_compiles_to_mosaic_kernels_for_v5e():
    """Forward and backward of `attend_splash` compiled for a v5e from shapes: the TPU branch of the platform
    switch, i.e. Mosaic custom calls (forward, dq, dkv), not the interpreter's loops; XLA's cost model then sees
    almost none of the attention work, which is why `engine/flops.py` counts it."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from seal_jax.runtime.topology import topology_devices
    mesh = Mesh(topology_devices("v5e:2x4")[:1], ("x",))
    sds = lambda s, d: jax.ShapeDtypeStruct(s, d, sharding=NamedSharding(mesh, P()))
    B, S, Hq, Hkv, Dh, span = 1, 512, 8, 2, 128, 128
    f = lambda q, k, v, s: jnp.sum(attend_splash(q, k, v, s, span).astype(jnp.float32) ** 2)
    compiled = jax.jit(jax.grad(f, (0, 1, 2))).lower(
        sds((B, S, Hq, Dh), jnp.bfloat16), sds((B, Hkv, S, Dh), jnp.bfloat16), sds((B, Hkv, S, Dh), jnp.bfloat16),
        sds((B, S), jnp.int32)).compile()
    text = compiled.as_text()
    assert text.count("tpu_custom_call") >= 3 and " while(" not in text
    counted = compiled.cost_analysis()["flops"]
    cfg = dataclasses.replace(CFG, num_heads=Hq, num_kv_heads=Hkv, head_dim=Dh, num_layers=1, remat="none")
    assert counted < 0.1 * flops.kernel_attention_flops(cfg, "splash", S, span)


@pytest.mark.skipif(importlib.util.find_spec("jax_cuda12_plugin") is None,
                    reason="cuDNN attention cannot run on a CPU; its H100 compile needs JAX's CUDA plugin")
def test_cudnn_compiles_to_fused_attention_for_h100():
    """Forward and backward of `attend_cudnn` (bf16, banded, segment mask) compiled for an H100 from shapes with no
    GPU: cuDNN's fused attention custom calls, forward and backward."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from seal_jax.runtime.topology import topology_devices
    mesh = Mesh(topology_devices("h100:1x1x1"), ("x",))
    sds = lambda s, d: jax.ShapeDtypeStruct(s, d, sharding=NamedSharding(mesh, P()))
    B, S, Hq, Hkv, Dh = 1, 512, 8, 2, 128
    f = lambda q, k, v, s: jnp.sum(attend_cudnn(q, k, v, s, 128).astype(jnp.float32) ** 2)
    text = jax.jit(jax.grad(f, (0, 1, 2))).lower(
        sds((B, S, Hq, Dh), jnp.bfloat16), sds((B, Hkv, S, Dh), jnp.bfloat16), sds((B, Hkv, S, Dh), jnp.bfloat16),
        sds((B, S), jnp.int32)).compile().as_text()
    assert '__cudnn$fmhaScaleBiasSoftmax"' in text and '__cudnn$fmhaScaleBiasSoftmaxBackward"' in text


@pytest.mark.parametrize("T,span,bq,bk", [(512, None, 128, 128), (512, 64, 128, 128), (1024, 300, 256, 128),
                                          (384, 0, 128, 128)])
def test_kernel_pairs_count_the_tiles_the_mask_touches(T, span, bq, bk):
    """Against the written-out [T, T] mask: a tile counts in full when any of its entries is allowed."""
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = (j <= i) & ((i - j <= span) if span is not None else True)
    tiles = mask.reshape(T // bq, bq, T // bk, bk).any(axis=(1, 3)).sum()
    assert flops.kernel_pairs(T, span, bq, bk) == tiles * bq * bk
    if span is None:  # causal: the diagonal and below, nb (nb + 1) / 2 tiles of square blocks
        assert bq != bk or tiles == (T // bq) * (T // bq + 1) // 2


def test_useful_pairs_and_step_flops_count_real_tokens_only():
    lengths = [20, 7, 33]
    seg = np.repeat(np.arange(3), lengths)
    i, j = np.arange(len(seg))[:, None], np.arange(len(seg))[None, :]
    assert flops.causal_pairs(lengths) == int(((j <= i) & (seg[:, None] == seg[None, :])).sum())
    cfg, spec = preset("smollm2_135m"), LoraSpec(32, 64.0, ("q", "v"))
    D, L, V, F, qd, kvd = cfg.hidden_size, cfg.num_layers, cfg.vocab_size, cfg.intermediate_size, cfg.q_dim, cfg.kv_dim
    tokens, predictions = sum(lengths), sum(lengths) - len(lengths)
    weights = D * qd * 2 + D * kvd * 2 + 3 * D * F                            # q, o; k, v; gate, up, down
    lora = L * 2 * 32 * ((D + qd) + (D + kvd))
    attn = L * 2 * cfg.num_heads * cfg.head_dim * flops.causal_pairs(lengths) * 6
    expect = 4 * L * weights * tokens + 4 * D * V * predictions + 3 * lora * tokens + attn
    assert flops.useful_step_flops(cfg, spec, lengths) == pytest.approx(expect, rel=1e-12)
    # padding or a longer row changes nothing; a kernel over the row computes more than the useful pairs
    assert flops.kernel_attention_flops(cfg.replace(remat="none"), "splash", 64, None) > \
        flops.attention_flops(cfg, flops.causal_pairs(lengths))
