"""One packed inner step, timed alone: where a packed step's time goes as edits and row length change.

    python -m seal_jax.cli.bench_step [--preset=smollm2_135m] [--edits=12] [--row_tokens=384] [--span=0]
        [--remat=dots] [--repeats=4] [--lora_impl=auto|dense|ragged] [--attention_impl=auto|xla|splash|cudnn]
        [--targets=q_proj,v_proj|all]

Random weights of the preset's shape (no checkpoint needed), SEAL's knowledge LoRA (r=32 on q,v) for each of
`edits` edits, and one synthetic packed row of `row_tokens` tokens in SEAL's length mix: edit 0's passage (a
third of the row) then one short document per other edit, every token trained. Prints one JSON line: the compile
time, the best of `repeats` warm steps, and beside it the time of the same step's layer matmuls run alone
(`bench.training_matmuls` at the row's token count, x layers, through XLA): the gap is what the step spends
outside its layer matmuls (attention, the head, LoRA, the optimiser, copies). `--span` > 0 runs banded attention
with that look-back (`engine.packed.attention_window`); 0 is full attention over the row. `--lora_impl` and
`--attention_impl` pick the per-token LoRA form and the packed rows' attention (`inner.lora_impl`,
`model.attention_impl`); `useful_gflops` is the step's useful work (`engine.flops.useful_step_flops`).
`page_faults_per_step` and `kernel_s_per_step` (medians over the warm steps, this process's minor faults and
system CPU time) show what fresh buffers cost on a CPU (`cli/common.py`, CPU_MALLOC_TUNABLE).
"""
from __future__ import annotations

import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from seal_jax.cli.bench import cpu_model, matmul_gflops, training_matmuls
from seal_jax.engine import flops
from seal_jax.engine import packed as pk
from seal_jax.engine.inner import InnerConfig
from seal_jax.model.config import ATTENTION_IMPLS, REMAT_POLICIES, preset
from seal_jax.model.lora import LoraSpec, normalize_targets
from seal_jax.model.transformer import LORA_IMPLS, init_params

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("preset", "smollm2_135m", "Model shape (seal_jax.model.config.PRESETS).")
    flags.DEFINE_integer("edits", 12, "Edits whose documents share the row.")
    flags.DEFINE_integer("row_tokens", 384, "Tokens in the packed row (a multiple of 64 when --span > 0).")
    flags.DEFINE_integer("span", 0, "Banded attention look-back in tokens (a multiple of 64); 0: full attention.")
    flags.DEFINE_enum("remat", "dots", list(REMAT_POLICIES), "Per-layer rematerialisation.")
    flags.DEFINE_integer("repeats", 4, "Warm steps timed; the best is reported.")
    flags.DEFINE_enum("lora_impl", "auto", list(LORA_IMPLS), "Per-token LoRA form (inner.lora_impl).")
    flags.DEFINE_enum("attention_impl", "auto", list(ATTENTION_IMPLS), "Packed rows' attention (model.attention_impl).")
    flags.DEFINE_string("targets", "q_proj,v_proj", "LoRA target projections (inner.targets; `all`: every one).")


def row_lengths(edits: int, T: int) -> list[int]:
    """The synthetic row's documents: edit 0's passage (a third of the row), then one short line per other edit."""
    return [T] if edits == 1 else [T // 3] + [(T - T // 3) // (edits - 1)] * (edits - 1)


def synthetic_row(edits: int, T: int, seed: int = 0) -> dict:
    """A packed step batch (`packed.plan_steps`' layout): edit 0's long document, then one short one per edit."""
    if edits < 1 or T < 2 * edits:
        raise ValueError(f"need edits >= 1 and row_tokens >= 2 x edits, got edits={edits}, row_tokens={T}")
    lengths = row_lengths(edits, T)
    tail = T - sum(lengths)
    # one document per edit, so each token's segment id is its edit (the tail: `edits`, its own segment, no loss)
    edit = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)] + [np.full(tail, edits)]).astype(np.int32)
    positions = np.concatenate([np.arange(n) for n in lengths + [tail]])
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, 1000, (1, T)).astype(np.int32), "positions": positions[None].astype(np.int32),
            "segment_ids": edit[None], "weight": (edit < edits)[None].astype(np.float32),
            "token_edit": edit[None], "token_adapter": np.minimum(edit, edits - 1)[None],
            "active": np.ones(edits, bool), "lr": np.full(edits, 1e-3, np.float32)}


def bench_step(preset_name: str, edits: int, T: int, span: int, remat: str, repeats: int, lora_impl: str = "auto",
               attention_impl: str = "auto", targets: str = "q_proj,v_proj") -> dict:
    if span and (span % pk.BLOCK or T % pk.BLOCK):
        raise ValueError(f"--span ({span}) and --row_tokens ({T}) must be multiples of {pk.BLOCK} for banded attention")
    cfg = preset(preset_name).replace(remat=remat, attention_impl=attention_impl)
    icfg = InnerConfig(lora=LoraSpec(rank=32, alpha=64.0, targets=normalize_targets(targets.split(","))), lora_impl=lora_impl)
    base = init_params(jax.random.PRNGKey(0), cfg)
    batch = synthetic_row(edits, T)
    lora, opt = pk.init_state(jax.random.split(jax.random.PRNGKey(1), edits), cfg=cfg, icfg=icfg, num_edits=edits)
    ok = jnp.ones((edits,), bool)
    window = (pk.BLOCK, span) if span else None
    t0 = time.perf_counter()
    step = pk.packed_step.lower(base, lora, opt, ok, batch, cfg=cfg, icfg=icfg, window=window).compile()
    compile_s = time.perf_counter() - t0
    times, faults, kernel_s = [], [], []
    for _ in range(repeats + 1):  # the first call also moves the arguments in
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        lora, opt, ok, loss, _ = step(base, lora, opt, ok, batch)
        jax.block_until_ready((lora, loss))
        times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(r1.ru_minflt - r0.ru_minflt)
        kernel_s.append(r1.ru_stime - r0.ru_stime)
    shapes = training_matmuls(cfg, T)
    gflops = matmul_gflops(shapes)
    layer_matmul_s = cfg.num_layers * sum(2 * m * k * n for m, k, n in shapes) / gflops / 1e9
    step_s = min(times[1:])
    return {"bench": "step", "preset": preset_name, "cpu": cpu_model(), "backend": jax.default_backend(),
            "edits": edits, "row_tokens": T, "span": span, "remat": remat, "lora_impl": lora_impl,
            "attention_impl": attention_impl, "targets": ",".join(icfg.lora.targets), "compile_s": round(compile_s, 2),
            "useful_gflops": round(flops.useful_step_flops(cfg, icfg.lora, row_lengths(edits, T)) / 1e9, 2),
            "step_s": round(step_s, 3), "steps_s": [round(t, 3) for t in times[1:]],
            "page_faults_per_step": int(np.median(faults[1:])), "kernel_s_per_step": round(float(np.median(kernel_s[1:])), 3),
            "layer_matmul_gflops_xla": round(gflops, 1), "layer_matmuls_alone_s": round(layer_matmul_s, 3),
            "layer_matmul_share": round(layer_matmul_s / step_s, 3), "finite": bool(jnp.all(jnp.isfinite(loss)))}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(json.dumps(bench_step(FLAGS.preset, FLAGS.edits, FLAGS.row_tokens, FLAGS.span, FLAGS.remat,
                                FLAGS.repeats, FLAGS.lora_impl, FLAGS.attention_impl, FLAGS.targets)), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
