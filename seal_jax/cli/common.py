"""What every command-line tool shares: the absl runner, the config flag, and the model a config names.

JAX logs backend probing ("Unable to initialize backend 'tpu'") at INFO through absl's handler; a person at
a terminal wants our progress bars and results, so absl's threshold is WARNING unless `--verbosity` says
otherwise. Our own loggers (`seal_jax.*`) stay at INFO.

Every tool but `bench` (which reports compile time) keeps XLA's persistent compilation cache, so a resumed or
repeated run loads its compiled programs instead of compiling them again (`use_compile_cache`).

`train` and `evaluate` start the same way, through `start_run`: multi-host set-up (jax.distributed, the other
processes quiet), the command's own checks, the mesh `c.mesh` names, the model loaded straight onto it. Nothing
is written before all of that has worked, so a start that fails leaves nothing that blocks the corrected rerun.

Mistakes print one line, `error: <what is wrong and what to do>`, and exit 1 with no traceback: a flag or
config that does not parse (`parse_flags`), a missing --config, and any `StartError` (a config, data, mesh or
model problem found while starting). Other exceptions are bugs and keep their traceback; `--verbosity=1` shows
the traceback behind a StartError too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from absl import app, flags
from absl import logging as absl_logging
from jax.sharding import Mesh
from ml_collections import ConfigDict, FrozenConfigDict, config_flags
from ml_collections.config_flags import config_path

from seal_jax.model.config import preset
from seal_jax.model.transformer import init_params
from seal_jax.runtime import sharding
from seal_jax.runtime.topology import default_to_cpu
from seal_jax.tokenizer import load_tokenizer
from seal_jax.weights import load_model, resolve_model_path


log = logging.getLogger("seal_jax.cli")

# XLA:CPU allocates each step's large buffers afresh, and the kernel zero-fills their 4 KB pages on first touch:
# a demo-shape packed step faulted in 926 MB, 0.6-0.7 s of kernel time. glibc's hugetlb tunable maps them with
# transparent huge pages: ~1,000 faults, 0.15 s (docs/benchmarks.md). glibc reads it at process start, so
# `make` sets it and `run` only says so.
CPU_MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"

COMPILE_CACHE = os.path.join("~", ".cache", "seal_jax", "xla")
COMPILE_CACHE_BYTES = 4 << 30  # least recently used entries are evicted past this


def use_compile_cache() -> None:
    """XLA's persistent compilation cache in $JAX_COMPILATION_CACHE_DIR (JAX reads it; an empty value turns
    the cache off), else in COMPILE_CACHE, capped at COMPILE_CACHE_BYTES. A resumed run after preemption
    recompiles nothing it compiled before."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(COMPILE_CACHE))
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)


class StartError(Exception):
    """A run that cannot start as asked: a config, data, mesh or model problem its user fixes. `run` prints
    `error: <message>` (one line) and exits 1."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (KeyError's repr quotes and nested exceptions unwrapped)."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return " ".join(text.split())


@contextlib.contextmanager
def start_step(what: str, errors: tuple = (FileNotFoundError, ValueError)):
    """`errors` raised inside are the user's to fix (a missing file, a value that does not fit): StartError
    "<what>: <message>". Only around start-up steps; the same exception types later are bugs."""
    try:
        yield
    except errors as e:
        raise StartError(f"{what}: {one_line(e)}") from e


def run(main: Callable, define_flags: Optional[Callable] = None, compile_cache: bool = True,
        runs_steps: bool = True) -> None:
    """absl's app.run(main) with this package's logging defaults and one-line errors (`parse_flags`,
    `StartError`); `define_flags` first (modules that are not the program never define flags, so tests and other
    tools can import them). runs_steps: the command runs models here (on a CPU it says when
    CPU_MALLOC_TUNABLE is missing); `plan` only compiles."""
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
        if (runs_steps and os.environ.get("JAX_PLATFORMS") == "cpu" and sys.platform == "linux"
                and "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", "")):
            log.info("running on the CPU: set GLIBC_TUNABLES=%s before the command to spare XLA's buffers most "
                     "of their page faults (`make demo` sets it; docs/benchmarks.md)", CPU_MALLOC_TUNABLE)
        try:
            return main(argv)
        except StartError as e:
            if absl_logging.get_verbosity() >= absl_logging.DEBUG:
                raise
            raise SystemExit(f"error: {e}") from None

    app.run(quiet_main, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with every mistake as one line: an unknown flag or a bad value, a config file that
    is missing or raises ValueError (an unknown preset), a --config.<field> override the config does not have,
    and no --config where a command defines it (`define_config_flag`)."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        raise SystemExit(f"error: {flag_error(str(e))}") from None
    except (AttributeError, KeyError) as e:
        if not _raised_in(e, config_path.__file__):  # not an override's path: a bug, with its traceback
            raise
        raise SystemExit(f"error: {override_error(e, argv)}") from None
    if "config" in flags.FLAGS:  # defined by define_config_flag
        value = flags.FLAGS["config"].value
        if value is None:
            raise SystemExit("error: --config is required: an experiment config, e.g. "
                             "--config=configs/knowledge.py:smoke (configs/*.py[:smoke|demo|paper])")
        if not isinstance(value, (ConfigDict, FrozenConfigDict)):  # ml_collections defers a missing file's error
            path = config_flags.get_config_filename(flags.FLAGS["config"])
            raise SystemExit(f"error: --config={path}: no such config file; pass configs/<file>.py[:preset] "
                             f"(relative to {os.getcwd()} or absolute)")
    return rest


def flag_error(message: str) -> str:
    """absl's message for a flag that does not parse, on one line. A config file whose get_config raised a
    ValueError (ml_collections embeds the traceback) becomes "--config=<arg>: <the ValueError's message>"; any
    other exception there keeps its traceback (a bug in the config file)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines and lines[-1].startswith("ValueError: "):
        head = lines[0].split(": Error whilst parsing config file")[0]
        return f"{head.removeprefix('flag ')}: {lines[-1].removeprefix('ValueError: ')}"
    if len(lines) > 1:
        return message
    return f"{lines[0].removeprefix('flag ') if lines else message} (--helpshort lists the flags)"


