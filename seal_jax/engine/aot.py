"""Ahead-of-time plans: the real jitted phases compiled for a TPU or NVIDIA GPU topology from shapes alone.

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

On NVIDIA GPUs (compile-only devices of `runtime/topology.py`) XLA compiles the same programs but neither
refuses one over the card's memory nor answers `cost_analysis()`. So `compile_phase` compares the compiled
peak with the allocator's pool (`Chip.pool_gib`) and counts cost itself (`gpu_cost`), per device:
    flops  XLA's HloCostAnalysis (on the CPU backend) of the same program as lowered, before SPMD
           partitioning, divided by the devices: the whole mesh's flops split evenly (a lower bound where a
           mesh axis replicates work); loop bodies counted once, as XLA's TPU cost model does;
    bytes  `hlo_bytes`: the compiled GPU program's own HBM traffic, every kernel it launches (top-level
           fusions, library custom calls such as cuBLAS gemms, copies, collectives, in the entry computation,
           loop bodies and branches) reading its operands and writing its results once; an in-place
           dynamic-update-slice (a KV-cache write) moves its update, not the whole buffer.
The same 1- and 2-layer unrolled compiles extrapolate both to L layers, a layer's bytes never below what it
must read (`_layers`: its weight shard, and for a decode step its share of the KV cache).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seal_jax.engine import inner, sampling
from seal_jax.engine.inner import InnerConfig, round_up
from seal_jax.engine.outer import OuterConfig
from seal_jax.model.config import ModelConfig
from seal_jax.model import kv_cache
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import abstract_params, projection_shape
from seal_jax.runtime import sharding
from seal_jax.runtime.topology import CHIPS, Chip, GiB

log = logging.getLogger(__name__)

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
        lowered = fn.lower(*args, **static)
        c = lowered.compile()
    except Exception as e:  # XLA reports a program over HBM as RESOURCE_EXHAUSTED at compile time
        msg = str(e)
        if "RESOURCE_EXHAUSTED" not in msg:
            raise
        return Compiled(False, reason=_oom_reason(msg))
    m = c.memory_analysis()
    peak = getattr(m, "peak_memory_in_bytes", 0) or m.argument_size_in_bytes + m.output_size_in_bytes + \
        m.temp_size_in_bytes - m.alias_size_in_bytes
    device = _first_device(args)
    chip = CHIPS.get(device.device_kind) if device is not None else None
    if chip is not None and chip.platform == "cuda":
        flops, bytes_accessed = gpu_cost(lowered, c, len(_devices(args)))
        pool = chip.pool_gib() * GiB
        fits = peak <= pool
        reason = "" if fits else (f"XLA's peak {peak / GiB:.2f} GiB per device exceeds the {pool / GiB:.1f} GiB "
                                  f"JAX's allocator holds on a {chip.name} (XLA_PYTHON_CLIENT_MEM_FRACTION)")
    else:
        cost = c.cost_analysis() or {}
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops, bytes_accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
        fits, reason = True, ""
    return Compiled(fits, reason, m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                    m.alias_size_in_bytes, peak, flops, bytes_accessed)


def _oom_reason(msg: str) -> str:
    found = re.search(r"(Ran out of memory[^\n]*?exceeds available HBM \([^)]*\))", msg)
    return found.group(1) if found else msg.strip().splitlines()[0][:300]


def _devices(args) -> set:
    found = set()
    for leaf in jax.tree.leaves(args):
        s = getattr(leaf, "sharding", None)
        if s is not None:
            found |= set(s.device_set)
    return found


def _first_device(args):
    return next(iter(sorted(_devices(args), key=lambda d: d.id)), None)


# ---- cost on a GPU: flops of the lowered program, bytes of the compiled one ---------------------------------


def gpu_cost(lowered, compiled, devices: int) -> tuple[float, float]:
    """(flops, bytes) per device of a program compiled for GPUs, where `cost_analysis()` answers None: flops
    from XLA's HloCostAnalysis of the lowered (global, unpartitioned) program on the CPU backend, split evenly
    over `devices`; bytes from the compiled per-device GPU program (`hlo_bytes`)."""
    from jax._src import xla_bridge
    from jax._src.lib import _jax  # Lowered.cost_analysis() refuses plugin backends; the CPU one counts any HLO
    module = lowered.compiler_ir("hlo").as_hlo_module()
    flops = _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module).get("flops", 0.0)
    return float(flops) / max(devices, 1), float(hlo_bytes(compiled.as_text()))


# bytes per element of HLO's primitive types (token and opaque types move nothing)
_ELEMENT_BYTES = {"pred": 1, "s1": 0.125, "u1": 0.125, "s2": 0.25, "u2": 0.25, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1,
                  "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
                  "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\](?:\{([^}]*)\})?")  # dtype, dims, layout
_ON_CHIP = re.compile(r"S\([1-9]\d*\)")  # a TPU layout's memory space other than HBM: S(1) VMEM, S(2) SMEM
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
# instructions that launch no kernel and move no HBM bytes, and async halves counted at their start
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "conditional", "call",
               "after-all", "partition-id", "replica-id", "add-dependency", "opt-barrier", "async-start",
               "async-update", "async-done", "all-gather-done", "all-reduce-done", "collective-permute-done",
               "copy-done", "send-done", "recv-done", "domain", "get-dimension-size"}


def _shape_elements(text: str) -> int:
    """Elements of every array shape in `text`."""
    return sum(math.prod(int(d) for d in dims.split(",") if d) for _, dims, _ in _ARRAY.findall(text))


def _array_bytes(dtype: str, dims: str, layout: str, on_chip: bool = False) -> float:
    """Bytes of one array; 0 for an array in on-chip memory (TPU VMEM / SMEM) unless `on_chip`."""
    if _ON_CHIP.search(layout) and not on_chip:
        return 0.0
    return _ELEMENT_BYTES.get(dtype, 0) * math.prod(int(d) for d in dims.split(",") if d)


def _shape_bytes(text: str, on_chip: bool = False) -> float:
    """HBM bytes of every array shape in `text` (one shape, or a tuple of them); with `on_chip`, also those of
    arrays the TPU compiler placed in on-chip memory."""
    return sum(_array_bytes(*a, on_chip=on_chip) for a in _ARRAY.findall(text))


def _tuple_parts(shape: str) -> list[str]:
    """The top-level elements of a tuple shape "(a, (b, c), d)"."""
    parts, depth, start = [], 0, 1
    for i, ch in enumerate(shape):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if (ch == "," and depth == 1) or (ch == ")" and depth == 0):
            parts.append(shape[start:i].strip())
            start = i + 1
    return parts


def _split_shape(rest: str) -> tuple[str, str]:
    """("shape", "opcode(operands), attributes") from the text after an instruction's "=" (tuples nest)."""
    if not rest.startswith("("):
        shape, _, tail = rest.partition(" ")
        return shape, tail
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i + 1], rest[i + 1:].lstrip()
    return rest, ""


