"""GGUF import (llama.cpp files), dequantised to float with the `gguf` package.

llama.cpp's converter permutes the rows of q/k projections of `llama` models so that RoPE pairs
interleave; we undo that here so the weights match HF's rotate-half layout (Qwen2 files are not permuted).
Each tensor is looked up by its HF name and assembled by the same code as HF checkpoints (`assemble_params`).
"""
from __future__ import annotations

import os

import numpy as np

from seal_jax.model.config import from_gguf_fields
from seal_jax.weights.hf import assemble_params


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


def load_gguf(path: str, dtype=np.float32):
    """(ModelConfig, params) from a GGUF file, every tensor dequantised on read."""
    import gguf
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:  # Llama-3.1+ GGUFs carry their RoPE scaling as a tensor
        raise ValueError(f"{path}: Llama-3 RoPE scaling (rope_freqs.weight) is not read from GGUF files; "
                         "load the model's HF checkpoint directory instead (its config.json has rope_scaling)")
    cfg = from_gguf_fields(_field_values(reader), has_output_tensor="output.weight" in tensors)

    def get(hf_name: str) -> np.ndarray:  # a tensor by its HF name, in HF's [out, in] layout
        name = _gguf_name(hf_name)
        if name not in tensors:
            raise KeyError(hf_name)
        t = tensors[name]
        arr = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        arr = arr.reshape(tuple(int(d) for d in reversed(t.shape)))  # GGUF lists dims fastest-first
        if cfg.model_type == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            arr = _unpermute(arr, cfg.num_heads if "attn_q" in name else cfg.num_kv_heads)
        return arr

    return cfg, assemble_params(cfg, get, path, dtype)


_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _gguf_name(hf_name: str) -> str:
    """HF tensor name -> llama.cpp tensor name."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    _, _, i, rest = hf_name.split(".", 3)  # model.layers.{i}.{module}.{weight|bias}
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{_LAYER[module]}.{kind}"
