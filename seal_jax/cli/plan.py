"""Per-device memory plan for a config and mesh; with --topology and --compile, XLA's own, for a TPU slice or
NVIDIA GPUs not present.

    python -m seal_jax.cli.plan --config=configs/knowledge.py:paper --edit=2 --fsdp=4 --device_gib=16
    python -m seal_jax.cli.plan --config=configs/knowledge.py:paper --topology=v5e:2x4 --compile [--suggest]
    python -m seal_jax.cli.plan --config=configs/knowledge.py:paper --topology=h100:1x1x2 --compile
    python -m seal_jax.cli.plan --config=configs/knowledge.py:paper --topology=v5e:2x4 --compile --phases=inner --ops=12

Without --compile: runtime/memory_plan.py's hand estimate as JSON (no weights, no compiler). With it (needs
libtpu for a TPU, the `[cuda-aot]` extra for a GPU): the real jitted phases (`engine/aot.py`) AOT-compiled for
the topology's devices on the (--edit, --fsdp, --tp) mesh, per phase XLA's per-device memory against the
chip's HBM (a GPU: against the pool JAX's allocator takes, `Chip.pool_gib`), flops, bytes and roofline time,
and device-seconds per self-edit and per SEAL round: a cost-model estimate, a lower bound, beside SEAL's
reported cost. --fsdp and --tp default to the config's mesh, on a GPU topology to its `gpu_mesh` where it names
one (80 GB cards hold a replicated 7B base). --suggest first searches the split and edits per chunk: for a
packed config (inner.step_form=packed) the cheapest packed round per self-edit over every edit x fsdp x tp split
whose base fits and edits per row doubling from 1 while the longest row fits and the cost falls
(`packed_plan.suggest`: one costed round per candidate, so minutes per candidate on a TPU target); for a vmapped
one the largest split and edits-per-chunk whose inner update compiles within HBM. Sizes the data decide (document lengths, tokens
generated) are the typical values in `TYPICAL`, printed with the plan.

`packed_inner` (--packed, on by default with cost): the round's inner updates as the packed steps a run takes,
simulated from the domain's length mix (SEAL's own self-edits) and compiled per row length for the target's
kernels (`engine/packed_plan.py`): compiled against useful FLOPs, bytes, roofline against the floor (useful
FLOPs at the chip's peak), per round and per self-edit. --phases limits which of the four phases compile;
--ops=N adds the top N kernels by bytes of one layer's inner step, packed and vmapped (`aot.hlo_op_table`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Optional

from absl import flags

from seal_jax.cli.common import StartError, define_config_flag, run, runtime_model_config
from seal_jax.cli.settings import inner_config, outer_config
from seal_jax.model.config import preset
from seal_jax.runtime.memory_plan import GiB, caveats, phase_estimates, plan

FLAGS = flags.FLAGS
MODEL_PRESETS = {"Qwen/Qwen2.5-7B": "qwen2p5_7b", "meta-llama/Llama-3.2-1B-Instruct": "llama3p2_1b",
                 "smollm2-135m": "smollm2_135m", "random:tiny": "tiny"}
# Typical sizes the data decide, per domain (SEAL's SQuAD passages are ~150-250 tokens and its implications ~15
# lines; ARC prompts hold 2-4 demonstrations of grids up to 30x30, TTT keeps <= 250 augmented examples).
TYPICAL = {
    "knowledge": dict(docs=16, step_len=256, prompt_len=512, sample_tokens=1024, answer_rows=5, answer_prompt_len=64,
                      answer_tokens=32, mstep_len=2048),
    "arc": dict(docs=256, step_len=2048, epochs=2, prompt_len=4096, sample_tokens=128, answer_rows=24,
                answer_prompt_len=4096, answer_tokens=512, mstep_examples=20, mstep_len=4096),
}
# SEAL's reported cost of one knowledge round (Qwen2.5-7B, 50 passages x 5 self-edits x 3 inner runs): ~6 h on
# 2 x H100 (paper, Section "Limitations"/appendix), i.e. 12 H100-hours.
SEAL_ROUND_DEVICE_S = {"knowledge": 6 * 3600 * 2}


def define_flags() -> None:
    define_config_flag()
    flags.DEFINE_string("preset", None, "Model preset when the config names a checkpoint (e.g. qwen2p5_7b).")
    flags.DEFINE_integer("edit", 1, "Mesh edit axis.")
    flags.DEFINE_integer("fsdp", 1, "Mesh fsdp axis (unset: the config's mesh.fsdp).")
    flags.DEFINE_integer("tp", 1, "Mesh tp axis (unset: the config's mesh.tp).")
    flags.DEFINE_float("device_gib", 16.0, "Memory per device (GiB), e.g. 16 v5e, 32 v4, 80 H100.")
    flags.DEFINE_integer("seq_len", 2048, "Training sequence bucket.")
    flags.DEFINE_integer("weight_bytes", 2, "Bytes per base weight (2 for bf16 on accelerators).")
    flags.DEFINE_integer("sample_batch", 64, "Sampling batch (rows).")
    flags.DEFINE_integer("sample_len", 2048, "Prompt + new tokens in the KV cache.")
    flags.DEFINE_string("topology", None, "TPU topology or NVIDIA GPUs to compile for, e.g. v5e:2x4, v4:2x2x1, "
                        "v5p:2x2x1, v6e:2x4, h100:1x1x2 (slices x hosts x GPUs per host), a100:1x1x8.")
    flags.DEFINE_bool("compile", False, "AOT-compile every phase for --topology (needs libtpu; a GPU: the CUDA "
                      "plugin, pip install -e '.[cuda-aot]').")
    flags.DEFINE_bool("cost", True, "With --compile: also XLA's cost model and roofline times.")
    flags.DEFINE_bool("suggest", False, "With --topology: search the mesh split and edits-per-chunk: a packed config "
                      "by its packed round's compiled cost per self-edit, a vmapped one by the most edits that fit.")
    flags.DEFINE_integer("edits_per_chunk", 0, "Override the config's inner.edits_per_chunk (0: keep it).")
    flags.DEFINE_bool("packed", True, "With --compile and cost: also cost the round's inner updates as packed steps, "
                      "simulated from the domain's length mix (`engine/packed_plan.py`).")
    flags.DEFINE_integer("ops", 0, "With --compile: also the top N kernels by HBM bytes (with their matmul FLOPs) "
                         "of one layer's inner step, packed (its most-run row length; and what one more layer adds) and vmapped.")
    flags.DEFINE_list("phases", list(("inner", "sampling", "answering", "m_step")),
                      "With --compile: the phases to compile (a subset skips the others' compiles).")
    flags.DEFINE_bool("markdown", False, "With --compile: a markdown table row instead of JSON (libtpu builds one "
                      "TPU generation per process: run one process per topology).")


def workload(c, edits_per_chunk: int):
    """The round's shapes: the config's settings plus `TYPICAL` sizes."""
    from seal_jax.engine.aot import Workload
    from seal_jax.engine.inner import round_up
    t = TYPICAL[c.domain]
    if c.domain == "knowledge":
        steps, runs, self_edits = c.inner.epochs * t["docs"] // c.inner.batch_size, c.rl.reward_repeats, \
            c.rl.contexts * c.rl.samples
        sample_cap, answer_cap, doc_len, examples = c.self_edit.max_new_tokens, c.eval.max_new_tokens, \
            c.inner.max_len, c.rl.contexts
    else:
        steps, runs, self_edits = t["epochs"] * -(-c.ttt.cap // c.inner.batch_size), 1, c.rl.contexts * c.rl.samples
        sample_cap, answer_cap, doc_len, examples = c.self_edit.max_new_tokens, c.ttt.max_new_tokens, \
            min(c.inner.max_len, c.ttt.max_tokens), t["mstep_examples"]
    return Workload(edits_per_chunk=edits_per_chunk, docs=t["docs"], doc_len=doc_len, step_len=t["step_len"],
                    steps=round_up(steps, 8), inner_runs=runs, self_edits=self_edits, sample_batch=c.self_edit.batch,
                    prompt_len=t["prompt_len"], sample_cap=sample_cap, sample_tokens=min(t["sample_tokens"], sample_cap),
                    answer_rows=t["answer_rows"], answer_call_rows=c.inner.get("answer_rows", 0),
                    answer_prompt_len=t["answer_prompt_len"], answer_cap=answer_cap,
                    answer_tokens=min(t["answer_tokens"], answer_cap), mstep_examples=examples,
                    mstep_len=min(t["mstep_len"], c.rl.max_len),
                    mstep_steps=c.rl.epochs * -(-examples // c.rl.batch_size))


def estimates(cfg, icfg, outer, w, edit: int, fsdp: int, tp: int) -> dict:
    """The hand estimate of every phase `engine/aot.py` compiles, with the same shapes."""
    from seal_jax.engine.aot import answering_rows
    rows = edit * fsdp
    return phase_estimates(cfg, icfg.lora, outer.lora, edit=edit, fsdp=fsdp, tp=tp, edits_per_chunk=w.edits_per_chunk,
                           doc_len=w.doc_len, batch=icfg.batch_size,
                           sample_rows=-(-w.sample_batch // rows) * rows, sample_prompt=w.prompt_len,
                           sample_len=w.prompt_len + w.sample_cap,
                           answer_rows=answering_rows(w, rows)[0],
                           answer_prompt=w.answer_prompt_len, answer_len=w.answer_prompt_len + w.answer_cap,
                           mstep_len=w.mstep_len,
                           mstep_batch=outer.batch_size)


def config_mesh(c, gpu: bool = False) -> tuple[int, int]:
    """(fsdp, tp) of a preset's tested split: its `mesh`, or for GPUs its `gpu_mesh` where it names one."""
    mesh = c.gpu_mesh if gpu and "gpu_mesh" in c else c.mesh
    return mesh.fsdp, mesh.tp