def _operands(call: str) -> tuple[str, list[str], str]:
    """(opcode, operand names, attributes) of "opcode(%a, %b), attrs"."""
    opcode, _, rest = call.partition("(")
    depth, i = 1, 0
    while i < len(rest) and depth:
        depth += {"(": 1, ")": -1}.get(rest[i], 0)
        i += 1
    inside, attrs = rest[:i - 1], rest[i:]
    inside = re.sub(r"\{[^{}]*\}", "", inside)  # layouts
    return opcode.strip(), re.findall(r"%([\w.\-]+)", inside), attrs


def hlo_bytes(text: str) -> float:
    """HBM bytes one run of a compiled (scheduled, per-device) HLO module moves: for every instruction the
    device executes at the top level of the entry computation and of the loop bodies, conditions and branches
    it reaches (each once), the bytes of its operands plus its result; fusion internals stay on chip, an
    in-place dynamic-update-slice (alone or as a fusion's root) reads and writes its update only, a slice or
    gather reads what it takes, arrays the TPU compiler placed on chip (layout memory space S(1) VMEM, S(2)
    SMEM) move no HBM bytes (an async slice or copy into VMEM reads its source once), and the entry's copies
    of its own arguments (a measured decode step's KV cache copied into its loop, which `_generate` fills in
    place) are not counted."""
    return sum(b for _, _, b in hlo_traffic(text))


