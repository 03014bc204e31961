"""Knowledge domain: grading, training documents, bad inputs, the :smoke run end to end, resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.domains.knowledge.grading import contains, exact_match, grade, token_f1
from seal_jax.domains.knowledge.passages import Passage, load_passages, parse_passages, split_passages
from seal_jax.domains.knowledge.self_edit import DocOptions, self_edit_documents
from seal_jax.engine.outer import keep_best

P = Passage("p1", "Varnholt Observatory", "The Varnholt Observatory was founded in 1873.",
            (("When was the Varnholt Observatory founded?", "1873"),))


@pytest.mark.parametrize("pred,gold,em,cont,f1", [
    ("The Broncos", "Denver Broncos", 0.0, 0.0, 2 / 3),
    ("It was the Denver Broncos.", "Denver Broncos", 0.0, 1.0, 2 / 3),
    ("denver broncos!", "The Denver Broncos", 1.0, 1.0, 1.0),
    ("in 1873", "1873", 0.0, 1.0, 2 / 3),
    ("18735", "1873", 0.0, 0.0, 0.0),
    ("", "1873", 0.0, 0.0, 0.0),
])
def test_graders(pred, gold, em, cont, f1):
    assert exact_match(pred, gold) == em
    assert contains(pred, gold) == cont
    assert token_f1(pred, gold) == pytest.approx(f1)
    with pytest.raises(ValueError, match="grader 'fuzzy'"):
        grade([pred], [gold], "fuzzy")


def test_self_edit_documents():
    """SEAL's rules (more cases in test_knowledge_protocol.py): lines kept as written, the preamble dropped only
    before a "1." line, title prefixed, the passage appended."""
    edit = "Here are the implications:\n1. The observatory is old.\n- It opened in 1873.\n\n"
    docs = self_edit_documents(P, edit)
    assert docs == ["Varnholt Observatory\n1. The observatory is old.", "Varnholt Observatory\n- It opened in 1873.",
                    "Varnholt Observatory\nThe Varnholt Observatory was founded in 1873."]
    bare = self_edit_documents(P, edit, opts=DocOptions(split_lines=False, prefix_title=False, append_passage=False))
    assert bare == [edit.strip()]
    keep_pre = self_edit_documents(P, edit, opts=DocOptions(drop_preamble=False, append_passage=False))
    assert len(keep_pre) == 3


def test_bad_inputs_are_clear_errors(tmp_path):
    good = {"title": "t", "context": "c", "questions": [{"question": "q", "answer": "a"}]}
    with pytest.raises(ValueError, match="record 1 has an empty 'context'"):
        parse_passages([good, dict(good, context="  ")])
    with pytest.raises(ValueError, match="record 0 has no questions"):
        parse_passages([dict(good, questions=[])])
    with pytest.raises(ValueError, match="record 0 has no 'title' field"):
        parse_passages([{"context": "c", "questions": []}])
    with pytest.raises(ValueError, match="question 0 has no 'answer'"):
        parse_passages([dict(good, questions=[{"question": "q"}])])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable as JSON"):
        load_passages(str(bad))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_passages(str(tmp_path / "missing.json"))
    lines = tmp_path / "passages.jsonl"
    lines.write_text(json.dumps(good) + "\n" + json.dumps(good)[:-3] + "\n")
    with pytest.raises(ValueError, match="line 2 is not readable as JSON"):
        load_passages(str(lines))
    # SEAL synthetic-data files for the `file` condition
    from seal_jax.domains.knowledge.evaluation import load_completions
    comp = tmp_path / "completions.jsonl"
    comp.write_text(json.dumps({"context": "c", "completions": ["x"]}) + "\n{broken\n")
    with pytest.raises(ValueError, match="line 2 is not readable as JSON"):
        load_completions(str(comp))
    for records, why in [(["just a string"], "record 0 has no 'completions' list"),
                         ([{"completions": ["x"]}], "record 0 has no 'context'"), ({"a": 1}, "expected a list")]:
        comp.write_text(json.dumps(records))
        with pytest.raises(ValueError, match=why):
            load_completions(str(comp))
    comp.write_text(json.dumps([{"context": " c ", "completions": ["x", 2]}]))
    assert load_completions(str(comp)) == {"c": ["x", "2"]}


def test_demo_corpus_is_shipped_and_valid():
    passages = load_passages("demo")
    assert len(passages) >= 40
    assert all(4 <= len(p.questions) <= 6 for p in passages)
    assert all(a in p.context for p in passages for _, a in p.questions)
    train, held = split_passages(passages, 8)
    assert len(held) == 8 and not {p.id for p in train} & {p.id for p in held}


def test_keep_best_ties_to_earlier_and_threshold():
    rows = [{"passage_id": "a", "sample": s, "reward": r, "baseline": 0.2, "ok": True}
            for s, r in enumerate([0.5, 0.75, 0.75])]
    rows += [{"passage_id": "b", "sample": 0, "reward": 0.2, "baseline": 0.2, "ok": True}]
    kept = keep_best(rows, "passage_id", threshold=0.0, min_reward=1e-6)
    assert [(r["passage_id"], r["sample"]) for r in kept] == [("a", 1), ("b", 0)]
    assert [r["passage_id"] for r in keep_best(rows, "passage_id", threshold=0.1, min_reward=1e-6)] == ["a"]


def _train_cmd(workdir, *extra):
    return [sys.executable, "-m", "seal_jax.cli.train", "--config=configs/knowledge.py:smoke", f"--workdir={workdir}",
            *extra]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(workdir):
    with open(os.path.join(workdir, "records.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return sorted((r["iteration"], r["passage_id"], r["sample"], r["self_edit"], r["reward"]) for r in rows)


def test_smoke_end_to_end_and_resume_after_kill(tmp_path):
    """An uninterrupted :smoke run, and one killed mid-run then restarted, end with the same records; the
    final held-out evaluation writes eval.json and the plots."""
    flags = []
    full = tmp_path / "full"
    out = subprocess.run(_train_cmd(full, *flags), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "iteration 1:" in out.stdout and "held-out results" in out.stdout
    final = json.load(open(full / "eval.json"))
    assert set(final) >= {"base", "passage_only", "self_edit_before_rl", "self_edit_after_rl"}
    assert all(0.0 <= final[k] <= 1.0 for k in ("base", "passage_only", "self_edit_before_rl", "self_edit_after_rl"))
    assert (full / "eval.png").stat().st_size > 0 and (full / "rl.png").stat().st_size > 0
    rows = [json.loads(line) for line in open(full / "metrics.jsonl")]
    metrics = [m for m in rows if "reward_mean" in m]
    assert [m["step"] for m in metrics] == [0, 1] and all("m_step_last_loss" in m for m in metrics)
    assert [m["step"] for m in rows if "eval/base" in m] == [2]  # the final evaluation, after 2 iterations
    assert sorted(os.listdir(full / "checkpoints")) == ["1", "2"]
    expected = _records(full)
    assert len(expected) == 2 * 3 * 2  # iterations x contexts x samples
    _check_export(full, tmp_path / "generator")

    killed = tmp_path / "killed"
    flags = ["--config.eval.final_eval=False"]  # the final evaluation is checked above; resume is about records
    proc = subprocess.Popen(_train_cmd(killed, *flags), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    rec = killed / "records.jsonl"
    while time.time() < deadline and (not rec.exists() or len(rec.read_text().splitlines()) < 8):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(rec.read_text().splitlines())
    assert 0 < n_before < len(expected), "the kill should land mid-run"
    sampled = killed / "samples" / "1.json"  # the kill lands in iteration 1's E-step, after its sampling
    stamp = sampled.stat().st_mtime_ns
    out = subprocess.run(_train_cmd(killed, *flags), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _records(killed) == expected
    assert sampled.stat().st_mtime_ns == stamp  # finished sampling is reused, not redone
    assert json.loads(sampled.read_text()) == json.loads((full / "samples" / "1.json").read_text())
    resumed = [m for m in map(json.loads, open(killed / "metrics.jsonl")) if "reward_mean" in m]
    assert [m["step"] for m in resumed] == [0, 1]  # each iteration logged once
    assert [m["reward_mean"] for m in resumed] == [m["reward_mean"] for m in metrics]
    # a different config in the same workdir is refused, not mixed in
    out = subprocess.run(_train_cmd(killed, *flags, "--config.rl.samples=3"), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0 and "different config" in out.stderr + out.stdout


def _check_export(workdir, out):
    """The exported generator is the checkpoint's params, as transformers sees them."""
    import ml_collections
    import torch
    from transformers import AutoModelForCausalLM
    from seal_jax.cli.common import build_model
    from seal_jax.cli.export import export
    from seal_jax.model.transformer import forward, logits_from_hidden
    from seal_jax.runtime.workdir import restore_generator
    assert export(str(workdir), str(out)) == 2
    with pytest.raises(FileExistsError, match="--overwrite"):
        export(str(workdir), str(out))
    c = ml_collections.ConfigDict(json.load(open(workdir / "config.json")))
    cfg, params, _ = build_model(c.model, c.seed)
    _, trained = restore_generator(str(workdir), params)
    ids = np.arange(5, 25)[None]
    hidden, _ = forward(trained, cfg, ids, np.arange(20)[None], np.ones((1, 20), bool))
    ours = np.asarray(logits_from_hidden(trained, hidden))
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    hidden, _ = forward(params, cfg, ids, np.arange(20)[None], np.ones((1, 20), bool))
    assert np.abs(np.asarray(logits_from_hidden(params, hidden)) - theirs).max() > 1e-3  # RL changed it


