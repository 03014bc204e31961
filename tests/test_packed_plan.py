"""A round of packed steps planned for a target: the simulated schedule against closed forms, a compiled
program's per-op table against its matmul's 2 M K N, and a packed step compiled for a v5e slice (libtpu)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine import aot, flops, packed_plan
from seal_jax.engine.inner import InnerConfig
from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec

CFG = preset("tiny")
ICFG = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q_proj", "v_proj")))


def test_simulated_round_trains_every_document_every_epoch():
    """The schedule's useful FLOPs are each document's, `epochs` times (batch 1: every document is one step of
    its edit each epoch), whatever the packing; token slots hold every real token; SEAL's shipped mix loads."""
    mix = {"edits": [[12, 30, 7], [50], [9, 9, 9, 9, 60], [25, 3]], "tokenizer": "test"}
    runs = packed_plan.round_runs(mix, self_edits=4, repeats=2)
    assert len(runs) == 8 and runs[0] == runs[1] and sorted(map(tuple, runs[::2])) == sorted(map(tuple, mix["edits"]))
    for rows in (1, 2):
        s = packed_plan.simulate(runs, CFG, ICFG, epochs=3, edits_per_chunk=4, rows=rows, max_len=64)
        docs = [n for run in runs for n in run]
        assert s.real_tokens == 3 * sum(docs) <= s.slots
        np.testing.assert_allclose(sum(s.useful.values()), 3 * flops.useful_step_flops(CFG, ICFG.lora, docs),
                                   rtol=1e-9)
        assert s.chunks == 2 and len({T for T, _ in s.steps}) <= s.chunks  # one row length per chunk
    shipped = packed_plan.load_mix("knowledge")
    assert len(shipped["edits"]) == 100 and all(n > 1 for e in shipped["edits"] for n in e)
    with pytest.raises(FileNotFoundError, match="make_length_mix"):
        packed_plan.load_mix("chess")


def test_op_table_counts_a_matmul_as_2mkn():
    """`hlo_op_table` on a compiled program: the matmul kernel's FLOPs are 2 M K N, and the bytes of the kernels
    it lists are what `hlo_bytes` counts."""
    x, w = jnp.ones((64, 128), jnp.float32), jnp.ones((128, 256), jnp.float32)
    text = jax.jit(lambda x, w: jnp.tanh(x @ w) * 2.0).lower(x, w).compile().as_text()
    rows = aot.hlo_op_table(text, top=50)
    assert sum(r["gflops"] for r in rows) * 1e9 == pytest.approx(2 * 64 * 128 * 256)
    assert sum(r["mbytes"] for r in rows) * 1e6 == pytest.approx(aot.hlo_bytes(text))
    comps, entry = aot.parse_hlo(text)
    assert aot.matmul_flops(comps, entry) == pytest.approx(2 * 64 * 128 * 256)


# A TPU program's tail, abridged: an async slice of a weight shard into VMEM (S(1)), a scalar in SMEM (S(2)), a
# copy of a cache block into VMEM and a fusion that reads both from VMEM and writes its result to HBM.
TPU_HLO = """HloModule tpu_like

%fused (p0: s8[256], p1: f32[64]) -> f32[64] {
  %p0 = s8[256]{0:S(1)} parameter(0)
  %p1 = f32[64]{0:S(1)} parameter(1)
  ROOT %n = f32[64]{0} negate(%p1)
}

ENTRY %main (w: s8[1024], c: f32[64]) -> f32[64] {
  %w = s8[1024]{0:T(1024)} parameter(0)
  %c = f32[64]{0} parameter(1)
  %slice-start = ((s8[1024]{0:T(1024)}), s8[256]{0:T(1024)S(1)}, s32[]{:S(2)}) slice-start(%w), slice={[0:256]}
  %slice-done = s8[256]{0:T(1024)S(1)} slice-done(%slice-start)
  %copy-start = (f32[64]{0:S(1)}, f32[64]{0}, u32[]{:S(2)}) copy-start(%c)
  %copy-done = f32[64]{0:S(1)} copy-done(%copy-start)
  ROOT %fusion = f32[64]{0} fusion(%slice-done, %copy-done), kind=kLoop, calls=%fused
}
"""


