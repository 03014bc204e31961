"""HF checkpoints in and out: safetensors directories and PEFT LoRA adapters.

HF stores a projection as `[out, in]` per layer; seal-jax stores `[L, in, out]` stacked over
layers (the NNX modules' pure state, `model/transformer.py`). The name map below is the single place that
knows both layouts; loading (HF and GGUF, `assemble_params`) and export both go through it.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Iterator, Optional

import numpy as np

from seal_jax.model.config import ModelConfig, from_hf_config
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import PROJECTION_GROUP, abstract_params

_PROJ = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
         "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
         "down_proj": "mlp.down_proj"}
_NORMS = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}


def hf_tensor_names(cfg: ModelConfig) -> Iterator[tuple[tuple, str, bool]]:
    """(path in our pytree, HF name with {i} for the layer, transpose?) for every tensor of the model."""
    yield ("embed", "embedding"), "model.embed_tokens.weight", False
    yield ("final_norm", "scale"), "model.norm.weight", False
    if not cfg.tie_embeddings:
        yield ("lm_head", "kernel"), "lm_head.weight", True
    for ours, theirs in _NORMS.items():
        yield ("layers", ours, "scale"), f"model.layers.{{i}}.{theirs}.weight", False
    for ours, theirs in _PROJ.items():
        group = PROJECTION_GROUP[ours]
        yield ("layers", group, ours, "kernel"), f"model.layers.{{i}}.{theirs}.weight", True
        if cfg.qkv_bias and ours in ("q_proj", "k_proj", "v_proj"):
            yield ("layers", group, ours, "bias"), f"model.layers.{{i}}.{theirs}.bias", False


def _expected_shape(cfg: ModelConfig, path: tuple) -> tuple:
    """HF-side shape of one tensor (per layer for layer tensors): ours, read off the modules, transposed."""
    shape = abstract_params(cfg)
    for p in path:
        shape = shape[p]
    shape = shape.shape[1:] if path[0] == "layers" else shape.shape
    return tuple(reversed(shape)) if path[-1] == "kernel" else tuple(shape)


def _set(tree: dict, path: tuple, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple):
    for p in path:
        tree = tree[p]
    return tree


# ---- load ---------------------------------------------------------------------------------------


class _SafetensorsDir:
    """Read tensors by name from model.safetensors or a sharded index, as numpy float32 (bf16 included)."""

    def __init__(self, path: str):
        from safetensors import safe_open
        index = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.exists(single):
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json; "
                                    "pass a HF checkpoint directory saved with safetensors")
        self.handles = {}
        for fname in files:
            full = os.path.join(path, fname)
            if not os.path.exists(full):
                raise FileNotFoundError(f"{path}: shard {fname} named in the index is missing")
            h = safe_open(full, framework="flax")
            for name in h.keys():
                self.handles[name] = h

    def get(self, name: str) -> np.ndarray:
        if name not in self.handles:
            raise KeyError(name)
        return np.asarray(self.handles[name].get_tensor(name), dtype=np.float32)


def load_hf_checkpoint(path: str, dtype=np.float32, cfg: Optional[ModelConfig] = None) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params) from a HF directory: config.json + safetensors (single file or sharded)."""
    cfg_path = os.path.join(path, "config.json")
    if cfg is None:
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"{path}: no config.json; is this a HF checkpoint directory?")
        with open(cfg_path) as f:
            cfg = from_hf_config(json.load(f))
    st = _SafetensorsDir(path)
    if cfg.tie_embeddings and "lm_head.weight" in st.handles:
        cfg = cfg.replace(tie_embeddings=False)  # an explicit head wins over the flag
    return cfg, assemble_params(cfg, st.get, path, dtype)


