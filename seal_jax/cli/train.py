"""Train a SEAL generator with ReST-EM: `python -m seal_jax.cli.train --config=configs/knowledge.py:demo --workdir=DIR`.

Any config field can be overridden: `--config.rl.iterations=2 --config.rl.contexts=50 --config.rl.samples=5`.
Re-running the same command in the same workdir resumes where the last run stopped; a different config in
the same workdir is refused. The workdir is claimed (its config.json written) only once the config resolves,
the mesh builds and the model loads, so a start that fails leaves nothing that refuses the corrected rerun.
"""
from __future__ import annotations

import json
import logging
import os

from absl import flags

from seal_jax.cli.common import StartError, define_config_flag, run, start_run
from seal_jax.cli.settings import domain_for, preflight, restem_config
from seal_jax.rl import restem
from seal_jax.runtime.workdir import Workdir, check_path

FLAGS = flags.FLAGS
log = logging.getLogger("seal_jax.cli.train")  # not __name__: that is "__main__" under python -m


def define_flags() -> None:
    define_config_flag()
    flags.DEFINE_string("workdir", None, "(required) Run directory (records, metrics, checkpoints); the same "
                        "flags in the same directory resume the run.", required=True)


def check_workdir(path: str, c) -> None:
    """Refuse a workdir that holds a run with a different config (reads only; nothing is written)."""
    saved = os.path.join(check_path(path), "config.json")
    if os.path.exists(saved):
        with open(saved) as f:
            old = json.load(f)
        if old != json.loads(c.to_json()):
            raise StartError(f"{check_path(path)} holds a run with a different config ({saved}); "
                             "use a new --workdir, or the same flags to resume")


def claim_workdir(wd: Workdir, c) -> None:
    """Write the run's config.json, or refuse a workdir that holds a run with a different config."""
    check_workdir(wd.path, c)
    wd.write_json("config.json", json.loads(c.to_json()))


def train(c, workdir: str) -> dict:
    """The ReST-EM run `c` describes, in `workdir`: its final evaluation's results. The workdir is created and
    claimed only after the config, the mesh and the model have all worked."""
    def check():
        domain, config = domain_for(c), restem_config(c)
        preflight(domain)
        check_workdir(workdir, c)  # before loading: a refused workdir costs no model load
        return domain, config

    s = start_run(c, check)
    domain, config = s.checked
    wd = Workdir(workdir)
    claim_workdir(wd, c)
    return restem.train(domain, s.params, s.cfg, s.tok, config, wd, mesh=s.mesh)


def main(argv):
    del argv
    train(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    run(main, define_flags)
