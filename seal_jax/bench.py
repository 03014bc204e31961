"""Benchmarks that print one JSON line each, peers measured in the same process run.

    python -m seal_jax.bench generate [--model smollm2-135m] [--max-new-tokens 64]
    python -m seal_jax.bench inner --workload ../shared/bench/inner_workload.json [--edits-per-chunk 4] [--profile DIR]

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
    from seal_jax.engine.sampling import SamplingConfig, generate
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


def load_hf_torch_model(path: str, dtype: str = "float32"):
    """The peer: the same weights through transformers (torch, in `dtype`), or None without torch."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    import os
    kw = {"gguf_file": os.path.basename(path)} if path.endswith(".gguf") else {}
    where = os.path.dirname(path) if path.endswith(".gguf") else path
    return AutoModelForCausalLM.from_pretrained(where, dtype=getattr(torch, dtype), **kw).eval()


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


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    """Measured float32 matmul throughput of this machine through XLA (the MFU denominator)."""
    import jax
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        f(a).block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


WORKLOAD_FIELDS = {"lora": dict, "epochs": int, "lr": (int, float), "batch_size": int, "max_new_tokens": int,
                   "question_prompt": str, "edits": list}


def load_workload(path: str) -> dict:
    """Read and check an inner-loop workload file, naming the first problem before any model is loaded."""
    try:
        with open(path) as f:
            workload = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"cannot read workload {path}: {e}")
    if not isinstance(workload, dict):
        raise SystemExit(f"workload {path}: expected a JSON object, got {type(workload).__name__}")
    problems = [f"'{k}' should be {t.__name__ if isinstance(t, type) else 'a number'}"
                for k, t in WORKLOAD_FIELDS.items() if not isinstance(workload.get(k), t)]
    problems += [f"lora.{k} is missing" for k in ("rank", "alpha", "targets") if k not in (workload.get("lora") or {})]
    raw_edits = workload.get("edits")
    edits = raw_edits if isinstance(raw_edits, list) else []  # not a list: named by the field check above
    for i, e in enumerate(edits):
        if not (isinstance(e, dict) and e.get("train") and all(isinstance(t, str) for t in e["train"])):
            problems.append(f"edits[{i}].train should be a non-empty list of strings")
        elif not (e.get("questions") and all(isinstance(q, dict) and isinstance(q.get("question"), str)
                                             for q in e["questions"])):
            problems.append(f"edits[{i}].questions should be a non-empty list of {{\"question\": ...}} objects")
    if raw_edits == []:
        problems.append("'edits' is empty")
    if problems:
        raise SystemExit(f"workload {path}: " + "; ".join(problems))
    return workload


def run_inner_workload(params, cfg, tok, workload: dict, edits_per_chunk: int, seed: int = 0):
    """The workload's work in seal-jax: pack, train all edits (vmapped, chunked), answer all questions.

    Returns (answers [[str]] per edit, packed edits, {"train_s", "answer_s"}: wall time of each phase).
    """
    import jax
    from seal_jax.engine.inner import InnerConfig, pack_edits, tokenize_document, train_in_chunks
    from seal_jax.model.lora import LoraSpec
    from seal_jax.engine.answering import answer_questions

    lw = workload["lora"]
    icfg = InnerConfig(lora=LoraSpec(lw["rank"], float(lw["alpha"]), tuple(lw["targets"])),
                       batch_size=workload["batch_size"])
    edits = workload["edits"]
    packed = pack_edits([[tokenize_document(tok, t) for t in e["train"]] for e in edits],
                        [workload["lr"]] * len(edits), [workload["epochs"]] * len(edits),
                        batch_size=icfg.batch_size)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(edits))
    answers, phases = [], {"train_s": 0.0, "answer_s": 0.0}
    t0 = time.perf_counter()  # a chunk's training time includes its packing and dispatch
    for start, stop, lora, _ in train_in_chunks(params, cfg, icfg, packed, keys, edits_per_chunk):
        jax.block_until_ready(lora)
        t1 = time.perf_counter()
        rows = [(i - start, q["question"]) for i in range(start, stop) for q in edits[i]["questions"]]
        out = answer_questions(params, cfg, tok, [q for _, q in rows], template=workload["question_prompt"],
                               max_new_tokens=workload["max_new_tokens"], lora=lora, lora_scale=icfg.lora.scale,
                               adapter_of_row=[r for r, _ in rows])
        phases["train_s"] += t1 - t0
        phases["answer_s"] += time.perf_counter() - t1
        it = iter(out.texts)
        answers += [[next(it) for _ in edits[i]["questions"]] for i in range(start, stop)]
        t0 = time.perf_counter()
    return answers, packed, phases


