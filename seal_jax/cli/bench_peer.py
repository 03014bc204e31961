"""The peer for `bench inner`: SEAL's reference approach, HF transformers + PEFT on torch, one edit at a time.

For each edit: wrap the base in a fresh PEFT LoRA, train with torch AdamW (linear decay, no warm-up,
gradient clipping 1.0: HF Trainer's defaults), batch 1, each sequence padded only to its own length; then
answer the edit's questions greedily with `generate` (questions of one edit batched, left-padded); unload.
"""
from __future__ import annotations

import random
import time


def run_hf_peft(model, tok, workload: dict, seed: int = 0) -> dict:
    """Do the workload's work; return {"answers": [[str]], "seconds": float}. `model`: HF causal LM, eval."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = workload["lora"]
    config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
                        target_modules=list(lora["targets"]), bias="none", task_type="CAUSAL_LM")
    rng = random.Random(seed)
    t0 = time.perf_counter()
    answers = []
    for edit in workload["edits"]:
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
        seqs = [torch.tensor([tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]]) for t in edit["train"]]
        params = [p for p in peft_model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=workload["lr"], weight_decay=0.0)
        total = workload["epochs"] * len(seqs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (total - s) / total))
        peft_model.train()
        for _ in range(workload["epochs"]):
            for i in rng.sample(range(len(seqs)), len(seqs)):
                loss = peft_model(input_ids=seqs[i], labels=seqs[i]).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
        peft_model.eval()
        prompts = [tok.apply_chat_template([{"role": "user", "content": workload["question_prompt"].format(
            question=q["question"])}], add_generation_prompt=True, tokenize=False) for q in edit["questions"]]
        tok.padding_side = "left"
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = peft_model.generate(**batch, max_new_tokens=workload["max_new_tokens"], do_sample=False,
                                      pad_token_id=tok.pad_token_id)
        answers.append(tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))
        model = peft_model.unload()
    return {"answers": answers, "seconds": time.perf_counter() - t0}