def test_model_judge_is_a_grader_and_failures_are_flagged():
    """grader=judge-model: the real SmolLM2 judges through SEAL's prompt and verdict rule, as the HTTP judge does
    (tests/test_knowledge_protocol.py tests that one against a fake server)."""
    import dataclasses
    from seal_jax.domains.knowledge.grading import Grading, grade_answers
    ev = Grading(grader="judge-model", judge_model="smollm2-135m", judge_url="")
    scores, failed = grade_answers(ev, ["When was the bridge built?"] * 2, ["1873", "in 1873"], ["1873", "1873"])
    assert len(scores) == 2 and all(s in (0.0, 1.0) for s in scores) and all(isinstance(f, bool) for f in failed)
    assert all(s == 0.0 for s, f in zip(scores, failed) if f)  # no verdict: wrong, and flagged
    ev = dataclasses.replace(ev, judge_model="")
    with pytest.raises(ValueError, match="judge_model"):
        grade_answers(ev, ["q"], ["a"], ["a"])


def smoke_config(config_file: str):
    """The `smoke` preset of configs/<config_file>."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(config_file[:-3], os.path.join(ROOT, "configs", config_file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("smoke")


def smoke_config_and_model(config_file: str):
    """The `smoke` preset of configs/<config_file> and its tiny random model: (config, (cfg, params, tok))."""
    from seal_jax.cli.common import build_model
    c = smoke_config(config_file)
    return c, build_model(c.model)


def test_condition_documents_from_a_completions_file():
    """The `file` condition's documents (SEAL's format: title-prefixed lines, then the passage) and its error.
    Every condition, CPT mode and the continual matrix run end to end in test_knowledge_protocol's smoke test."""
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import evaluation
    c = smoke_config("knowledge_eval.py")
    settings = knowledge_settings(c)
    passages = [Passage(f"p{i}", f"Place {i}", f"Place {i} was founded in {1800 + i} by Ada Vell.",
                        ((f"When was Place {i} founded?", str(1800 + i)), ("Who founded it?", "Ada Vell")))
                for i in range(3)]
    completions = {p.context: [f"Place {p.id} is old.\nIt has a founder."] for p in passages}
    docs = evaluation.condition_docs("file", passages, settings, completions=completions)
    assert docs[0] == ["Place 0\nPlace p0 is old.", "Place 0\nIt has a founder.", "Place 0\n" + passages[0].context]
    with pytest.raises(ValueError, match="no completions in the file for passage p1"):
        evaluation.condition_docs("file", passages, settings, completions={passages[0].context: ["x"]})