def parse_hlo(text: str) -> tuple[dict, Optional[str]]:
    """(computations by name, the entry's name) of an HLO module's text; a computation: its instructions'
    shapes, (opcode, operands), calls, their order and its root."""
    comps, entry, current = {}, None, None
    for line in text.splitlines():
        head = _HEADER.match(line)
        if head:
            current = comps.setdefault(head.group(2), {"shapes": {}, "ops": {}, "calls": {}, "order": [], "root": None})
            entry = head.group(2) if head.group(1) else entry
            continue
        ins = _INSTRUCTION.match(line) if current is not None else None
        if ins is None:
            continue
        name, (shape, call) = ins.group(2), _split_shape(ins.group(3))
        opcode, operands, attrs = _operands(call)
        current["shapes"][name] = shape
        current["ops"][name] = (opcode, operands)
        current["calls"][name] = call
        current["order"].append((name, shape, opcode, operands, attrs))
        if ins.group(1):
            current["root"] = name
    return comps, entry


def _dims(shape: str) -> list[int]:
    found = _ARRAY.search(shape)
    return [int(d) for d in found.group(2).split(",") if d] if found else []


def matmul_flops(comps: dict, comp: str, seen: Optional[set] = None) -> float:
    """FLOPs of the matmuls (dot, convolution, a GEMM library call) in computation `comp` and what it calls:
    2 x output elements x contracted size each. Elementwise work is not counted (as `flops.py`)."""
    seen = set() if seen is None else seen
    if comp in seen or comp not in comps:
        return 0.0
    seen.add(comp)
    c, total = comps[comp], 0.0
    for name, shape, opcode, operands, attrs in c["order"]:
        out = math.prod(_dims(shape)) if opcode in ("dot", "convolution", "custom-call") else 0
        lhs = _dims(c["shapes"].get(operands[0], "")) if operands else []
        if opcode == "dot" or (opcode == "custom-call" and "gemm" in attrs):
            contracting = re.search(r'lhs_contracting_dim\w*"?[=:]\s*[{\[]([^}\]]*)', attrs)
            idx = [int(i) for i in re.findall(r"\d+", contracting.group(1))] if contracting else []
            total += 2.0 * out * math.prod(lhs[i] for i in idx if i < len(lhs))
        elif opcode == "convolution" and len(operands) > 1:
            kernel, labels = _dims(c["shapes"].get(operands[1], "")), re.search(r"dim_labels=\w+_(\w+)->", attrs)
            if labels and len(labels.group(1)) == len(kernel):
                total += 2.0 * out * math.prod(n for n, l in zip(kernel, labels.group(1)) if l != "o")
        for callee in re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", attrs):
            total += matmul_flops(comps, callee, seen)
    return total


def hlo_op_table(text: str, top: int = 15) -> list[dict]:
    """The `top` kernels of a compiled program by HBM bytes (`hlo_traffic`'s count), each with its matmul
    FLOPs (`matmul_flops`), result shape and flops per byte: what to read before and after a change."""
    comps, _ = parse_hlo(text)
    shapes = {n: (c["shapes"][n], c["calls"][n]) for c in comps.values() for n in c["shapes"]}
    rows = []
    for name, opcode, nbytes in hlo_traffic(text):
        shape, call = shapes.get(name, ("", ""))
        called = re.search(r"calls=%?([\w.\-]+)", call)
        f = matmul_flops(comps, called.group(1)) if called else 0.0
        if opcode in ("dot", "convolution") or (opcode == "custom-call" and "gemm" in call):
            f += matmul_flops({"one": {"order": [(name, shape, opcode, *_operands(call)[1:])],
                                       "shapes": {k: v[0] for k, v in shapes.items()}}}, "one")
        kind = re.search(r'kind=(\w+)|custom_call_target="([^"]+)"', call)
        rows.append({"op": name, "opcode": opcode, "kind": next((g for g in kind.groups() if g), "") if kind else "",
                     "shape": shape[:60], "mbytes": nbytes / 1e6, "gflops": f / 1e9,
                     "flops_per_byte": f / nbytes if nbytes else float("inf")})
    rows.sort(key=lambda r: -r["mbytes"])
    return rows[:top]


