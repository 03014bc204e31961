"""Absorb documents into a model: it writes its own fine-tuning data (self-edits) and trains a LoRA on it.

    python -m seal_jax.absorb --model=smollm2-135m --docs=notes/ --out=adapters/notes
    python -m seal_jax.absorb --model=smollm2-135m --docs=notes/ --out=adapters/notes --dry-run
    python -m seal_jax.ask --model=smollm2-135m --adapter=adapters/notes "When was X founded?"

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
import shutil
import tempfile
from typing import Optional

from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (modules import each other)."""
    flags.DEFINE_string("model", "smollm2-135m", "HF checkpoint directory, .gguf file, or a registered name.")
    flags.DEFINE_string("docs", None, "A .txt/.md file or a directory of them.", required=True)
    flags.DEFINE_string("out", None, "Adapter output directory.", required=True)
    flags.DEFINE_enum("prompt", "implications", ["implications", "implications-long", "implications-very-long",
                                                 "rewrite", "self-qa"], "Self-edit prompt.")
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


def read_documents(path: str) -> list[tuple[str, str]]:
    """[(path, text)] of the .txt/.md files at `path` (a file or a directory, sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".txt", ".md")))
        if not files:
            raise FileNotFoundError(f"{path}: no .txt or .md files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"documents {path!r}: no such file or directory")
    docs = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read().strip()
        if not text:
            raise ValueError(f"{f}: the document is empty")
        docs.append((f, text))
    return docs


def split_passages(text: str, title: str, words: int, source: str = ""):
    """Passages of at most about `words` words on paragraph boundaries; a paragraph longer than that is split
    on sentence boundaries (then on words). A leading markdown heading is the title. Ids are
    `{source}:{title}#{i}`, so two files with the same heading never share a passage id."""
    from seal_jax.domains.knowledge import Passage
    m = re.match(r"^#+\s*(.+)\n", text)
    if m:
        title, text = m.group(1).strip(), text[m.end():]
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    paras = [piece for p in paras for piece in _split_long(p, words)]
    chunks, cur = [], []
    for p in paras:
        if cur and sum(len(x.split()) for x in cur) + len(p.split()) > words:
            chunks.append(" ".join(cur))
            cur = []
        cur.append(p)
    if cur:
        chunks.append(" ".join(cur))
    return [Passage(f"{source}:{title}#{i}" if source else f"{title}#{i}", title, c, ()) for i, c in enumerate(chunks)]


def _split_long(paragraph: str, words: int) -> list[str]:
    """A paragraph of more than `words` words as pieces of at most `words`, on sentence ends where possible."""
    if len(paragraph.split()) <= words:
        return [paragraph]
    pieces, cur = [], []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        w = sentence.split()
        while len(w) > words:  # one sentence longer than a passage: cut it on words
            pieces.append(" ".join(w[:words]))
            w = w[words:]
        if cur and len(cur) + len(w) > words:
            pieces.append(" ".join(cur))
            cur = []
        cur += w
    if cur:
        pieces.append(" ".join(cur))
    return pieces


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_atomically(out: str, overwrite: bool, fill) -> None:
    """Call fill(tmp_dir), then move tmp_dir to `out` (replacing it only with overwrite)."""
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".absorb-", dir=parent)
    try:
        fill(tmp)
        if os.path.exists(out):
            old = tmp + ".old"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def absorb(model: str, docs_path: str, out: str, *, prompt="implications", samples=1, temperature=0.0,
           max_new_tokens=160, passage_words=150, per_doc=False, rank=32, alpha=64.0, targets="all", lr=1e-3,
           epochs=6, seed=0, dry_run=False, overwrite=False, merge: Optional[str] = None, log=print) -> dict:
    import jax
    from seal_jax.domains import knowledge as K
    from seal_jax.engine.inner import InnerConfig, pack_edits, summarize, tokenize_document, train_in_chunks
    from seal_jax.knowledge_rl import self_edit_prompt
    from seal_jax.model.lora import LoraSpec, merge_lora
    from seal_jax.engine.sampling import SamplingConfig, generate_in_batches
    from seal_jax.weights import load_model, save_hf_checkpoint, save_peft_adapter
    from tqdm.auto import tqdm

    if merge and per_doc:
        raise ValueError("--merge needs one adapter (drop --per_doc)")
    for target in [out] + ([merge] if merge else []):  # refuse before any work, not after training
        if os.path.exists(target) and not overwrite and not dry_run:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    sources = read_documents(docs_path)
    cfg, params, tok = load_model(model)
    cfg = cfg.replace(remat="none")
    per_source = [split_passages(text, os.path.splitext(os.path.basename(p))[0], passage_words, str(i))
                  for i, (p, text) in enumerate(sources)]
    passages = [p for ps in per_source for p in ps]
    prompts = [self_edit_prompt(tok, p, prompt) for p in passages for _ in range(samples)]
    texts = generate_in_batches(params, cfg, tok, prompts, SamplingConfig(max_new_tokens, temperature, 0.95),
                                8, jax.random.PRNGKey(seed), "writing self-edits")
    edits = {p.id: texts[i * samples:(i + 1) * samples] for i, p in enumerate(passages)}
    if dry_run:
        for p in passages:
            for e in edits[p.id]:
                log(f"=== {p.id}\n{e}\n")
        return {"passages": len(passages), "self_edits": edits}

    def documents(ps):
        return [d for p in ps for e in edits[p.id] for d in K.self_edit_documents(p, e, prompt)[:-1]] + \
               [f"{p.title}\n{p.context}" for p in ps]

    groups = per_source if per_doc else [passages]
    icfg = InnerConfig(lora=LoraSpec(rank, alpha, tuple(targets.split(","))))
    packed = pack_edits([[tokenize_document(tok, d) for d in documents(g)] for g in groups], [lr] * len(groups),
                        [epochs] * len(groups), max_len=1024)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(groups))
    loras, summaries = [], []
    bar = tqdm(total=len(groups), desc=f"training {len(groups)} adapter(s)", leave=False)
    for start, stop, lora, metrics in train_in_chunks(params, cfg, icfg, packed, keys,
                                                      edits_per_chunk=min(4, len(groups))):
        loras += [jax.tree.map(lambda x, i=i: x[i], lora) for i in range(stop - start)]
        summaries += summarize(metrics)
        bar.update(stop - start)
    bar.close()
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
    from seal_jax.cli import run as run_cli
    run_cli(main, define_flags)
