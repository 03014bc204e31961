"""Evaluate few-shot ARC, SEAL's Table 1: ICL, TTT with self-edits before RL, SEAL (self-edits after RL), oracle.

    python -m seal_jax.cli.evaluate --config=configs/arc_eval.py:demo --out=runs/arc_eval
    python -m seal_jax.cli.evaluate --config=configs/arc_eval.py:demo --out=runs/arc_eval_rl \
        --config.generator_workdir=runs/arc_demo --config.data.eval_ids=6150a2bd,5582e5ca
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location("seal_jax_configs_common",
                                               os.path.join(os.path.dirname(__file__), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg: str = "demo"):
    return common.evaluation(common.sibling("arc").get_config(arg), conditions="icl,ttt_no_rl,seal,oracle")