def assemble_params(cfg: ModelConfig, get: Callable[[str], np.ndarray], source: str, dtype=np.float32) -> dict:
    """Our parameter pytree from any tensor source: `get(hf_name)` returns the tensor in HF's layout
    (KeyError when absent). HF directories and GGUF files both load through here."""
    params: dict = {}
    for ours, theirs, transpose in hf_tensor_names(cfg):
        want = _expected_shape(cfg, ours)
        names = [theirs.format(i=i) for i in range(cfg.num_layers)] if "{i}" in theirs else [theirs]
        arrays = []
        for name in names:
            try:
                arr = get(name)
            except KeyError:
                raise ValueError(f"{source}: tensor {name} is missing from the checkpoint") from None
            if tuple(arr.shape) != want:
                raise ValueError(f"{source}: tensor {name} has shape {tuple(arr.shape)}, expected {want} "
                                 f"for this model config")
            arrays.append(arr.T if transpose else arr)
        value = np.stack(arrays) if "{i}" in theirs else arrays[0]
        _set(params, ours, value.astype(dtype))
    return params


# ---- export -------------------------------------------------------------------------------------


def save_hf_checkpoint(path: str, cfg: ModelConfig, params: dict, tokenizer=None) -> None:
    """Write config.json + model.safetensors that transformers loads (merge any LoRA first)."""
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for ours, theirs, transpose in hf_tensor_names(cfg):
        value = np.asarray(_get(params, ours), dtype=np.float32)
        if "{i}" in theirs:
            for i in range(cfg.num_layers):
                tensors[theirs.format(i=i)] = np.ascontiguousarray(value[i].T if transpose else value[i])
        else:
            tensors[theirs] = np.ascontiguousarray(value.T if transpose else value)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg.to_hf_config(), f, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def save_peft_adapter(path: str, cfg: ModelConfig, lora: dict, spec: LoraSpec,
                      base_model: str = "", extra: Optional[dict] = None) -> None:
    """Write adapter_config.json + adapter_model.safetensors in HF PEFT's LoRA format."""
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name, ab in lora.items():
        a, b = np.asarray(ab["a"], np.float32), np.asarray(ab["b"], np.float32)  # [L, in, r], [L, r, out]
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{_PROJ[name]}"
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)  # [r, in]
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)  # [out, r]
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.rank, "lora_alpha": spec.alpha,
              "target_modules": list(spec.targets), "lora_dropout": 0.0, "bias": "none",
              "fan_in_fan_out": False, "use_rslora": False, "inference_mode": True,
              "base_model_name_or_path": base_model, **(extra or {})}
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def load_peft_adapter(path: str, cfg: ModelConfig) -> tuple[dict, LoraSpec]:
    """(lora pytree, LoraSpec) from a PEFT LoRA adapter directory."""
    from safetensors.numpy import load_file
    cfg_file, weights = os.path.join(path, "adapter_config.json"), os.path.join(path, "adapter_model.safetensors")
    for f in (cfg_file, weights):
        if not os.path.exists(f):
            raise FileNotFoundError(f"{path}: {os.path.basename(f)} is missing; is this a PEFT LoRA adapter?")
    with open(cfg_file) as f:
        ac = json.load(f)
    if ac.get("peft_type") != "LORA" or ac.get("use_rslora") or ac.get("use_dora"):
        raise ValueError(f"{path}: only plain LoRA adapters are supported (peft_type LORA, no rsLoRA/DoRA)")
    spec = LoraSpec(rank=int(ac["r"]), alpha=float(ac["lora_alpha"]), targets=tuple(ac["target_modules"]))
    tensors = load_file(weights)
    lora = {}
    for name in spec.targets:
        a, b = [], []
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{_PROJ[name]}"
            try:
                a.append(tensors[f"{prefix}.lora_A.weight"].T)
                b.append(tensors[f"{prefix}.lora_B.weight"].T)
            except KeyError as e:
                raise ValueError(f"{path}: adapter tensor {e.args[0]} is missing") from None
        lora[name] = {"a": np.stack(a).astype(np.float32), "b": np.stack(b).astype(np.float32)}
    return lora, spec