def layer_op_delta(one: str, two: str, top: int = 15) -> list[dict]:
    """What one more layer adds to a program: the kernels of the 2-layer compile minus the 1-layer one's (both
    unrolled, `hlo_op_table`), summed per (opcode, result shape) - names differ between the two compiles."""
    def grouped(text):
        out = {}
        for r in hlo_op_table(text, top=1 << 30):
            key = (r["opcode"], r["kind"], re.sub(r"\{[^}]*\}", "", r["shape"]))
            mb, gf = out.get(key, (0.0, 0.0))
            out[key] = (mb + r["mbytes"], gf + r["gflops"])
        return out
    a, b = grouped(one), grouped(two)
    rows = [{"opcode": k[0], "kind": k[1], "shape": k[2], "mbytes": b.get(k, (0, 0))[0] - a.get(k, (0, 0))[0],
             "gflops": b.get(k, (0, 0))[1] - a.get(k, (0, 0))[1]} for k in set(a) | set(b)]
    rows.sort(key=lambda r: -abs(r["mbytes"]))
    return rows[:top]


def hlo_traffic(text: str) -> list[tuple[str, str, float]]:
    """(instruction, opcode, bytes) of every instruction `hlo_bytes` counts."""
    comps, entry = parse_hlo(text)

    def size(comp: dict, name: str) -> float:
        return _shape_bytes(comp["shapes"].get(name, ""))

    def in_place_updates(comp: dict, name: str) -> list[tuple[float, float]]:
        """(buffer bytes, update bytes) of each dynamic-update-slice `name` is, or is a tuple of."""
        opcode, operands = comp["ops"].get(name, ("", []))
        if opcode == "tuple":
            return [pair for o in operands for pair in in_place_updates(comp, o)]
        if opcode == "dynamic-update-slice" and len(operands) >= 2:
            return [(size(comp, operands[0]), size(comp, operands[1]))]
        return []

    def read(comp: dict, name: str, full: float) -> float:
        """Bytes of `name` that its users read: the slices they take when every use (through converts and
        bitcasts) is a slice, dynamic-slice or gather of it (a layer of stacked weights, an embedding row), else
        all of it."""
        taken, todo = 0.0, [(name, full / max(_shape_elements(comp["shapes"].get(name, "")), 1))]
        while todo:
            x, per_element = todo.pop()
            users = [(u, op) for u, (op, ops) in comp["ops"].items() if ops and x in ops]
            for u, op in users:
                if op in ("convert", "bitcast", "copy") and comp["ops"][u][1][0] == x:
                    todo.append((u, per_element))
                elif op in ("slice", "dynamic-slice", "gather") and comp["ops"][u][1][0] == x:
                    taken += per_element * _shape_elements(comp["shapes"][u])
                else:
                    return full
            if not users:
                return full
        return min(taken, full)

    def traffic(comp: dict, name: str, shape: str, opcode: str, operands: list[str], attrs: str) -> float:
        reads, written = [size(comp, o) for o in operands], _shape_bytes(shape)
        aliased = re.search(r"output_to_operand_aliasing=\{(.*?)\}\s*(?:,\s*\w+=|$)", attrs)
        if aliased:  # outputs that are operands' buffers, updated in place (a TPU collective matmul's gathers)
            parts = [_array_bytes(*a) for a in _ARRAY.findall(shape)]
            for k in re.findall(r"\{(\d+)\}:", aliased.group(1)):
                written -= parts[int(k)] if int(k) < len(parts) else 0
        updates = in_place_updates(comp, name) if opcode == "dynamic-update-slice" else []
        if opcode in ("slice", "dynamic-slice", "gather") and reads:  # reads what it takes
            reads[0] = min(reads[0], written)
        called = re.search(r"calls=%?([\w.\-]+)", attrs)
        if opcode == "fusion" and called and called.group(1) in comps:
            body = comps[called.group(1)]
            updates = in_place_updates(body, body["root"]) if body["root"] else []
            params = {int(m.group(1)): n for n, (op, _) in body["ops"].items() if op == "parameter"
                      for m in [re.search(r"parameter\((\d+)\)", body["calls"].get(n, ""))] if m}
            reads = [read(body, params[i], r) if i in params else r for i, r in enumerate(reads)]
        for buffer, update in updates:  # the buffer (aliased in and out) is neither read nor written whole
            written -= buffer - update
            if buffer in reads:
                reads.remove(buffer)
        return sum(reads) + written

    counted, seen, todo = [], set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        comp = comps[name]
        for ins_name, shape, opcode, operands, attrs in comp["order"]:
            if opcode == "while":
                todo += re.findall(r"(?:body|condition)=%?([\w.\-]+)", attrs)
            elif opcode == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", attrs)
                todo += re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
                todo += re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", attrs)
            elif opcode in ("call", "async-start"):
                todo += re.findall(r"(?:to_apply|calls)=%?([\w.\-]+)", attrs)
            if opcode in _NO_TRAFFIC or opcode.endswith("-done"):
                continue
            if name == entry and opcode == "copy" and comp["ops"].get(operands[0] if operands else "", ("",))[0] \
                    == "parameter":  # an argument copied into a loop's carry: the phase measured on its own
                continue             # takes as input what the round's program creates in place (the KV cache)
            if opcode == "slice-start":  # ((operand), slice, context): reads the slice, writes it (to VMEM: free)
                piece = _tuple_parts(shape)[1]
                counted.append((ins_name, opcode, _shape_bytes(piece, on_chip=True) + _shape_bytes(piece)))
                continue
            if opcode.endswith("-start"):  # its result holds its operands' buffers and its output
                counted.append((ins_name, opcode, _shape_bytes(shape)))
                continue
            counted.append((ins_name, opcode, traffic(comp, ins_name, shape, opcode, operands, attrs)))
    return counted


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
    hp = dict(lr=_sds((edits,), jnp.float32, mesh, lead), steps=_sds((edits,), jnp.int32, mesh, lead))
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


