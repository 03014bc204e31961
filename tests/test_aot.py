"""AOT plans for a TPU that is not here: the real jitted phases compiled for v5e:2x4 from shapes alone.

Needs libtpu (`make test` installs it). Compiles are slow on a loaded CPU, so the shapes are small and the
inner update uses one length bucket (one step variant to compile)."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("libtpu", reason="AOT tests need libtpu: pip install 'libtpu==0.0.42.*' (make test does)")

from seal_jax.engine import aot  # noqa: E402
from seal_jax.engine.inner import InnerConfig  # noqa: E402
from seal_jax.engine.outer import OuterConfig  # noqa: E402
from seal_jax.model.config import preset  # noqa: E402
from seal_jax.model.lora import LoraSpec  # noqa: E402
from seal_jax.runtime import memory_plan, sharding  # noqa: E402
from seal_jax.runtime.topology import default_to_cpu, topology_devices  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICFG = InnerConfig(lora=LoraSpec(8, 16.0, ("q_proj", "v_proj")), length_buckets=1)
OUTER = OuterConfig(lora=LoraSpec(8, 16.0, ("all",)), lr=1e-4, epochs=1, batch_size=2, max_len=256)


def workload(**kw):
    base = dict(edits_per_chunk=4, docs=8, doc_len=256, step_len=128, steps=16, inner_runs=1, self_edits=8,
                sample_batch=8, prompt_len=64, sample_cap=64, sample_tokens=32, answer_rows=2, answer_call_rows=0,
                answer_prompt_len=32, answer_cap=16, answer_tokens=8, mstep_examples=4, mstep_len=256, mstep_steps=2)
    return aot.Workload(**{**base, **kw})


@pytest.fixture(scope="module")
def mesh():
    """(edit=4, fsdp=2) over the 8 compile-only devices of a v5e-8."""
    devices = topology_devices("v5e:2x4")
    assert len(devices) == 8 and devices[0].device_kind == "TPU v5 lite"
    return sharding.make_mesh(4, 2, 1, devices)


def test_tiny_phases_compile_and_peak_grows_with_edits_per_chunk(mesh):
    cfg, w = preset("tiny").replace(remat="full"), workload()
    one, two = (aot.inner_memory(cfg, ICFG, mesh, w, edits=c) for c in (4, 8))  # 1, then 2 edits per device
    sample = aot.generate_memory(cfg, mesh, 8, w.prompt_len, w.sample_cap)
    answer = aot.generate_memory(cfg, mesh, 8, w.answer_prompt_len, w.answer_cap, (ICFG.lora, 4))
    mstep = aot.mstep_memory(cfg, OUTER, mesh, w)
    for got in (one, two, sample, answer, mstep):
        assert got.fits and got.peak > 0 and got.flops > 0
    # one more edit per device holds at least its LoRA, gradient and two Adam moments, and its step's activations
    state = 4 * memory_plan.lora_params(cfg, ICFG.lora) * 4
    grown = two.peak - one.peak
    assert grown >= state
    assert grown <= 3 * (state + memory_plan.activation_bytes(cfg, w.doc_len, cfg.remat))


def test_config_that_cannot_fit_is_reported_with_the_reason(mesh):
    # one 32k-token document: each edit's f32 attention scores alone are 4 heads x 32k x 32k x 4 B = 16 GiB
    got = aot.inner_memory(preset("tiny").replace(remat="full"), ICFG, mesh, workload(doc_len=32768), edits=4)
    assert not got.fits
    assert "exceeds available HBM" in got.reason


def test_hand_estimate_within_25_percent_of_compiled_peak_on_smollm2(mesh):
    cfg, w = preset("smollm2_135m").replace(remat="full"), workload(doc_len=512, prompt_len=256, sample_cap=256)
    est = memory_plan.phase_estimates(cfg, ICFG.lora, OUTER.lora, edit=4, fsdp=2, tp=1, edits_per_chunk=4,
                                      doc_len=512, batch=1, sample_rows=8, sample_prompt=256, sample_len=512,
                                      answer_rows=8, answer_prompt=16, answer_len=48, mstep_len=256, mstep_batch=2)
    inner = aot.inner_memory(cfg, ICFG, mesh, w)
    sample = aot.generate_memory(cfg, mesh, 8, w.prompt_len, w.sample_cap)
    mstep = aot.mstep_memory(cfg, OUTER, mesh, w)
    assert 0.75 <= est["inner"] / inner.peak <= 1.25, (est["inner"], inner)
    assert 0.75 <= est["sampling"] / sample.peak <= 1.25, (est["sampling"], sample)
    assert 0.75 <= est["m_step"] / mstep.peak <= 1.25, (est["m_step"], mstep)


def test_query_chunks_bound_a_long_prefill_and_the_estimate_follows(mesh):
    """Answering 8 rows of 4096-token prompts (ARC's size): all queries at once hold [rows, H, 4096, 4112] f32
    scores per layer; 512 at a time, an eighth of that. XLA's peak drops accordingly and the hand estimate
    (`phase_estimates`, its prefill term) follows it both ways."""
    base = preset("tiny").replace(remat="full")
    peaks = {}
    for chunk in (0, 512):
        cfg = base.replace(query_chunk=chunk)
        got = aot.generate_memory(cfg, mesh, 8, 4096, 16, (ICFG.lora, 4))
        est = memory_plan.phase_estimates(cfg, ICFG.lora, OUTER.lora, edit=4, fsdp=2, tp=1, edits_per_chunk=4,
                                          doc_len=256, batch=1, sample_rows=8, sample_prompt=64, sample_len=128,
                                          answer_rows=8, answer_prompt=4096, answer_len=4112, mstep_len=256,
                                          mstep_batch=2)["answering"]
        assert got.fits and 0.75 <= est / got.peak <= 1.25, (chunk, est, got)
        peaks[chunk] = got.peak
    assert peaks[512] < peaks[0] / 4, peaks


def test_layer_extrapolated_cost_matches_the_unrolled_program(mesh):
    """XLA counts a loop body once; 1- and 2-layer unrolled compiles extrapolate to L layers exactly."""
    cfg = preset("tiny").replace(remat="full", num_layers=3)
    icfg = dataclasses.replace(ICFG, loss_chunk=None)
    flops, _ = aot.inner_step_cost(cfg, icfg, mesh, 4, 8, 128)
    e, k, hp = aot.edit_batch(mesh, 4, 8, 128)
    unrolled = cfg.replace(unroll_loops=True)
    whole = aot.compile_phase(aot.inner.inner_train_edits, aot.abstract_base(unrolled, mesh), e, k, hp, cfg=unrolled,
                              icfg=icfg, steps=8)
    assert flops == pytest.approx(whole.flops, rel=0.02)


def test_planning_unroll_counts_every_attention_and_loss_chunk():
    """The query-chunk and loss-chunk loops are loops too: under `unroll_loops` (planning) XLA's cost model sees
    every chunk, so a chunked forward costs what the unchunked one does; left as loops, one chunk is counted."""
    import jax
    import jax.numpy as jnp
    from seal_jax.model.transformer import abstract_params, sequence_logprobs

    def flops(cfg, loss_chunk):
        tokens = jax.ShapeDtypeStruct((2, 256), jnp.int32)
        mask = jax.ShapeDtypeStruct((2, 256), jnp.float32)
        fn = jax.jit(lambda p, t, m: sequence_logprobs(p, cfg, t, m, chunk=loss_chunk))
        return aot.compile_phase(fn, abstract_params(cfg), tokens, mask).flops

    cfg = preset("tiny").replace(num_layers=1, unroll_loops=True)
    whole = flops(cfg.replace(query_chunk=0), None)
    assert flops(cfg.replace(query_chunk=32), 32) == pytest.approx(whole, rel=0.02)
    assert flops(cfg.replace(query_chunk=32, unroll_loops=False), 32) < 0.7 * whole


def test_default_to_cpu_only_without_accelerators(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr("seal_jax.runtime.topology.has_local_accelerator", lambda: True)
    default_to_cpu()
    assert "JAX_PLATFORMS" not in os.environ
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    monkeypatch.setattr("seal_jax.runtime.topology.has_local_accelerator", lambda: False)
    default_to_cpu()
    assert os.environ["JAX_PLATFORMS"] == "tpu"  # an explicit choice is kept


def test_cli_prints_no_tpu_noise_with_libtpu_installed():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.plan", "--config=configs/knowledge.py:smoke"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "TPU" not in out.stderr and "libtpu" not in out.stderr, out.stderr


def test_plan_cli_compiles_every_phase_of_a_config_for_a_topology():
    """`plan --topology --compile` end to end: the config's mesh over the topology's devices, every phase
    compiled with its shapes, XLA's peak beside the hand estimate, and the README's markdown row."""
    from seal_jax.cli.plan import markdown_table
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.plan", "--config=configs/knowledge.py:smoke",
                          "--topology=v5e:2x4", "--compile", "--nocost"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    plan = json.loads(out.stdout)
    assert plan["chip"] == "v5e" and plan["hbm_gib"] == 16 and plan["fits"]
    m = plan["mesh"]
    assert m["edit"] * m["fsdp"] * m["tp"] == 8 and (m["fsdp"], m["tp"]) == (1, 1)  # the smoke config's mesh
    assert set(plan["phases"]) == {"inner", "sampling", "answering", "m_step"}
    for name, phase in plan["phases"].items():
        assert phase["fits"], (name, phase)
        assert 0 < phase["argument_mib"] <= phase["peak_mib"] and phase["estimate_mib"] > 0, (name, phase)
    row = markdown_table([plan]).splitlines()[-1]
    assert row.startswith("| v5e:2x4 (v5e, 16) | 8 x 1 x 1") and "| yes |" in row
    assert "nan" not in row and row.endswith("| not costed (--nocost) | not costed (--nocost) |")


def test_markdown_row_says_what_does_not_fit():
    """A plan whose phases fit but whose packed inner step's longest row does not: the row says so and why."""
    from seal_jax.cli.plan import markdown_table
    plan = {"topology": "v5e:2x4", "chip": "v5e", "hbm_gib": 16, "mesh": {"edit": 2, "fsdp": 1, "tp": 4},
            "edits_per_chunk": 64, "fits": False, "phases": {},
            "packed_inner": {"longest_row": {"T": 4608, "fits": False, "peak_gib": 0.0,
                                             "reason": "RESOURCE_EXHAUSTED: 17.2G of 15.75G hbm"},
                             "roofline_device_s": 1400.0}}
    row = markdown_table([plan]).splitlines()[-1]
    assert "| **no**: packed inner, longest row (T = 4608): RESOURCE_EXHAUSTED: 17.2G of 15.75G hbm |" in row
