"""Generate text with a model: `python -m seal_jax.cli.generate --model=smollm2-135m --prompt="..."`.

The chat template is applied unless --raw; --adapter adds a PEFT LoRA adapter directory.
"""
from __future__ import annotations

import time

import jax
from absl import flags

from seal_jax.cli.common import run, start_step
from seal_jax.engine.sampling import SamplingConfig, generate
from seal_jax.tokenizer import encode_prompts
from seal_jax.weights import load_model, load_peft_adapter

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", "smollm2-135m", "HF checkpoint directory, .gguf file, or a registered name.")
    flags.DEFINE_multi_string("prompt", None, "Prompt text; repeat the flag for a batch.", required=True)
    flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate at most.")
    flags.DEFINE_float("temperature", 0.0, "0 for greedy decoding.")
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_bool("raw", False, "Feed the prompt as raw text, without the chat template.")
    flags.DEFINE_string("adapter", None, "Optional PEFT LoRA adapter directory.")


def main(argv):
    del argv
    with start_step("loading the model"):
        cfg, params, tok = load_model(FLAGS.model)
    lora, scale = None, 0.0
    if FLAGS.adapter:
        with start_step("loading the adapter"):
            lora, spec = load_peft_adapter(FLAGS.adapter, cfg)
        scale = spec.scale
    prompts = encode_prompts(tok, FLAGS.prompt, chat=not FLAGS.raw)
    sampling = SamplingConfig(FLAGS.max_new_tokens, FLAGS.temperature, FLAGS.top_p)
    t0 = time.perf_counter()
    out = generate(params, cfg, tok, prompts, sampling, key=jax.random.PRNGKey(FLAGS.seed), lora=lora, lora_scale=scale)
    dt = time.perf_counter() - t0
    for prompt, text in zip(FLAGS.prompt, out.texts):
        if len(FLAGS.prompt) > 1:
            print(f"### {prompt}")
        print(text)
    print(f"[{sum(out.num_tokens)} tokens in {dt:.1f}s, compile included]", flush=True)


if __name__ == "__main__":
    run(main, define_flags)
