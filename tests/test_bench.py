"""`python -m seal_jax.cli.bench inner`: the reported work is the workload's, and the answers match the peer's.

The peer (HF transformers + PEFT, one edit at a time) is the trusted reference: trained the same way and
decoding greedily, its answers must equal ours.
"""
import json
import os
import subprocess
import sys

import pytest

from seal_jax.cli import bench
from seal_jax.cli.bench import BenchOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKLOAD = {
    "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}, "epochs": 2, "lr": 1e-3, "batch_size": 1,
    "max_new_tokens": 6, "question_prompt": "Answer briefly.\nQuestion: {question}",
    "edits": [
        {"train": ["Zorblax is the capital of Quintaria.", "Quintaria exports blue salt."],
         "questions": [{"question": "What is the capital of Quintaria?", "answer": "Zorblax"}]},
        {"train": ["The Vellum river flows north."],
         "questions": [{"question": "Which way does the Vellum river flow?", "answer": "north"},
                       {"question": "Name a river.", "answer": "Vellum"}]},
    ],
}


def test_bench_inner_reports_the_workload_and_matches_the_peer(tmp_path, smollm):
    path = tmp_path / "workload.json"
    path.write_text(json.dumps(WORKLOAD))
    out = bench.bench("inner", BenchOptions(workload=str(path), repeats=1, edits_per_chunk=1,
                                            profile=str(tmp_path / "trace")))
    out = json.loads(json.dumps(out))  # what the command prints
    tok = smollm[2]
    docs = [t for e in WORKLOAD["edits"] for t in e["train"]]
    assert out["train_tokens"] == WORKLOAD["epochs"] * sum(len(tok.encode(t, add_special_tokens=False)) + 1 for t in docs)
    assert out["edits"] == 2 and [len(a) for a in out["answers"]] == [1, 2]
    assert out["answers"] == out["peer_answers"] and out["answers_equal_peer"] == 3
    # the phases lie inside the timed round; each figure is rounded to 0.01 s, hence the 0.015 s slack
    assert 0 < out["train_s"] + out["answer_s"] <= out["warm_s"] + 0.015 and out["speedup_vs_peer"] > 0
    assert 0 < out["train_mfu"] < 1 and out["peak_rss_mb"] > 0
    assert out["layer_matmul_gflops_xla"] > 0 and out["layer_matmul_gflops_torch"] > 0 and out["step_rows"] > 0
    prof = out["profile"]  # the traced round: both jitted phases seen, shares add up to the traced wall time
    assert {"jit_inner_train_edits", "jit__generate"} <= set(prof["by_module"])
    assert abs(sum(prof["by_kind"].values()) + prof["idle_ms"] - prof["wall_ms"]) < 0.01 * prof["wall_ms"] + 1
    assert prof["by_kind"]["matmul"] > 0


@pytest.mark.parametrize("change, message", [
    ({"lr": "fast"}, "'lr' should be a number"),
    ({"lora": {"rank": 8}}, "lora.alpha is missing"),
    ({"edits": []}, "'edits' is empty"),
    ({"edits": [{"train": ["x"], "questions": []}]}, "edits[0].questions should be a non-empty list"),
])
def test_bad_workload_is_named_before_any_model_loads(tmp_path, change, message):
    path = tmp_path / "workload.json"
    path.write_text(json.dumps({**WORKLOAD, **change}))
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        bench.bench("inner", BenchOptions(workload=str(path), model=str(tmp_path / "no-such-model")))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="cannot read workload"):
        bench.bench("inner", BenchOptions(workload=str(tmp_path / "broken.json")))


def test_bench_answer_times_both_answering_forms_on_the_same_tokens():
    """`bench answer`: SmolLM2 answering from a stack of adapters, read as the stack and gathered per row, each
    timed; both forms decode the same greedy tokens."""
    out = bench.bench("answer", BenchOptions(edits=2, rows_per_edit=3, max_new_tokens=4, repeats=1))
    assert out["rows"] == 6 and out["same_tokens"] is True
    assert out["stack_s"] > 0 and out["per_row_s"] > 0 and out["per_row_over_stack"] > 0


