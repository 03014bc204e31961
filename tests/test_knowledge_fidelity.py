"""SEAL's knowledge incorporation as its shipped commands ran it (issue 28): hub titles, the stripped M-step
target, round 2 as SEAL's stored files show it, the continual runs and SEAL's averaging, stop tokens per model
family, an empty self-edit in evaluation, and the RL model writing, adapting and answering in Table 2's SEAL row.
Expected values are worked by hand from SEAL's code (knowledge-incorporation/ at 4cb1e7d) or copied from its
stored result files."""
import types

import numpy as np
import pytest

from seal_jax.domains.knowledge.passages import Passage
from conftest import load_config



def smollm2():
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    return load_tokenizer(resolve_model_path("smollm2-135m"))


# ---- 4: titles from the hub -----------------------------------------------------------------------------------

def test_hub_titles_follow_seals_rule(monkeypatch):
    """rajpurkar/squad names pages with underscores; SEAL's files have spaces (squad_val.json: "Super Bowl 50",
    "Sky (United Kingdom)") and keep percent escapes (iter0_train.json: "Jehovah%27s Witnesses"). The title is in
    the self-edit prompt, every training document and the question's Topic line."""
    import datasets
    from seal_jax.domains.knowledge.passages import load_passages
    from seal_jax.domains.knowledge.self_edit import build_documents, prompt_text
    from seal_jax.domains.knowledge.updates import passage_questions
    rows = [{"title": "Super_Bowl_50", "context": "Super Bowl 50 was played in 2016.", "question": "When?",
             "answers": {"text": ["2016", "in 2016"]}},
            {"title": "Super_Bowl_50", "context": "Super Bowl 50 was played in 2016.", "question": "What?",
             "answers": {"text": ["a game"]}},
            {"title": "Jehovah%27s_Witnesses", "context": "Witnesses meet weekly.", "question": "How often?",
             "answers": {"text": ["weekly"]}},
            {"title": "Sky_(United_Kingdom)", "context": "Sky is a broadcaster.", "question": "What is Sky?",
             "answers": {"text": ["a broadcaster"]}}]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: rows)
    passages = load_passages("rajpurkar/squad:validation")
    assert [p.title for p in passages] == ["Super Bowl 50", "Jehovah%27s Witnesses", "Sky (United Kingdom)"]
    assert passages[0].questions == (("When?", "2016"), ("What?", "a game"))
    p = passages[0]
    assert "Passage:\nSuper Bowl 50\nSuper Bowl 50 was played in 2016.\n\n" in prompt_text(p)
    assert build_documents(p.title, p.context, "It was in 2016.") == [
        "Super Bowl 50\nIt was in 2016.", "Super Bowl 50\nSuper Bowl 50 was played in 2016."]
    assert passage_questions([p])[0][0] == "Topic: Super Bowl 50\nWhen?"


# ---- 6: the M-step target ---------------------------------------------------------------------------------------

def test_m_step_trains_the_stripped_self_edit():
    """SEAL's SFT row is (prompt, completion.strip()) (make_squad_data.py:91, build_SFT_dataset.py:23): the loss
    covers the stripped text's tokens and EOS, none of the sample's surrounding whitespace."""
    from seal_jax.cli.settings import domain_for
    from seal_jax.engine.outer import sft_documents
    tok = smollm2()
    domain = domain_for(load_config("knowledge.py", "paper"))
    sample = "\n  1. Super Bowl 50 was played in 2016.\n2. Denver won.\n\n "
    target = domain.m_step_target({"self_edit": sample})
    assert target == "1. Super Bowl 50 was played in 2016.\n2. Denver won."
    prompt = [5, 6, 7]
    ((tokens, mask),) = sft_documents(tok, [(prompt, target)])
    body = tok.encode("1. Super Bowl 50 was played in 2016.\n2. Denver won.", add_special_tokens=False)
    assert tokens == prompt + body + [tok.eos_token_id]
    assert mask == [0, 0, 0] + [1] * (len(body) + 1)
    assert tok.encode(sample, add_special_tokens=False) != body  # the raw sample would train other tokens


# ---- 7: round 2 -------------------------------------------------------------------------------------------------

def _squad_file(path, n, prefix):
    import json
    records = [{"title": f"{prefix} title {i}", "context": f"{prefix} passage {i}.",
                "questions": [{"question": f"q{i}?", "answer": f"a{i}"}]} for i in range(n)]
    path.write_text(json.dumps(records))
    return records