def test_tpu_on_chip_buffers_move_no_hbm_bytes():
    """`hlo_bytes` on a TPU program: the async slice reads its 256-byte slice (not the 1,024-byte shard), the
    copy into VMEM reads its 256-byte source once, the fusion reads VMEM (free) and writes 256 bytes to HBM."""
    assert [(op, b) for _, op, b in aot.hlo_traffic(TPU_HLO)] == [("slice-start", 256), ("copy-start", 256),
                                                                  ("fusion", 256)]
    assert aot.hlo_bytes(TPU_HLO) == 768


def test_a_layer_costs_at_least_what_it_must_read():
    """`_layers` extrapolates the 1- and 2-layer compiles over the depth, but never below the floor per layer
    (on TPU the two programs' memory-space assignment can make their difference negative)."""
    costs = {1: aot.Compiled(True, flops=10.0, bytes_accessed=1000.0), 2: aot.Compiled(True, flops=16.0,
                                                                                      bytes_accessed=900.0)}
    cfg = CFG.replace(num_layers=5)
    measure = lambda c: costs[c.num_layers]
    assert aot._layers(cfg, measure) == (10.0 + 4 * 6.0, 1000.0)  # no floor: a layer costs max(-100, 0) bytes
    assert aot._layers(cfg, measure, lambda c: 50.0) == (34.0, 1000.0 + 4 * 50.0)
    costs[2].bytes_accessed = 1200.0
    assert aot._layers(cfg, measure, lambda c: 50.0) == (34.0, 1000.0 + 4 * 200.0)  # the count when above it


def test_base_layer_bytes_are_one_layers_shard_per_device():
    """On 8 CPU devices with fsdp = 4: one layer's bf16 weights divided by 4 (the shard every device holds)."""
    from seal_jax.runtime import sharding
    mesh = sharding.make_mesh(2, 4, 1, jax.devices()[:8])
    per_layer = sum(v.size for v in jax.tree.leaves(aot.abstract_base(CFG, mesh)["layers"])) / CFG.num_layers
    assert aot.base_layer_bytes(CFG, mesh) == pytest.approx(2 * per_layer / 4, rel=0.02)  # norms: replicated


def test_one_more_layer_adds_its_own_kernels():
    """`layer_op_delta` of a 1- and a 2-layer stack of tanh(x @ w_l): the second layer adds one matmul's 2 M K N
    and, in bytes, what the two programs' totals differ by."""
    x = jnp.ones((64, 128), jnp.float32)

    def program(n):
        ws = [jnp.ones((128, 128), jnp.float32)] * n
        def f(x, *ws):
            for w in ws:
                x = jnp.tanh(x @ w) * 2.0
            return x
        return jax.jit(f).lower(x, *ws).compile().as_text()
    one, two = program(1), program(2)
    rows = aot.layer_op_delta(one, two, top=50)
    assert sum(r["gflops"] for r in rows) * 1e9 == pytest.approx(2 * 64 * 128 * 128)
    assert sum(r["mbytes"] for r in rows) * 1e6 == pytest.approx(aot.hlo_bytes(two) - aot.hlo_bytes(one))


def test_packed_round_on_v5e_counts_the_splash_kernel():
    """The packed step compiled for a v5e-8 (rows over edit x fsdp, splash attention under shard_map, dense
    LoRA): XLA's count plus the kernel's analytic FLOPs is at least the useful work, and the round's roofline is
    at least its floor."""
    pytest.importorskip("libtpu", reason="needs libtpu (make test installs it)")
    from seal_jax.runtime import sharding
    from seal_jax.runtime.topology import CHIPS, topology_devices
    devices = topology_devices("v5e:2x4")
    mesh = sharding.make_mesh(4, 2, 1, devices)
    cfg, icfg = packed_plan.for_target(CFG.replace(num_layers=2), ICFG, "tpu")
    assert (cfg.attention_impl, icfg.lora_impl) == ("splash", "dense")
    runs = packed_plan.round_runs({"edits": [[40, 20, 20], [60, 10], [30, 30]]}, 8, 1)
    s = packed_plan.simulate(runs, cfg, icfg, epochs=2, edits_per_chunk=8, rows=8, max_len=128)
    cost = packed_plan.round_cost(s, cfg, icfg, mesh, CHIPS[devices[0].device_kind], 8)
    summary = cost.summary(8, 8)
    assert summary["compiled_over_useful"] >= 1.0 and summary["roofline_over_floor"] >= 1.0
    bucket = cost.buckets[0]
    xla_only = aot._layers(cfg, lambda c: packed_plan.compile_step(c, icfg, mesh, 8, bucket["T"]))[0]
    assert bucket["tflops"] * 1e12 == pytest.approx(xla_only + flops.kernel_attention_flops(cfg, "splash",
                                                                                            bucket["T"], None))


