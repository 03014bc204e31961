"""Ahead-of-time plans: the real jitted phases compiled for a TPU topology from shapes alone.

A phase is one of the project's own jitted functions lowered with `jax.ShapeDtypeStruct`s that carry the
partition rules' `NamedSharding`s on a mesh of compile-only devices (`runtime/topology.py`); no weights exist.

    inner      `inner.inner_train_edits`: the vmapped update of one chunk of edits (edit-sharded)
    sampling   `sampling._generate`: self-edit sampling, prefill + decode loop, base weights only
    answering  `sampling._generate` with a stack of adapters, one per row (`adapter_of_row`)
    m_step     `inner.inner_train_edits` with one edit holding the kept examples, the outer LoRA

Memory is XLA's buffer assignment for the real program (arguments, outputs, temporaries, peak per device);
a program that does not fit fails to compile, and the failure's message is the reason. Cost is XLA's cost
model, which counts a loop body once: so each phase is also compiled with its layer scan unrolled at 1 and
2 layers (exact for a linear stack, extrapolated to L), a full-length loss pass and one length bucket, which
gives the cost of one optimiser step, one prefill and one decode step; the plan multiplies by the counts.
Time is a roofline (compute at peak or HBM traffic at full bandwidth, whichever is longer): a lower bound.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seal_jax.engine import inner, sampling
from seal_jax.engine.inner import InnerConfig, round_up
from seal_jax.engine.outer import OuterConfig
from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import abstract_params, projection_shape
from seal_jax.runtime import sharding
from seal_jax.runtime.topology import Chip

PHASES = ("inner", "sampling", "answering", "m_step")


@dataclasses.dataclass(frozen=True)
class Workload:
    """The shapes of one SEAL round: the config's settings, plus typical sizes where the data decide them."""
    edits_per_chunk: int     # C: edits per vmapped inner call
    docs: int                # N: documents per edit (padded)
    doc_len: int             # S the update must hold: the longest document allowed (inner.max_len)
    step_len: int            # tokens a typical step runs at (cost)
    steps: int               # optimiser steps of one inner update
    inner_runs: int          # inner updates per self-edit (SEAL knowledge: 3)
    self_edits: int          # self-edits per round (contexts x samples)
    sample_batch: int        # rows per sampling call
    prompt_len: int          # self-edit prompt (padded)
    sample_cap: int          # max_new_tokens: the KV cache holds prompt + this
    sample_tokens: int       # decode steps of a typical sampling call (its longest row)
    answer_rows: int         # answering rows per edit
    answer_call_rows: int    # rows per answering call (inner.answer_rows; 0: a chunk's every row at once)
    answer_prompt_len: int
    answer_cap: int
    answer_tokens: int
    mstep_examples: int      # kept (prompt -> self-edit) examples
    mstep_len: int           # their padded length
    mstep_steps: int         # optimiser steps of the M-step


@dataclasses.dataclass
class Compiled:
    """XLA's view of one compiled phase, per device (bytes, flops)."""
    fits: bool
    reason: str = ""
    argument: int = 0
    output: int = 0
    temp: int = 0
    alias: int = 0
    peak: int = 0
    flops: float = 0.0
    bytes_accessed: float = 0.0


def compile_phase(fn: Callable, *args, **static) -> Compiled:
    """AOT-compile `fn` (a jitted function) for the devices its abstract arguments name."""
    try:
        c = fn.lower(*args, **static).compile()
    except Exception as e:  # XLA reports a program over HBM as RESOURCE_EXHAUSTED at compile time
        msg = str(e)
        if "RESOURCE_EXHAUSTED" not in msg:
            raise
        return Compiled(False, reason=_oom_reason(msg))
    m, cost = c.memory_analysis(), c.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    peak = getattr(m, "peak_memory_in_bytes", 0) or m.argument_size_in_bytes + m.output_size_in_bytes + \
        m.temp_size_in_bytes - m.alias_size_in_bytes
    return Compiled(True, "", m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                    m.alias_size_in_bytes, peak, float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)))


def _oom_reason(msg: str) -> str:
    found = re.search(r"(Ran out of memory[^\n]*?exceeds available HBM \([^)]*\))", msg)
    return found.group(1) if found else msg.strip().splitlines()[0][:300]


# ---- abstract inputs on a mesh --------------------------------------------------------------------


