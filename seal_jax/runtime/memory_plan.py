"""Per-device memory plan for a model, a LoRA and a mesh (`python -m seal_jax.cli.plan` prints one for a config).

Estimates (bytes per device), from the model shape alone, no weights loaded:
  base weights        params x dtype bytes / (fsdp x tp)                  (replicated across "edit")
  gathered layer      one layer's weights / tp, all-gathered over fsdp while it runs (0 without fsdp)
  per edit            LoRA + gradient + two Adam moments (f32) + activations of one step with the remat policy,
                      divided by tp only: an edit's rows are not split over fsdp, so its activations may not be
  KV cache            2 x L x batch x (prompt + new) x kv_dim x dtype bytes / (edit x fsdp)
and the largest edits-per-chunk that fits the device after the base, the gathered layer and the sampling cache.
These are estimates from the model shape (no XLA buffer assignment): keep 10-20% headroom. They are calibrated
against XLA's compiled peak for edit x fsdp meshes only (tp=1): with tp > 1 they are not (TP_CAVEAT), and the plan
says so in its output.
"""
from __future__ import annotations

import math

from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import projection_shape

GiB = 1024 ** 3
TP_CAVEAT = ("tp > 1: this hand estimate is calibrated against XLA only for tp=1 meshes; for Qwen2.5-7B on v5e:2x4 "
             "at edit=2 x tp=4 it was 0.72-1.53x XLA's compiled peak per phase, and put at 8 GiB an M-step that "
             "needs over 16. Check a tp mesh with `python -m seal_jax.cli.plan ... --topology=<tpu> --compile`.")


def caveats(tp: int) -> dict:
    """What a plan's output must say about its hand estimate: {"caveat": TP_CAVEAT} for a tp > 1 mesh, else {}."""
    return {"caveat": TP_CAVEAT} if tp > 1 else {}


def lora_params(cfg: ModelConfig, spec: LoraSpec) -> int:
    return sum(cfg.num_layers * spec.rank * sum(projection_shape(cfg, t)) for t in spec.targets)


def live_queries(cfg: ModelConfig, seq: int) -> int:
    """Queries whose attention scores are live at once: `cfg.query_chunk` of them, or all `seq`."""
    return min(seq, cfg.query_chunk or seq)


def prefill_scores_bytes(cfg: ModelConfig, rows: float, prompt: int, keys: int) -> float:
    """A prefill's f32 attention scores, [rows, H, live queries, keys] (XLA computes the softmax in place: one
    buffer, measured on v5e in tests/test_aot.py), and its bool mask over all queries, [rows, prompt, keys]."""
    return 4 * rows * cfg.num_heads * live_queries(cfg, prompt) * keys + rows * prompt * keys


def prefill_layer_bytes(cfg: ModelConfig, rows: float, prompt: int, weight_bytes: int) -> float:
    """One layer's activations in a prefill (no backward: one layer live at a time): residual, norm, q/k/v,
    attention output and the MLP's gate, up and product, [rows, prompt, width] in the weights' dtype."""
    widths = 3 * cfg.hidden_size + 2 * cfg.q_dim + 2 * cfg.kv_dim + 3 * cfg.intermediate_size
    return rows * prompt * widths * weight_bytes


def activation_bytes(cfg: ModelConfig, seq: int, remat: str, batch: int = 1, chunk: int = 128) -> int:
    """One training step's live activations (f32) for `batch` sequences."""
    d, f, L, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads
    per_layer = (seq * (6 * d + 2 * cfg.q_dim + 2 * cfg.kv_dim + 3 * f)  # x, norms, qkv, mlp
                 + h * live_queries(cfg, seq) * seq)                        # attention probabilities
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
            "max_edits_per_chunk": per_device_edits * edit, "fits": per_device_edits > 0,
            **caveats(tp)}