def _layers(cfg: ModelConfig, measure: Callable[[ModelConfig], Compiled],
            floor: Callable[[ModelConfig], float] = lambda c: 0.0) -> tuple[float, float]:
    """(flops, bytes) of `measure` at the full depth, from unrolled compiles at 1 and 2 layers. A layer's bytes
    are at least `floor(cfg)` (what it must read: its weights, its KV cache): on TPU the two small programs'
    memory-space assignment differs (what is prefetched on chip, what XLA then leaves out of "bytes accessed"),
    so their difference can fall below one layer's weights, even below zero (a Qwen2.5-7B decode step on
    v5e-8: -0.21 GB; docs/planning.md)."""
    # unroll_loops also unrolls the query-chunk and loss-chunk loops, whose bodies would be counted once too
    one, two = (measure(cfg.replace(num_layers=n, unroll_loops=True)) for n in (1, 2))
    if not (one.fits and two.fits):
        return float("nan"), float("nan")
    extra, least = cfg.num_layers - 1, floor(cfg)
    per_layer = two.bytes_accessed - one.bytes_accessed
    if per_layer < least:
        log.info("XLA counts %.3g bytes per layer, less than the %.3g the layer must read: costing that",
                 per_layer, least)
    return one.flops + extra * (two.flops - one.flops), one.bytes_accessed + extra * max(per_layer, least)


def base_layer_bytes(cfg: ModelConfig, mesh: Mesh) -> float:
    """Bytes per device of one layer of the base (bf16, placed as `abstract_base` places it): its shard of each
    layer-stacked weight, which a program that runs the layer reads at least once."""
    leaves = jax.tree.leaves(abstract_base(cfg, mesh)["layers"])
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves) / cfg.num_layers


def inner_step_cost(cfg, icfg: InnerConfig, mesh, edits: int, docs: int, seq: int, lead: P = P("edit")):
    """(flops, bytes) per device of one optimiser step of `edits` edits at `seq` tokens (the scan's body)."""
    one_bucket = dataclasses.replace(icfg, length_buckets=1)

    def measure(c):
        e, k, hp = edit_batch(mesh, edits, docs, seq, lead)
        return compile_phase(inner.inner_train_edits, abstract_base(c, mesh), e, k, hp, cfg=c, icfg=one_bucket, steps=8)
    return _layers(cfg, measure, lambda c: base_layer_bytes(c, mesh))


