"""Benchmarks that print one JSON line each, their peers measured in the same run.

    python -m seal_jax.cli.bench generate [--model=smollm2-135m] [--max_new_tokens=64]
    python -m seal_jax.cli.bench answer [--edits=6] [--rows_per_edit=4] [--max_new_tokens=48] [--repeats=3]
    python -m seal_jax.cli.bench inner --workload=bench/workloads/inner_workload.json [--edits_per_chunk=4]
        [--repeats=2] [--remat=none] [--dtype=float32] [--step_form=vmapped|packed] [--no_peer] [--profile=DIR]
    python -m seal_jax.cli.bench inner --workload=bench/workloads/round_workload.json --edits_per_chunk=12
        --step_form=packed --remat=dots --repeats=1

The workloads (bench/workloads/*.json, described in bench/workloads/README.md) ship with the repository.

Speed on a shared machine is noisy, so every figure that matters is a ratio against a peer timed in the
same run (HF transformers on torch, when torch is installed; `bench_peer.py` for the inner loop).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import shutil
import tempfile
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from seal_jax.cli.bench_peer import run_hf_peft
from seal_jax.cli.common import run
from seal_jax.engine.adapt import AdaptConfig, Request, adapt_and_answer, pack_requests
from seal_jax.engine.chunks import chunk_order, token_slots
from seal_jax.engine.answering import question_prompts
from seal_jax.engine.inner import InnerConfig, tokenize_document
from seal_jax.engine.packed import take
from seal_jax.engine.sampling import SamplingConfig, generate
from seal_jax.model.lora import LoraSpec, init_lora, normalize_targets, stack_loras
from seal_jax.runtime.profiling import wall_breakdown, xla_op_events
from seal_jax.tokenizer import encode_prompts
from seal_jax.weights import load_model, resolve_model_path

FLAGS = flags.FLAGS
BENCHES = ("generate", "answer", "inner")
QUESTIONS = [
    "What is the capital of France?", "Name three colours of the rainbow.", "What is 12 times 12?",
    "Write a haiku about the sea.", "Who wrote Romeo and Juliet?", "Explain photosynthesis in one sentence.",
    "What is the boiling point of water?", "Give me a synonym for happy.", "How many legs does a spider have?",
    "What is the largest planet?", "Translate 'good morning' into French.", "What does a thermometer measure?",
    "Name a famous painting.", "What is the square root of 81?", "Why is the sky blue?", "What is an atom?",
]


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    model: str = "smollm2-135m"
    max_new_tokens: int = 64          # generate: tokens per answer
    workload: Optional[str] = None    # inner: the workload JSON (required)
    edits_per_chunk: int = 4          # inner: edits per vmapped call
    remat: str = "none"               # inner: per-layer remat (none, as the :demo configs)
    dtype: str = "float32"            # inner: base weights and compute, both sides (LoRA and Adam stay float32)
    repeats: int = 2                  # inner: warm rounds, alternating seal-jax and the peer; best of each
    no_peer: bool = False             # inner: skip the HF transformers + PEFT peer
    profile: Optional[str] = None     # inner: trace one more round into this directory
    step_form: str = "vmapped"        # inner: vmapped or packed inner steps (engine/chunks.py)
    edits: int = 6                    # answer: adapters in the stack (the demo's chunk)
    rows_per_edit: int = 4            # answer: questions each adapter answers (the demo's passages have 4)


def define_flags() -> None:
    defaults = BenchOptions()
    flags.DEFINE_string("model", defaults.model, "HF checkpoint directory, .gguf file, or a registered name.")
    flags.DEFINE_integer("max_new_tokens", defaults.max_new_tokens, "generate: tokens per answer.")
    flags.DEFINE_string("workload", None, "inner: workload JSON, e.g. bench/workloads/inner_workload.json or "
                        "bench/workloads/round_workload.json.")
    flags.DEFINE_integer("edits_per_chunk", defaults.edits_per_chunk, "inner: edits per vmapped inner-update call.")
    flags.DEFINE_enum("remat", defaults.remat, ["none", "full", "dots"],
                      "inner: per-layer remat (default none, as the :demo configs: a 135M model's activations are "
                      "small).")
    flags.DEFINE_enum("dtype", defaults.dtype, ["float32", "bfloat16"],
                      "inner: base weights and compute, for seal-jax and the peer alike (LoRA and Adam stay float32).")
    flags.DEFINE_integer("repeats", defaults.repeats,
                         "inner: warm rounds, alternating seal-jax and the peer; best of each.")
    flags.DEFINE_enum("step_form", defaults.step_form, ["vmapped", "packed"],
                      "inner: vmapped steps (every edit at the step's longest document) or packed (real tokens).")
    flags.DEFINE_bool("no_peer", defaults.no_peer, "inner: skip the HF transformers + PEFT peer.")
    flags.DEFINE_integer("edits", defaults.edits, "answer: adapters in the stack.")
    flags.DEFINE_integer("rows_per_edit", defaults.rows_per_edit, "answer: questions each adapter answers.")
    flags.DEFINE_string("profile", None, "inner: trace one more seal-jax round into DIR (jax.profiler) and report its "
                        "wall-clock time by jitted function and kind of XLA op.")


def cpu_model() -> str:
    """The host CPU's model name (`lscpu`'s), which every CPU figure must carry."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_generate(options: BenchOptions) -> dict:
    """Batched greedy sampling, batch 1 and 16: tokens/s, against HF `generate` on the same weights."""
    cfg, params, tok = load_model(options.model)
    sampling = SamplingConfig(max_new_tokens=options.max_new_tokens)
    result = {"bench": "generate", "model": options.model, "max_new_tokens": options.max_new_tokens,
              "backend": jax.default_backend()}
    for batch in (1, 16):
        prompts = encode_prompts(tok, QUESTIONS[:batch])
        _, cold = _timed(lambda: generate(params, cfg, tok, prompts, sampling))
        out, warm = _timed(lambda: generate(params, cfg, tok, prompts, sampling))
        n = sum(out.num_tokens)
        result[f"b{batch}"] = {"tokens": n, "cold_s": round(cold, 3), "warm_s": round(warm, 3),
                               "tokens_per_s": round(n / warm, 1)}
        peer = _hf_generate(resolve_model_path(options.model), tok, prompts, options.max_new_tokens)
        if peer is not None:
            result[f"b{batch}"]["hf_tokens_per_s"] = round(peer["tokens"] / peer["s"], 1)
            result[f"b{batch}"]["speedup_vs_hf"] = round((n / warm) / (peer["tokens"] / peer["s"]), 2)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def bench_answer(options: BenchOptions) -> dict:
    """Answering from adapted models, the knowledge demo's shape (LoRA r = 32 on every projection, `edits`
    adapters, `rows_per_edit` questions each, greedy): decoding from the adapter stack against per-row copies of
    it (`sampling.generate`'s `stack_lora`), alternating `repeats` warm calls, best of each; the same tokens."""
    cfg, params, tok = load_model(options.model)
    spec = LoraSpec(rank=32, alpha=64.0, targets=normalize_targets(["all"]))
    perturb = lambda i, x: x + 0.002 * jax.random.normal(jax.random.PRNGKey(100 + i), x.shape)  # B != 0: it acts
    stack = stack_loras([jax.tree.map(functools.partial(perturb, i), init_lora(jax.random.PRNGKey(i), cfg, spec))
                         for i in range(options.edits)])
    n = options.edits * options.rows_per_edit
    prompts = encode_prompts(tok, [QUESTIONS[i % len(QUESTIONS)] for i in range(n)])
    rows = [i // options.rows_per_edit for i in range(n)]
    sampling = SamplingConfig(max_new_tokens=options.max_new_tokens)
    call = lambda form: generate(params, cfg, tok, prompts, sampling, lora=stack, lora_scale=spec.scale,
                                 adapter_of_row=rows, stack_lora=form)
    result = {"bench": "answer", "model": options.model, "backend": jax.default_backend(), "cpu": cpu_model(),
              "edits": options.edits, "rows": n, "max_new_tokens": options.max_new_tokens}
    times, tokens = {True: [], False: []}, {}
    for form in (True, False):
        tokens[form], cold = _timed(lambda: call(form).tokens)
        result[f"{'stack' if form else 'per_row'}_cold_s"] = round(cold, 2)
    for _ in range(options.repeats):
        for form in (True, False):
            times[form].append(_timed(lambda: call(form))[1])
    result.update(stack_s=round(min(times[True]), 2), per_row_s=round(min(times[False]), 2),
                  per_row_over_stack=round(min(times[False]) / min(times[True]), 2),
                  same_tokens=tokens[True] == tokens[False], peak_rss_mb=round(peak_rss_mb(), 1))
    return result


# transformers' own GGUF conversions, saved as float32 safetensors (SmolLM2-135M: 540 MB)
HF_FROM_GGUF_CACHE = os.path.join("~", ".cache", "seal_jax", "hf-from-gguf")


def load_hf_torch_model(path: str, dtype: str = "float32"):
    """The peer: the same weights through transformers (torch, in `dtype`), or None without torch. A GGUF file
    goes through transformers' own GGUF loader once (~25 s of parsing for SmolLM2), which is then saved as
    safetensors in HF_FROM_GGUF_CACHE, keyed by the file (size, mtime) and the transformers version."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    if not path.endswith(".gguf"):
        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    st = os.stat(path)
    name = f"{os.path.basename(path)}-{st.st_size}-{st.st_mtime_ns}-transformers-{transformers.__version__}"
    cached = os.path.join(os.path.expanduser(HF_FROM_GGUF_CACHE), name)
    if not os.path.exists(os.path.join(cached, "config.json")):
        gguf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                    dtype=torch.float32)
        del gguf.config.quantization_config  # its dequantized tensors, saved as a plain checkpoint
        plain = AutoModelForCausalLM.from_config(gguf.config, dtype=torch.float32)
        plain.load_state_dict(gguf.state_dict())
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(cached))
        plain.save_pretrained(tmp)
        try:
            os.rename(tmp, cached)
        except OSError:  # another process saved it meanwhile: the same tensors
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoModelForCausalLM.from_pretrained(cached, dtype=getattr(torch, dtype)).eval()


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


def training_matmuls(cfg, tokens: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of one layer's training matmuls at `tokens` per step with a frozen base: each projection
    forward (x @ W) and its input gradient (dy @ W^T); LoRA, attention scores and the head left out."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    forward = [(tokens, d, cfg.q_dim), (tokens, d, cfg.kv_dim), (tokens, d, cfg.kv_dim), (tokens, cfg.q_dim, d),
               (tokens, d, f), (tokens, d, f), (tokens, f, d)]
    return forward + [(m, n, k) for m, k, n in forward]


def matmul_gflops(shapes, backend: str = "xla", reps: int = 10) -> float:
    """float32 throughput over `shapes` ((M, K, N) each, timed one at a time, best of 3): what the model's own
    matmuls reach on this host, through XLA or through torch (the peer's oneDNN). The MFU ceiling of a step
    whose time is all matmuls."""
    flops = seconds = 0.0
    for m, k, n in shapes:
        a, b = np.random.randn(m, k).astype(np.float32), np.random.randn(k, n).astype(np.float32)
        if backend == "torch":
            import torch
            a, b = torch.from_numpy(a), torch.from_numpy(b)
            call = lambda: a @ b
        else:
            f, a, b = jax.jit(lambda x, y: x @ y), jnp.asarray(a), jnp.asarray(b)
            call = lambda: f(a, b).block_until_ready()
        call()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                call()
            best = min(best, (time.perf_counter() - t0) / reps)
        flops, seconds = flops + 2 * m * k * n, seconds + best
    return flops / seconds / 1e9


def matmul_peak_gflops(n: int = 2048) -> float:
    """Measured float32 matmul throughput of this machine through XLA (the MFU denominator)."""
    return matmul_gflops([(n, n, n)], reps=3)


WORKLOAD_FIELDS = {"lora": dict, "epochs": int, "lr": (int, float), "batch_size": int, "max_new_tokens": int,
                   "question_prompt": str, "edits": list}


def load_workload(path: Optional[str]) -> dict:
    """Read and check an inner-loop workload file, naming the first problem before any model is loaded."""
    if not path:
        raise SystemExit("bench inner needs --workload=FILE (e.g. bench/workloads/inner_workload.json)")
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


def workload_config(workload: dict, edits_per_chunk: int, step_form: str = "vmapped") -> AdaptConfig:
    """The workload's inner update (LoRA, batch) and answers (greedy, max_new_tokens)."""
    lw = workload["lora"]
    return AdaptConfig(InnerConfig(lora=LoraSpec(lw["rank"], float(lw["alpha"]), tuple(lw["targets"])),
                                   batch_size=workload["batch_size"], step_form=step_form),
                       edits_per_chunk=edits_per_chunk, max_len=2048,
                       answer=SamplingConfig(max_new_tokens=workload["max_new_tokens"]))


def workload_requests(tok, workload: dict, seed: int = 0) -> list[list[Request]]:
    """One request per edit: its training texts, the workload's lr and epochs, its questions."""
    keys = jax.random.split(jax.random.PRNGKey(seed), len(workload["edits"]))
    return [[Request([tokenize_document(tok, t) for t in e["train"]], workload["lr"], workload["epochs"], np.asarray(k),
                     question_prompts(tok, [q["question"] for q in e["questions"]], workload["question_prompt"]))]
            for e, k in zip(workload["edits"], keys)]


def run_inner_workload(params, cfg, tok, workload: dict, config: AdaptConfig) -> tuple[list[list[str]], dict]:
    """The workload's work in seal-jax, through engine.adapt: pack, train all edits (vmapped, chunked), answer.

    Returns (answers [[str]] per edit, {"train_s", "answer_s"}: the wall time of each phase).
    """
    answers, phases = [None] * len(workload["edits"]), {"train_s": 0.0, "answer_s": 0.0}
    for chunk in adapt_and_answer(params, cfg, tok, workload_requests(tok, workload), config, desc="bench"):
        for i, reps in zip(chunk.items, chunk.adapted):
            answers[i] = reps[0].answers
        phases["train_s"] += chunk.train_s
        phases["answer_s"] += chunk.answer_s
    return answers, phases


def bench_inner(options: BenchOptions) -> dict:
    """The inner loop (train E edits + answer their questions), against HF + PEFT one edit at a time."""
    workload = load_workload(options.workload)
    cfg, params, tok = load_model(options.model, dtype=jnp.dtype(options.dtype))
    cfg = cfg.replace(remat=options.remat)
    config = workload_config(workload, options.edits_per_chunk, options.step_form)
    peer_model = None if options.no_peer else load_hf_torch_model(resolve_model_path(options.model), options.dtype)
    run_once = lambda: run_inner_workload(params, cfg, tok, workload, config)
    _, cold = _timed(run_once)
    # Rounds alternate seal-jax and the peer, so a burst of load on a shared machine hits both; best of each.
    rounds, peers = [], []
    for _ in range(options.repeats):
        (answers, phases), t = _timed(run_once)
        rounds.append((t, phases))
        if peer_model is not None:
            peer = run_hf_peft(peer_model, tok, workload)
            peers.append(peer["seconds"])
    warm, phases = min(rounds, key=lambda r: r[0])
    profile = None
    if options.profile:  # one more seal-jax round under jax.profiler: where its wall-clock time goes
        jax.profiler.start_trace(options.profile)
        try:
            run_once()
        finally:
            jax.profiler.stop_trace()
        profile = {"trace_dir": options.profile, **wall_breakdown(xla_op_events(options.profile))}
    requests = workload_requests(tok, workload)
    packed = pack_requests(requests, config)
    order = chunk_order(packed.edit_steps, packed.epoch_tokens())  # as adapt_and_answer chunks them
    packed = take(packed, order)
    tokens = packed.train_tokens()
    slots = token_slots(packed, np.stack([r.key for item in requests for r in item])[order], config.inner,
                        config.edits_per_chunk)
    mean_len = tokens / max(1, int((packed.seq_valid.sum(-1) * packed.epochs).sum()))
    train_flops = 2 * cfg.flops_per_token(int(mean_len)) * tokens  # forward + backward to activations
    peak = matmul_peak_gflops()
    per_edit_steps = -(-packed.seq_valid.sum(-1) // config.inner.batch_size) * packed.epochs  # [E]
    steps = sum(int(per_edit_steps[i:i + config.edits_per_chunk].max())
                for i in range(0, len(per_edit_steps), config.edits_per_chunk))
    step_rows = max(1, slots // max(1, steps))  # token slots of one optimiser step, averaged
    peer_rows = max(1, int(mean_len))  # the peer trains one document at a time
    result = {"bench": "inner", "model": options.model, "backend": jax.default_backend(), "remat": cfg.remat,
              "dtype": options.dtype, "edits": len(workload["edits"]), "edits_per_chunk": options.edits_per_chunk,
              "step_form": options.step_form, "cpu": cpu_model(),
              "train_tokens": tokens, "token_slots": slots, "slots_per_real_token": round(slots / max(1, tokens), 3),
              "padded_shape": list(packed.tokens.shape), "steps": packed.steps,
              "cold_s": round(cold, 2), "warm_s": round(warm, 2), "warm_s_rounds": [round(t, 2) for t, _ in rounds],
              "train_s": round(phases["train_s"], 2), "answer_s": round(phases["answer_s"], 2),
              "answers": answers,
              "matmul_peak_gflops": round(peak, 1), "train_model_gflop": round(train_flops / 1e9, 1),
              # model FLOPs utilisation on real tokens, training phase of the best warm round
              "train_mfu": round(train_flops / phases["train_s"] / (peak * 1e9), 3),
              # the model's own matmuls timed alone: XLA at this step form's mean step, torch at the peer's
              "step_rows": step_rows, "peer_rows": peer_rows,
              "layer_matmul_gflops_xla": round(matmul_gflops(training_matmuls(cfg, step_rows)), 1)}
    if peer_model is not None:
        result["layer_matmul_gflops_torch"] = round(matmul_gflops(training_matmuls(cfg, peer_rows), "torch"), 1)
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


def bench(which: str, options: BenchOptions) -> dict:
    """The `which` benchmark's result (one JSON object)."""
    if which not in BENCHES:
        raise SystemExit(f"unknown benchmark {which!r}; choose one of {', '.join(BENCHES)}")
    return {"generate": bench_generate, "answer": bench_answer, "inner": bench_inner}[which](options)


def main(argv):
    if len(argv) != 2:
        raise SystemExit(f"usage: python -m seal_jax.cli.bench {{{','.join(BENCHES)}}} [--flags]; got {argv[1:]}")
    options = BenchOptions(model=FLAGS.model, max_new_tokens=FLAGS.max_new_tokens, workload=FLAGS.workload,
                           edits_per_chunk=FLAGS.edits_per_chunk, remat=FLAGS.remat, dtype=FLAGS.dtype,
                           repeats=FLAGS.repeats, no_peer=FLAGS.no_peer, profile=FLAGS.profile,
                           step_form=FLAGS.step_form, edits=FLAGS.edits, rows_per_edit=FLAGS.rows_per_edit)
    print(json.dumps(bench(argv[1], options)), flush=True)


if __name__ == "__main__":
    run(main, define_flags, compile_cache=False)  # it reports cold (compile) time
