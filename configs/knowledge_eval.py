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
    # conditions (domains/knowledge/evaluation.py): base | passage | self_edit_base (the base model writes) | file
    # (completions_file, first self_edits non-empty ones) | self_edit_rl (generator_workdir's model writes and
    # learns) | self_edit (the generator writes, `learner` learns). mode: single and/or cpt (comma-separated).
    # CPT as SEAL's CPT.sh: k=5 whole completions per passage (passage appended per completion), one LoRA over
    # cpt_n passages (0: all), 3 epochs, lr 1e-3 (passage only 1e-4), batch 8 (SEAL: 4 x accumulation 2).
    # continual as SEAL's continual_self_edits.sh: continual_runs runs, run j drawing continual_sequences
    # sequences of continual_k passages with random.sample (seed continual_seed + j) from data.eval_source (else
    # the evaluated passages); the mean of the runs' means and of their standard deviations (average_results.py).
    c = common.evaluation(common.sibling("knowledge").get_config(arg), conditions="base,passage,self_edit",
                          mode="single", cpt_n=0, self_edits=1,
                          learner="base",  # base | generator: which weights the inner update starts from
                          completions_file="", cpt_k=5, cpt_epochs=3, cpt_lr=1e-3, cpt_passage_lr=1e-4,
                          cpt_batch_size=8, continual=False, continual_condition="self_edit", continual_sequences=2,
                          continual_k=3, continual_seed=42, continual_runs=1)
    # evaluated passages: SEAL's subset of data.eval_source when set (:paper: its 200), else
    # data.source[offset:][:limit]; the demo corpus' held-out passages are its last 4
    c.data.offset = 42 if common.preset_of(arg) == "demo" else 0
    if common.preset_of(arg) == "paper":
        # SEAL's Table 2: every row, single passage (k=1, accuracy per passage) and CPT over the 200 passages;
        # `file` needs SEAL's GPT-4.1 completions (--config.eval.completions_file), `self_edit_rl` an RL run
        # (--config.generator_workdir); a row without its input is skipped and named in eval.json.
        c.eval.update(conditions="base,passage,self_edit_base,file,self_edit_rl", mode="single,cpt",
                      continual_sequences=8, continual_k=8,
                      continual_runs=8)  # SEAL: 8 jobs (INDEX 0..7, seeds 42..49) x 8 sequences = 64
    return c