def mesh_axes(c, gpu: bool = False) -> tuple[int, int, int]:
    """(edit, fsdp, tp) from the flags; --fsdp and --tp default to the config's split (`config_mesh`)."""
    fsdp, tp = config_mesh(c, gpu)
    return FLAGS.edit, FLAGS.fsdp if FLAGS["fsdp"].present else fsdp, FLAGS.tp if FLAGS["tp"].present else tp


def compiled_plan(c, cfg, name: str, topology: str) -> dict:
    from seal_jax.engine import aot
    from seal_jax.runtime import sharding
    from seal_jax.runtime.topology import chip_of, topology_devices
    try:  # an unknown name, a bad shape, libtpu or the CUDA plugin missing: one line saying what to do
        devices = topology_devices(topology)
    except (ValueError, RuntimeError) as e:
        raise StartError(str(e)) from e
    chip = chip_of(devices)
    icfg, outer = inner_config(c.inner), outer_config(c.rl)
    edit, fsdp, tp = mesh_axes(c, gpu=chip.platform == "cuda")
    per_chunk = FLAGS.edits_per_chunk or c.inner.edits_per_chunk
    out = {"model": name, "topology": topology, "chip": chip.name, "hbm_gib": chip.hbm_gib}
    if chip.platform == "cuda":
        out["pool_gib"] = round(chip.pool_gib(), 2)  # what fits is measured against this
        out["cost_source"] = ("flops: XLA HloCostAnalysis of the lowered program on CPU / devices; bytes: the "
                              "compiled GPU program's kernels' operands + results (engine/aot.gpu_cost)")
    packed_form = icfg.step_form == "packed"  # its inner updates are `packed_inner`, not the vmapped program
    suggested_round = None
    if FLAGS.suggest:
        w = workload(c, per_chunk)
    if FLAGS.suggest and packed_form:  # by the packed round's cost, compiled per split and chunk size
        out["suggested"], ch = suggest_packed(c, cfg, icfg, devices, chip, w)
        if ch is None:
            out["fits"], out["reason"] = False, out["suggested"].pop("reason")
            return out
        edit, fsdp, tp, per_chunk, suggested_round = ch["edit"], ch["fsdp"], ch["tp"], ch["edits_per_chunk"], \
            ch["packed_inner"]
    elif FLAGS.suggest:
        # splits the model takes (tp divides its heads) whose inner update fits by the hand estimate: no compile
        fits_base = lambda f, t: (cfg.num_kv_heads % t == 0 and
                                  estimates(cfg, icfg, outer, w, 1, f, t)["inner"] < chip.pool_gib() * GiB)
        s = aot.suggest(cfg, icfg, devices, w, fits_base)
        out["suggested"] = s
        if s is None:
            out["fits"] = False
            out["reason"] = "no edit x fsdp x tp split of these devices compiles the inner update within HBM"
            return out
        edit, fsdp, tp, per_chunk = s["edit"], s["fsdp"], s["tp"], s["edits_per_chunk"]
    elif edit * fsdp * tp != len(devices):
        if len(devices) % (fsdp * tp):
            raise SystemExit(f"{len(devices)} devices of {topology} do not divide into fsdp={fsdp} x tp={tp}; pass "
                             "--fsdp/--tp that divide them (or --suggest)")
        edit = len(devices) // (fsdp * tp)
    mesh = sharding.make_mesh(edit, fsdp, tp, devices)
    w = workload(c, max(per_chunk, edit))
    names = tuple(n for n in FLAGS.phases if not (packed_form and n == "inner"))
    phases = aot.plan_phases(cfg, icfg, outer, mesh, chip, w, estimates(cfg, icfg, outer, w, edit, fsdp, tp),
                             cost=FLAGS.cost, names=names)
    mib = lambda b: round(b / 2 ** 20, 1)
    out.update(mesh={"edit": edit, "fsdp": fsdp, "tp": tp}, edits_per_chunk=w.edits_per_chunk,
               fits=all(p.memory.fits for p in phases), workload=w.__dict__, phases={})
    out.update(caveats(tp))  # about the hand estimates beside XLA's figures
    for p in phases:
        m = p.memory
        out["phases"][p.name] = {
            "fits": m.fits, "reason": m.reason, "peak_mib": mib(m.peak), "argument_mib": mib(m.argument),
            "output_mib": mib(m.output), "temp_mib": mib(m.temp), "estimate_mib": mib(p.estimate),
            "estimate_over_peak": round(p.estimate / m.peak, 2) if m.peak else None,
            "tflops": p.flops / 1e12, "gbytes": p.bytes_accessed / 1e9, "roofline_s": p.seconds,
            "calls_per_round": p.calls_per_round}
    if FLAGS.cost and (FLAGS.packed or packed_form):
        out["packed_inner"] = suggested_round or packed_round(c, cfg, icfg, mesh, chip, w, per_chunk)
        out["fits"] = out["fits"] and out["packed_inner"]["longest_row"]["fits"]
    if FLAGS.ops:
        out["inner_step_ops"] = op_tables(cfg, icfg, mesh, chip, w, out.get("packed_inner"), FLAGS.ops)
    if FLAGS.cost and len(phases) + packed_form == len(aot.PHASES):
        r = aot.round_seconds(phases, len(devices), w)
        if packed_form:  # the round's inner updates as the run executes them
            r["per_phase_round"]["inner"] = out["packed_inner"]["roofline_device_s"]
            r["round"] += r["per_phase_round"]["inner"]
            r["self_edit"] += r["per_phase_round"]["inner"] / w.self_edits
        out["device_seconds (compiler cost model, roofline lower bound)"] = {
            "per_self_edit": r["self_edit"], "per_round": r["round"], "per_phase_round": r["per_phase_round"]}
        if c.domain in SEAL_ROUND_DEVICE_S:
            out["seal_reported_device_seconds_per_round"] = {
                "h100": SEAL_ROUND_DEVICE_S[c.domain], "note": "~6 h per round on 2 x H100, 750 inner loops"}
    return out