def test_suggest_takes_the_cheapest_fitting_split_and_chunk():
    """`packed_plan.suggest` against a closed-form cost: per split (base fits: fsdp <= 2, tp = 1), edits per row
    double while the row fits and the cost falls; the cheapest fitting candidate wins, and items per chunk are
    the rows' edits over the runs per item."""
    devices = jax.devices()[:8]
    calls = []

    def plan_round(mesh, items):  # cost per self-edit falls with edits per row until 4, rows past 16 edits overflow
        rows = mesh.shape["edit"] * mesh.shape["fsdp"]
        per_row = items * 3 // rows
        calls.append((mesh.shape["edit"], mesh.shape["fsdp"], per_row))
        cost = 10.0 / min(per_row, 4) + per_row / 8 + mesh.shape["fsdp"]
        return {"longest_row": {"fits": per_row * mesh.shape["fsdp"] <= 16, "peak_gib": 1.0},
                "device_s_per_self_edit": cost, "roofline_over_floor": cost}

    got = packed_plan.suggest(plan_round, devices, lambda f, t: f <= 2 and t == 1, inner_runs=3)
    # edit=8: per row 1, 2, 4 (cost 11.125, 6.25, 3.5), 8 costs more (3.5 vs 4.5): stop. edit=4 x fsdp=2: 1..4,
    # then 8 costs more; every candidate there pays 1 more than edit=8's.
    assert [c for c in calls if c[:2] == (8, 1)] == [(8, 1, 1), (8, 1, 2), (8, 1, 4), (8, 1, 8)]
    assert {c[:2] for c in calls} == {(8, 1), (4, 2)}
    chosen = got["chosen"]
    assert (chosen["edit"], chosen["fsdp"], chosen["tp"], chosen["edits_per_row"]) == (8, 1, 1, 4)
    assert chosen["edits_per_chunk"] == 8 * 4 // 3 + 1  # 32 edits = 11 items x 3 runs, rounded up
    assert min(r["device_s_per_self_edit"] for r in got["tried"] if r["fits"]) == chosen["device_s_per_self_edit"]
    none = packed_plan.suggest(lambda mesh, items: {"longest_row": {"fits": False, "peak_gib": 99.0},
                                                   "device_s_per_self_edit": 1.0, "roofline_over_floor": 1.0},
                               devices, lambda f, t: True, inner_runs=1)
    assert none["chosen"] is None and len(none["tried"]) == len(aot.mesh_splits(8))


def test_a_step_that_carries_some_of_its_rows_edits_is_costed_as_such():
    """With inner.step_edits below a row's edits, the plan compiles the step a run executes: its batch names
    each row's slots, and its compiled FLOPs (XLA's count, this CPU) fall with the adapters it carries."""
    import dataclasses
    from seal_jax.engine import packed
    from seal_jax.runtime.sharding import make_mesh
    cfg, mesh = CFG.replace(remat="none"), make_mesh(1, 1, 1, jax.devices()[:1])
    icfg = dataclasses.replace(ICFG, lora=LoraSpec(rank=8, alpha=16.0, targets=("all",)))
    flops_of = {}
    for k in (0, 1):
        capped = dataclasses.replace(icfg, step_edits=k)
        lora, opt, ok, batch = packed_plan.step_inputs(cfg, capped, mesh, 4, 32)
        assert ("slots" in batch) == bool(k) and (not k or batch["slots"].shape == (1, 1))
        with jax.set_mesh(mesh):
            compiled = packed.packed_step.lower(aot.abstract_base(cfg, mesh), lora, opt, ok, batch, cfg=cfg,
                                                icfg=capped).compile()
        flops_of[k] = compiled.cost_analysis()["flops"]
    assert flops_of[1] < flops_of[0]
