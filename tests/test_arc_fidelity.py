"""SEAL's few-shot ARC as its shipped commands ran it (docs/fidelity-arc.md): which model the `seal` condition
adapts, which tasks the commands reach, answer parsing, the TTT length filter, fractional epochs and the random
translation's seed. Expected values are worked by hand from SEAL's code (few-shot/, commit 4cb1e7d) and HF's
Trainer, or come from a few of SEAL's lines reproduced here (marked), never from this project's output."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from seal_jax.domains.arc import augment as A
from seal_jax.domains.arc import evaluation as E
from seal_jax.domains.arc import protocol as P
from seal_jax.domains.arc import ttt as T
from seal_jax.domains.arc.tasks import (SEAL_EVAL_FILE_IDS, SEAL_EVAL_IDS, SEAL_EVAL_COMMAND, SEAL_RL_COMMAND,
                                        SEAL_TRAIN_IDS, ArcTask, SealCommand, as_run_reach, load_tasks, seal_reach)

VALID = P.reply_json(P.TttConfig(("basic",), "output", 1e-4, 1))


def _settings(name="arc_eval", preset="paper"):
    from seal_jax.cli.settings import domain_for
    return domain_for(load_config(name, preset)).settings


# ---- 2. the tasks SEAL's commands reach --------------------------------------------------------------------

# SEAL's task files, in their order, as read_tasks_from_single_file names their test sub-tasks (<id>-<k>):
# 44f52bb0 and b1fc8b8e have two test inputs, every other task one (few-shot/data/*_filtered_1B_*.json).
SEAL_TRAIN_SUBTASKS = ["44f52bb0-0", "44f52bb0-1"] + [f"{i}-0" for i in SEAL_TRAIN_IDS[1:]]
SEAL_EVAL_SUBTASKS = [f"{i}-0" for i in SEAL_EVAL_FILE_IDS[:7]] + ["b1fc8b8e-1"] + [f"{i}-0" for i in
                                                                                    SEAL_EVAL_FILE_IDS[7:]]


def seal_self_edit_loop(names, n_tasks):
    """self-edit.py:442-453, SEAL's lines: the base task names that get self-edits."""
    task_configs = {}
    for i in range(n_tasks):
        base_task_name = names[i]
        if base_task_name.endswith("-0"):
            base_task_name = base_task_name[:-2]
        if base_task_name.endswith("-1"):
            continue
        task_configs.setdefault(base_task_name, [])
    return list(task_configs)


def seal_eval_subset(names, num_examples, seed=0):
    """eval-self-edits.py:146-150, SEAL's lines (the global numpy state restored afterwards)."""
    state = np.random.get_state()
    try:
        tasks = list(names)
        np.random.seed(seed)
        np.random.shuffle(tasks)
        return tasks[:num_examples]
    finally:
        np.random.set_state(state)


def test_sub_task_order_is_seals_files():
    subs = as_run_reach("rl").sub_tasks
    assert [f"{i}-{k}" for i, k in subs] == SEAL_TRAIN_SUBTASKS and len(subs) == 13
    subs = as_run_reach("eval").sub_tasks
    assert [f"{i}-{k}" for i, k in subs] == SEAL_EVAL_SUBTASKS and len(subs) == 11


def test_rl_commands_reach_11_tasks_and_reward_10():
    """--n_tasks=12 over 13 sub-tasks (44f52bb0-1 skipped) never gets to 8e1813be; --num_examples=11 of the seed-0
    shuffle drops 5bd6f4ac-0 and 8e1813be-0: 5bd6f4ac has self-edits and adapters but no reward."""
    r = as_run_reach("rl")
    assert r.command == SEAL_RL_COMMAND == SealCommand(12, 11, 0)
    assert list(r.with_adapters) == [i for i in SEAL_TRAIN_IDS if i != "8e1813be"]
    assert list(r.with_adapters) == seal_self_edit_loop(SEAL_TRAIN_SUBTASKS, 12)
    scored = [f"{i}-{k}" for i, k in r.scored]
    assert scored == seal_eval_subset(SEAL_TRAIN_SUBTASKS, 11)
    assert sorted(set(SEAL_TRAIN_SUBTASKS) - set(scored)) == ["5bd6f4ac-0", "8e1813be-0"]
    assert list(r.counted) == [i for i in SEAL_TRAIN_IDS if i not in ("5bd6f4ac", "8e1813be")]
    assert r.solvable("44f52bb0")                                       # both its test inputs are scored
    assert not r.solvable("5bd6f4ac") and "not scored" in r.why_not("5bd6f4ac")
    assert "no self-edits" in r.why_not("8e1813be") and "not scored either" in r.why_not("8e1813be")