def _sds(shape, dtype, mesh: Mesh, spec: P = P()) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=NamedSharding(mesh, sharding._fit(spec, shape, mesh)))


def abstract_base(cfg: ModelConfig, mesh: Mesh, dtype=jnp.bfloat16) -> dict:
    """The base parameters as ShapeDtypeStructs placed by the partition rules (`sharding.param_specs`)."""
    shapes = abstract_params(cfg, dtype)
    specs = sharding.param_specs(shapes, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, s)),
                        shapes, specs)


def abstract_lora(cfg: ModelConfig, spec: LoraSpec, mesh: Mesh, lead: tuple, lead_spec: P) -> dict:
    """LoRA leaves [*lead, L, in, r] / [*lead, L, r, out] in float32 (a stack: lead=(E,), spec P("edit"))."""
    out = {}
    for name in spec.targets:
        n_in, n_out = projection_shape(cfg, name)
        out[name] = {"a": _sds((*lead, cfg.num_layers, n_in, spec.rank), jnp.float32, mesh, lead_spec),
                     "b": _sds((*lead, cfg.num_layers, spec.rank, n_out), jnp.float32, mesh, lead_spec)}
    return out


def _rows_lora(cfg, spec, mesh, rows):  # per-row adapters [L, B, ...], rows over ("edit", "fsdp")
    return abstract_lora(cfg, spec, mesh, (), P()) if rows is None else jax.tree.map(
        lambda x: _sds((x.shape[0], rows, *x.shape[1:]), x.dtype, mesh, P(None, ("edit", "fsdp"))),
        abstract_lora(cfg, spec, mesh, (), P()))


def edit_batch(mesh: Mesh, edits: int, docs: int, seq: int, lead: P = P("edit")):
    """`inner_train_edits`'s (edits, keys, hparams) for `edits` edits of `docs` documents of `seq` tokens."""
    e = dict(tokens=_sds((edits, docs, seq), jnp.int32, mesh, lead), loss_mask=_sds((edits, docs, seq), jnp.int32, mesh, lead),
             seq_valid=_sds((edits, docs), jnp.bool_, mesh, lead))
    hp = dict(lr=_sds((edits,), jnp.float32, mesh, lead), epochs=_sds((edits,), jnp.int32, mesh, lead))
    return e, _sds((edits, 2), jnp.uint32, mesh, lead), hp


def prompt_batch(mesh: Mesh, rows: int, length: int, stops: int = 2):
    """`_generate`'s (tokens, mask, stop_ids, key, temperature, top_p); rows over ("edit", "fsdp")."""
    rowspec = P(("edit", "fsdp"))
    return (_sds((rows, length), jnp.int32, mesh, rowspec), _sds((rows, length), jnp.bool_, mesh, rowspec),
            _sds((stops,), jnp.int32, mesh), _sds((2,), jnp.uint32, mesh), _sds((), jnp.float32, mesh),
            _sds((), jnp.float32, mesh))


# ---- the phases: memory (the real program) and cost (per step, extrapolated over layers) ------------


def inner_memory(cfg, icfg: InnerConfig, mesh, w: Workload, edits: Optional[int] = None) -> Compiled:
    e, k, hp = edit_batch(mesh, edits or w.edits_per_chunk, w.docs, w.doc_len)
    return compile_phase(inner.inner_train_edits, abstract_base(cfg, mesh), e, k, hp, cfg=cfg, icfg=icfg, steps=8)


def mstep_config(outer: OuterConfig) -> InnerConfig:
    """The M-step's InnerConfig, as `outer.outer_update` builds it."""
    return InnerConfig(lora=outer.lora, batch_size=outer.batch_size, schedule=outer.schedule, length_buckets=1)


def mstep_memory(cfg, outer: OuterConfig, mesh, w: Workload) -> Compiled:
    e, k, hp = edit_batch(mesh, 1, inner.bucket_pow2(w.mstep_examples), w.mstep_len, lead=P())
    return compile_phase(inner.inner_train_edits, abstract_base(cfg, mesh), e, k, hp, cfg=cfg, icfg=mstep_config(outer),
                         steps=8)