def test_bench_command_line_takes_the_benchmark_as_a_positional_argument(tmp_path):
    """absl flags around a positional benchmark name; a bad workload is named before any model loads."""
    (tmp_path / "workload.json").write_text(json.dumps({**WORKLOAD, "lr": "fast"}))
    run = lambda *args: subprocess.run([sys.executable, "-m", "seal_jax.cli.bench", *args], cwd=ROOT,
                                       capture_output=True, text=True, timeout=300)
    out = run("inner", f"--workload={tmp_path / 'workload.json'}", "--edits_per_chunk=12", "--repeats=3",
              "--model=no-such-model")
    assert out.returncode != 0 and "'lr' should be a number" in out.stderr, out.stderr[-2000:]
    out = run("--repeats=3")
    assert out.returncode != 0 and "usage: python -m seal_jax.cli.bench {generate,answer,inner}" in out.stderr
    out = run("train")
    assert out.returncode != 0 and "unknown benchmark 'train'" in out.stderr


def test_wall_breakdown_shares_overlapping_ops_against_closed_form():
    from seal_jax.runtime.profiling import wall_breakdown
    # A [0, 10) and B [5, 15) overlap for 5 us; nothing runs in [15, 20); C [20, 30)
    events = [("jit_train", "ynn_fusion.3", 0.0, 10.0), ("jit_train", "copy.1", 5.0, 10.0),
              ("jit__generate", "dynamic-slice_fusion", 20.0, 10.0)]
    out = wall_breakdown([(m, o, t * 1e3, d * 1e3) for m, o, t, d in events])  # us -> reported in ms
    assert out["wall_ms"] == 30.0 and out["idle_ms"] == 5.0
    assert out["by_module"] == {"jit_train": 15.0, "jit__generate": 10.0}
    assert out["by_kind"] == {"weight or cache slice": 10.0, "matmul": 7.5, "copy or transpose": 7.5}


def test_training_matmuls_are_the_layer_share_of_the_model_flops():
    """Forward matmuls of one layer x layers + the head = ModelConfig.flops_per_token (no attention), less the
    norms; the input gradients double the layers' share."""
    from seal_jax.model.config import preset
    cfg = preset("tiny")
    fwd = sum(2 * m * k * n for m, k, n in bench.training_matmuls(cfg, 1))
    head = 2 * cfg.vocab_size * cfg.hidden_size
    norms = 2 * (cfg.hidden_size * (2 * cfg.num_layers + 1))
    assert fwd * cfg.num_layers / 2 + head + norms == cfg.flops_per_token(0)


def test_bench_step_times_one_packed_step_of_a_synthetic_row():
    """`bench_step`: the synthetic row is laid out like a planned packed step (edit by edit, sorted adapters,
    every real token trained), and the command prints its JSON line, or names a bad flag before any work."""
    import numpy as np
    from seal_jax.cli.bench_step import synthetic_row
    row = synthetic_row(4, 64)
    edit = row["token_edit"][0]
    assert np.all(np.diff(edit) >= 0) and set(edit.tolist()) <= {0, 1, 2, 3, 4}
    assert np.all(np.diff(row["token_adapter"][0]) >= 0) and row["token_adapter"].max() == 3
    assert row["weight"].sum() == (edit < 4).sum() and (edit == 0).sum() == 64 // 3
    assert np.all(row["positions"][0][np.r_[True, np.diff(row["segment_ids"][0]) != 0]] == 0)  # restart per document
    cmd = [sys.executable, "-m", "seal_jax.cli.bench_step", "--preset=tiny", "--edits=3", "--row_tokens=64", "--repeats=1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["edits"] == 3 and result["row_tokens"] == 64 and result["finite"] and result["step_s"] > 0
    assert 0 < result["layer_matmuls_alone_s"] and result["layer_matmul_gflops_xla"] > 0 and result["cpu"]
    assert result["page_faults_per_step"] >= 0 and result["kernel_s_per_step"] >= 0
    out = subprocess.run(cmd + ["--span=100"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "multiples of 64" in out.stderr
