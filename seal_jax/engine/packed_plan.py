"""What a round of packed inner steps costs on a target: its step schedule simulated, each row bucket compiled.

A round's inner updates are `runs` trainings (self-edits x reward repeats) of documents whose lengths the data
decide. The plan takes them from a length mix (`seal_jax/data/length_mix/<domain>.json`: token counts of SEAL's
own self-edits' training documents, `bench/workloads/make_length_mix.py`), and runs the real packing rule on
them: `packed.plan_steps` over each chunk (same per-epoch shuffles, same row buckets, G rows per step on the
mesh) gives every step's row length T and its documents. Then

    compiled   each distinct T's `packed.packed_step`, AOT-compiled for the target (1 and 2 layers unrolled,
               extrapolated: `aot._layers`), XLA's flops (plus `flops.kernel_attention_flops` where attention is a
               Pallas/cuDNN kernel the cost model cannot see) and bytes per device, roofline per step
    useful     `flops.useful_step_flops` of the step's real documents (no padding, no remat, no masked scores)
    floor      useful FLOPs at the chip's peak: the time no program can beat

summed over the steps each bucket runs. Per device: a step's rows are spread one per device, so the round's
device-seconds are the steps' per-device roofline times the devices.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seal_jax.engine import flops, packed
from seal_jax.engine.chunks import chunk_order
from seal_jax.engine.inner import InnerConfig, hf_max_steps, pack_edits
from seal_jax.model.config import ModelConfig
from seal_jax.model.transformer import resolve_attention_impl, resolve_lora_impl
from seal_jax.runtime.memory_plan import GiB

log = logging.getLogger(__name__)
MIX_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "length_mix")
ROWS = P(("edit", "fsdp"))  # packed rows and the edit stack shard alike (`packed.packed_rows`)


def load_mix(domain: str) -> dict:
    """The shipped length mix of a domain: {"edits": [[document tokens, ...] per self-edit], "tokenizer", ...}."""
    path = os.path.join(MIX_DIR, f"{domain}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no length mix for domain {domain!r} at {path}; write it with "
                                f"bench/workloads/make_length_mix.py {domain} --seal=<SEAL checkout>")
    with open(path) as f:
        return json.load(f)


def for_target(cfg: ModelConfig, icfg: InnerConfig, platform: str, dtype=jnp.bfloat16):
    """(cfg, icfg) with `auto` kernels resolved for the target platform (a plan for a TPU on a CPU host compiles
    splash attention, as the run there will; LoRA `auto` is dense everywhere)."""
    cfg = cfg.replace(attention_impl=resolve_attention_impl(cfg.attention_impl, platform, dtype),
                      remat=icfg.remat or cfg.remat)  # as `chunks.train_in_chunks` runs the inner updates
    return cfg, dataclasses.replace(icfg, lora_impl=resolve_lora_impl(icfg.lora_impl))


def kernel_of(cfg: ModelConfig) -> Optional[str]:
    """The fused attention kernel packed steps of `cfg` (resolved: `for_target`) use, or None (XLA's)."""
    return None if cfg.attention_impl == "xla" else cfg.attention_impl


# ---- the schedule --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Schedule:
    """The packed steps of a round: per (T, window) bucket, how many steps run it and their useful FLOPs."""
    steps: collections.Counter          # (T, window) -> steps
    useful: dict                        # (T, window) -> useful FLOPs over those steps (all rows)
    real_tokens: int
    slots: int                          # rows x T summed over steps
    runs: int
    chunks: int


def round_runs(mix: dict, self_edits: int, repeats: int, seed: int = 0) -> list[list[int]]:
    """The documents of a round's inner runs: `self_edits` drawn from the mix (without replacement while it
    lasts), each trained `repeats` times (item-major, as `adapt.pack_requests` orders them)."""
    rng = np.random.default_rng(seed)
    pool = mix["edits"]
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-self_edits // len(pool)))])[:self_edits]
    return [pool[i] for i in order for _ in range(repeats)]


def simulate(runs: list[list[int]], cfg: ModelConfig, icfg: InnerConfig, *, epochs: float, edits_per_chunk: int,
             rows: int, max_len: int, group: int = 1, seed: int = 0) -> Schedule:
    """Every chunk's packed steps, by the rules a run uses: its chunks (`chunks.chunk_order`, `group` runs per
    item) and their steps (`packed.plan_steps`); windows dropped where a kernel does the attention (causal over
    the row, segments masked: no look-back band to compile per step)."""
    steps_of = [hf_max_steps(len(edit), epochs, icfg.batch_size) for edit in runs]
    runs = [runs[i] for i in chunk_order(steps_of, [sum(min(n, max_len) for n in e) for e in runs], group)]
    width = -(-edits_per_chunk // rows) * rows
    steps, useful = collections.Counter(), collections.defaultdict(float)
    real = slots = chunks = 0
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed), len(runs)))
    for start in range(0, len(runs), edits_per_chunk):
        chunk = runs[start:start + edits_per_chunk]
        docs = [[([1] * min(n, max_len), [1] * min(n, max_len)) for n in edit] for edit in chunk]
        docs += [[] for _ in range(width - len(chunk))]
        pe = pack_edits(docs, [1e-3] * width, [epochs] * width, batch_size=icfg.batch_size, max_len=max_len)
        k = np.concatenate([keys[start:start + len(chunk)], np.repeat(keys[:1], width - len(chunk), 0)])
        order = packed.balanced_order(pe, rows)  # as `packed.train_packed` deals a chunk's edits to rows
        for plan in packed.plan_steps(packed.take(pe, order), k[order], icfg, rows):
            key = (plan["tokens"].shape[1], None if kernel_of(cfg) else plan["window"])
            steps[key] += 1
            useful[key] += flops.useful_step_flops(cfg, icfg.lora, plan["lengths"])
            real += plan["real_tokens"]
            slots += plan["tokens"].size
        chunks += 1
    return Schedule(steps, dict(useful), real, slots, len(runs), chunks)