def generate_memory(cfg, mesh, rows: int, prompt: int, cap: int, lora: Optional[tuple] = None) -> Compiled:
    """`_generate` for `rows` prompts; lora=(spec, edits): a stack of `edits` adapters, one per row."""
    stack, adapter_of_row, scale = None, None, 0.0
    if lora is not None:
        spec, edits = lora
        stack, scale = abstract_lora(cfg, spec, mesh, (edits,), P("edit")), spec.scale
        adapter_of_row = _sds((rows,), jnp.int32, mesh, P(("edit", "fsdp")))
    t, m, stops, key, temp, top_p = prompt_batch(mesh, rows, prompt)
    return compile_phase(sampling._generate, abstract_base(cfg, mesh), stack, adapter_of_row, t, m, stops, key, temp,
                         top_p, cfg=cfg, max_new_tokens=cap, greedy=lora is not None, lora_scale=scale)


def _layers(cfg: ModelConfig, measure: Callable[[ModelConfig], Compiled]) -> tuple[float, float]:
    """(flops, bytes) of `measure` at the full depth, from unrolled compiles at 1 and 2 layers."""
    # unroll_loops also unrolls the query-chunk and loss-chunk loops, whose bodies would be counted once too
    one, two = (measure(cfg.replace(num_layers=n, unroll_loops=True)) for n in (1, 2))
    if not (one.fits and two.fits):
        return float("nan"), float("nan")
    extra = cfg.num_layers - 1
    return (one.flops + extra * (two.flops - one.flops), one.bytes_accessed + extra * (two.bytes_accessed - one.bytes_accessed))


def inner_step_cost(cfg, icfg: InnerConfig, mesh, edits: int, docs: int, seq: int, lead: P = P("edit")):
    """(flops, bytes) per device of one optimiser step of `edits` edits at `seq` tokens (the scan's body)."""
    one_bucket = dataclasses.replace(icfg, length_buckets=1)

    def measure(c):
        e, k, hp = edit_batch(mesh, edits, docs, seq, lead)
        return compile_phase(inner.inner_train_edits, abstract_base(c, mesh), e, k, hp, cfg=c, icfg=one_bucket, steps=8)
    return _layers(cfg, measure)


def generate_cost(cfg, mesh, rows: int, prompt: int, cap: int, lora: Optional[LoraSpec] = None):
    """((flops, bytes) of the prefill, (flops, bytes) of one decode step), per device."""
    static = dict(max_new_tokens=cap, greedy=lora is not None, lora_scale=0.0 if lora is None else lora.scale)
    names = ("cfg", "max_new_tokens", "greedy", "lora_scale")
    pre, dec = jax.jit(sampling.prefill, static_argnames=names), jax.jit(sampling.decode, static_argnames=names)
    t, m, stops, key, temp, top_p = prompt_batch(mesh, rows, prompt)

    def measure_prefill(c):
        lo = None if lora is None else _rows_lora(c, lora, mesh, rows)
        return compile_phase(pre, abstract_base(c, mesh), lo, t, m, stops, key, temp, top_p, cfg=c, **static)

    def measure_decode(c):
        base = abstract_base(c, mesh)
        lo = None if lora is None else _rows_lora(c, lora, mesh, rows)
        try:  # the decode step's inputs are the prefill's outputs, in the shardings XLA chose for them
            compiled = pre.lower(base, lo, t, m, stops, key, temp, top_p, cfg=c, **static).compile()
        except Exception as e:  # a prefill over HBM: no decode cost either, reported as not fitting
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            return Compiled(False, reason=_oom_reason(str(e)))
        shapes = jax.eval_shape(lambda *a: sampling.prefill(*a, cfg=c, **static), base, lo, t, m, stops, key, temp, top_p)
        state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                             compiled.output_shardings)
        return compile_phase(dec, base, lo, state, stops, temp, top_p, cfg=c, **static)
    return _layers(cfg, measure_prefill), _layers(cfg, measure_decode)


# ---- a plan: every phase's memory and time on one mesh ----------------------------------------------


@dataclasses.dataclass
class Phase:
    name: str
    memory: Compiled
    estimate: float          # the hand estimate (runtime/memory_plan.py), bytes per device
    flops: float             # per device, per call
    bytes_accessed: float
    seconds: float           # roofline, per call
    calls_per_round: float


def rows_multiple(mesh: Mesh) -> int:
    """Batch rows shard over ("edit", "fsdp"): calls round their rows up to this (as `generate` does)."""
    return mesh.shape["edit"] * mesh.shape["fsdp"]