def test_eval_commands_count_8_tasks_7_with_adapters():
    """--n_tasks=10 over the 10-task file's 11 sub-tasks stops before ce8d95cc; --num_examples=9 drops 358ba94e
    and af24b4cc: 8 counted tasks (SEAL's 8), ce8d95cc among them without adapters."""
    r = as_run_reach("eval")
    assert r.command == SEAL_EVAL_COMMAND == SealCommand(10, 9, 0)
    assert list(r.with_adapters) == seal_self_edit_loop(SEAL_EVAL_SUBTASKS, 10) == list(SEAL_EVAL_FILE_IDS[:-1])
    scored = [f"{i}-{k}" for i, k in r.scored]
    assert scored == seal_eval_subset(SEAL_EVAL_SUBTASKS, 9)
    assert sorted(set(SEAL_EVAL_SUBTASKS) - set(scored)) == ["358ba94e-0", "af24b4cc-0"]
    assert r.counted == SEAL_EVAL_IDS
    assert [i for i in r.counted if r.solvable(i)] == [i for i in SEAL_EVAL_IDS if i != "ce8d95cc"]
    assert "scored 0" in r.why_not("ce8d95cc")


def test_reach_rejects_what_it_does_not_model():
    g = np.zeros((1, 1), int)
    three = ArcTask("x", ((g, g),), ((g, g),) * 3)
    with pytest.raises(ValueError, match="more than 2 test inputs"):
        seal_reach([three], SealCommand(1, 1))
    with pytest.raises(ValueError, match="file has 1 test sub-tasks"):
        seal_reach([ArcTask("y", ((g, g),), ((g, g),))], SealCommand(2, 1))
    with pytest.raises(ValueError, match="unknown phase"):
        as_run_reach("train")


def test_paper_runs_as_run_and_the_switch_gives_every_task():
    from seal_jax.cli.settings import domain_for
    assert _settings("arc", "paper").as_run and _settings("arc_eval", "paper").as_run
    assert not _settings("arc", "demo").as_run and not _settings("arc", "smoke").as_run
    domain = domain_for(load_config("arc", "paper"))
    train, held = domain.load_data()
    assert [t.id for t in train] == [i for i in SEAL_TRAIN_IDS if i != "8e1813be"]
    assert tuple(t.id for t in held) == SEAL_EVAL_IDS
    c = load_config("arc", "paper")
    c.data.as_run = False                                               # the intended version: every task
    train, held = domain_for(c).load_data()
    assert tuple(t.id for t in train) == SEAL_TRAIN_IDS and tuple(t.id for t in held) == SEAL_EVAL_IDS
    c = load_config("arc", "demo")
    c.data.as_run = True
    with pytest.raises(ValueError, match="SEAL's own task files"):
        domain_for(c).load_data()


