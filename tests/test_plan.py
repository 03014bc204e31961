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


def test_paper_presets_name_a_gpu_split_and_plan_takes_it_for_gpus():
    """knowledge :paper shards its 15 GB base over fsdp=4 for 16 GiB v5e chips and replicates it on 80 GB GPUs
    (SEAL's 2 x H100); ARC's 1B model is replicated on both. `plan --topology=h100:...` takes the GPU split."""
    import importlib.util
    import os
    from seal_jax.cli.plan import config_mesh
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load(name):
        spec = importlib.util.spec_from_file_location(f"plan_{name}", os.path.join(root, "configs", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config("paper")
    knowledge, arc = load("knowledge"), load("arc")
    assert config_mesh(knowledge) == (4, 1) and config_mesh(knowledge, gpu=True) == (1, 1)
    assert config_mesh(arc) == config_mesh(arc, gpu=True) == (1, 1)


def test_gpu_topology_names_and_the_allocator_fraction_are_checked(monkeypatch):
    from seal_jax.runtime import topology
    assert topology.gpu_topology("h100:1x1x8") == ("h100", "1x1x8") and topology.gpu_topology("v5e:2x4") is None
    with pytest.raises(ValueError, match="slices x hosts x GPUs per host, e.g. h100:1x1x2"):
        topology.gpu_topology("h100:2")
    with pytest.raises(ValueError, match=r"or a GPU \(a100, h100\)"):
        topology.generation("b200:1x1x2")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "1.5")
    with pytest.raises(ValueError, match=r"not in \(0, 1\]"):
        topology.gpu_mem_fraction()


def test_cuda_plugin_without_a_gpu_is_no_accelerator(monkeypatch):
    """The plugin installed for GPU plans must not stop CPU runs from pinning JAX_PLATFORMS=cpu: only a GPU
    device node (/dev/nvidia<N>) with the plugin is an accelerator."""
    from seal_jax.runtime import topology
    monkeypatch.setattr(topology, "has_cuda_plugin", lambda: True)
    nodes = {"/dev/accel*": [], "/dev/vfio/*": [], "/dev/nvidia*": ["/dev/nvidiactl", "/dev/nvidia-uvm"]}
    monkeypatch.setattr(topology.glob, "glob", lambda pattern: nodes[pattern])
    assert not topology.has_local_accelerator()
    nodes["/dev/nvidia*"].append("/dev/nvidia0")
    assert topology.has_local_accelerator()
