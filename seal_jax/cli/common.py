"""What every command-line tool shares: the absl runner, the config flag, and the model a config names.

JAX logs backend probing ("Unable to initialize backend 'tpu'") at INFO through absl's handler; a person at
a terminal wants our progress bars and results, so absl's threshold is WARNING unless `--verbosity` says
otherwise. Our own loggers (`seal_jax.*`) stay at INFO.

Every tool but `bench` (which reports compile time) keeps XLA's persistent compilation cache, so a resumed or
repeated run loads its compiled programs instead of compiling them again (`use_compile_cache`).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from seal_jax.model.config import preset
from seal_jax.model.transformer import init_params
from seal_jax.runtime import sharding
from seal_jax.runtime.topology import default_to_cpu
from seal_jax.tokenizer import load_tokenizer
from seal_jax.weights import load_model, resolve_model_path


COMPILE_CACHE = os.path.join("~", ".cache", "seal_jax", "xla")
COMPILE_CACHE_BYTES = 4 << 30  # least recently used entries are evicted past this


def use_compile_cache() -> None:
    """XLA's persistent compilation cache in $JAX_COMPILATION_CACHE_DIR (JAX reads it; an empty value turns
    the cache off), else in COMPILE_CACHE, capped at COMPILE_CACHE_BYTES. A resumed run after preemption
    recompiles nothing it compiled before."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(COMPILE_CACHE))
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)


def run(main: Callable, define_flags: Optional[Callable] = None, compile_cache: bool = True) -> None:
    """absl's app.run(main) with this package's logging defaults; `define_flags` first (modules that are not
    the program never define flags, so tests and other tools can import them)."""
    default_to_cpu()  # before any JAX backend starts: an installed libtpu must not make CPU runs probe for TPUs
    if compile_cache:
        use_compile_cache()
    else:
        jax.config.update("jax_enable_compilation_cache", False)
    if define_flags is not None:
        define_flags()

    def quiet_main(argv):
        if not flags.FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("seal_jax").setLevel(logging.INFO)
        return main(argv)

    app.run(quiet_main)


def define_config_flag(help_text: str = "Experiment config file (configs/*.py[:preset]).") -> None:
    """--config=configs/<file>.py[:preset], overridable field by field (--config.rl.iterations=2)."""
    config_flags.DEFINE_config_file("config", None, help_text, lock_config=True)


def build_model(model_section, seed: int = 0, mesh=None):
    """(cfg, params, tokenizer) from a config's `model` section; `random:<preset>` for smoke runs. With a
    mesh, each device receives only its shard of the weights (the partition rules), straight from the files."""
    dtype = model_section.get("dtype", "auto")
    if dtype == "auto":  # bf16 base weights on accelerators, f32 on CPU; LoRA and Adam state are always f32
        dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    dtype = jnp.dtype(dtype)
    if model_section.name.startswith("random:"):
        tok = load_tokenizer(resolve_model_path(model_section.tokenizer))
        cfg = preset(model_section.name.split(":", 1)[1]).replace(vocab_size=len(tok))
        params = init_params(jax.random.PRNGKey(seed), cfg, dtype)
        params = params if mesh is None else sharding.shard_params(params, mesh)
    else:
        shardings = None if mesh is None else sharding.param_shardings(mesh)
        cfg, params, tok = load_model(model_section.name, dtype, shardings=shardings)
    return runtime_model_config(cfg, model_section), params, tok


def runtime_model_config(cfg, model_section):
    """The architecture with the config's run-time choices: per-layer remat and attention query chunks."""
    return cfg.replace(remat=model_section.remat, query_chunk=model_section.get("query_chunk", 0))