def test_round_two_as_seals_stored_files_and_the_scripts_switch(tmp_path):
    """:paper: round 1 on passages [0, 50) of the shuffled train set with split_newlines (rank_iter0.json), round 2
    on [100, 150) with whole self-edits (rank_iter1.json: "split_newlines": false; iter1_train.json shares no
    passage with the 100 of iter0_train.json). The switch gives the script's version: [50, 100), split both."""
    import random
    from seal_jax.cli.settings import domain_for, restem_config
    from seal_jax.rl.restem import draw_contexts
    train, val = tmp_path / "squad_train.json", tmp_path / "squad_val.json"
    records = _squad_file(train, 200, "train")
    _squad_file(val, 250, "val")
    random.seed(42)  # make_squad_data.py:117-119
    random.shuffle(records)

    def rounds(*overrides):
        c = load_config("knowledge.py", "paper")
        c.data.update(source=str(train), eval_source=str(val))
        for key, value in overrides:
            section, field = key.split(".")
            c[section][field] = value
        domain = domain_for(c)
        rl, _ = domain.load_data()
        return domain, [[p.context for p in draw_contexts(rl, it, restem_config(c))] for it in (0, 1)]

    stored, (first, second) = rounds()
    assert first == [r["context"] for r in records[0:50]] and second == [r["context"] for r in records[100:150]]
    edit = "Implications:\n1. It is old.\n2. It is big."
    p = Passage("x", "T", "T is a place.", (("q?", "a"),))
    by_round = [stored.items(it, [p], [[edit]], [(0, 0)])[0][0].documents for it in (0, 1)]
    # build_train_sequences(edit, context, title, split_newlines=True / False), utils.py:182-198
    assert by_round[0] == ("T\n1. It is old.", "T\n2. It is big.", "T\nT is a place.")
    assert by_round[1] == ("T\nImplications:\n1. It is old.\n2. It is big.", "T\nT is a place.")
    script, (first, second) = rounds(("data.rounds", "0:50,50:100"), ("self_edit.round_split_lines", "true"))
    assert first == [r["context"] for r in records[0:50]] and second == [r["context"] for r in records[50:100]]
    assert [script.documents(it).split_lines for it in (0, 1)] == [True, True]
    with pytest.raises(ValueError, match=r"data.rounds '0:40,100:150': 0:40 holds 40 passages, but every round "
                                         r"takes rl.contexts=50"):
        rounds(("data.rounds", "0:40,100:150"))
    with pytest.raises(ValueError, match=r"'0-50' is not a range start:end"):
        rounds(("data.rounds", "0-50"))
    with pytest.raises(ValueError, match=r"self_edit.round_split_lines 'yes': 'yes' is neither true nor false"):
        rounds(("self_edit.round_split_lines", "yes"))
    with pytest.raises(ValueError, match=r"data.rounds reach passage 250, but .* holds 200"):
        rounds(("data.rounds", "0:50,200:250"))


# ---- 5: continual, SEAL's averaging -----------------------------------------------------------------------------

def test_seal_average_by_hand():
    """continual_self_edits.py:428-433 per run (statistics.mean, statistics.stdev), then average_results.py:124-125
    (np.mean over the runs' means, and over the runs' stds): 2 runs of 2 sequences, K=1 (a 2 x 1 matrix)."""
    from seal_jax.domains.knowledge.evaluation import seal_average
    nan = np.nan
    mats = np.array([[[[0.5], [1.0]], [[1.0], [0.5]]],      # run 0: sequences (row 0, row 1)
                     [[[0.0], [0.0]], [[0.0], [1.0]]]])     # run 1
    res = seal_average(mats)
    # run 0: row 0 values 0.5, 1.0 -> mean 0.75, stdev sqrt(0.25**2 * 2 / 1) = 0.353553; row 1 the same
    # run 1: row 0 0.0, 0.0 -> 0.0, 0.0; row 1 0.0, 1.0 -> 0.5, stdev sqrt(0.5**2 * 2) = 0.707107
    np.testing.assert_allclose(res["run_means"], [[[0.75], [0.75]], [[0.0], [0.5]]])
    np.testing.assert_allclose(res["run_stds"], [[[0.3535534], [0.3535534]], [[0.0], [0.7071068]]], atol=1e-7)
    np.testing.assert_allclose(res["mean"], [[0.375], [0.625]])
    np.testing.assert_allclose(res["std"], [[0.1767767], [0.5303301]], atol=1e-7)  # not the pooled std (0.4787)
    assert res["n_sequences"] == 4
    one = seal_average(np.array([[[[0.5, nan]]], [[[1.0, nan]]]]))  # 1 sequence per run: stdev -> 0.0
    np.testing.assert_array_equal(one["std"], [[0.0, nan]])
    np.testing.assert_allclose(one["mean"][0, 0], 0.75)