def override_error(e: BaseException, argv: list[str]) -> str:
    """ml_collections' KeyError for an override naming no config field, as "--config.a.b: ..."."""
    text = one_line(e)  # "'iterationz' Did you mean "iterations" instead of "iterationz"?"
    key = text.split("'")[1] if text.count("'") >= 2 else ""
    named = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a.split("=")[0].split(".")]
    hint = text.split(" ", 1)[1] if " " in text else ""
    return f"{named[0] if named else '--config.' + key}: the config has no field {key!r}. {hint}".strip()


def _raised_in(e: BaseException, filename: str) -> bool:
    """Whether `filename` is on the traceback of `e` (or of the exception it was raised while handling)."""
    while e is not None:
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == filename:
                return True
            tb = tb.tb_next
        e = e.__context__
    return False


def define_config_flag(help_text: str = "Experiment config file (configs/*.py[:preset]).") -> None:
    """--config=configs/<file>.py[:preset] (required), overridable field by field (--config.rl.iterations=2);
    listed in the program's --help."""
    config_flags.DEFINE_config_file("config", None, f"(required) {help_text} Any field can be overridden: "
                                    "--config.<section>.<field>=value.", lock_config=True)
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["config"])  # absl's name for __main__


@dataclasses.dataclass(frozen=True)
class Started:
    """What `start_run` gives a command: the mesh (None: one device), the model on it, and its checks' result."""
    mesh: Optional[Mesh]
    cfg: Any
    params: Any
    tok: Any
    checked: Any


def start_run(c, check: Callable[[], Any] = lambda: None) -> Started:
    """The start every config-driven run shares (train, evaluate), in order:

    1. multi-host set-up: jax.distributed before any other JAX call, processes other than 0 log warnings only;
    2. `check()`: the command's checks of its config and data (fast; before anything is loaded);
    3. the mesh c.mesh names (edit=0: none, one device);
    4. the model c.model names, each device receiving only its shard.

    A config, mesh or load problem raises StartError naming it; nothing is written here."""
    sharding.initialize()
    if jax.process_index() > 0:  # one terminal's worth of logs: info from process 0 only
        logging.getLogger("seal_jax").setLevel(logging.WARNING)
    with start_step("config"):
        checked = check()
    with start_step("building the mesh"):
        mesh = mesh_for(c.mesh)
    with start_step("loading the model"):
        cfg, params, tok = build_model(c.model, c.seed, mesh)
    return Started(mesh, cfg, params, tok, checked)


def mesh_for(mesh_section) -> Optional[Mesh]:
    """The ("edit", "fsdp", "tp") mesh of a config's `mesh` section; None for edit=0 (one device)."""
    if mesh_section.edit == 0:
        return None
    mesh = sharding.make_mesh(mesh_section.edit, mesh_section.fsdp, mesh_section.tp)
    log.info("mesh %s over %d devices", dict(mesh.shape), mesh.size)
    return mesh


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
    """The architecture with the config's run-time choices: per-layer remat, attention query chunks, and the
    packed rows' attention kernel."""
    return cfg.replace(remat=model_section.remat, query_chunk=model_section.get("query_chunk", 0),
                       attention_impl=model_section.get("attention_impl", "auto"))