def test_rl_records_5bd6f4ac_unscored_and_out_of_the_metrics():
    from seal_jax.cli.settings import domain_for
    from seal_jax.domains.base import EStepTiming
    domain = domain_for(load_config("arc", "paper"))
    train, _ = domain.load_data()
    todo = [(i, s) for i in range(len(train)) for s in range(2)]
    items, rows = domain.items(0, train, [[VALID, "not json"]] * len(train), todo)
    unscored = [r for r in rows if not r["scored"]]
    assert {r["task_id"] for r in unscored} == {"5bd6f4ac"} and len(unscored) == 2
    assert all(r["reward"] == 0 and not r["ok"] and "not scored" in r["reason"] for r in unscored)
    assert {it.task.id for it in items} == set(as_run_reach("rl").counted)
    assert domain.keep(rows) == []                                      # no BC data from them
    solved = [{"task_id": it.task.id, "sample": it.sample, "reward": 1.0, "ok": True, "scored": True,
               "parsed": {"epochs": 1}} for it in items]
    m = domain.metrics(rows + solved, [], train, {}, EStepTiming(1.0, 1.0))
    # 10 scored tasks: one solved and one invalid reply each; 5bd6f4ac's two replies are left out
    assert m["unscored"] == 2 and m["reward_mean"] == 0.5 and m["valid_fraction"] == 0.5 and m["tasks_solved"] == 10


# ---- 1 and 2. Table 1: the RL model adapts and answers; as run, two figures --------------------------------


def test_seal_condition_samples_adapts_and_answers_with_the_rl_model(monkeypatch):
    """SEAL's README.md:68,80: --model_name (self-edits, TTT base) and --pretrained_checkpoint (answers) are the RL
    model. Fails if the initial weights are trained or asked. As run: ce8d95cc (no adapters) is never sampled
    for, trained or asked, and scores 0; every rate comes over 8 tasks and over the 7 with adapters."""
    initial, generator = object(), object()
    calls = []

    def sample(domain, model, cfg, tok, prompts, k, key):
        calls.append(("sample", model, len(prompts)))
        return [[VALID] * k for _ in prompts]

    def adapt(model, cfg, tok, items, settings, key, *, mesh=None, desc=""):
        calls.append(("adapt", model, sorted({it.task.id for it in items})))
        yield [types.SimpleNamespace(item=it, solved=it.task.id == "59341089") for it in items]

    def icl(model, cfg, tok, tasks, settings):
        calls.append(("icl", model, sorted(t.id for t in tasks)))
        return [t.id == "59341089" for t in tasks]

    monkeypatch.setattr(E, "sample_acceptable", sample)
    monkeypatch.setattr(E, "adapt_and_solve", adapt)
    monkeypatch.setattr(E, "icl_solved", icl)
    monkeypatch.setattr(E.protocol, "prompt_ids", lambda tok, t: [1])
    tasks = load_tasks(SEAL_EVAL_IDS, "eval")
    seven = sorted(i for i in SEAL_EVAL_IDS if i != "ce8d95cc")
    res = E.evaluate(initial, None, None, tasks, _settings(), jax.random.PRNGKey(0), generator=generator)
    assert calls == [("icl", initial, seven),
                     ("sample", initial, 7), ("adapt", initial, seven),          # ttt_no_rl: the initial model
                     ("sample", generator, 7), ("adapt", generator, seven),      # seal: the RL model throughout
                     ("adapt", initial, sorted(SEAL_EVAL_IDS))]                  # oracle (ttt.py): every task
    # one task of 8 solved by all its self-edits: 1/8 as SEAL counts, 1/7 over the tasks with adapters
    assert res == pytest.approx({"icl": 1 / 8, "icl_with_adapters": 1 / 7, "ttt_no_rl": 1 / 8,
                                 "ttt_no_rl_with_adapters": 1 / 7, "seal": 1 / 8, "seal_with_adapters": 1 / 7,
                                 "oracle": 1 / 8})
    assert "ours, tasks with adapters" in E.table_1(res, 8) and "14.3%" in E.table_1(res, 8)


def test_rates_over_counted_tasks_and_over_those_with_adapters():
    """7 tasks with adapters all solved at 3 of 5 self-edits, ce8d95cc at 0: SEAL's figure 7 x 0.6 / 8."""
    tasks = load_tasks(SEAL_EVAL_IDS, "eval")
    solved = {i: 0.6 for i in SEAL_EVAL_IDS if i != "ce8d95cc"}
    assert E.rates("seal", solved, tasks, as_run_reach("eval")) == pytest.approx(
        {"seal": 0.525, "seal_with_adapters": 0.6})
    assert E.rates("seal", {**solved, "ce8d95cc": 1.0}, tasks, None) == pytest.approx({"seal": 0.65})