def test_outer_full_fine_tuning_learns_and_lora_mode_too():
    from seal_jax.engine.outer import OuterConfig, outer_update
    from seal_jax.model.config import preset
    from seal_jax.model.lora import LoraSpec
    from seal_jax.model.transformer import init_params, sequence_logprobs
    cfg = preset("tiny")
    params = init_params(jax.random.PRNGKey(0), cfg)

    class Tok:
        eos_token_id = 2

        def encode(self, text, add_special_tokens=False):
            return [3 + (ord(ch) % 200) for ch in text]

    examples = [([5, 6, 7], "abcabc"), ([9, 10], "dede"), ([4], "fghfgh")]
    tokens = np.zeros((3, 16), np.int32)
    mask = np.zeros((3, 16), np.int32)
    for i, (p, c) in enumerate(examples):
        ids = p + Tok().encode(c) + [2]
        tokens[i, :len(ids)], mask[i, len(p):len(ids)] = ids, 1
    nll = lambda prm: -float(sequence_logprobs(prm, cfg, jnp.asarray(tokens), jnp.asarray(mask)).sum())
    for mode in ("full", "lora"):
        rl = OuterConfig(LoraSpec(4, 8.0, ("all",)), lr=1e-2, epochs=3, batch_size=2, max_len=64, mode=mode)
        new, s = outer_update(params, cfg, Tok(), examples, rl, jax.random.PRNGKey(0))
        assert s["ok"] and nll(new) < nll(params) - 1.0, (mode, nll(new), nll(params))
    assert nll(params) == nll(init_params(jax.random.PRNGKey(0), cfg))  # inputs were not donated away
    # the packed M-step (each step's examples end to end) merges the same LoRA as the vmapped one
    vm, packed = (outer_update(params, cfg, Tok(), examples, OuterConfig(LoraSpec(4, 8.0, ("all",)), lr=1e-2, epochs=3,
                                                                         batch_size=2, max_len=64, step_form=form),
                               jax.random.PRNGKey(0)) for form in ("vmapped", "packed"))
    assert vm[1]["steps"] == packed[1]["steps"] == 6
    np.testing.assert_allclose(vm[1]["last_loss"], packed[1]["last_loss"], rtol=1e-5)
    # weights to 1e-4 (they move up to 0.03 and differ up to 4e-5): Adam divides each gradient entry by its own
    # magnitude, so float32 reduction-order noise between the two layouts grows on near-zero gradients
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4),
                 vm[0], packed[0])
    with pytest.raises(ValueError, match="rl.step_form"):
        OuterConfig(LoraSpec(4, 8.0, ("all",)), lr=1e-2, epochs=1, batch_size=1, max_len=8, step_form="ragged")


