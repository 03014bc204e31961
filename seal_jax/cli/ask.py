"""Ask a model, with absorbed knowledge: `python -m seal_jax.cli.ask --adapter=adapters/notes "question"`.

Several --adapter flags are stacked (their LoRA deltas summed into the weights); --compare prints the base
model's answer beside each adapter's and the stack's.
"""
from __future__ import annotations

import os

from absl import flags

from seal_jax.cli.common import run
from seal_jax.engine.answering import answer_questions
from seal_jax.model.lora import merge_lora
from seal_jax.weights import load_model, load_peft_adapter

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "smollm2-135m", "HF checkpoint directory, .gguf file, or a registered name.")
    flags.DEFINE_multi_string("adapter", [], "PEFT LoRA adapter directory (repeat to stack).")
    flags.DEFINE_bool("compare", False, "Print base vs adapted answers side by side.")
    flags.DEFINE_integer("max_new_tokens", 64, "Answer length limit.")


def answers(model: str, adapters: list[str], questions: list[str], compare: bool, max_new_tokens: int = 64) -> dict:
    """{label: [answer per question]}: 'adapted' (all adapters stacked), plus 'base' and each adapter with compare."""
    cfg, params, tok = load_model(model)
    loaded = []
    for path in adapters:
        if os.path.exists(os.path.join(path, "manifest.json")) and not os.path.exists(
                os.path.join(path, "adapter_config.json")):
            raise FileNotFoundError(f"{path} holds one adapter per document; pass its sub-directories")
        loaded.append((path, *load_peft_adapter(path, cfg)))
    ask = lambda p: answer_questions(p, cfg, tok, questions, max_new_tokens=max_new_tokens).texts
    out = {}
    if compare or not loaded:
        out["base"] = ask(params)
    if compare and len(loaded) > 1:
        for path, lora, spec in loaded:
            out[path] = ask(merge_lora(params, lora, spec))
    if loaded:
        stacked = params
        for _, lora, spec in loaded:
            stacked = merge_lora(stacked, lora, spec)
        out["adapted"] = ask(stacked)
    return out


def main(argv):
    questions = argv[1:]
    if not questions:
        raise SystemExit('usage: python -m seal_jax.cli.ask [--adapter=DIR ...] [--compare] "question" ...')
    try:
        res = answers(FLAGS.model, FLAGS.adapter, questions, FLAGS.compare, FLAGS.max_new_tokens)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    for i, q in enumerate(questions):
        if len(res) == 1 and len(questions) == 1:
            print(next(iter(res.values()))[0])
            continue
        print(f"Q: {q}")
        for label, texts in res.items():
            print(f"  [{label}] {texts[i]}")


if __name__ == "__main__":
    run(main, define_flags)
