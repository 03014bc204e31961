"""Benchmarks that print one JSON line each, peers measured in the same process run.

    python -m seal_jax.bench generate [--model smollm2-135m] [--max-new-tokens 64]
    python -m seal_jax.bench inner --workload ../shared/bench/inner_workload.json [--edits-per-chunk 4]

Speed on a shared machine is noisy, so every figure that matters is a ratio against a peer timed in the
same run (HF transformers on torch, when torch is installed).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

QUESTIONS = [
    "What is the capital of France?", "Name three colours of the rainbow.", "What is 12 times 12?",
    "Write a haiku about the sea.", "Who wrote Romeo and Juliet?", "Explain photosynthesis in one sentence.",
    "What is the boiling point of water?", "Give me a synonym for happy.", "How many legs does a spider have?",
    "What is the largest planet?", "Translate 'good morning' into French.", "What does a thermometer measure?",
    "Name a famous painting.", "What is the square root of 81?", "Why is the sky blue?", "What is an atom?",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_generate(args) -> dict:
    import jax
    from seal_jax.sampling import SamplingConfig, generate
    from seal_jax.tokenizer import encode_prompts
    from seal_jax.weights import load_model, resolve_model_path

    cfg, params, tok = load_model(args.model)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    result = {"bench": "generate", "model": args.model, "max_new_tokens": args.max_new_tokens,
              "backend": jax.default_backend()}
    for batch in (1, 16):
        prompts = encode_prompts(tok, QUESTIONS[:batch])
        _, cold = _timed(lambda: generate(params, cfg, tok, prompts, sampling))
        out, warm = _timed(lambda: generate(params, cfg, tok, prompts, sampling))
        n = sum(out.num_tokens)
        result[f"b{batch}"] = {"tokens": n, "cold_s": round(cold, 3), "warm_s": round(warm, 3),
                               "tokens_per_s": round(n / warm, 1)}
        peer = _hf_generate(resolve_model_path(args.model), tok, prompts, args.max_new_tokens)
        if peer is not None:
            result[f"b{batch}"]["hf_tokens_per_s"] = round(peer["tokens"] / peer["s"], 1)
            result[f"b{batch}"]["speedup_vs_hf"] = round((n / warm) / (peer["tokens"] / peer["s"]), 2)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def load_hf_torch_model(path: str):
    """The peer: the same weights through transformers (torch, float32), or None without torch."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    import os
    kw = {"gguf_file": os.path.basename(path)} if path.endswith(".gguf") else {}
    where = os.path.dirname(path) if path.endswith(".gguf") else path
    return AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw).eval()


def _hf_generate(path, tok, prompts, max_new_tokens):
    model = load_hf_torch_model(path)
    if model is None:
        return None
    import torch
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        model.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=4, do_sample=False)  # warm-up
        out, dt = _timed(lambda: model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                                do_sample=False, pad_token_id=tok.pad_token_id))
    new = out[:, width:]
    n = 0
    for row in new.tolist():
        n += (row.index(tok.eos_token_id) + 1) if tok.eos_token_id in row else len(row)
    return {"tokens": n, "s": dt}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m seal_jax.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    g = sub.add_parser("generate", help="batched sampling tokens/s, batch 1 and 16, vs HF generate")
    g.add_argument("--model", default="smollm2-135m")
    g.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    result = {"generate": bench_generate}[args.which](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