def phase_estimates(cfg: ModelConfig, spec: LoraSpec, outer_spec: LoraSpec, *, edit: int, fsdp: int, tp: int,
                    edits_per_chunk: int, doc_len: int, batch: int, sample_rows: int, sample_prompt: int,
                    sample_len: int, answer_rows: int, answer_prompt: int, answer_len: int, mstep_len: int,
                    mstep_batch: int, weight_bytes: int = 2) -> dict:
    """Per-device bytes of each phase `engine/aot.py` compiles (inner, sampling, answering, m_step), by hand.

    Every phase holds the base shard and, with fsdp, one gathered layer. The inner update adds LoRA + gradient +
    Adam moments of the edits on this device's edit slice, and one step's activations of the edits per device
    (XLA splits the vmapped edits over edit x fsdp, like a data-parallel batch); sampling adds the KV cache of
    its rows, their logits and the prefill (its attention scores over the whole cache, `*_len` = prompt + new
    tokens, and one layer's activations); answering adds the adapter stack and its per-row copy; the M-step is
    one edit of the outer LoRA (replicated) whose rows XLA splits over a mesh axis that divides them. Each rule is
    XLA's choice, measured on v5e (README "Will it fit?"): compared with XLA's compiled peak in tests/test_aot.py,
    for tp=1 meshes only (TP_CAVEAT).
    """
    shards, row_shards = fsdp * tp, edit * fsdp
    base = cfg.num_params() * weight_bytes / shards
    embed = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
    gathered = 0 if fsdp == 1 else (cfg.num_params() - embed) / cfg.num_layers * weight_bytes / tp
    fixed = base + gathered
    lora, outer_lora = lora_params(cfg, spec) * 4, lora_params(cfg, outer_spec) * 4
    states = 4 * lora  # LoRA, gradient, two Adam moments (f32)
    step_activations = activation_bytes(cfg, doc_len, cfg.remat, batch) / tp
    inner_edits = -(-edits_per_chunk // edit), -(-edits_per_chunk // row_shards)  # (states, activations)
    cache = lambda rows, length: 2 * cfg.num_layers * rows * length * cfg.kv_dim * weight_bytes / row_shards
    logits = lambda rows: rows * cfg.vocab_size * 4 * 3 / row_shards  # f32 logits, probabilities, one temporary
    # The decode loop's weights are loop-invariant, and XLA hoists the fsdp all-gather out of it when that at most
    # doubles the weights held (fsdp <= 2): then sampling and answering hold every layer gathered. Measured on v5e:
    # SmolLM2 at fsdp=2 holds the whole model (285 MB peak, base shard 139 MB), at fsdp=4 one layer at a time,
    # as does Qwen2.5-7B at fsdp=4.
    decode_weights = cfg.num_params() * weight_bytes / tp if fsdp <= 2 else fixed
    prefill = lambda rows, prompt, length: (prefill_scores_bytes(cfg, rows / row_shards, prompt, length)
                                            + prefill_layer_bytes(cfg, rows / row_shards, prompt, weight_bytes)) / tp
    # The M-step's rows split over the largest part of the row devices that divides them, gcd(rows, edit x fsdp),
    # the rest replicating (measured: batch 10 on v5e edit=2 x fsdp=4 and on v5p edit=1 x fsdp=4 holds 5 rows per
    # device, batch 2 on 4 x 2 one, batch 5 on 8 x 1 all five).
    mstep_rows = mstep_batch // math.gcd(mstep_batch, row_shards)
    return {"inner": fixed + inner_edits[0] * states + inner_edits[1] * step_activations,
            "sampling": decode_weights + cache(sample_rows, sample_len) + logits(sample_rows)
            + prefill(sample_rows, sample_prompt, sample_len),
            "answering": decode_weights + cache(answer_rows, answer_len) + logits(answer_rows)
            + prefill(answer_rows, answer_prompt, answer_len)
            + -(-edits_per_chunk // edit) * lora + answer_rows * lora / row_shards,
            "m_step": fixed + 4 * outer_lora + activation_bytes(cfg, mstep_len, cfg.remat, mstep_rows) / tp}