def suggest_packed(c, cfg, icfg, devices, chip, w) -> tuple[dict, Optional[dict]]:
    """--suggest for a packed config (`packed_plan.suggest`): (what to print, the chosen candidate or None).
    A packed row's own memory is what the compile measures, so only the bf16 base must fit beforehand."""
    from seal_jax.engine import packed_plan as pp
    holds_base = lambda f, t: cfg.num_kv_heads % t == 0 and 2 * cfg.num_params() / (f * t) < chip.pool_gib() * GiB
    s = pp.suggest(lambda mesh, items: packed_round(c, cfg, icfg, mesh, chip, w, items), devices, holds_base,
                   w.inner_runs)
    shown = {"tried": [{k: v for k, v in r.items() if k != "packed_inner"} for r in s["tried"]]}
    ch = s["chosen"]
    if ch is None:
        shown["reason"] = ("no edit x fsdp x tp split of these devices fits a packed step of one edit per row"
                           if s["tried"] else "no edit x fsdp x tp split of these devices holds the bf16 base")
        return shown, None
    shown["chosen"] = {k: ch[k] for k in ("edit", "fsdp", "tp", "edits_per_chunk")}
    shown["flags"] = (f"--config.mesh.fsdp={ch['fsdp']} --config.mesh.tp={ch['tp']} "
                      f"--config.inner.edits_per_chunk={ch['edits_per_chunk']}")
    return shown, ch