def test_seal_average_reproduces_seals_stored_overall_results():
    """results/continual_self_edits/run{0..7}/summary_*.json, cells (0, 0) and (8, 7) of each run's mean and std
    matrices, give overall_results.json's 0.3309 / 0.2446 and 0.3397 / 0.2105 (n_sequences 64) the same way."""
    from seal_jax.domains.knowledge.evaluation import seal_average
    means = {(0, 0): [0.2875, 0.35, 0.36736111111111114, 0.5, 0.20277777777777778, 0.37430555555555556, 0.3625,
                      0.20267857142857143],
             (8, 7): [0.38125, 0.175, 0.1965909090909091, 0.4375, 0.35625, 0.3568181818181818, 0.4291666666666667,
                      0.3854166666666667]}
    stds = {(0, 0): [0.2900123150094541, 0.282842712474619, 0.282006502670596, 0.18708286933869708,
                     0.19288490230683913, 0.24761539094776636, 0.23867192066576604, 0.23572781346463198],
            (8, 7): [0.2202879608927499, 0.19820624179302299, 0.1582025288725705, 0.3346106479391917,
                     0.12374368670764582, 0.21812769891565464, 0.2946278254943948, 0.13640436500952158]}
    overall = {(0, 0): (0.3309, 0.2446), (8, 7): (0.3397, 0.2105)}
    for cell, (mean, std) in overall.items():
        # 8 sequences per run whose sample mean and stdev are the stored ones: mu +- sigma * sqrt(7/8) alternately
        runs = np.array([[[[m + s * np.sqrt(7 / 8) * (-1) ** j]] for j in range(8)]
                         for m, s in zip(means[cell], stds[cell])])
        res = seal_average(runs)
        np.testing.assert_allclose(res["run_means"][:, 0, 0], means[cell])
        np.testing.assert_allclose(res["run_stds"][:, 0, 0], stds[cell])
        assert (round(float(res["mean"][0, 0]), 4), round(float(res["std"][0, 0]), 4)) == (mean, std)
        assert res["n_sequences"] == 64


def test_paper_continual_is_seals_eight_jobs():
    c = load_config("knowledge_eval.py", "paper")
    assert (c.eval.continual_runs, c.eval.continual_sequences, c.eval.continual_k, c.eval.continual_seed) == (
        8, 8, 8, 42)  # continual_self_edits.sh:13,34,40-41 for INDEX 0..7


# ---- 11: stop tokens --------------------------------------------------------------------------------------------

