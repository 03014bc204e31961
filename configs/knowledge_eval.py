"""Evaluate knowledge incorporation (SEAL's tables) on any passages and any model.

    python -m seal_jax.cli.evaluate --config=configs/knowledge_eval.py:demo --out=runs/eval
    python -m seal_jax.cli.evaluate --config=configs/knowledge_eval.py:demo --out=runs/eval_rl \
        --config.generator_workdir=runs/demo            # self-edits from an RL-trained generator
    python -m seal_jax.cli.evaluate --config=configs/knowledge_eval.py:demo --out=runs/gpt41 \
        --config.eval.conditions=base,passage,file --config.eval.completions_file=synthetic.json
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location("seal_jax_configs_common",
                                               os.path.join(os.path.dirname(__file__), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg: str = "demo"):
    c = common.evaluation(common.sibling("knowledge").get_config(arg), conditions="base,passage,self_edit",
                          mode="single", cpt_n=0, self_edits=1,
                          learner="base",  # base | generator: which weights the inner update starts from
                          completions_file="", continual=False, continual_condition="passage")
    # evaluated passages: data.source[offset:][:limit]; the demo corpus' held-out passages are its last 4
    c.data.offset = 42 if common.preset_of(arg) == "demo" else 0
    return c
