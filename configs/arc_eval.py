"""Evaluate few-shot ARC: ICL, TTT with the default self-edit, the oracle configuration, sampled self-edits.

    python -m seal_jax.evaluate --config=configs/arc_eval.py:demo --out=runs/arc_eval
    python -m seal_jax.evaluate --config=configs/arc_eval.py:demo --out=runs/arc_eval_rl \
        --config.generator_workdir=runs/arc_demo --config.data.eval_ids=6150a2bd,5582e5ca
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location("arc_config", os.path.join(os.path.dirname(__file__), "arc.py"))
arc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arc)


def get_config(arg: str = "demo"):
    c = arc.get_config(arg)
    c.generator_workdir = ""  # a seal_jax.train workdir whose newest checkpoint writes the self-edits
    c.eval.conditions = "icl,ttt_default,oracle,self_edit"
    return c