def answering_rows(w: Workload, row_multiple: int) -> tuple[int, int]:
    """(rows of one answering call, calls per chunk): a chunk's C x answer_rows questions, `answer_call_rows`
    at a time when set, each call rounded up to the mesh's row multiple (`rows_multiple`)."""
    total = w.edits_per_chunk * w.answer_rows
    per_call = min(total, w.answer_call_rows) if w.answer_call_rows > 0 else total
    return round_up(per_call, row_multiple), -(-total // per_call)


def plan_phases(cfg: ModelConfig, icfg: InnerConfig, outer: OuterConfig, mesh: Mesh, chip: Chip, w: Workload,
                estimates: dict, cost: bool = True) -> list[Phase]:
    """Compile every phase on `mesh`; with `cost`, also their per-call roofline time and calls per round."""
    C, runs = w.edits_per_chunk, w.self_edits * w.inner_runs
    answer_rows, answer_calls = answering_rows(w, rows_multiple(mesh))
    sample_rows = round_up(w.sample_batch, rows_multiple(mesh))
    mem = {"inner": inner_memory(cfg, icfg, mesh, w),
           "sampling": generate_memory(cfg, mesh, sample_rows, w.prompt_len, w.sample_cap),
           "answering": generate_memory(cfg, mesh, answer_rows, w.answer_prompt_len, w.answer_cap, (icfg.lora, C)),
           "m_step": mstep_memory(cfg, outer, mesh, w)}
    calls = {"inner": runs / C, "sampling": w.self_edits / w.sample_batch, "answering": runs / C * answer_calls,
             "m_step": 1.0}
    nan = float("nan")
    costs = {k: (nan, nan, nan) for k in PHASES}
    if cost:
        step = inner_step_cost(cfg, icfg, mesh, C, w.docs, w.step_len)
        costs["inner"] = (step[0] * w.steps, step[1] * w.steps, chip.roofline_s(*step) * w.steps)
        for name, rows, p, cap, n, lo in (("sampling", sample_rows, w.prompt_len, w.sample_cap, w.sample_tokens, None),
                                          ("answering", answer_rows, w.answer_prompt_len, w.answer_cap,
                                           w.answer_tokens, icfg.lora)):
            pre, dec = generate_cost(cfg, mesh, rows, p, cap, lo)
            costs[name] = (pre[0] + n * dec[0], pre[1] + n * dec[1], chip.roofline_s(*pre) + n * chip.roofline_s(*dec))
        ms = inner_step_cost(cfg, mstep_config(outer), mesh, 1, inner.bucket_pow2(w.mstep_examples), w.mstep_len, P())
        costs["m_step"] = (ms[0] * w.mstep_steps, ms[1] * w.mstep_steps, chip.roofline_s(*ms) * w.mstep_steps)
    return [Phase(k, mem[k], estimates[k], *costs[k], calls[k]) for k in PHASES]


def round_seconds(phases: list[Phase], devices: int, w: Workload) -> dict:
    """Device-seconds (roofline x devices) per self-edit and per round, from the phases' per-call times."""
    per_round = {p.name: p.seconds * p.calls_per_round * devices for p in phases}
    total = sum(per_round.values())
    return {"per_phase_round": per_round, "round": total,
            "self_edit": (total - per_round["m_step"]) / w.self_edits}


def suggest(cfg: ModelConfig, icfg: InnerConfig, devices: list, w: Workload, fits_base: Callable[[int, int], bool],
            max_edits_per_device: int = 64) -> Optional[dict]:
    """The largest edit axis (then fsdp before tp) whose inner update compiles within HBM, and for it the
    largest edits-per-chunk (a multiple of the edit axis, doubling) that still does. `fits_base(fsdp, tp)`
    prunes splits whose base weights alone cannot fit (the hand estimate), before any compile."""
    n = len(devices)
    splits = [(n // (f * t), f, t) for f in _divisors(n) for t in _divisors(n // f)]
    splits.sort(key=lambda s: (-s[0], s[2]))
    for e, f, t in splits:
        if not fits_base(f, t):
            continue
        mesh = sharding.make_mesh(e, f, t, devices)
        best, per = None, 1
        while per <= max_edits_per_device:
            got = inner_memory(cfg, icfg, mesh, w, edits=e * per)
            if not got.fits:
                break
            best, per = (e * per, got), per * 2
        if best is not None:
            return {"edit": e, "fsdp": f, "tp": t, "edits_per_chunk": best[0], "peak": best[1].peak}
    return None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