def packed_round(c, cfg, icfg, mesh, chip, w, edits_per_chunk: int = 0) -> dict:
    """The round's inner updates as packed steps on `mesh`: the schedule simulated from the domain's length mix,
    each row bucket compiled for the target, summed (`engine/packed_plan.round_plan`). edits_per_chunk: items per
    chunk (0: the config's)."""
    from seal_jax.engine import packed_plan as pp
    return pp.round_plan(pp.load_mix(c.domain), cfg, icfg, mesh, chip, self_edits=w.self_edits,
                         inner_runs=w.inner_runs, items_per_chunk=edits_per_chunk or c.inner.edits_per_chunk,
                         epochs=c.inner.get("epochs") or TYPICAL[c.domain]["epochs"],  # ARC: each self-edit names its own
                         max_len=c.inner.max_len, seed=c.seed)


def op_tables(cfg, icfg, mesh, chip, w, packed_inner: dict, top: int) -> dict:
    """`aot.hlo_op_table` of one layer's inner step (1 layer, loops unrolled): the packed step at the row length
    the round runs most (and what a second layer adds to it, `aot.layer_op_delta`), and the vmapped step at the
    plan's typical length."""
    from seal_jax.engine import aot, inner
    from seal_jax.engine import packed_plan as pp
    one = cfg.replace(num_layers=1, unroll_loops=True)
    tables = {}
    if packed_inner:
        b = max(packed_inner["buckets"], key=lambda b: b["steps"])
        texts = []
        for n in (1, 2):
            tcfg, ticfg = pp.for_target(cfg.replace(num_layers=n, unroll_loops=True), icfg, chip.platform)
            texts.append(pp.step_hlo(tcfg, ticfg, mesh, packed_inner["edits_per_chunk"], b["T"], b["window"]))
        tables[f"packed, T={b['T']}"] = aot.hlo_op_table(texts[0], top)
        tables[f"packed, T={b['T']}, one more layer (2-layer minus 1-layer kernels)"] = aot.layer_op_delta(*texts, top)
    e, k, hp = aot.edit_batch(mesh, w.edits_per_chunk, w.docs, w.step_len)
    text = inner.inner_train_edits.lower(aot.abstract_base(one, mesh), e, k, hp, cfg=one, steps=8,
                                         icfg=dataclasses.replace(icfg, length_buckets=1)).compile().as_text()
    tables[f"vmapped, {w.edits_per_chunk} edits x {w.step_len} tokens"] = aot.hlo_op_table(text, top)
    return tables


