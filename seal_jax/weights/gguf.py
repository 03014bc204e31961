"""GGUF import (llama.cpp files), dequantised to float with the `gguf` package.

llama.cpp's converter permutes the rows of q/k projections of `llama` models so that RoPE pairs
interleave; we undo that here so the weights match HF's rotate-half layout (Qwen2 files are not permuted).
"""
from __future__ import annotations

import os

import numpy as np

from seal_jax.model.config import ModelConfig, from_gguf_fields

_NAMES = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_output": "o_proj",
          "ffn_gate": "gate_proj", "ffn_up": "up_proj", "ffn_down": "down_proj"}


def _field_values(reader) -> dict:
    out = {}
    for name, field in reader.fields.items():
        try:
            out[name] = field.contents()
        except Exception:  # a field type this gguf version cannot decode: not one we need
            continue
    return out


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k row permutation. w: [out, in]."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str, dtype=np.float32) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from a GGUF file, every tensor dequantised."""
    import gguf
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:  # Llama-3.1+ GGUFs carry their RoPE scaling as a tensor
        raise ValueError(f"{path}: Llama-3 RoPE scaling (rope_freqs.weight) is not read from GGUF files; "
                         "load the model's HF checkpoint directory instead (its config.json has rope_scaling)")
    cfg = from_gguf_fields(_field_values(reader), has_output_tensor="output.weight" in tensors)

    def get(name: str, shape: tuple) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"{path}: tensor {name} is missing from the GGUF file")
        t = tensors[name]
        arr = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {name} has {arr.size} values, expected shape {shape}")
        return arr.reshape(shape)

    from seal_jax.model.lora import target_shape
    layers: dict = {"attn_norm": [], "mlp_norm": []}
    for i in range(cfg.num_layers):
        layers["attn_norm"].append(get(f"blk.{i}.attn_norm.weight", (cfg.hidden_size,)))
        layers["mlp_norm"].append(get(f"blk.{i}.ffn_norm.weight", (cfg.hidden_size,)))
        for theirs, ours in _NAMES.items():
            n_in, n_out = target_shape(cfg, ours)
            w = get(f"blk.{i}.{theirs}.weight", (n_out, n_in))
            if cfg.model_type == "llama" and ours in ("q_proj", "k_proj"):
                w = _unpermute(w, cfg.num_heads if ours == "q_proj" else cfg.num_kv_heads)
            entry = layers.setdefault(ours, {"w": []})
            entry["w"].append(w.T)
            if cfg.qkv_bias and ours in ("q_proj", "k_proj", "v_proj"):
                entry.setdefault("b", []).append(get(f"blk.{i}.{theirs}.bias", (n_out,)))
    stack = lambda xs: np.stack(xs).astype(dtype)
    params = {
        "embed": get("token_embd.weight", (cfg.vocab_size, cfg.hidden_size)).astype(dtype),
        "layers": {k: ({kk: stack(vv) for kk, vv in v.items()} if isinstance(v, dict) else stack(v))
                   for k, v in layers.items()},
        "final_norm": get("output_norm.weight", (cfg.hidden_size,)).astype(dtype),
    }
    if not cfg.tie_embeddings:
        params["lm_head"] = get("output.weight", (cfg.vocab_size, cfg.hidden_size)).T.astype(dtype)
    return cfg, params
