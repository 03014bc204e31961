"""Train a SEAL generator with ReST-EM: `python -m seal_jax.train --config=configs/knowledge.py:demo --workdir=DIR`.

Any config field can be overridden: `--config.rl.iterations=2 --config.rl.contexts=50 --config.rl.samples=5`.
Re-running the same command in the same workdir resumes where the last run stopped.
"""
from __future__ import annotations

import json
import logging
import os

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
log = logging.getLogger("seal_jax.train")  # not __name__: that is "__main__" under python -m


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (modules import each other)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:preset]).", lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory (records, metrics, checkpoints).", required=True)


def build_model(mc, seed: int = 0):
    """(cfg, params, tokenizer) from the config's model section; `random:<preset>` for smoke runs."""
    import jax
    import jax.numpy as jnp
    from seal_jax.model.config import preset
    from seal_jax.model.transformer import init_params
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import load_model, resolve_model_path
    dtype = mc.get("dtype", "auto")
    if dtype == "auto":  # bf16 base weights on accelerators, f32 on CPU; LoRA and Adam state are always f32
        dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    dtype = jnp.dtype(dtype)
    if mc.name.startswith("random:"):
        tok = load_tokenizer(resolve_model_path(mc.tokenizer))
        cfg = preset(mc.name.split(":", 1)[1]).replace(vocab_size=len(tok))
        params = init_params(jax.random.PRNGKey(seed), cfg, dtype)
    else:
        cfg, params, tok = load_model(mc.name, dtype)
    return cfg.replace(remat=mc.remat), params, tok


def restore_generator(workdir: str, params) -> tuple[int, dict]:
    """(RL iterations done, generator params) from a run's newest checkpoint; `params` gives the structure."""
    import jax
    import numpy as np
    from seal_jax.runtime.workdir import Workdir
    wd = Workdir(workdir)
    step, state = wd.restore({"params": params, "key": np.asarray(jax.random.PRNGKey(0))})
    wd.close()
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint to take the generator from")
    return step, state["params"]


def domain_module(name: str):
    """The domain's loop: load_data(c), run_iteration(...), final_eval(...)."""
    import importlib
    modules = {"knowledge": "seal_jax.knowledge_rl", "arc": "seal_jax.arc_rl"}
    if name not in modules:
        raise ValueError(f"unknown domain {name!r}; choose one of {sorted(modules)}")
    return importlib.import_module(modules[name])


def say(text: str) -> None:
    """Results for the person at the terminal: printed by process 0 only."""
    import jax
    if jax.process_index() == 0:
        print(text, flush=True)


def run(c, workdir: str) -> dict:
    import jax
    import numpy as np
    from seal_jax.runtime import sharding
    from seal_jax.evaluate import plot_conditions, plot_rl
    from seal_jax.runtime.workdir import Workdir
    domain = domain_module(c.domain)

    wd = Workdir(workdir)
    saved = os.path.join(wd.path, "config.json")
    if os.path.exists(saved):
        with open(saved) as f:
            old = json.load(f)
        if old != json.loads(c.to_json()):
            raise SystemExit(f"{workdir} holds a run with a different config ({saved}); "
                             "use a new --workdir, or the same flags to resume")
    wd.write_json("config.json", json.loads(c.to_json()))
    cfg, params, tok = build_model(c.model, c.seed)
    mesh = None
    if c.mesh.edit != 0:
        mesh = sharding.make_mesh(c.mesh.edit, c.mesh.fsdp, c.mesh.tp)
        params = sharding.shard_params(params, mesh)
        log.info("mesh %s over %d devices", dict(mesh.shape), mesh.size)
    train, held_out = domain.load_data(c)
    key = jax.random.PRNGKey(c.seed)
    initial = params
    step, state = wd.restore({"params": params, "key": np.asarray(key)})
    start = 0
    if step is not None:
        params, start = state["params"], step
        log.info("resumed from the checkpoint after iteration %d", step - 1)
    for it in range(start, c.rl.iterations):
        params, metrics = domain.run_iteration(it, params, cfg, tok, train, c, wd, key, mesh=mesh)
        sharding.check_processes_agree(metrics, f"iteration {it}")
        wd.log_metrics(it, metrics)  # before the checkpoint: a kill in between re-runs the M-step, loses nothing
        wd.save(it + 1, {"params": params, "key": np.asarray(key)})
        say(f"iteration {it}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    result = {"iterations": c.rl.iterations}
    if c.eval.final_eval:
        result = domain.final_eval(initial, params, cfg, tok, held_out, c, jax.random.fold_in(key, 10_000))
        wd.write_json("eval.json", result)
        plots = [plot_conditions(result, os.path.join(wd.path, "eval.png")),
                 plot_rl(wd.metrics_path, os.path.join(wd.path, "rl.png"))]
        wd.log_metrics(c.rl.iterations, {f"eval/{k}": v for k, v in result.items()})
        say(f"held-out results ({len(held_out)} {c.domain} items):")
        for name, v in result.items():
            say(f"  {name:22s} {v:.3f}")
        say("plots: " + ", ".join(p for p in plots if p))
    wd.close()
    say(f"records: {wd.records_path}\nmetrics: {wd.metrics_path}\ntensorboard: {os.path.join(wd.path, 'tb')}")
    return result


def main(argv):
    del argv
    from seal_jax.runtime.sharding import initialize
    initialize()  # multi-host: before any other JAX call
    import jax
    if jax.process_index() > 0:  # one terminal's worth of progress: bars and info logs from process 0 only
        os.environ["TQDM_DISABLE"] = "1"  # read when tqdm is first imported, which is below this line
        logging.getLogger("seal_jax").setLevel(logging.WARNING)
    run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    from seal_jax.cli import run as run_cli
    run_cli(main, define_flags)
