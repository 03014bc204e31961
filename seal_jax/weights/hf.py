"""HF checkpoints in and out: safetensors directories and PEFT LoRA adapters.

HF stores a projection as `[out, in]` per layer; seal-jax stores `[L, in, out]` stacked over
layers (the NNX modules' pure state, `model/transformer.py`). The name map below is the single place that
knows both layouts; loading (HF and GGUF, `load_params`) and export both go through it. Loading streams each
device's shard straight from the files to its device (below): the host never holds the whole checkpoint,
in float32 or otherwise, and no device holds it unless the sharding replicates it.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Iterator, Optional, Protocol

import jax
import numpy as np

from seal_jax.model.config import ModelConfig, from_hf_config
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import PROJECTION_GROUP, abstract_params

Shardings = Callable[[dict], dict]  # abstract params -> a jax.sharding.Sharding per leaf

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


def layer_names(cfg: ModelConfig, theirs: str) -> list[str]:
    """The HF tensors one leaf of ours holds: one per layer for a `{i}` name, else the name itself."""
    return [theirs.format(i=i) for i in range(cfg.num_layers)] if "{i}" in theirs else [theirs]


def hf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """{HF tensor name: its HF shape} for every tensor a checkpoint of `cfg` holds."""
    return {name: _expected_shape(cfg, ours) for ours, theirs, _ in hf_tensor_names(cfg)
            for name in layer_names(cfg, theirs)}


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
#
# Loading streams: every leaf of our pytree goes to its `jax.sharding.Sharding` shard by shard. For each
# distinct shard (devices that replicate it share one read) the reader takes just that block of each HF
# tensor (a `[L, in/fsdp, out/tp]` block reads rows and columns of L `[out, in]` tensors), casts it on the
# host to the target dtype, and puts it on its devices; the host holds one shard of one leaf at a time, and no
# device holds more than the sharding gives it. Sources (safetensors, GGUF) only answer "shape of tensor X" and
# "this block of tensor X, in HF's layout".


class TensorSource(Protocol):
    def shape(self, name: str) -> tuple:  # HF layout; KeyError when absent
        ...

    def read(self, name: str, index: tuple) -> np.ndarray:  # tensor[index] in HF layout, its own dtype
        ...


READ_BLOCK_BYTES = 64 << 20  # at most this much of a file is mapped at a time (SafetensorsDir.read)


class SafetensorsDir:
    """Tensors by name from model.safetensors or a sharded index (model.safetensors.index.json).

    safetensors memory-maps its files, and mapped pages count in the process's resident memory for as long as
    the map is open; a column block of a row-major tensor touches every page of it. So a read opens the file,
    copies at most READ_BLOCK_BYTES of rows out of the map, closes it, and repeats: the host holds the block
    being read, not the checkpoint."""

    def __init__(self, path: str):
        import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, which safetensors' numpy reader needs)
        from safetensors import safe_open
        self._open = lambda fname: safe_open(os.path.join(path, fname), framework="numpy")
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        elif os.path.exists(os.path.join(path, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json; "
                                    "pass a HF checkpoint directory saved with safetensors")
        self.file_of, self._shapes, self._row_bytes = {}, {}, {}
        for fname in files:
            if not os.path.exists(os.path.join(path, fname)):
                raise FileNotFoundError(f"{path}: shard {fname} named in the index is missing")
            with self._open(fname) as h:
                for name in h.keys():
                    info = h.get_slice(name)
                    self.file_of[name] = fname
                    self._shapes[name] = tuple(info.get_shape())
                    bits = int("".join(c for c in info.get_dtype() if c.isdigit()) or 8)  # "BF16" -> 16
                    self._row_bytes[name] = int(np.prod(self._shapes[name][1:])) * bits // 8

    def shape(self, name: str) -> tuple:
        return self._shapes[name]

    def read(self, name: str, index: tuple) -> np.ndarray:
        rows = range(self._shapes[name][0])[index[0]]  # every tensor here has at least one dim
        step = max(1, READ_BLOCK_BYTES // max(1, self._row_bytes[name]))
        blocks = []
        for r in range(0, len(rows), step):
            part = rows[r:r + step]
            with self._open(self.file_of[name]) as h:  # closing unmaps: those pages leave the resident set
                blocks.append(h.get_slice(name)[(slice(part.start, part.stop, part.step), *index[1:])])
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def load_hf_checkpoint(path: str, dtype=np.float32, cfg: Optional[ModelConfig] = None,
                       shardings: Optional[Shardings] = None) -> tuple[ModelConfig, dict]:
    """(ModelConfig, params as jax arrays) from a HF directory: config.json + safetensors (single or sharded).

    dtype: the parameters' dtype (cast on the host); shardings: where each goes (`load_params`)."""
    cfg_path = os.path.join(path, "config.json")
    if cfg is None:
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"{path}: no config.json; is this a HF checkpoint directory?")
        with open(cfg_path) as f:
            cfg = from_hf_config(json.load(f))
    source = SafetensorsDir(path)
    if cfg.tie_embeddings and "lm_head.weight" in source.file_of:
        cfg = cfg.replace(tie_embeddings=False)  # an explicit head wins over the flag
    return cfg, load_params(cfg, source, path, dtype, shardings)


