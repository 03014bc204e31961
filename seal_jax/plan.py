"""Per-device memory plan for a config and mesh: `python -m seal_jax.plan --config=configs/knowledge.py:paper`.

Estimates (bytes per device), from the model shape alone, no weights loaded:
  base weights        params x dtype bytes / (fsdp x tp)                  (replicated across "edit")
  gathered layer      one layer's weights / tp, all-gathered over fsdp while it runs (0 without fsdp)
  per edit            LoRA + gradient + two Adam moments (f32) + activations of one step with the remat policy,
                      divided by tp only: an edit's rows are not split over fsdp, so its activations may not be
  KV cache            2 x L x batch x (prompt + new) x kv_dim x dtype bytes / (edit x fsdp)
and the largest edits-per-chunk that fits the device after the base, the gathered layer and the sampling cache.
These are estimates from the model shape (no XLA buffer assignment): keep 10-20% headroom.
"""
from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from seal_jax.model.config import ModelConfig, preset
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import projection_shape

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (modules import each other)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py[:preset]).", lock_config=True)
    flags.DEFINE_string("preset", None, "Model preset when the config names a checkpoint (e.g. qwen2p5_7b).")
    flags.DEFINE_integer("edit", 1, "Mesh edit axis.")
    flags.DEFINE_integer("fsdp", 1, "Mesh fsdp axis.")
    flags.DEFINE_integer("tp", 1, "Mesh tp axis.")
    flags.DEFINE_float("device_gib", 16.0, "Memory per device (GiB), e.g. 16 v5e, 32 v4, 80 H100.")
    flags.DEFINE_integer("seq_len", 2048, "Training sequence bucket.")
    flags.DEFINE_integer("weight_bytes", 2, "Bytes per base weight (2 for bf16 on accelerators).")
    flags.DEFINE_integer("sample_batch", 64, "Sampling batch (rows).")
    flags.DEFINE_integer("sample_len", 2048, "Prompt + new tokens in the KV cache.")


GiB = 1024 ** 3
_MODEL_PRESETS = {"Qwen/Qwen2.5-7B": "qwen2p5_7b", "meta-llama/Llama-3.2-1B-Instruct": "llama3p2_1b",
                  "smollm2-135m": "smollm2_135m", "random:tiny": "tiny"}


def lora_params(cfg: ModelConfig, spec: LoraSpec) -> int:
    return sum(cfg.num_layers * spec.rank * sum(projection_shape(cfg, t)) for t in spec.targets)


def activation_bytes(cfg: ModelConfig, seq: int, remat: str, batch: int = 1, chunk: int = 128) -> int:
    """One training step's live activations (f32) for `batch` sequences."""
    d, f, L, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads
    per_layer = seq * (6 * d + 2 * cfg.q_dim + 2 * cfg.kv_dim + 3 * f) + h * seq * seq  # x, norms, qkv, mlp, probs
    saved = {"none": L * per_layer, "dots": L * seq * (2 * d + cfg.q_dim + 2 * cfg.kv_dim + 2 * f) + per_layer,
             "full": L * seq * d + per_layer}[remat]
    logits = 2 * chunk * cfg.vocab_size  # one log-softmax chunk and its gradient
    return 4 * batch * (saved + logits)


def plan(cfg: ModelConfig, spec: LoraSpec, *, edit: int, fsdp: int, tp: int, device_gib: float, seq_len: int,
         batch: int, weight_bytes: int, sample_batch: int, sample_len: int) -> dict:
    base = cfg.num_params() * weight_bytes / (fsdp * tp)
    embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
    gathered = 0 if fsdp == 1 else (cfg.num_params() - embed) / cfg.num_layers * weight_bytes / tp
    lora = lora_params(cfg, spec) * 4
    activations = activation_bytes(cfg, seq_len, cfg.remat, batch) / tp
    per_edit = 4 * lora + activations
    cache = 2 * cfg.num_layers * sample_batch * sample_len * cfg.kv_dim * weight_bytes / (edit * fsdp)
    free = device_gib * GiB - base - gathered - cache
    per_device_edits = max(0, int(free // per_edit))
    return {"params": cfg.num_params(), "mesh": {"edit": edit, "fsdp": fsdp, "tp": tp}, "remat": cfg.remat,
            "base_weights_gib": round(base / GiB, 3), "lora_per_edit_mib": round(lora / 2 ** 20, 2),
            "lora_adam_grad_per_edit_mib": round(4 * lora / 2 ** 20, 2),
            "gathered_layer_gib": round(gathered / GiB, 3), "activations_per_edit_gib": round(activations / GiB, 3),
            "kv_cache_gib": round(cache / GiB, 3), "device_gib": device_gib,
            "max_edits_per_chunk": per_device_edits * edit, "fits": per_device_edits > 0}


def main(argv):
    del argv
    c = FLAGS.config
    name = FLAGS.preset or _MODEL_PRESETS.get(c.model.name)
    if name is None:
        raise SystemExit(f"no preset known for model {c.model.name!r}; pass --preset (one of the model presets)")
    cfg = preset(name).replace(remat=c.model.remat)
    spec = LoraSpec(c.inner.lora_rank, c.inner.lora_alpha, tuple(c.inner.targets.split(",")))
    print(json.dumps(plan(cfg, spec, edit=FLAGS.edit, fsdp=FLAGS.fsdp, tp=FLAGS.tp, device_gib=FLAGS.device_gib,
                          seq_len=FLAGS.seq_len, batch=c.inner.batch_size, weight_bytes=FLAGS.weight_bytes,
                          sample_batch=FLAGS.sample_batch, sample_len=FLAGS.sample_len), indent=2))


if __name__ == "__main__":
    from seal_jax.cli import run as run_cli
    run_cli(main, define_flags)