# ---- 3. answer parsing ---------------------------------------------------------------------------------------

# worked by hand through eval-self-edits.py:304-323 (delete '#', '  ' -> ' ', ``` fences) and
# representers.py:33-58 (drop brackets, int() every word, rows = lines, cols = words // rows, reshape, int8)
PARSED = [
    ("[[0 0]]# [[1 2]]", ((0, 0, 1, 2),)),          # every '#' deleted: 4 words on 1 line
    ("[[1 1 1]\n [1]]#", ((1, 1), (1, 1))),         # 4 words on 2 lines: 2 x 2
    ("[[2 2]\n [0 4]]#", ((2, 2), (0, 4))),
    ("[[12 3]]", ((12, 3),)),                       # any integer
    ("[[300 -1]]", ((44, -1),)),                    # cast to int8: 300 - 256
    ("```\n[[5 6]]\n```", ((5, 6),)),               # between the fences, stripped
    ("[[1  2]]#\n", ((1, 2),)),                     # stripped after the '#' is gone: one line
    ("[[" + " ".join(["7"] * 31) + "]]", ((7,) * 31,)),   # no size limit
]
NOT_PARSED = ["[[1 2]\n [3]]", "[[1 x]]", "[[1 2 3]\n [4 5 6]\n [7]]#", "[[1.5]]"]


@pytest.mark.parametrize("text,grid", PARSED)
def test_answer_parsing_is_seals(text, grid):
    g = T.parse_grid_str(text)
    assert g.dtype == np.int8 and tuple(map(tuple, g.tolist())) == grid


@pytest.mark.parametrize("text", NOT_PARSED)
def test_answers_seal_cannot_reshape_or_read_are_none(text):
    assert T.parse_grid_str(text) is None


def test_an_empty_answer_is_a_1x0_grid_and_votes():
    """'' has no words on 1 line: reshape((1, 0)) succeeds in SEAL, and the empty grid is voted. The attempts are
    those SEAL's arclib/voting.py vote returns for the same three identity answers (run on SEAL's code): with two
    empty answers and one 1x4, the second-level candidates tie and set order puts the 1x4 first; three empty
    answers give () (the column majority of 1x0 grids) and ((),)."""
    from seal_jax.domains.arc.updates import Queries, attempts_from
    assert T.parse_grid_str("").shape == (1, 0) and T.parse_grid_str("#").shape == (1, 0)
    q = Queries([[1], [1], [1]], [0, 0, 0], ["identity", "identity", "identity"])
    assert attempts_from(["", "#", "[[0 0]]# [[1 2]]"], q, 1) == [(((0, 0, 1, 2),), ((),))]
    assert attempts_from(["", "#", "##"], q, 1) == [((), ((),))]
    assert attempts_from(["[[1 1 1]\n [1]]#"] * 2 + ["[[9]]"], q, 1) == [(((1, 1), (1, 1)), ((9,),))]


# ---- 8. the TTT length filter ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_tok():
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    return load_tokenizer(resolve_model_path("smollm2-135m"))


def test_ttt_length_filter_counts_seals_whole_chat(smol_tok):
    """SEAL (self-edit.py:236-256, 335): tokenizer(apply_chat_template(messages + [answer],
    add_generation_prompt=True)) < max_tokens. With SmolLM2's ChatML template and no BOS that is the prompt, the
    answer, and `<|im_end|>` `\\n` `<|im_start|>` `ass` `istant` `\\n`: 6 tokens, not 1. The example is kept below
    that count and dropped at it."""
    demos = ((np.array([[1, 2], [3, 4]]), np.array([[4, 3], [2, 1]])),)
    task = (demos, (np.array([[5, 6]]), np.array([[6, 5]])))
    msgs, answer = T.messages(task)
    enc = lambda s: smol_tok.encode(s, add_special_tokens=False)
    n = len(enc(T.render_prompt(smol_tok, msgs))) + len(enc(answer)) + 6
    assert smol_tok.convert_ids_to_tokens(enc("<|im_end|>\n<|im_start|>assistant\n")) == [
        "<|im_end|>", "\u010a", "<|im_start|>", "ass", "istant", "\u010a"]
    assert T.seal_token_count(smol_tok, msgs, answer) == n
    # the filter: an example of n tokens is dropped at max_tokens = n and kept at n + 1 (prompt + answer + 1, the
    # count SEAL does not use, is n - 5: such an example would pass up to max_tokens = n - 4)
    one = (demos[0], task[1])                                           # leave-one-out: 2 pseudo-tasks
    kept = lambda limit: T.ttt_examples(one, [], smol_tok, leave_n=(1,), max_tokens=limit)
    counts = [T.seal_token_count(smol_tok, *T.messages(t)) for t in T.pseudo_tasks(one, [], 1)]
    assert n in counts
    for c in counts:
        assert len(kept(c)) == sum(x < c for x in counts) and len(kept(c + 1)) == sum(x <= c for x in counts)


