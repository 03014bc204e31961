"""ARC domain end to end on the tiny model: an E-step + M-step with scripted SEAL replies, zero-epoch self-edits,
length drops, the smoke preset through the CLI, and the evaluation CLI. (SEAL's protocol piece by piece:
tests/test_arc_seal.py.)"""

import json

import numpy as np
import pytest

from seal_jax.domains.arc.protocol import TttConfig, reply_json

VALID = reply_json(TttConfig(("basic",), "output", 1e-4, 1))
UNKNOWN_STRATEGY = VALID.replace("train_using_output_tokens", "train_on_vibes")


def _smoke_config():
    import importlib.util
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("arc_cfg", os.path.join(root, "configs", "arc.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("smoke")


def _smoke_domain_and_model(c):
    from seal_jax.cli.common import build_model
    from seal_jax.cli.settings import domain_for
    return domain_for(c), build_model(c.model)


def test_arc_iteration_trains_valid_self_edits_and_records_invalid(tmp_path, monkeypatch):
    """One E-step + M-step on tiny synthetic tasks, with scripted SEAL replies (a random model writes none)."""
    import jax
    from seal_jax.cli.settings import restem_config
    from seal_jax.rl import restem
    from seal_jax.runtime.workdir import Workdir
    c = _smoke_config()
    c.rl.min_reward = 0.0  # keep unsolved self-edits too, so the M-step runs
    c.rl.samples = 3
    domain, (cfg, params, tok) = _smoke_domain_and_model(c)
    tasks, _ = domain.load_data()
    scripted = [VALID, "not json", UNKNOWN_STRATEGY]
    calls = []

    def sample(params, cfg, tok, prompts, k, how, key):
        calls.append(len(prompts) * k)
        return [scripted[:k]] * len(prompts) if k > 1 else [["still not json"]] * len(prompts)
    monkeypatch.setattr(restem, "sample_self_edits", sample)
    seen = []
    real_update = restem.outer_update
    monkeypatch.setattr(restem, "outer_update", lambda params, cfg, tok, examples, outer, key: (
        seen.extend(examples), real_update(params, cfg, tok, examples, outer, key))[1])
    wd = Workdir(str(tmp_path))
    new_params, metrics = restem.iteration(0, domain, params, cfg, tok, tasks, restem_config(c), wd,
                                           jax.random.PRNGKey(0))
    assert calls == [c.rl.contexts * 3] + [c.rl.contexts] * c.self_edit.max_resamples  # the non-JSON resampled
    rows = wd.records(iteration=0)
    assert len(rows) == c.rl.contexts * 3
    by_sample = {s: [r for r in rows if r["sample"] == s] for s in range(3)}
    assert all(r["parsed"]["groups"] == ["basic"] and r["parsed"]["epochs"] == 1 and r["ok"] for r in by_sample[0])
    assert all(r["train_examples"] == c.ttt.cap and r["dropped_too_long"] == 0 for r in by_sample[0])
    assert all(r["parsed"] is None and "not valid JSON" in r["reason"] for r in by_sample[1])
    # an unknown strategy: SEAL trains 0 epochs, and the untrained adapter is still scored
    assert all(r["parsed"]["epochs"] == 0 and r["ok"] and "unknown strategy" in r["parsed"]["note"]
               for r in by_sample[2])
    assert metrics["valid_fraction"] == pytest.approx(2 / 3) and "m_step_last_loss" in metrics
    # every kept self-edit (all scored ones here, min_reward 0) is trained on as its raw reply, after SEAL's prompt
    assert len(seen) == metrics["kept"] == 2 * c.rl.contexts
    assert sorted(target for _, target in seen) == sorted([VALID, UNKNOWN_STRATEGY] * c.rl.contexts)
    assert all(any(list(p) == domain.prompt_ids(tok, t) for t in tasks) for p, _ in seen)
    changed = jax.tree.map(lambda a, b: float(abs(a - b).max()), new_params, params)
    assert max(jax.tree.leaves(changed)) > 0  # the generator was updated


def test_zero_epoch_self_edit_is_scored_with_the_untrained_adapter():
    """SEAL's 0-epoch adapters (guard, bad keys) equal the base model: the same answers and votes as ICL."""
    import jax
    from seal_jax.domains.arc.updates import Item, adapt_and_solve, attempts_from, task_queries
    from seal_jax.engine.answering import answer_per_edit
    domain, (cfg, params, tok) = _smoke_domain_and_model(_smoke_config())
    tasks, _ = domain.load_data()
    s = domain.settings
    zero = [r for ch in adapt_and_solve(params, cfg, tok, [Item(0, tasks[0], TttConfig(("basic",), "all", 1e-4, 0))],
                                        s, jax.random.PRNGKey(0)) for r in ch][0]
    q = task_queries(tok, tasks[0], s)
    icl = attempts_from(answer_per_edit(params, cfg, tok, [q.prompts], s.adapt.answer)[0], q, 1)
    assert zero.ok and zero.train_tokens == 0 and zero.edit.epochs == 0 and zero.train_examples > 0
    assert zero.attempts == [[list(map(list, a)) for a in pair] for pair in icl]


def test_ttt_examples_longer_than_max_len_are_dropped_not_cut():
    """A cut example would lose its output grid (the trained part): it is dropped and counted."""
    import dataclasses
    import jax
    from seal_jax.domains.arc.updates import Item, adapt_and_solve
    domain, (cfg, params, tok) = _smoke_domain_and_model(_smoke_config())
    tasks, _ = domain.load_data()
    item = Item(0, tasks[0], TttConfig(("basic",), "output", 1e-4, 1))
    settings = domain.settings
    full = [r for ch in adapt_and_solve(params, cfg, tok, [item], settings, jax.random.PRNGKey(0)) for r in ch][0]
    short_settings = dataclasses.replace(settings, adapt=dataclasses.replace(settings.adapt, max_len=40))
    short = [r for ch in adapt_and_solve(params, cfg, tok, [item], short_settings, jax.random.PRNGKey(0)) for r in ch][0]
    assert full.dropped_too_long == 0 and full.train_examples > 0
    assert short.train_examples == 0 and short.dropped_too_long == full.train_examples


def _run_cli(*args):
    """`python -m <args>` from the repo root; it must succeed. Returns stdout."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", *args], cwd=root, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def test_arc_smoke_preset_end_to_end(tmp_path):
    """configs/arc.py:smoke: SEAL's protocol at toy sizes, sampling through the final Table 1 evaluation."""
    log = _run_cli("seal_jax.cli.train", "--config=configs/arc.py:smoke", f"--workdir={tmp_path}")
    result = json.load(open(tmp_path / "eval.json"))
    assert set(result) == {"icl", "ttt_no_rl", "seal", "oracle"}
    assert "Oracle TTT" in log and "72.5%" in log                  # Table 1 beside the paper's numbers
    rows = [json.loads(line) for line in open(tmp_path / "records.jsonl")]
    assert len(rows) == 2 * 2 and all(r["reason"] for r in rows if not r["ok"] or r["parsed"] is None)
    assert (tmp_path / "eval.png").stat().st_size > 0


def test_arc_evaluate_cli(tmp_path):
    """`python -m seal_jax.cli.evaluate --config=configs/arc_eval.py:smoke`: Table 1's conditions, JSON and plot."""
    log = _run_cli("seal_jax.cli.evaluate", "--config=configs/arc_eval.py:smoke", f"--out={tmp_path}")
    result = json.load(open(tmp_path / "eval.json"))
    assert set(result["success"]) == {"icl", "ttt_no_rl", "seal", "oracle"}
    assert all(0.0 <= v <= 1.0 for v in result["success"].values()) and len(result["tasks"]) == 3
    assert "SEAL (after RL)" in log and (tmp_path / "conditions.png").stat().st_size > 0
