"""Evaluate knowledge incorporation (SEAL's tables) on any passages and any model.

    python -m seal_jax.evaluate --config=configs/knowledge_eval.py:demo --out=runs/eval
    python -m seal_jax.evaluate --config=configs/knowledge_eval.py:demo --out=runs/eval_rl \
        --config.generator_workdir=runs/demo            # self-edits from an RL-trained generator
    python -m seal_jax.evaluate --config=configs/knowledge_eval.py:demo --out=runs/gpt41 \
        --config.eval.conditions=base,passage,file --config.eval.completions_file=synthetic.json
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location("knowledge_config", os.path.join(os.path.dirname(__file__), "knowledge.py"))
knowledge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(knowledge)


def get_config(arg: str = "demo"):
    c = knowledge.get_config(arg)
    c.generator_workdir = ""     # a seal_jax.train workdir: its newest checkpoint writes the self-edits
    c.data.offset = 0
    c.eval.update(conditions="base,passage,self_edit", mode="single", cpt_n=0, self_edits=1,
                  learner="base",               # base | generator: which weights the inner update starts from
                  completions_file="", continual=False, continual_condition="passage")
    if (arg or "demo") == "demo":
        c.data.offset = 42                        # the demo corpus' held-out passages (the last 4)
    return c