# ---- 9. fractional epochs ----------------------------------------------------------------------------------


def test_fractional_epochs_are_kept_and_the_guard_uses_them():
    edit, why = P.parse_reply(VALID.replace('"num_train_epochs": 1', '"num_train_epochs": 0.5'))
    assert why is None and edit.epochs == 0.5 and edit.note == ""
    assert P.step_guard(edit, 250).epochs == 0.5                       # 0.5 x 250 // 2 = 62 steps
    assert P.step_guard(P.TttConfig(("basic",), "all", 1e-4, 2.5), 301).epochs == 0   # 2.5 x 301 // 2 = 376


def test_hf_max_steps_is_hfs_formula():
    from seal_jax.engine.inner import hf_max_steps, pack_edits
    # max_steps = ceil(num_train_epochs x ceil(docs / batch)), in Python floats (transformers trainer.py)
    assert hf_max_steps(5, 0.5, 2) == 2            # ceil(0.5 x 3)
    assert hf_max_steps(250, 0.5, 2) == 63         # ceil(62.5)
    assert hf_max_steps(100, 1.1, 2) == 56         # 1.1 x 50 = 55.00000000000001 in float64 (float32 gives 55)
    assert hf_max_steps(4, 3, 2) == 6 and hf_max_steps(0, 2, 2) == 0
    docs = [([1, 2, 3], [1, 1, 1])] * 5
    p = pack_edits([docs, docs, docs], [1e-3] * 3, [0.5, 1.5, 2], batch_size=2)
    assert p.edit_steps.tolist() == [2, 5, 6] and p.steps >= 6
    with pytest.raises(ValueError, match="finite and >= 0"):
        pack_edits([docs], [1e-3], [-0.5], batch_size=2)


def _sequential_partial_pass(base, cfg, icfg, examples, key, lr, epochs):
    """HF's loop for fractional epochs, one Python step at a time: epochs ceil(epochs) passes, each shuffled,
    stopped after max_steps = ceil(epochs x steps per epoch); the linear schedule runs over max_steps."""
    from seal_jax.engine.inner import batch_loss, epoch_order, pack_edits
    from seal_jax.model.lora import init_lora
    packed = pack_edits([examples], [lr], [epochs], batch_size=icfg.batch_size)
    tokens, mask, valid = packed.tokens[0], packed.loss_mask[0], packed.seq_valid[0]
    k_init, k_shuffle = jax.random.split(key)
    lora = init_lora(k_init, cfg, icfg.lora)
    per_epoch = math.ceil(len(examples) / icfg.batch_size)
    max_steps = math.ceil(epochs * per_epoch)
    opt = optax.chain(optax.clip_by_global_norm(icfg.max_grad_norm),
                      optax.adamw(optax.linear_schedule(lr, 0.0, max_steps), icfg.adam_b1, icfg.adam_b2,
                                  icfg.adam_eps, weight_decay=icfg.weight_decay))
    state, step = opt.init(lora), 0
    grad = jax.jit(jax.grad(lambda l, t, m: batch_loss(l, base, t, m, cfg=cfg, icfg=icfg)[0]))
    for epoch in range(math.ceil(epochs)):
        order = [int(i) for i in epoch_order(k_shuffle, jnp.asarray(valid), epoch)][:len(examples)]
        for b in range(per_epoch):
            if step == max_steps:
                return lora, step
            idx = order[b * icfg.batch_size:(b + 1) * icfg.batch_size]
            updates, state = opt.update(grad(lora, tokens[idx], mask[idx]), state, lora)
            lora = optax.apply_updates(lora, updates)
            step += 1
    return lora, step