def not_fitting(plan: dict) -> list[str]:
    """What of a compiled plan does not fit, each with the first words of its reason."""
    out = [f"{k}: {v['reason'][:80]}" for k, v in plan.get("phases", {}).items() if not v["fits"]]
    row = plan.get("packed_inner", {}).get("longest_row", {})
    if row and not row["fits"]:
        out.append(f"packed inner, longest row (T = {row['T']}): {row['reason'][:80]}")
    return out


def markdown_table(plans: list[dict]) -> str:
    """One row per compiled plan: fits, XLA's peak per device (hand estimate), roofline per call, device-seconds."""
    names = ("inner", "sampling", "answering", "m_step")
    head = ["topology (chip, HBM)", "mesh e x f x t, edits/chunk", "fits"]
    head += [f"{n}: peak GiB (est.), roofline s/call" for n in names]
    head += ["device-s per self-edit (XLA cost model)", "device-s per round (XLA cost model)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gib = lambda mib: f"{mib / 1024:.2f}"
    for p in plans:
        m = p.get("mesh", {})
        pool = f"; pool {p['pool_gib']:g}" if "pool_gib" in p else ""  # a GPU: what JAX's allocator holds
        row = [f"{p['topology']} ({p['chip']}, {p['hbm_gib']:g}{pool})",
               f"{m.get('edit')} x {m.get('fsdp')} x {m.get('tp')}, {p.get('edits_per_chunk')}",
               "yes" if p.get("fits") else "**no**: " + "; ".join(not_fitting(p))]
        for n in names:
            ph = p["phases"].get(n)
            if ph is None and n == "inner" and "packed_inner" in p:
                pk = p["packed_inner"]
                row.append(f"packed: {pk['longest_row']['peak_gib']:.2f} (longest row), "
                           f"{pk['roofline_device_s']:.4g} device-s per round")
                continue
            if ph is None:
                row.append("not compiled (--phases)")
                continue
            roofline = ph.get("roofline_s", float("nan"))
            roofline = f"{roofline:.3g}" if math.isfinite(roofline) else "not costed"
            row.append(f"{gib(ph['peak_mib'])} ({gib(ph['estimate_mib'])}), {roofline}" if ph["fits"] else
                       f"does not fit: {gib(ph['peak_mib'])}" if ph["peak_mib"] else "does not fit")
        secs = p.get("device_seconds (compiler cost model, roofline lower bound)")
        row += [f"{secs['per_self_edit']:.3g}", f"{secs['per_round']:.4g}"] if secs else ["not costed (--nocost)"] * 2
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    c = FLAGS.config
    name = FLAGS.preset or MODEL_PRESETS.get(c.model.name)
    if name is None:
        raise SystemExit(f"no preset known for model {c.model.name!r}; pass --preset (one of the model presets)")
    cfg = runtime_model_config(preset(name), c.model)
    if FLAGS.topology and (FLAGS.compile or FLAGS.suggest):
        out = compiled_plan(c, cfg, name, FLAGS.topology)
        print(markdown_table([out]) if FLAGS.markdown else json.dumps(out, indent=2, default=float))
        return
    if FLAGS.compile:
        raise SystemExit("--compile needs --topology (e.g. --topology=v5e:2x4 or --topology=h100:1x1x2)")
    inner = inner_config(c.inner)
    edit, fsdp, tp = mesh_axes(c)
    print(json.dumps(plan(cfg, inner.lora, edit=edit, fsdp=fsdp, tp=tp, device_gib=FLAGS.device_gib,
                          seq_len=FLAGS.seq_len, batch=inner.batch_size, weight_bytes=FLAGS.weight_bytes,
                          sample_batch=FLAGS.sample_batch, sample_len=FLAGS.sample_len), indent=2))


if __name__ == "__main__":
    # compile-only TPU programs cannot be loaded back from a cache, and nothing runs here
    run(main, define_flags, compile_cache=False, runs_steps=False)