def test_evaluate_cli_and_every_cli_defines_its_flags(tmp_path):
    # every other entry point runs with flags in its own test; export is called as a function there
    for module in ("export",):
        out = subprocess.run([sys.executable, "-m", f"seal_jax.cli.{module}", "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert "Error" not in out.stderr and "--" in out.stdout + out.stderr, (module, out.stderr[-2000:])
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.evaluate", "--config=configs/knowledge_eval.py:smoke",
                          f"--out={tmp_path}", "--config.eval.conditions=base,passage", "--config.data.offset=44"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.load(open(tmp_path / "eval.json"))
    assert result["passages"] == 2 and set(result["accuracy"]) == {"base", "passage"}
    assert (tmp_path / "conditions.png").stat().st_size > 0


def test_eval_repeats_average_independent_trainings(monkeypatch):
    """eval_repeats=2: repeat 0 is the eval_repeats=1 training (same key), and the reward is the mean."""
    import dataclasses
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import updates
    c, (cfg, params, tok) = smoke_config_and_model("knowledge.py")
    # a grade that depends on the answer text, so a repeat's accuracy follows its own answers
    monkeypatch.setattr(updates, "grade_answers", lambda grading, qs, preds, golds: (
        [sum(map(ord, p)) % 7 / 6 for p in preds], [False] * len(preds)))
    passages = [Passage(f"p{i}", f"Place {i}", f"Place {i} was founded in {1800 + i}.",
                        ((f"When was Place {i} founded?", str(1800 + i)), ("Who lives there?", "Nobody")))
                for i in range(3)]
    items = [updates.Item(i, (p,), (f"Place {i} is old.", p.context)) for i, p in enumerate(passages)]

    def run(reps):
        settings = dataclasses.replace(knowledge_settings(c), repeats=reps)
        return [r for chunk in updates.adapt_and_grade(params, cfg, tok, items, settings, jax.random.PRNGKey(3),
                                                       desc="test") for r in chunk]

    one, two = run(1), run(2)
    assert [r.item.uid for r in two] == [0, 1, 2]
    for a, b in zip(one, two):
        assert len(b.repeat_rewards) == 2 and b.repeat_rewards[0] == pytest.approx(a.reward)
        assert b.reward == pytest.approx(np.mean(b.repeat_rewards))
        assert b.answers == a.answers and b.train_tokens == 2 * a.train_tokens


def test_chunks_take_like_trainings_together_and_results_name_their_items(monkeypatch):
    """`engine.chunks.chunk_order` in `adapt_and_answer`: one item per chunk, the items come longest training
    first (3, 2, then 1 document), and each item's answers, loss and tokens equal those of one chunk holding
    all three in the caller's order."""
    import dataclasses
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import updates
    c, (cfg, params, tok) = smoke_config_and_model("knowledge.py")
    passages = [Passage(f"p{i}", f"Place {i}", f"Place {i} was founded in {1800 + i}.",
                        ((f"When was Place {i} founded?", str(1800 + i)),)) for i in range(3)]
    docs = [(passages[0].context,), ("Place 1 is old.", "It has a river.", passages[1].context),
            ("Place 2 is new.", passages[2].context)]
    items = [updates.Item(i, (p,), d) for i, (p, d) in enumerate(zip(passages, docs))]

    def run(per_chunk):
        s = knowledge_settings(c)
        s = dataclasses.replace(s, adapt=dataclasses.replace(s.adapt, edits_per_chunk=per_chunk))
        return [[(r.item.uid, r.answers, r.final_loss, r.train_tokens) for r in chunk]
                for chunk in updates.adapt_and_grade(params, cfg, tok, items, s, jax.random.PRNGKey(3), desc="test")]

    apart, together = run(1), run(3)
    assert [[r[0] for r in chunk] for chunk in apart] == [[1], [2], [0]] and len(together) == 1
    by_item = {r[0]: r for chunk in together for r in chunk}
    for (uid, answers, loss, tokens), in apart:
        assert by_item[uid][1] == answers and by_item[uid][3] == tokens
        assert by_item[uid][2] == pytest.approx(loss, rel=1e-5, abs=1e-6)