def bench_inner(args) -> dict:
    import jax
    import jax.numpy as jnp
    from seal_jax.weights import load_model, resolve_model_path

    workload = load_workload(args.workload)
    cfg, params, tok = load_model(args.model, dtype=jnp.dtype(args.dtype))
    cfg = cfg.replace(remat=args.remat)
    peer_model = None
    if not args.no_peer:
        from seal_jax.bench_peer import run_hf_peft
        peer_model = load_hf_torch_model(resolve_model_path(args.model), args.dtype)
    run = lambda: run_inner_workload(params, cfg, tok, workload, args.edits_per_chunk)
    _, cold = _timed(run)
    # Rounds alternate seal-jax and the peer, so a burst of load on a shared machine hits both; best of each.
    rounds, peers = [], []
    for _ in range(args.repeats):
        (answers, packed, phases), t = _timed(run)
        rounds.append((t, phases))
        if peer_model is not None:
            peer = run_hf_peft(peer_model, tok, workload)
            peers.append(peer["seconds"])
    warm, phases = min(rounds, key=lambda r: r[0])
    profile = None
    if args.profile:  # one more seal-jax round under jax.profiler: where its wall-clock time goes
        from seal_jax.runtime.profiling import wall_breakdown, xla_op_events
        jax.profiler.start_trace(args.profile)
        try:
            run()
        finally:
            jax.profiler.stop_trace()
        profile = {"trace_dir": args.profile, **wall_breakdown(xla_op_events(args.profile))}
    tokens = packed.train_tokens()
    mean_len = tokens / max(1, int((packed.seq_valid.sum(-1) * packed.epochs).sum()))
    train_flops = 2 * cfg.flops_per_token(int(mean_len)) * tokens  # forward + backward to activations
    peak = matmul_peak_gflops()
    result = {"bench": "inner", "model": args.model, "backend": jax.default_backend(), "remat": cfg.remat,
              "dtype": args.dtype, "edits": len(workload["edits"]), "edits_per_chunk": args.edits_per_chunk,
              "train_tokens": tokens, "padded_shape": list(packed.tokens.shape), "steps": packed.steps,
              "cold_s": round(cold, 2), "warm_s": round(warm, 2), "warm_s_rounds": [round(t, 2) for t, _ in rounds],
              "train_s": round(phases["train_s"], 2), "answer_s": round(phases["answer_s"], 2),
              "answers": answers,
              "matmul_peak_gflops": round(peak, 1), "train_model_gflop": round(train_flops / 1e9, 1),
              # model FLOPs utilisation of the training phase of the best warm round
              "train_mfu": round(train_flops / phases["train_s"] / (peak * 1e9), 3)}
    if peers:
        result["peer_hf_peft_s"] = round(min(peers), 2)
        result["peer_s_rounds"] = [round(t, 2) for t in peers]
        result["speedup_vs_peer"] = round(min(peers) / warm, 2)
        result["peer_answers"] = peer["answers"]
        result["answers_equal_peer"] = sum(a == b for x, y in zip(answers, peer["answers"]) for a, b in zip(x, y))
    if profile is not None:
        result["profile"] = profile
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m seal_jax.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    g = sub.add_parser("generate", help="batched sampling tokens/s, batch 1 and 16, vs HF generate")
    g.add_argument("--model", default="smollm2-135m")
    g.add_argument("--max-new-tokens", type=int, default=64)
    i = sub.add_parser("inner", help="the inner loop (train E edits + answer) vs HF+PEFT one edit at a time")
    i.add_argument("--workload", required=True, help="workload JSON, e.g. ../shared/bench/inner_workload.json")
    i.add_argument("--model", default="smollm2-135m")
    i.add_argument("--edits-per-chunk", type=int, default=4)
    i.add_argument("--remat", choices=["none", "full", "dots"], default="none",
                   help="per-layer remat (default none, as the :demo configs: a 135M model's activations are small)")
    i.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="base weights and compute, for seal-jax and the peer alike (LoRA and Adam stay float32)")
    i.add_argument("--repeats", type=int, default=2, help="warm rounds, alternating seal-jax and the peer; best of each")
    i.add_argument("--no-peer", action="store_true", help="skip the HF transformers + PEFT peer")
    i.add_argument("--profile", metavar="DIR", help="trace one more seal-jax round into DIR (jax.profiler) and "
                   "report its wall-clock time by jitted function and kind of XLA op")
    args = parser.parse_args(argv)
    result = {"generate": bench_generate, "inner": bench_inner}[args.which](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
