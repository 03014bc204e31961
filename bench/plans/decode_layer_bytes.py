"""One decode step of a `:paper` sampling call, compiled for a topology at 1 and 2 layers (unrolled): XLA's
"bytes accessed" and `aot.hlo_bytes` for each, and what the second layer adds (docs/planning.md, "Sampling and
answering"). Needs libtpu (or the CUDA plugin for h100:...).

    python bench/plans/decode_layer_bytes.py v5e:2x4 --fsdp=4
    python bench/plans/decode_layer_bytes.py h100:1x1x2 --fsdp=1
"""
import argparse

import jax

from seal_jax.engine import aot, sampling
from seal_jax.model.config import preset
from seal_jax.runtime import sharding
from seal_jax.runtime.topology import default_to_cpu, topology_devices

p = argparse.ArgumentParser()
p.add_argument("topology")
p.add_argument("--fsdp", type=int, default=4)
p.add_argument("--model", default="qwen2p5_7b")
p.add_argument("--rows", type=int, default=16)
p.add_argument("--prompt", type=int, default=512)
p.add_argument("--cap", type=int, default=8192)
a = p.parse_args()
default_to_cpu()
devices = topology_devices(a.topology)
mesh = sharding.make_mesh(len(devices) // a.fsdp, a.fsdp, 1, devices)
static = dict(max_new_tokens=a.cap, greedy=False, lora_scale=0.0)
names = tuple(static) + ("cfg",)
prefill = jax.jit(sampling.prefill, static_argnames=names)
decode = jax.jit(sampling.decode, static_argnames=names, donate_argnames="state")
t, m, stops, key, temp, top_p = aot.prompt_batch(mesh, a.rows, a.prompt)
counts = []
for n in (1, 2):
    c = preset(a.model).replace(num_layers=n, unroll_loops=True)
    base = aot.abstract_base(c, mesh)
    args = (base, None, t, m, stops, key, temp, top_p)
    shardings = prefill.lower(*args, cfg=c, **static).compile().output_shardings
    shapes = jax.eval_shape(lambda *x: sampling.prefill(*x, cfg=c, **static), *args)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    compiled = decode.lower(base, None, state, stops, temp, top_p, cfg=c, **static).compile()
    xla = compiled.cost_analysis()
    xla = (xla[0] if isinstance(xla, list) else xla) or {}  # None on GPU
    counts.append((xla.get("bytes accessed", float("nan")), aot.hlo_bytes(compiled.as_text())))
    print(f"{a.topology}, {n} layer(s): XLA {counts[-1][0] / 1e9:.2f} GB, hlo_bytes {counts[-1][1] / 1e9:.2f} GB")
print(f"a layer: XLA {(counts[1][0] - counts[0][0]) / 1e9:.2f} GB, hlo_bytes {(counts[1][1] - counts[0][1]) / 1e9:.2f} GB;"
      f" it must read {aot.base_layer_bytes(preset(a.model), mesh) / 1e9:.3f} GB of weights")
