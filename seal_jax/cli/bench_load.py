"""Peak host memory of loading a checkpoint onto a mesh: the streaming loader (`weights/hf.py`) measured.

    python -m seal_jax.cli.bench_load [--preset=llama3p2_1b] [--devices=8] [--fsdp=8] [--tp=1]
        [--dir=/tmp/seal_jax_bench_load] [--keep]

Writes a random bf16 checkpoint of the preset's shape (two safetensors files and model.safetensors.index.json,
so the sharded-checkpoint path runs), then loads it in bf16 in a fresh process on `devices` fake CPU devices
with the mesh (edit=-1, fsdp, tp), and prints one JSON line: the child's peak RSS (VmHWM), its RSS
before loading (Python, JAX and the CPU client), the files' size and peak RSS / file size. Fake CPU devices
live in host memory, so their shards count in the RSS: the floor is one copy of the weights plus the
interpreter. The checkpoint is deleted afterwards unless --keep.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import flags

FLAGS = flags.FLAGS


def write_random_checkpoint(path: str, preset_name: str, files: int = 2, seed: int = 0) -> int:
    """A random bf16 HF checkpoint of the preset's shape, split over `files` safetensors files with an index;
    returns its size in bytes. Holds one file's tensors in memory at a time."""
    import ml_dtypes
    from safetensors.numpy import save_file

    from seal_jax.model.config import preset
    from seal_jax.weights.hf import hf_tensor_shapes
    cfg = preset(preset_name)
    shapes = hf_tensor_shapes(cfg)
    names = list(shapes)
    ends = np.cumsum([int(np.prod(shapes[n])) for n in names])  # elements up to and including each tensor
    file_index = (ends - 1) * files // ends[-1]  # contiguous runs of tensors, about equal in size
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map = {}
    for i in range(files):
        fname = f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        part = {}
        for name in (n for n, f in zip(names, file_index) if f == i):
            if name.endswith("norm.weight"):
                part[name] = np.ones(shapes[name], ml_dtypes.bfloat16)
            else:  # uniform in [-0.02, 0.02): the values do not matter, the bytes do
                x = rng.random(shapes[name], dtype=np.float32)
                part[name] = ((x - 0.5) * 0.04).astype(ml_dtypes.bfloat16)
        save_file(part, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
        del part
    total = int(ends[-1])
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 2 * total}, "weight_map": weight_map}, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(cfg.to_hf_config(), torch_dtype="bfloat16"), f, indent=2)
    return sum(os.path.getsize(os.path.join(path, n)) for n in set(weight_map.values()))


def _status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MiB. Not ru_maxrss: Linux carries
    the parent's peak into an exec'd child's ru_maxrss, and the parent has just held a file's tensors."""
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024.0


def measure_load(path: str, fsdp: int, tp: int) -> dict:
    """Load `path` in bf16 onto the (edit=-1, fsdp, tp) mesh of this process's devices; memory and time."""
    import jax
    import jax.numpy as jnp

    from seal_jax.runtime import sharding
    from seal_jax.weights.hf import load_hf_checkpoint
    mesh = sharding.make_mesh(-1, fsdp, tp)
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    _, params = load_hf_checkpoint(path, dtype=jnp.bfloat16, shardings=sharding.param_shardings(mesh))
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    per_device: dict = {}
    for x in jax.tree.leaves(params):
        for s in x.addressable_shards:
            per_device[s.device.id] = per_device.get(s.device.id, 0) + s.data.nbytes
    return {"rss_before_load_mb": round(before, 1),
            "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "params_mb": round(sum(x.nbytes for x in jax.tree.leaves(params)) / 2**20, 1),
            "largest_device_mb": round(max(per_device.values()) / 2**20, 1), "devices": len(per_device),
            "mesh": dict(mesh.shape), "load_s": round(seconds, 1)}


def define_flags() -> None:
    flags.DEFINE_string("preset", "llama3p2_1b", "Model shape (seal_jax.model.config.PRESETS).")
    flags.DEFINE_integer("devices", 8, "Fake CPU devices in the loading process.")
    flags.DEFINE_integer("fsdp", 8, "Mesh fsdp axis.")
    flags.DEFINE_integer("tp", 1, "Mesh tp axis.")
    flags.DEFINE_string("dir", "/tmp/seal_jax_bench_load", "Where the random checkpoint is written.")
    flags.DEFINE_bool("keep", False, "Keep the written checkpoint.")
    flags.DEFINE_bool("measure", False, "Internal: this is the fresh loading process.")


def main(argv) -> None:
    del argv
    a = FLAGS
    if a.measure:
        print(json.dumps(measure_load(a.dir, a.fsdp, a.tp)), flush=True)
        return
    from seal_jax.cli.bench import cpu_model
    try:
        size = write_random_checkpoint(a.dir, a.preset)
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={a.devices}")
        child = subprocess.run([sys.executable, "-m", "seal_jax.cli.bench_load", "--measure", f"--dir={a.dir}",
                                f"--fsdp={a.fsdp}", f"--tp={a.tp}"], env=env, capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"the loading process failed:\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)
    file_mb = size / 2**20
    print(json.dumps({"bench": "load", "preset": a.preset, "dtype": "bfloat16", "files_mb": round(file_mb, 1),
                      **result, "peak_rss_over_files": round(result["peak_rss_mb"] / file_mb, 2),
                      "cpu": cpu_model()}), flush=True)


if __name__ == "__main__":
    from absl import app
    define_flags()  # not cli.common.run: the measuring child's RSS must not include transformers
    app.run(main)