def hand_tokenizer(tokens, eos, unk=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(["hello", "world", *tokens])}
    t = Tokenizer(models.WordLevel(vocab, unk_token=unk or "hello"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token=eos, unk_token=unk)
    return tok, vocab


QWEN = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA31 = ["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]


@pytest.mark.parametrize("tokens,eos,unk,stops", [
    # Qwen2.5-7B (base, SEAL's knowledge model): EOS only, TTT_server.py:130 and vLLM's generation_config EOS
    (QWEN, "<|endoftext|>", None, ["<|endoftext|>"]),
    # Qwen2.5-7B-Instruct (--instruct_model): <|im_end|> (TTT_server.py:128) + generation_config [151645, 151643]
    (QWEN, "<|im_end|>", None, ["<|endoftext|>", "<|im_end|>"]),
    # Llama-3.2-1B-Instruct (SEAL's ARC model): engine.py:20's EOS and <|eot_id|>, generation_config's three
    (LLAMA31, "<|eot_id|>", None, ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]),
    (LLAMA31, "<|end_of_text|>", None, ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]),
    # a Llama 3.0 vocabulary has no <|eom_id|>
    (["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], "<|eot_id|>", None, ["<|end_of_text|>", "<|eot_id|>"]),
    # a ChatML instruct vocabulary whose <|endoftext|> is its unknown token (SmolLM2's layout)
    (QWEN, "<|im_end|>", "<|endoftext|>", ["<|im_end|>"]),
])
def test_stop_tokens_follow_seal_per_family(tokens, eos, unk, stops):
    from seal_jax.tokenizer import stop_token_ids
    tok, vocab = hand_tokenizer(tokens, eos, unk)
    assert stop_token_ids(tok) == sorted(vocab[s] for s in stops)


def test_smollm2_keeps_im_end_alone():
    """The embedded SmolLM2 (SEAL has no rule for it): <|im_end|> (id 2); its <|endoftext|> (id 0) is its unknown
    token, so no stop, as its own generation_config (eos_token_id 2) has it."""
    from seal_jax.tokenizer import stop_token_ids
    tok = smollm2()
    assert tok.eos_token == "<|im_end|>" and tok.unk_token_id == tok.convert_tokens_to_ids("<|endoftext|>") == 0
    assert stop_token_ids(tok) == [2]


# ---- 12: an empty self-edit in evaluation ----------------------------------------------------------------------

def test_empty_self_edit_in_evaluation_takes_the_next_completion(monkeypatch):
    """query_server.py:202 trains on the first non-empty of a passage's 5 completions; CPT.py:117-120 keeps the
    first 5 non-empty of its 5 (an empty one is dropped, not replaced) and falls back to the passage alone."""
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import evaluation
    settings = knowledge_settings(load_config("knowledge_eval.py", "paper"))
    tok = smollm2()
    script = {"A": iter(["", "  \n", "A is old.\nA is big.", "never drawn"]), "B": iter(["B is new."]),
              "C": iter(["", " ", "", "\n", "\t"]), "D": iter(["D1.", "", "D3.", "D4.", "D5.", "never drawn"])}
    calls = []

    def fake_sample(params, cfg, tok_, prompts, k, how, key, desc=""):
        names = [tok.decode(p).split("Passage:\n")[1][0] for p in prompts]
        calls.append((names, k))
        return [[next(script[n]) for _ in range(k)] for n in names]
    monkeypatch.setattr(evaluation, "sample_self_edits", fake_sample)
    passages = [Passage(n, n, f"{n} is a place.", (("q?", "a"),)) for n in "ABC"]
    docs = evaluation.condition_docs("self_edit", passages, settings, "gen", None, tok, key=np.zeros(2, np.uint32))
    assert docs == [["A\nA is old.", "A\nA is big.", "A\nA is a place."], ["B\nB is new.", "B\nB is a place."],
                    ["C\nC is a place."]]
    assert calls == [(["A", "B", "C"], 1), (["A", "C"], 1), (["A", "C"], 1), (["C"], 1), (["C"], 1)]
    calls.clear()
    d = Passage("D", "D", "D is a place.", (("q?", "a"),))
    (cpt,) = evaluation.condition_docs("self_edit", [d], settings, "gen", None, tok, key=np.zeros(2, np.uint32), k=5,
                                       cpt=True)
    assert cpt == [x for t in ("D1.", "D3.", "D4.", "D5.") for x in (f"D\n{t}", "D\nD is a place.")]
    assert calls == [(["D"], 5)]


# ---- 1: the SEAL row: the RL model writes, adapts and answers -------------------------------------------------

def test_seal_row_rl_model_writes_adapts_and_answers(monkeypatch):
    """Table 2's SEAL row (results/query_server/eval/iter2.json): the RL model writes the self-edits
    (make_squad_data.sh:13 MODEL_NAME = the checkpoint) and is the TTT server's model that is trained and answers
    (TTT_server.sh:13; iter2.json's baseline 33.36 differs from base.json's 32.67). A learner other than the RL
    model scores 0 here, so the initial weights in either role fail."""
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import evaluation
    from seal_jax.domains.knowledge.domain import KnowledgeDomain
    initial, rl = {"weights": "initial"}, {"weights": "rl"}
    settings = knowledge_settings(load_config("knowledge_eval.py", "paper"))
    tok = smollm2()
    writers, learners = [], []

    def fake_sample(params, cfg, tok_, prompts, k, how, key, desc=""):
        writers.append(params["weights"])
        return [[f"written by the {params['weights']} model"] * k for _ in prompts]

    def fake_adapt(learner, cfg, tok_, items, s, key, **kw):
        learners.append(learner["weights"])
        yield [types.SimpleNamespace(item=it, judge_failures=0,
                                     reward=float(learner is rl and "rl model" in it.documents[0])) for it in items]
    monkeypatch.setattr(evaluation, "sample_self_edits", fake_sample)
    monkeypatch.setattr(evaluation, "adapt_and_grade", fake_adapt)
    passages = [Passage(f"p{i}", f"Place {i}", f"Place {i} is old.", (("q?", "a"),)) for i in range(2)]
    key = np.zeros(2, np.uint32)
    acc = evaluation.run_conditions(initial, rl, None, tok, passages, settings, key,
                                    conditions=("self_edit_rl", "self_edit_base"))
    assert acc == {"self_edit_rl": 1.0, "self_edit_base": 0.0}
    assert (writers, learners) == (["rl", "initial"], ["rl", "initial"])
    writers.clear(), learners.clear()
    monkeypatch.setattr(evaluation, "baseline", lambda params, *a: {p.id: {"accuracy": 0.5, "judge_failures": 0}
                                                                    for p in passages})
    result = KnowledgeDomain(settings).final_eval(initial, rl, None, tok, passages, key)
    assert result["self_edit_after_rl"] == 1.0
    assert (writers, learners) == (["initial", "rl"], ["initial", "initial", "rl"])
