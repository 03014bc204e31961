"""GGUF import (llama.cpp files), dequantised to float with the `gguf` package.

llama.cpp's converter permutes the rows of q/k projections of `llama` models so that RoPE pairs
interleave; we undo that here so the weights match HF's rotate-half layout (Qwen2 files are not permuted).
Each tensor is looked up by its HF name and loaded by the same code as HF checkpoints (`load_params`); a
block of a tensor is sliced from the whole tensor, dequantised (GGUF models here are small).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from seal_jax.model.config import from_gguf_fields
from seal_jax.weights.hf import Shardings, load_params


def gguf_metadata(path: str) -> dict:
    """A GGUF file's metadata fields (name -> value), tensors not read."""
    import gguf
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    return _field_values(gguf.GGUFReader(path))


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


def load_gguf(path: str, dtype=np.float32, shardings: Optional[Shardings] = None):
    """(ModelConfig, params as jax arrays) from a GGUF file, every tensor dequantised on read."""
    import gguf
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:  # Llama-3.1+ GGUFs carry their RoPE scaling as a tensor
        raise ValueError(f"{path}: Llama-3 RoPE scaling (rope_freqs.weight) is not read from GGUF files; "
                         "load the model's HF checkpoint directory instead (its config.json has rope_scaling)")
    cfg = from_gguf_fields(_field_values(reader), has_output_tensor="output.weight" in tensors)
    return cfg, load_params(cfg, _GGUFSource(tensors, cfg), path, dtype, shardings)


class _GGUFSource:
    """Tensors by their HF name, in HF's [out, in] layout, dequantised to float32."""

    def __init__(self, tensors: dict, cfg):
        self.tensors, self.cfg = tensors, cfg

    def _tensor(self, hf_name: str):
        name = _gguf_name(hf_name)
        if name not in self.tensors:
            raise KeyError(hf_name)
        return name, self.tensors[name]

    def shape(self, hf_name: str) -> tuple:
        return tuple(int(d) for d in reversed(self._tensor(hf_name)[1].shape))  # GGUF lists dims fastest-first

    def read(self, hf_name: str, index: tuple) -> np.ndarray:
        import gguf
        name, t = self._tensor(hf_name)
        arr = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(self.shape(hf_name))
        if self.cfg.model_type == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            arr = _unpermute(arr, self.cfg.num_heads if "attn_q" in name else self.cfg.num_kv_heads)
        return arr[index]


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
