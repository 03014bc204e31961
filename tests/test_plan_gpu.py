"""AOT plans for NVIDIA GPUs that are not here: compile-only H100 devices from JAX's CUDA plugin, with no GPU and
no driver (runtime/topology.py), and the cost engine/aot.py counts for them (XLA answers no cost_analysis on
GPU). Each figure is checked against a closed form: a sharded matmul's flops and bytes, an in-place cache
write's bytes, the allocator pool's size; then the plan CLI compiles every phase of the tiny smoke config for
h100:1x1x2.

Needs the `[cuda-aot]` extra (jax-cuda12-plugin and -pjrt at jax's version, nvidia-cuda-nvcc-cu12 for ptxas and
libdevice); without it every test here is skipped."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax_cuda12_plugin", reason="GPU AOT tests need JAX's CUDA plugin: pip install -e '.[cuda-aot]'")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from seal_jax.engine import aot  # noqa: E402
from seal_jax.runtime.topology import GiB, chip_of, topology_devices  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def h100s():
    """The two compile-only devices of SEAL's 2 x H100 (compile-only programs cannot be loaded back from the
    persistent compilation cache: it is off while they compile, as `plan` runs)."""
    devices = topology_devices("h100:1x1x2")
    assert len(devices) == 2 and {d.device_kind for d in devices} == {"NVIDIA H100 80GB HBM3"}
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield devices
    jax.config.update("jax_enable_compilation_cache", cache)


def _sds(shape, dtype, mesh, spec=P()):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def test_h100_figures_and_allocator_pool(h100s, monkeypatch):
    chip = chip_of(h100s)
    # NVIDIA H100 SXM datasheet: BF16 1,979 TFLOPS with 2:4 sparsity (dense: half), 3.35 TB/s HBM3
    assert chip.platform == "cuda" and chip.bf16_tflops == pytest.approx(1979 / 2, abs=1) and chip.hbm_gbps == 3350
    assert chip.hbm_gib == pytest.approx(84_978_434_048 / GiB, abs=0.01)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert chip.pool_gib() == pytest.approx(0.75 * chip.hbm_gib)  # JAX's default preallocation
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    assert chip.pool_gib() == pytest.approx(0.95 * chip.hbm_gib)
    # NVIDIA A100 datasheet, 80GB SXM: BF16 312 TFLOPS dense, 2,039 GB/s HBM2e
    a100 = topology_devices("a100:1x1x8")
    assert len(a100) == 8 and (chip_of(a100).bf16_tflops, chip_of(a100).hbm_gbps) == (312, 2039)


def test_sharded_matmul_flops_and_bytes_are_the_closed_form(h100s):
    """[M, K] rows split over 2 GPUs times a replicated [K, N], bf16: per GPU 2 (M/2) K N flops, and one gemm
    kernel reading its [M/2, K] and [K, N] operands and writing [M/2, N]."""
    mesh, (m, k, n) = Mesh(h100s, ("x",)), (4096, 1024, 2048)
    got = aot.compile_phase(jax.jit(lambda a, b: a @ b), _sds((m, k), jnp.bfloat16, mesh, P("x")),
                            _sds((k, n), jnp.bfloat16, mesh))
    assert got.fits and got.flops == 2 * (m // 2) * k * n
    assert got.bytes_accessed == 2 * ((m // 2) * k + k * n + (m // 2) * n)
    assert got.argument == 2 * ((m // 2) * k + k * n) and got.output == 2 * (m // 2) * n


def test_in_place_cache_write_moves_only_its_update(h100s):
    """A KV-cache write: one [1, 1024, 1024] f32 slice into a donated [8, 1024, 1024] buffer reads the slice and
    writes it (plus the 4-byte index). Without donation XLA first copies the argument into a fresh buffer (a
    copy `_generate`, which fills its cache in place, never makes): the count leaves such entry copies out. A
    slice of the buffer reads what it takes."""
    mesh = Mesh(h100s, ("x",))
    row = 1024 * 1024 * 4
    args = (_sds((8, 1024, 1024), jnp.float32, mesh), _sds((1, 1024, 1024), jnp.float32, mesh),
            _sds((), jnp.int32, mesh))
    write = lambda b, r, i: jax.lax.dynamic_update_slice(b, 2 * r, (i, 0, 0))
    assert aot.compile_phase(jax.jit(write, donate_argnums=0), *args).bytes_accessed == 2 * row + 4
    assert aot.compile_phase(jax.jit(write), *args).bytes_accessed == 2 * row + 4
    take = lambda b, i: 2 * jax.lax.dynamic_slice(b, (i, 0, 0), (1, 1024, 1024))
    assert aot.compile_phase(jax.jit(take), args[0], args[2]).bytes_accessed == 2 * row + 4


def test_program_over_the_allocator_pool_does_not_fit(h100s, monkeypatch):
    """XLA's GPU compiler refuses nothing: 2 x 30 GiB (argument and result) is over the 59.4 GiB JAX holds by
    default, and within it at XLA_PYTHON_CLIENT_MEM_FRACTION=0.9."""
    mesh = Mesh(h100s, ("x",))
    big = _sds((30 * GiB // 4,), jnp.float32, mesh)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    got = aot.compile_phase(jax.jit(lambda a: 2 * a), big)
    assert not got.fits and got.peak == 60 * GiB and "XLA_PYTHON_CLIENT_MEM_FRACTION" in got.reason
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    assert aot.compile_phase(jax.jit(lambda a: 2 * a), big).fits


def test_plan_cli_compiles_every_phase_for_two_h100s():
    """`plan --topology=h100:1x1x2 --compile` end to end on the tiny smoke config: both GPUs on the edit axis,
    every phase compiled and within the pool, XLA's peak beside the hand estimate, and its markdown row."""
    from seal_jax.cli.plan import markdown_table
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_MEM_FRACTION"}
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.plan", "--config=configs/knowledge.py:smoke",
                          "--topology=h100:1x1x2", "--compile", "--nocost"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    plan = json.loads(out.stdout)
    assert plan["chip"] == "H100 SXM 80GB" and plan["fits"] and plan["pool_gib"] == pytest.approx(0.75 * 79.14, abs=0.01)
    assert plan["mesh"] == {"edit": 2, "fsdp": 1, "tp": 1}
    assert set(plan["phases"]) == {"inner", "sampling", "answering", "m_step"}
    for name, phase in plan["phases"].items():
        assert phase["fits"], (name, phase)
        assert 0 < phase["argument_mib"] <= phase["peak_mib"] and phase["estimate_mib"] > 0, (name, phase)
    row = markdown_table([plan]).splitlines()[-1]
    assert row.startswith("| h100:1x1x2 (H100 SXM 80GB, 79.14; pool 59.36) | 2 x 1 x 1") and "| yes |" in row