def generate_cost(cfg, mesh, rows: int, prompt: int, cap: int, lora: Optional[LoraSpec] = None):
    """((flops, bytes) of the prefill, (flops, bytes) of one decode step), per device."""
    static = dict(max_new_tokens=cap, greedy=lora is not None, lora_scale=0.0 if lora is None else lora.scale)
    names = ("cfg", "max_new_tokens", "greedy", "lora_scale")
    # the state is donated: inside `_generate` it is the decode loop's own carry, updated in place (not donated,
    # XLA would copy the whole KV cache into the loop, a copy the plan would then count once per token)
    pre = jax.jit(sampling.prefill, static_argnames=names)
    dec = jax.jit(sampling.decode, static_argnames=names, donate_argnames="state")
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

    def decode_floor(c):  # a step reads each layer's weights and its share of the layer's KV cache (bf16)
        cache = kv_cache.cache_bytes(c, rows, prompt + cap, 2) / c.num_layers / mesh.devices.size
        return base_layer_bytes(c, mesh) + cache
    return (_layers(cfg, measure_prefill, lambda c: base_layer_bytes(c, mesh)),
            _layers(cfg, measure_decode, decode_floor))


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
                estimates: dict, cost: bool = True, names: tuple = PHASES) -> list[Phase]:
    """Compile the phases `names` on `mesh`; with `cost`, also their per-call roofline time and calls per round."""
    unknown = set(names) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    C, runs = w.edits_per_chunk, w.self_edits * w.inner_runs
    answer_rows, answer_calls = answering_rows(w, rows_multiple(mesh))
    sample_rows = round_up(w.sample_batch, rows_multiple(mesh))
    memory = {"inner": lambda: inner_memory(cfg, icfg, mesh, w),
              "sampling": lambda: generate_memory(cfg, mesh, sample_rows, w.prompt_len, w.sample_cap),
              "answering": lambda: generate_memory(cfg, mesh, answer_rows, w.answer_prompt_len, w.answer_cap,
                                                   (icfg.lora, C)),
              "m_step": lambda: mstep_memory(cfg, outer, mesh, w)}
    calls = {"inner": runs / C, "sampling": w.self_edits / w.sample_batch, "answering": runs / C * answer_calls,
             "m_step": 1.0}

    def per_steps(step, n):  # (flops, bytes) of one step -> (flops, bytes, roofline) of n steps
        return step[0] * n, step[1] * n, chip.roofline_s(*step) * n

    def generation(rows, p, cap, n, lo):
        pre, dec = generate_cost(cfg, mesh, rows, p, cap, lo)
        return pre[0] + n * dec[0], pre[1] + n * dec[1], chip.roofline_s(*pre) + n * chip.roofline_s(*dec)

    costs = {"inner": lambda: per_steps(inner_step_cost(cfg, icfg, mesh, C, w.docs, w.step_len), w.steps),
             "sampling": lambda: generation(sample_rows, w.prompt_len, w.sample_cap, w.sample_tokens, None),
             "answering": lambda: generation(answer_rows, w.answer_prompt_len, w.answer_cap, w.answer_tokens,
                                             icfg.lora),
             "m_step": lambda: per_steps(inner_step_cost(cfg, mstep_config(outer), mesh, 1,
                                                         inner.bucket_pow2(w.mstep_examples), w.mstep_len, P()),
                                         w.mstep_steps)}
    nan = (float("nan"),) * 3
    return [Phase(k, memory[k](), estimates[k], *(costs[k]() if cost else nan), calls[k]) for k in PHASES
            if k in names]


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
    for e, f, t in mesh_splits(len(devices)):
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


def mesh_splits(n: int) -> list[tuple[int, int, int]]:
    """Every (edit, fsdp, tp) split of n devices, the largest edit axis first, then fsdp before tp."""
    return sorted(((n // (f * t), f, t) for f in _divisors(n) for t in _divisors(n // f)), key=lambda s: (-s[0], s[2]))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