def load_params(cfg: ModelConfig, source: TensorSource, where: str, dtype=np.float32,
                shardings: Optional[Shardings] = None) -> dict:
    """Our parameter pytree, streamed from any tensor source (HF directories and GGUF files both load here).

    shardings(abstract params) -> a Sharding per leaf (`runtime.sharding.param_shardings(mesh)`); None puts
    every leaf on this process's first device. Every tensor's shape is checked before anything is read."""
    dtype = np.dtype(dtype)
    plan = _leaf_plan(cfg, source, where)
    shapes = abstract_params(cfg)
    targets = shardings(shapes) if shardings else jax.tree.map(
        lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]), shapes)
    params: dict = {}
    for ours, names, transpose in plan:
        read = _block_reader(source, names, stacked=ours[0] == "layers", transpose=transpose, dtype=dtype)
        _set(params, ours, _place(read, _get(shapes, ours).shape, _get(targets, ours)))
    return params


def _leaf_plan(cfg: ModelConfig, source: TensorSource, where: str) -> list[tuple[tuple, list, bool]]:
    """(our path, the HF tensors it stacks, transpose?) per leaf, after checking every tensor's shape."""
    plan = []
    for ours, theirs, transpose in hf_tensor_names(cfg):
        want = _expected_shape(cfg, ours)
        names = layer_names(cfg, theirs)
        for name in names:
            try:
                got = tuple(source.shape(name))
            except KeyError:
                raise ValueError(f"{where}: tensor {name} is missing from the checkpoint") from None
            if got != want:
                raise ValueError(f"{where}: tensor {name} has shape {got}, expected {want} for this model config")
        plan.append((ours, names, transpose))
    return plan


def _block_reader(source: TensorSource, names: list, stacked: bool, transpose: bool, dtype) -> Callable:
    """index (slices into our leaf) -> that block as a host array in `dtype`, reading only its part of each
    HF tensor. Ours is HF's tensor transposed for kernels ([in, out] vs [out, in]) and stacked over layers."""
    def one(name: str, index: tuple) -> np.ndarray:
        if transpose:
            return source.read(name, tuple(reversed(index))).T
        return source.read(name, index)

    def read(index: tuple) -> np.ndarray:
        if not stacked:
            return np.ascontiguousarray(one(names[0], index), dtype=dtype)
        layers = range(len(names))[index[0]]  # [L, ...]: one HF tensor per layer
        out = None
        for j, i in enumerate(layers):
            block = one(names[i], index[1:])
            if out is None:
                out = np.empty((len(layers), *block.shape), dtype)
            out[j] = block  # cast on assignment
        return out
    return read


def _place(read: Callable, shape: tuple, sharding: jax.sharding.Sharding) -> jax.Array:
    """A jax.Array laid out by `sharding`: each distinct shard read once, put on the devices that hold it,
    and released before the next is read."""
    groups: dict = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        key = tuple((s.start, s.stop, s.step) for s in index)  # slices are unhashable before Python 3.12
        groups.setdefault(key, (index, []))[1].append(device)
    shards = []
    for index, devices in groups.values():
        block = read(index)
        placed = [jax.device_put(block, d) for d in devices]
        jax.block_until_ready(placed)  # the host copy can go: at most one shard is on the host at a time
        shards += placed
        del block
    return jax.make_array_from_single_device_arrays(shape, sharding, shards)


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
