"""The memory plan against what it estimates: real pytree sizes, and XLA's buffer assignment for activations."""
import jax
import jax.numpy as jnp
import pytest

from seal_jax.runtime import memory_plan
from seal_jax.engine.inner import InnerConfig, batch_loss
from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec, init_lora
from seal_jax.model.transformer import init_params


def _nbytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("remat", ["none", "full"])
def test_plan_matches_pytrees_and_xla_buffer_assignment(remat):
    cfg = preset("smollm2_135m").replace(remat=remat, num_layers=4)  # the real widths, 4 layers
    spec = LoraSpec(8, 16.0, ("q_proj", "v_proj"))
    params = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), cfg))  # shapes only, nothing allocated
    lora = jax.eval_shape(lambda: init_lora(jax.random.PRNGKey(0), cfg, spec))
    p = memory_plan.plan(cfg, spec, edit=1, fsdp=1, tp=1, device_gib=16.0, seq_len=512, batch=1, weight_bytes=4,
                sample_batch=8, sample_len=512)
    assert p["base_weights_gib"] == pytest.approx(_nbytes(params) / memory_plan.GiB, abs=1e-3)
    assert p["lora_per_edit_mib"] == pytest.approx(_nbytes(lora) / 2 ** 20, abs=0.01)
    # activations of one training step: within 40% of the temp buffers XLA assigns for the LoRA gradient
    tokens = jax.ShapeDtypeStruct((1, 512), jnp.int32)
    grad = jax.jit(jax.grad(lambda l, b, t, m: batch_loss(l, b, t, m, cfg=cfg, icfg=InnerConfig(lora=spec))[0]))
    temp = grad.lower(lora, params, tokens, tokens).compile().memory_analysis().temp_size_in_bytes
    assert 0.6 < temp / memory_plan.activation_bytes(cfg, 512, remat) < 1.4
    # fsdp shards the weights and adds one gathered layer; more memory never fits fewer edits
    q = memory_plan.plan(cfg, spec, edit=1, fsdp=2, tp=1, device_gib=16.0, seq_len=512, batch=1, weight_bytes=4,
                sample_batch=8, sample_len=512)
    assert q["base_weights_gib"] == pytest.approx(p["base_weights_gib"] / 2, rel=1e-3) and q["gathered_layer_gib"] > 0
    small = memory_plan.plan(cfg, spec, edit=1, fsdp=1, tp=1, device_gib=4.0, seq_len=512, batch=1, weight_bytes=4,
                    sample_batch=8, sample_len=512)
    assert small["max_edits_per_chunk"] < p["max_edits_per_chunk"]
    # the tp rules were never calibrated against XLA: a tp plan says so, an edit x fsdp plan does not
    assert "caveat" not in p and "caveat" not in q
    t = memory_plan.plan(cfg, spec, edit=1, fsdp=1, tp=3, device_gib=16.0, seq_len=512, batch=1, weight_bytes=4,
                         sample_batch=8, sample_len=512)
    assert "--compile" in t["caveat"]