# ---- compiled cost of one packed step ---------------------------------------------------------------------------


def _sds(shape, dtype, mesh: Mesh, spec: P):
    from seal_jax.runtime.sharding import _fit
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=NamedSharding(mesh, _fit(spec, shape, mesh)))


def step_inputs(cfg: ModelConfig, icfg: InnerConfig, mesh: Mesh, edits: int, T: int):
    """`packed.packed_step`'s (lora, opt_state, ok, batch) as sharded ShapeDtypeStructs: G rows of T tokens, an
    edit stack of `edits` adapters, both over ("edit", "fsdp"); each row's slots where `icfg.step_edits` caps
    the adapters a row carries per step."""
    rows = packed.packed_rows(mesh)
    lora, opt = jax.eval_shape(lambda k: packed.init_state(k, cfg=cfg, icfg=icfg, num_edits=edits),
                               jax.ShapeDtypeStruct((edits, 2), jnp.uint32))
    place = lambda x: _sds(x.shape, x.dtype, mesh, P(*([None] * packed.edit_axis(x)), *ROWS) if x.ndim else P())
    batch = {k: _sds((rows, T), jnp.int32, mesh, ROWS)
             for k in ("tokens", "positions", "segment_ids", "token_edit", "token_adapter")}
    batch.update(weight=_sds((rows, T), jnp.float32, mesh, ROWS), active=_sds((edits,), jnp.bool_, mesh, ROWS),
                 lr=_sds((edits,), jnp.float32, mesh, ROWS))
    K = packed.step_slots(icfg, edits // rows)
    if K < edits // rows:  # rows carry K of their edits' adapters per step (`packed.plan_steps`)
        batch["slots"] = _sds((rows, K), jnp.int32, mesh, ROWS)
    return jax.tree.map(place, lora), jax.tree.map(place, opt), _sds((edits,), jnp.bool_, mesh, ROWS), batch


def compile_step(cfg: ModelConfig, icfg: InnerConfig, mesh: Mesh, edits: int, T: int, window=None):
    """The packed step for `edits` edits at row length T, compiled for the mesh's devices (`aot.Compiled`)."""
    from seal_jax.engine.aot import abstract_base, compile_phase
    lora, opt, ok, batch = step_inputs(cfg, icfg, mesh, edits, T)
    with jax.set_mesh(mesh):  # as `packed.train_packed` runs it: kernels per device's rows
        return compile_phase(packed.packed_step, abstract_base(cfg, mesh), lora, opt, ok, batch, cfg=cfg,
                             icfg=icfg, window=window)


def step_hlo(cfg: ModelConfig, icfg: InnerConfig, mesh: Mesh, edits: int, T: int, window=None) -> str:
    """The compiled HLO text of one packed step (per device), for `aot.hlo_op_table`."""
    from seal_jax.engine.aot import abstract_base
    lora, opt, ok, batch = step_inputs(cfg, icfg, mesh, edits, T)
    with jax.set_mesh(mesh):
        return packed.packed_step.lower(abstract_base(cfg, mesh), lora, opt, ok, batch, cfg=cfg, icfg=icfg,
                                        window=window).compile().as_text()


def step_cost(cfg: ModelConfig, icfg: InnerConfig, mesh: Mesh, edits: int, T: int, window=None):
    """(flops, bytes) per device of one packed step at the full depth: XLA's count of the step (1- and 2-layer
    unrolled compiles, extrapolated) plus what a fused attention kernel runs out of its sight."""
    from seal_jax.engine.aot import _layers, base_layer_bytes
    f, b = _layers(cfg, lambda c: compile_step(c, icfg, mesh, edits, T, window), lambda c: base_layer_bytes(c, mesh))
    kernel = kernel_of(cfg)
    if kernel is not None:  # one row per device
        f += flops.kernel_attention_flops(cfg, kernel, T, None if window is None else window[1])
    return f, b


@dataclasses.dataclass
class RoundCost:
    buckets: list            # per (T, window): steps, flops, bytes, roofline_s, useful per device, per step
    flops: float             # per device, the round
    useful: float            # per device, the round
    bytes: float
    roofline_s: float        # per device, the round (every device runs every step)
    floor_s: float           # useful at the chip's peak, per device

    def summary(self, devices: int, self_edits: int) -> dict:
        return {"compiled_tflops_per_device": self.flops / 1e12, "useful_tflops_per_device": self.useful / 1e12,
                "compiled_over_useful": self.flops / self.useful if self.useful else float("nan"),
                "gbytes_per_device": self.bytes / 1e9, "roofline_device_s": self.roofline_s * devices,
                "floor_device_s": self.floor_s * devices,
                "roofline_over_floor": self.roofline_s / self.floor_s if self.floor_s else float("nan"),
                "device_s_per_self_edit": self.roofline_s * devices / self_edits,
                "floor_device_s_per_self_edit": self.floor_s * devices / self_edits}


def round_cost(schedule: Schedule, cfg: ModelConfig, icfg: InnerConfig, mesh: Mesh, chip, edits: int,
               cost=step_cost) -> RoundCost:
    """Sum each bucket's compiled roofline over the steps that run it; useful and floor from the schedule."""
    devices = mesh.devices.size
    buckets, tot = [], dict(flops=0.0, useful=0.0, bytes=0.0, roofline_s=0.0)
    items = sorted(schedule.steps.items(), key=lambda kv: (kv[0][0], kv[0][1] or (0, 0)))
    for i, ((T, window), n) in enumerate(items):
        t0 = time.perf_counter()
        f, b = cost(cfg, icfg, mesh, edits, T, window)
        log.info("packed step T=%d (%d of %d row lengths, %d steps): compiled and costed in %.0f s", T, i + 1,
                 len(items), n, time.perf_counter() - t0)
        u = schedule.useful[(T, window)] / devices
        r = chip.roofline_s(f, b)
        buckets.append({"T": T, "window": window, "steps": n, "tflops": f / 1e12, "useful_tflops": u / n / 1e12,
                        "gbytes": b / 1e9, "roofline_s": r, "bound": "compute" if f / chip.bf16_tflops / 1e12 >=
                        b / chip.hbm_gbps / 1e9 else "memory"})
        tot["flops"] += f * n
        tot["bytes"] += b * n
        tot["roofline_s"] += r * n
        tot["useful"] += u
    return RoundCost(buckets, tot["flops"], tot["useful"], tot["bytes"], tot["roofline_s"],
                     tot["useful"] / (chip.bf16_tflops * 1e12))


# ---- a round, and the split and chunk size that cost it least ------------------------------------------------------


def round_plan(mix: dict, cfg: ModelConfig, icfg: InnerConfig, mesh: Mesh, chip, *, self_edits: int, inner_runs: int,
               items_per_chunk: int, epochs: float, max_len: int, seed: int = 0) -> dict:
    """A round's inner updates as packed steps on `mesh` (`plan --compile`'s `packed_inner`): `self_edits` drawn
    from the length mix, each trained `inner_runs` times, `items_per_chunk` self-edits (times their runs, rounded
    up to the mesh's rows) per chunk; the schedule simulated, each bucket compiled for the target and summed, the
    longest row's memory against the chip."""
    tcfg, ticfg = for_target(cfg, icfg, chip.platform)
    runs = round_runs(mix, self_edits, inner_runs, seed=seed)
    rows = packed.packed_rows(mesh)
    per_chunk = -(-items_per_chunk * inner_runs // rows) * rows  # a chunk holds whole items: every repeat of one
    sched = simulate(runs, tcfg, ticfg, epochs=epochs, edits_per_chunk=per_chunk, rows=rows, max_len=max_len,
                     group=inner_runs, seed=seed)
    cost = round_cost(sched, tcfg, ticfg, mesh, chip, per_chunk)
    longest = max(T for T, _ in sched.steps)  # the most memory a step holds
    memory = compile_step(tcfg, ticfg, mesh, per_chunk, longest,
                          max((w for T, w in sched.steps if T == longest), key=lambda w: w or (0, 0)))
    return {"epochs": epochs, "attention_impl": tcfg.attention_impl, "lora_impl": ticfg.lora_impl,
            "remat": tcfg.remat, "rows_per_step": rows, "edits_per_chunk": per_chunk, "inner_runs": len(runs),
            "chunks": sched.chunks, "length_mix": f"{len(mix['edits'])} self-edits, tokenizer {mix.get('tokenizer')}",
            "real_tokens": sched.real_tokens, "slots_over_real_tokens": sched.slots / max(sched.real_tokens, 1),
            "packed_steps": sum(sched.steps.values()),
            "longest_row": {"T": longest, "fits": memory.fits, "reason": memory.reason,
                            "peak_gib": round(memory.peak / GiB, 2)},
            "buckets": cost.buckets,
            **cost.summary(mesh.devices.size, self_edits),
            "flops_source": "XLA's cost model (1- and 2-layer unrolled compiles, extrapolated) plus "
                            "engine/flops.kernel_attention_flops for a Pallas / cuDNN attention kernel"
                            + ("; GPU: engine/aot.gpu_cost" if chip.platform == "cuda" else ""),
            "useful": "engine/flops.useful_step_flops of each step's real documents; floor = useful at the chip's "
                      f"peak ({chip.bf16_tflops:g} TFLOP/s)"}


def suggest(plan_round, devices: list, fits_base, inner_runs: int, max_edits_per_row: int = 64) -> dict:
    """The mesh split and chunk size whose packed round costs the fewest device-seconds per self-edit, by compile.

    For each edit x fsdp x tp split of `devices` that `fits_base(fsdp, tp)` admits (checked before any compile:
    the model takes the split and its base fits), edits per row double from 1 (items per chunk: that times the rows, over the
    runs per item) while the longest row fits and the cost per self-edit falls; `plan_round(mesh, items)` is
    `round_plan` for that mesh and chunk. Returns {"tried": [...], "chosen": the cheapest that fits, or None}."""
    from seal_jax.engine.aot import mesh_splits
    from seal_jax.runtime.sharding import make_mesh
    tried = []
    for e, f, t in mesh_splits(len(devices)):
        if not fits_base(f, t):
            continue
        mesh, best, per_row = make_mesh(e, f, t, devices), None, 1
        while per_row <= max_edits_per_row:
            items = -(-e * f * per_row // inner_runs)
            p = plan_round(mesh, items)
            row = {"edit": e, "fsdp": f, "tp": t, "edits_per_chunk": items, "edits_per_row": per_row,
                   "fits": p["longest_row"]["fits"], "longest_row_gib": p["longest_row"]["peak_gib"],
                   "device_s_per_self_edit": p["device_s_per_self_edit"],
                   "roofline_over_floor": p["roofline_over_floor"], "packed_inner": p}
            tried.append(row)
            log.info("suggest: mesh %d x %d x %d, %d edits per row: %s, %.3g device-s per self-edit", e, f, t,
                     per_row, "fits" if row["fits"] else "does not fit", row["device_s_per_self_edit"])
            if not row["fits"] or (best and row["device_s_per_self_edit"] >= best["device_s_per_self_edit"]):
                break
            best, per_row = row, per_row * 2
    fitting = [r for r in tried if r["fits"]]
    return {"tried": tried, "chosen": min(fitting, key=lambda r: r["device_s_per_self_edit"]) if fitting else None}
