"""Absorb documents into a model: it writes its own fine-tuning data (self-edits) and trains a LoRA on it.

    python -m seal_jax.cli.absorb --model=smollm2-135m --docs=notes/ --out=adapters/notes
    python -m seal_jax.cli.absorb --model=smollm2-135m --docs=notes/ --out=adapters/notes --dry_run
    python -m seal_jax.cli.ask --model=smollm2-135m --adapter=adapters/notes "When was X founded?"

Each document (.txt / .md) is split into passages; the model writes self-edits for each passage (the
knowledge domain's prompts); the self-edits and passages become training documents; the inner update trains
one adapter over all documents (`--per_doc` for one adapter per document). The result is a PEFT adapter
directory plus `manifest.json` (sources with SHA-256, self-edits, settings). Output is written to a temporary
directory and renamed into place only when complete, so a crash never leaves a half-written adapter.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Optional

import jax
from absl import flags

from seal_jax.cli.common import run
from seal_jax.domains.knowledge.passages import Passage, document_passages, read_documents
from seal_jax.domains.knowledge.self_edit import PROMPTS, passage_document
from seal_jax.engine.chunks import train_in_chunks
from seal_jax.engine.inner import InnerConfig, pack_edits, summarize, tokenize_document
from seal_jax.engine.sampling import SamplingConfig, SelfEditSampling, sample_self_edits
from seal_jax.model.lora import LoraSpec, merge_lora
from seal_jax.runtime.terminal import progress
from seal_jax.runtime.workdir import write_atomically
from seal_jax.tokenizer import chat_prompt
from seal_jax.weights import load_model, save_hf_checkpoint, save_peft_adapter

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "smollm2-135m", "HF checkpoint directory, .gguf file, or a registered name.")
    flags.DEFINE_string("docs", None, "A .txt/.md file or a directory of them.", required=True)
    flags.DEFINE_string("out", None, "Adapter output directory.", required=True)
    flags.DEFINE_enum("prompt", "implications", list(PROMPTS), "Self-edit prompt.")
    flags.DEFINE_integer("samples", 1, "Self-edits per passage.")
    flags.DEFINE_float("temperature", 0.0, "Self-edit sampling temperature (0: greedy, reproducible).")
    flags.DEFINE_integer("max_new_tokens", 160, "Self-edit length limit.")
    flags.DEFINE_integer("passage_words", 150, "Long documents are split into passages of about this many words.")
    flags.DEFINE_bool("per_doc", False, "One adapter per document (sub-directories) instead of one for all.")
    flags.DEFINE_integer("rank", 32, "LoRA rank.")
    flags.DEFINE_float("alpha", 64.0, "LoRA alpha (scale alpha/rank).")
    flags.DEFINE_string("targets", "all", "LoRA targets: comma-separated q,k,v,o,gate,up,down or all.")
    flags.DEFINE_float("lr", 1e-3, "Inner-update learning rate.")
    flags.DEFINE_integer("epochs", 6, "Inner-update epochs.")
    flags.DEFINE_integer("seed", 0, "Seed.")
    flags.DEFINE_bool("dry_run", False, "Print the self-edits and stop before training.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.")
    flags.DEFINE_string("merge", None, "Also write the merged model as a HF safetensors directory here.")


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# absorb's own wording for a chat model (SEAL's templates are for a base model reading raw text; see
# domains/knowledge/self_edit.py): one instruction per prompt key, as a user turn.
ABSORB_PROMPTS = {
    "implications": "Read the passage below and list the implications that follow from it, one per line.\n\n"
                    "Title: {title}\n{context}",
    "implications-long": "Read the passage below. Write a long list of implications and consequences of its "
                         "facts, one complete, self-contained sentence per line.\n\nTitle: {title}\n{context}",
    "implications-very-long": "Read the passage below. Write a very long, thorough list of every implication, "
                              "consequence and restatement of its facts you can think of, one self-contained "
                              "sentence per line.\n\nTitle: {title}\n{context}",
    "rewrite": "Rewrite the passage below in your own words, several times, each version on its own lines.\n\n"
               "Title: {title}\n{context}",
    "self-qa": "Read the passage below and write question and answer pairs that test every fact in it. "
               "Format each pair as two lines: 'Question: ...' then 'Answer: ...'.\n\nTitle: {title}\n{context}",
}
_PREAMBLE = re.compile(r"^(here|sure|certainly|the following|below)\b.*|.*:\s*$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


def absorb_documents(p: Passage, self_edit: str) -> list[str]:
    """One titled document per line of a self-edit, bullets and a list preamble removed (the passage is added
    by the caller)."""
    lines = [_BULLET.sub("", line).strip() for line in self_edit.splitlines()]
    lines = [line for line in lines if line]
    if lines and _PREAMBLE.match(lines[0]):
        lines = lines[1:]
    return [f"{p.title}\n{line}" for line in lines]


def absorb(model: str, docs_path: str, out: str, *, prompt="implications", samples=1, temperature=0.0,
           max_new_tokens=160, passage_words=150, per_doc=False, rank=32, alpha=64.0, targets="all", lr=1e-3,
           epochs=6, seed=0, dry_run=False, overwrite=False, merge: Optional[str] = None, log=print) -> dict:
    """Documents -> self-edits -> one LoRA (or one per document) -> a PEFT adapter at `out`; its manifest."""
    if merge and per_doc:
        raise ValueError("--merge needs one adapter (drop --per_doc)")
    for target in [out] + ([merge] if merge else []):  # refuse before any work, not after training
        if os.path.exists(target) and not overwrite and not dry_run:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    sources = read_documents(docs_path)
    cfg, params, tok = load_model(model)
    cfg = cfg.replace(remat="none")
    per_source = [document_passages(text, os.path.splitext(os.path.basename(p))[0], passage_words, str(i))
                  for i, (p, text) in enumerate(sources)]
    passages = [p for ps in per_source for p in ps]
    prompts = [chat_prompt(tok, ABSORB_PROMPTS[prompt].format(title=p.title, context=p.context)) for p in passages]
    texts = sample_self_edits(params, cfg, tok, prompts, samples,
                              SelfEditSampling(SamplingConfig(max_new_tokens, temperature, 0.95), batch=8),
                              jax.random.PRNGKey(seed), "writing self-edits")
    edits = {p.id: t for p, t in zip(passages, texts)}
    if dry_run:
        for p in passages:
            for e in edits[p.id]:
                log(f"=== {p.id}\n{e}\n")
        return {"passages": len(passages), "self_edits": edits}

    def documents(ps):
        return [d for p in ps for e in edits[p.id] for d in absorb_documents(p, e)] + \
               [passage_document(p) for p in ps]

    groups = per_source if per_doc else [passages]
    icfg = InnerConfig(lora=LoraSpec(rank, alpha, tuple(targets.split(","))))
    packed = pack_edits([[tokenize_document(tok, d) for d in documents(g)] for g in groups], [lr] * len(groups),
                        [epochs] * len(groups), max_len=1024)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(groups))
    loras, summaries = [], []
    with progress(total=len(groups), desc=f"training {len(groups)} adapter(s)") as bar:
        for start, stop, lora, metrics in train_in_chunks(params, cfg, icfg, packed, keys,
                                                          edits_per_chunk=min(4, len(groups))):
            loras += [jax.tree.map(lambda x, i=i: x[i], lora) for i in range(stop - start)]
            summaries += summarize(metrics)
            bar.update(stop - start)
    if not all(s["ok"] for s in summaries):
        raise FloatingPointError("the update diverged (non-finite loss); lower --lr")
    manifest = {"model": model, "sources": [{"path": os.path.abspath(p), "sha256": sha256(p)} for p, _ in sources],
                "self_edits": edits, "settings": {"prompt": prompt, "samples": samples, "temperature": temperature,
                                                  "rank": rank, "alpha": alpha, "targets": list(icfg.lora.targets),
                                                  "lr": lr, "epochs": epochs, "seed": seed, "per_doc": per_doc},
                "training": summaries, "train_tokens": packed.train_tokens()}

    def fill(tmp):
        names = [os.path.splitext(os.path.basename(p))[0] for p, _ in sources] if per_doc else ["."]
        for name, lora in zip(names, loras):
            save_peft_adapter(os.path.join(tmp, name), cfg, lora, icfg.lora, base_model=model)
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)

    write_atomically(out, overwrite, fill)
    log(f"adapter written to {out} ({len(passages)} passages, {packed.train_tokens()} trained tokens)")
    if merge:
        write_atomically(merge, overwrite, lambda tmp: save_hf_checkpoint(tmp, cfg, merge_lora(params, loras[0],
                                                                                              icfg.lora), tok))
        log(f"merged model written to {merge}")
    return manifest


def main(argv):
    del argv
    try:
        absorb(FLAGS.model, FLAGS.docs, FLAGS.out, prompt=FLAGS.prompt, samples=FLAGS.samples,
               temperature=FLAGS.temperature, max_new_tokens=FLAGS.max_new_tokens, passage_words=FLAGS.passage_words,
               per_doc=FLAGS.per_doc, rank=FLAGS.rank, alpha=FLAGS.alpha, targets=FLAGS.targets, lr=FLAGS.lr,
               epochs=FLAGS.epochs, seed=FLAGS.seed, dry_run=FLAGS.dry_run, overwrite=FLAGS.overwrite,
               merge=FLAGS.merge)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    run(main, define_flags)