def test_fractional_epochs_train_a_partial_pass_like_a_sequential_loop(base):
    """0.5 and 1.5 epochs over 5 documents, batch 2: 2 and 5 steps (HF: ceil(0.5 x 3), ceil(1.5 x 3)), equal to a
    plain loop that stops there; the packed form takes the same steps."""
    from seal_jax.engine.inner import InnerConfig, inner_train_edits, pack_edits
    from seal_jax.engine.packed import train_packed
    from seal_jax.model.config import preset
    from seal_jax.model.lora import LoraSpec
    cfg = preset("tiny")
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "down")), batch_size=2, loss_chunk=8,
                       length_buckets=1)
    rng = np.random.default_rng(0)
    edits = [[(list(rng.integers(3, cfg.vocab_size, n)), [1] * n) for n in rng.integers(4, 16, 5)] for _ in range(2)]
    lrs, epochs = [1e-2, 2e-2], [0.5, 1.5]
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    packed = pack_edits(edits, lrs, epochs, batch_size=2)
    e, h = packed.arrays()
    lora, metrics = inner_train_edits(base, e, keys, h, cfg=cfg, icfg=icfg, steps=packed.steps)
    assert np.asarray(metrics["active"]).sum(-1).tolist() == [2, 5]
    for i in range(2):
        ref, steps = _sequential_partial_pass(base, cfg, icfg, edits[i], keys[i], lrs[i], epochs[i])
        assert steps == [2, 5][i]
        jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x)[i], np.asarray(y), atol=5e-5, rtol=5e-5),
                     lora, ref)
    got, got_m = train_packed(base, cfg, icfg, packed, keys)
    np.testing.assert_array_equal(np.asarray(got_m["active"]), np.asarray(metrics["active"])[:, :got_m["active"].shape[1]])
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5, rtol=2e-5),
                 got, lora)


# ---- 10. the random translation's seed -----------------------------------------------------------------------


def test_random_translate_draws_from_the_ttt_seed():
    """get_test_time_train_data(seed) makes RandomState(seed), and RandomTranslateXY copies it fresh per example
    (augmenters.py:66-85, 532-548). RandomState(1).randint(0, 3) draws 1, 0, 0, 1: a 3x3 example's input rolls
    one row down, its output one column right (seed 0 draws 0, 1, 0, 1: both one column right)."""
    g = np.arange(9).reshape(3, 3)
    translate = next(a for a in A.BASIC if a.name == "translate")
    demos, query = translate((((g, g),), (g, g)), 1)
    down, right = np.roll(g, 1, axis=0), np.roll(g, 1, axis=1)
    np.testing.assert_array_equal(demos[0][0], [[6, 7, 8], [0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(demos[0][1], [[2, 0, 1], [5, 3, 4], [8, 6, 7]])
    np.testing.assert_array_equal(query[0], down)
    np.testing.assert_array_equal(query[1], right)
    demos0, _ = translate((((g, g),), (g, g)))
    np.testing.assert_array_equal(demos0[0][0], right)
    # the TTT data pass their seed on: seed 1's pseudo-tasks hold the seed-1 translation, not the seed-0 one
    pairs = ((g, g), (g.T, g.T), (g + 1, g + 1))
    initial = T.leave_n_tasks(pairs, lambda i: pairs[i], 1)
    keys = {s: {T.task_key(t) for t in T.pseudo_tasks(pairs, [translate], 1, seed=s)} for s in (0, 1)}
    assert T.task_key(translate(initial[0], 1)) in keys[1] and T.task_key(translate(initial[0], 1)) not in keys[0]
    assert T.task_key(translate(initial[0], 0)) in keys[0]
