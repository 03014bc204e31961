"""Shared fixtures. Eight fake CPU devices must be requested before jax is imported anywhere."""
import os
import tempfile

# One XLA compilation cache for the session, shared by the xdist workers and every subprocess a test starts
# (they inherit the environment): a CLI run that repeats another's programs (a resume after a kill, the same
# smoke shapes) loads them instead of compiling them again.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the xdist controller makes it; workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="seal_jax_test_xla_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite is mostly compilation. LLVM at -O1 instead of -O2 cuts it by 20-45%, and XLA:CPU's legacy
# elemental emitters instead of its MLIR fusion emitters halve it again (the tiny model's inner update: 6.0 s ->
# 3.2 s); run time barely moves (matmuls are library calls). Tests compare results, not speed.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=1 "
                                   "--xla_cpu_use_fusion_emitters=false")
# libtpu takes a machine-wide lock when it loads; the AOT tests load it in an xdist worker and in a plan CLI
# subprocess at the same time (compile-only: no TPU is attached, nothing is shared).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402

import pytest  # noqa: E402

from seal_jax.runtime.topology import default_to_cpu  # noqa: E402

default_to_cpu()  # libtpu is installed for the AOT tests; CPU runs must not probe for TPUs

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def config_module(name: str):
    """configs/<name>.py as a module (`name` with or without .py), as ml_collections' --config loads it."""
    name = name.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(name: str, preset: str = "smoke"):
    """configs/<name>.py:<preset>, as `--config=configs/<name>.py:<preset>` gives it (tests: `from conftest
    import load_config`)."""
    return config_module(name).get_config(preset)


@pytest.fixture(scope="session")
def smollm():
    """The real SmolLM2-135M-Instruct (our loader): (cfg, params, tokenizer)."""
    from seal_jax.weights import load_model
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_hf():
    """The same GGUF through transformers' own loader, float32, eval mode (its conversion cached as safetensors:
    `bench.load_hf_torch_model`)."""
    from seal_jax.cli.bench import load_hf_torch_model
    from seal_jax.weights import resolve_model_path
    return load_hf_torch_model(resolve_model_path("smollm2-135m"))


@pytest.fixture(scope="session")
def base():
    """Random weights of the `tiny` preset (seed 0), shared by the inner-loop and sharding tests."""
    import jax
    from seal_jax.model.config import preset
    from seal_jax.model.transformer import init_params
    return init_params(jax.random.PRNGKey(0), preset("tiny"))
