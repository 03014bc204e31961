"""Export the generator a training run produced as a HF checkpoint directory.

    python -m seal_jax.cli.export --workdir=runs/demo --out=runs/demo-generator

Reads the run's `config.json`, rebuilds its model, restores the newest orbax checkpoint (the generator after
the last finished RL iteration) and writes config.json + model.safetensors + tokenizer, which transformers
loads and which every seal-jax command takes as `--model`. Written to a temporary directory and renamed into
place when complete.
"""
from __future__ import annotations

import json
import os

import ml_collections
from absl import flags

from seal_jax.cli.common import build_model, run
from seal_jax.runtime.workdir import restore_generator, write_atomically
from seal_jax.weights.hf import save_hf_checkpoint

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A seal_jax.cli.train run directory.", required=True)
    flags.DEFINE_string("out", None, "Output HF checkpoint directory.", required=True)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.")


def export(workdir: str, out: str, overwrite: bool = False) -> int:
    """Write the newest checkpoint's generator to `out`; returns the number of RL iterations it has had."""
    saved = os.path.join(workdir, "config.json")
    if not os.path.exists(saved):
        raise FileNotFoundError(f"{workdir} is not a seal_jax.cli.train run directory (no config.json)")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    with open(saved) as f:
        c = ml_collections.ConfigDict(json.load(f))
    cfg, params, tok = build_model(c.model, c.seed)
    step, params = restore_generator(workdir, params)
    write_atomically(out, overwrite, lambda tmp: save_hf_checkpoint(tmp, cfg, params, tok))
    return step


def main(argv):
    del argv
    try:
        step = export(FLAGS.workdir, FLAGS.out, FLAGS.overwrite)
    except (FileExistsError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    print(f"generator after {step} RL iterations written to {FLAGS.out}")


if __name__ == "__main__":
    run(main, define_flags)
