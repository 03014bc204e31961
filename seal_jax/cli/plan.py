"""Per-device memory plan for a config and mesh: `python -m seal_jax.cli.plan --config=configs/knowledge.py:paper`.

    python -m seal_jax.cli.plan --config=configs/knowledge.py:paper --edit=2 --fsdp=4 --device_gib=16

Prints runtime/memory_plan.py's estimate as JSON: base weights, LoRA + Adam per edit, activations, KV cache
per device, and the largest edits-per-chunk that fits. No weights are loaded.
"""
from __future__ import annotations

import json

from absl import flags

from seal_jax.cli.common import define_config_flag, run
from seal_jax.cli.settings import inner_config
from seal_jax.model.config import preset
from seal_jax.runtime.memory_plan import plan

FLAGS = flags.FLAGS
MODEL_PRESETS = {"Qwen/Qwen2.5-7B": "qwen2p5_7b", "meta-llama/Llama-3.2-1B-Instruct": "llama3p2_1b",
                 "smollm2-135m": "smollm2_135m", "random:tiny": "tiny"}


def define_flags() -> None:
    define_config_flag()
    flags.DEFINE_string("preset", None, "Model preset when the config names a checkpoint (e.g. qwen2p5_7b).")
    flags.DEFINE_integer("edit", 1, "Mesh edit axis.")
    flags.DEFINE_integer("fsdp", 1, "Mesh fsdp axis.")
    flags.DEFINE_integer("tp", 1, "Mesh tp axis.")
    flags.DEFINE_float("device_gib", 16.0, "Memory per device (GiB), e.g. 16 v5e, 32 v4, 80 H100.")
    flags.DEFINE_integer("seq_len", 2048, "Training sequence bucket.")
    flags.DEFINE_integer("weight_bytes", 2, "Bytes per base weight (2 for bf16 on accelerators).")
    flags.DEFINE_integer("sample_batch", 64, "Sampling batch (rows).")
    flags.DEFINE_integer("sample_len", 2048, "Prompt + new tokens in the KV cache.")


def main(argv):
    del argv
    c = FLAGS.config
    name = FLAGS.preset or MODEL_PRESETS.get(c.model.name)
    if name is None:
        raise SystemExit(f"no preset known for model {c.model.name!r}; pass --preset (one of the model presets)")
    cfg = preset(name).replace(remat=c.model.remat)
    inner = inner_config(c.inner)
    print(json.dumps(plan(cfg, inner.lora, edit=FLAGS.edit, fsdp=FLAGS.fsdp, tp=FLAGS.tp, device_gib=FLAGS.device_gib,
                          seq_len=FLAGS.seq_len, batch=inner.batch_size, weight_bytes=FLAGS.weight_bytes,
                          sample_batch=FLAGS.sample_batch, sample_len=FLAGS.sample_len), indent=2))


if __name__ == "__main__":
    run(main, define_flags)
