"""Train a SEAL generator with ReST-EM: `python -m seal_jax.cli.train --config=configs/knowledge.py:demo --workdir=DIR`.

Any config field can be overridden: `--config.rl.iterations=2 --config.rl.contexts=50 --config.rl.samples=5`.
Re-running the same command in the same workdir resumes where the last run stopped; a different config in
the same workdir is refused.
"""
from __future__ import annotations

import json
import logging
import os

import jax
from absl import flags

from seal_jax.cli.common import build_model, define_config_flag, run
from seal_jax.cli.settings import domain_for, preflight, restem_config
from seal_jax.rl import restem
from seal_jax.runtime import sharding
from seal_jax.runtime.workdir import Workdir

FLAGS = flags.FLAGS
log = logging.getLogger("seal_jax.cli.train")  # not __name__: that is "__main__" under python -m


def define_flags() -> None:
    define_config_flag()
    flags.DEFINE_string("workdir", None, "Run directory (records, metrics, checkpoints).", required=True)


def claim_workdir(wd: Workdir, c) -> None:
    """Write the run's config.json, or refuse a workdir that holds a run with a different config."""
    saved = os.path.join(wd.path, "config.json")
    if os.path.exists(saved):
        with open(saved) as f:
            old = json.load(f)
        if old != json.loads(c.to_json()):
            raise SystemExit(f"{wd.path} holds a run with a different config ({saved}); "
                             "use a new --workdir, or the same flags to resume")
    wd.write_json("config.json", json.loads(c.to_json()))


def train(c, workdir: str) -> dict:
    """The ReST-EM run `c` describes, in `workdir`: its final evaluation's results."""
    domain, config = domain_for(c), restem_config(c)
    preflight(domain)
    wd = Workdir(workdir)
    claim_workdir(wd, c)
    mesh = None
    if c.mesh.edit != 0:
        mesh = sharding.make_mesh(c.mesh.edit, c.mesh.fsdp, c.mesh.tp)
        log.info("mesh %s over %d devices", dict(mesh.shape), mesh.size)
    cfg, params, tok = build_model(c.model, c.seed, mesh)  # with a mesh: loaded straight onto it
    return restem.train(domain, params, cfg, tok, config, wd, mesh=mesh)


def main(argv):
    del argv
    sharding.initialize()  # multi-host: before any other JAX call
    if jax.process_index() > 0:  # one terminal's worth of logs: info from process 0 only
        logging.getLogger("seal_jax").setLevel(logging.WARNING)
    train(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    run(main, define_flags)
