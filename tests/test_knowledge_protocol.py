"""SEAL's knowledge-incorporation protocol (issue 15): templates verbatim, raw vs chat prompting, SEAL's document
building, the judge against a fake OpenAI-compatible server, the eval-200 selection, reward repeats, top-1 selection,
CPT documents, continual, and the :smoke run of the paper protocol."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import config_module, load_config
from seal_jax.domains.knowledge.passages import Passage
from seal_jax.domains.knowledge.self_edit import (IMPLICATIONS_LONG_TEMPLATE, IMPLICATIONS_TEMPLATE,
                                                  IMPLICATIONS_VERY_LONG_TEMPLATE, INSTRUCT_TEMPLATE, PROMPTS,
                                                  REWRITE_TEMPLATE, SELF_QA_TEMPLATE, DocOptions, build_documents)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P = Passage("p1", "Varnholt Observatory", "The Varnholt Observatory was founded in 1873.",
            (("When was the Varnholt Observatory founded?", "1873"),))

# SEAL's text, typed from knowledge-incorporation/src/data_generation/make_squad_data.py and src/utils.py.
SEAL = {
    "implications": "Let's read the following passage and produce a list of implications derived directly or "
                    "indirectly from the content.\n\nPassage:\n{title}\n{context}\n\nImplications:\n",
    "implications-long": "Let's read the following passage and produce a long list of implications derived directly "
                         "or indirectly from the content.\n\nPassage:\n{title}\n{context}\n\nImplications:\n",
    "implications-very-long": "Let's read the following passage and produce a very long list of implications derived "
                              "directly or indirectly from the content.\n\nPassage:\n{title}\n{context}\n\n"
                              "Implications:\n",
    "rewrite": "Let's read the following passage and rewrite it in a few different ways, each one separated by a "
               "newline.\n\nPassage:\n{title}\n{context}\n\nRewritten passages:\n",
    "self-qa": "Let's read the following passage and rewrite it in a question-answer format.\n\nPassage:\n{title}\n"
               "{context}\n\nQuestion 1: ",
}
SEAL_INSTRUCT = ("<|im_start|>system\nYou are an assistant tasked with analyzing the provided passage and producing a "
                 "list of implications derived directly or indirectly from the content. <|im_end|>\n<|im_start|>user\n"
                 "{title}\n{context}<|im_end|>\n<|im_start|>assistant\n")
SEAL_ANSWER = "Let's answer a question directly and concisely.\nQuestion: {question}\nAnswer:\n"
SEAL_ANSWER_INSTRUCT = ("<|im_start|>system\nYou are an assistant to answer a question directly and concisely."
                        "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
SEAL_JUDGE = ("You are a grading assistant. Your job is to determine whether a student's answer correctly answers "
              "the question based solely on the provided gold answer. Do not use any outside knowledge. The student "
              "answer can include additional information, but it must at least fully convey the gold answer and must "
              "not contradict it. Ignore style, phrasing, or extra details that do not affect correctness. Respond "
              "ONLY with 'yes' or 'no'.\n\nQuestion: {question}\nGold answer: {gold}\nStudent answer: {pred}\nIs the "
              "student answer correct based solely on the gold answer? Respond 'yes' or 'no'.")


def test_templates_are_seals_text_verbatim():
    from seal_jax.domains.knowledge.updates import ANSWER_TEMPLATE_BASE, ANSWER_TEMPLATE_INSTRUCT
    assert PROMPTS == SEAL
    assert (IMPLICATIONS_TEMPLATE, IMPLICATIONS_LONG_TEMPLATE, IMPLICATIONS_VERY_LONG_TEMPLATE, REWRITE_TEMPLATE,
            SELF_QA_TEMPLATE) == tuple(SEAL[k] for k in ("implications", "implications-long",
                                                         "implications-very-long", "rewrite", "self-qa"))
    assert INSTRUCT_TEMPLATE == SEAL_INSTRUCT
    assert ANSWER_TEMPLATE_BASE == SEAL_ANSWER and ANSWER_TEMPLATE_INSTRUCT == SEAL_ANSWER_INSTRUCT
    assert SELF_QA_TEMPLATE.endswith("Question 1: ")


@pytest.mark.parametrize("preset,prompting,chat", [("paper", "auto", False), ("smoke", "auto", True),
                                                   ("demo", "auto", True), ("demo", "raw", False),
                                                   ("paper", "chat", True)])
def test_raw_vs_chat_prompting_per_config(preset, prompting, chat):
    """auto: SEAL's raw base-model text for Qwen2.5-7B, SEAL's ChatML prompt for an instruct model; rendered
    through SmolLM2's (ChatML) chat template, the chat prompt is SEAL's hand-written string exactly."""
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge.domain import KnowledgeDomain
    from seal_jax.domains.knowledge.updates import answer_prompts, passage_questions
    from seal_jax.tokenizer import load_tokenizer
    from seal_jax.weights import resolve_model_path
    c = load_config("knowledge.py", preset)
    c.self_edit.prompting = prompting
    s = knowledge_settings(c)
    assert s.chat is chat
    tok = load_tokenizer(resolve_model_path("smollm2-135m"))
    domain = KnowledgeDomain(s)
    got = tok.decode(domain.prompt_ids(tok, P))
    asked = passage_questions([P])[0][0]
    assert asked == "Topic: Varnholt Observatory\nWhen was the Varnholt Observatory founded?"
    answer = tok.decode(answer_prompts(tok, [asked], s.chat)[0])
    if chat:
        assert got == SEAL_INSTRUCT.format(title=P.title, context=P.context)
        assert answer == SEAL_ANSWER_INSTRUCT.format(question=asked)
    else:
        assert got == SEAL[s.prompt].format(title=P.title, context=P.context)
        assert answer == SEAL_ANSWER.format(question=asked)
    c.self_edit.prompting = "sometimes"
    with pytest.raises(ValueError, match="self_edit.prompting 'sometimes'"):
        knowledge_settings(c)


T, C = "Genghis Khan", "Genghis Khan founded the Mongol Empire."
PASSAGE = f"{T}\n{C}"


@pytest.mark.parametrize("completion,split,expected", [
    # line split; numbering kept; line 1 is a preamble only when line 2 starts with "1."
    ("Sure, here is a list:\n1. He founded it.\n2. It was large.", True, ["1. He founded it.", "2. It was large."]),
    ("He founded it.\n1. It was large.\n\n  Mongols rode. ", True, ["1. It was large.", "Mongols rode."]),
    ("Intro:\n- He founded it.\n1. It was large.", True, ["Intro:", "- He founded it.", "1. It was large."]),
    # --- segments, then lines
    ("A rewrite.\n---\nAnother one.\nSecond line.\n---\n", True, ["A rewrite.", "Another one.", "Second line."]),
    ("A rewrite.\nStill it.\n---\nAnother one.", False, ["A rewrite.\nStill it.", "Another one."]),
    # self-QA rule: both "Question N:" and "Answer:" present -> one document per Q/A block, whatever the prompt
    ("Who founded it?\nAnswer: Genghis Khan\nQuestion 2: What?\nAnswer: The Mongol Empire", True,
     ["Question 1: Who founded it?\nAnswer: Genghis Khan", "Question 2: What?\nAnswer: The Mongol Empire"]),
    ("Question 1: Who?\nAnswer : Khan\n---\nQuestion 2: What?\nAnswer: Empire", True,
     ["Question 1: Who?\nAnswer : Khan\n---", "Question 2: What?\nAnswer: Empire"]),
    # SEAL's regex needs "Answer:" (or "Answer :"): "Answer 1:" falls through to the line split
    ("Who founded it?\nAnswer 1: Genghis Khan\nQuestion 2: What?\nAnswer 2: The empire", True,
     ["Who founded it?", "Answer 1: Genghis Khan", "Question 2: What?", "Answer 2: The empire"]),
    # empty completions: passage only with the split, a title-only document without it (SEAL's CPT naive run)
    ("", True, []),
    ("  ", False, [""]),
])
def test_build_documents_follows_seal(completion, split, expected):
    docs = build_documents(T, C, completion, DocOptions(split_lines=split))
    assert docs == [f"{T}\n{b}" for b in expected] + [PASSAGE]


# ---- the judge ------------------------------------------------------------------------------------------------

KEY = "sk-test-NEVER-LOG-THIS-9f3a"


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1 that records every request and answers by `reply(path, body, n)`:
    (status, text) or ("sleep", seconds)."""

    def __init__(self, reply):
        import http.server
        import threading
        self.requests, self.reply = [], reply
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, dict(self.headers), body))
                status, text = fake.reply(self.path, body, len(fake.requests))
                if status == "sleep":
                    time.sleep(text)
                    status, text = 200, "yes"
                if self.path.endswith("/responses"):
                    payload = {"output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}
                else:
                    payload = {"choices": [{"message": {"role": "assistant", "content": text}}]}
                data = json.dumps(payload if status == 200 else {"error": text}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai():
    servers = []

    def start(reply):
        servers.append(FakeOpenAI(reply))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def test_judge_prompt_is_seals():
    from seal_jax.domains.knowledge.judge import JUDGE_PROMPT
    assert JUDGE_PROMPT == SEAL_JUDGE


@pytest.mark.parametrize("reply,verdict", [("Yes.", 1.0), ("yes", 1.0), ("YES - correct", 1.0), ("no", 0.0),
                                           ("yes, but no", 0.0), ("", 0.0), ("Yesterday", 0.0), ("No.", 0.0),
                                           ("The answer is correct.", 0.0)])
def test_judge_request_shape_prompt_and_verdict_rule(fake_openai, monkeypatch, reply, verdict):
    from seal_jax.domains.knowledge.judge import HttpJudge
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = fake_openai(lambda path, body, n: (200, reply))
    judge = HttpJudge(server.url, "gpt-4.1", api="responses", backoff=0.0)
    q = "Topic: Super Bowl 50\nWhich team won?"
    assert judge([q], ["  Denver Broncos \n"], ["Denver Broncos"]) == ([verdict], [False])
    (path, headers, body), = server.requests
    assert path == "/v1/responses" and headers["Authorization"] == f"Bearer {KEY}"
    assert body == {"model": "gpt-4.1", "input": SEAL_JUDGE.format(question=q, gold="Denver Broncos",
                                                                     pred="Denver Broncos")}
    chat = HttpJudge(server.url, "judge", api="chat", backoff=0.0)
    assert chat([q], ["Denver"], ["Denver Broncos"]) == ([verdict], [False])
    path, _, body = server.requests[-1]
    assert path == "/v1/chat/completions" and body == {
        "model": "judge", "messages": [{"role": "user", "content": SEAL_JUDGE.format(
            question=q, gold="Denver Broncos", pred="Denver")}]}


def test_judge_empty_answer_retries_fallback_timeout_and_key_never_logged(fake_openai, monkeypatch, caplog):
    import logging
    from seal_jax.domains.knowledge.judge import HttpJudge
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    # an empty answer is wrong without a call
    server = fake_openai(lambda path, body, n: (200, "yes"))
    judge = HttpJudge(server.url, "gpt-4.1", api="responses", backoff=0.0)
    assert judge(["q", "q"], ["", "  \n"], ["a", "a"]) == ([0.0, 0.0], [False, False]) and not server.requests
    # a 500, then success: retried, right verdict
    server = fake_openai(lambda path, body, n: (500, "boom") if n == 1 else (200, "Yes."))
    assert HttpJudge(server.url, "gpt-4.1", api="responses", backoff=0.0)(["q"], ["a"], ["a"]) == ([1.0], [False])
    assert [p for p, _, _ in server.requests] == ["/v1/responses"] * 2
    # the Responses API down: 3 attempts, then SEAL's one Chat Completions fallback
    server = fake_openai(lambda path, body, n: (503, "down") if path.endswith("/responses") else (200, "yes"))
    assert HttpJudge(server.url, "gpt-4.1", api="responses", backoff=0.0)(["q"], ["a"], ["a"]) == ([1.0], [False])
    assert [p for p, _, _ in server.requests] == ["/v1/responses"] * 3 + ["/v1/chat/completions"]
    # every call times out: wrong, and counted as a failure
    server = fake_openai(lambda path, body, n: ("sleep", 1.5))
    t0 = time.time()
    scores, failed = HttpJudge(server.url, "gpt-4.1", api="responses", timeout=0.3, retries=2, backoff=0.0)(
        ["q"], ["a"], ["a"])
    assert (scores, failed) == ([0.0], [True]) and len(server.requests) == 3 and time.time() - t0 < 5
    assert "timeout" in caplog.text.lower() or "Timeout" in caplog.text
    assert KEY not in caplog.text


def test_judge_startup_checks_and_key_never_written(fake_openai, tmp_path):
    """judge-http without a key for the OpenAI API, or without an endpoint, stops at start-up with the reason; a run
    against an endpoint writes no trace of the key in its output, logs or files."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    base = [sys.executable, "-m", "seal_jax.cli.evaluate", "--config=configs/knowledge_eval.py:smoke",
            f"--out={tmp_path / 'x'}", "--config.eval.grader=judge-http", "--config.eval.judge_model=gpt-4.1"]
    out = subprocess.run(base + ["--config.eval.judge_url=https://api.openai.com/v1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "OPENAI_API_KEY" in out.stderr and "not set" in out.stderr
    out = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "needs an endpoint" in out.stderr
    assert not (tmp_path / "x").exists()  # stopped before writing anything

    calls = []
    server = fake_openai(lambda path, body, n: (calls.append(path), (500, "err") if n % 2 else (200, "yes"))[1])
    run_dir = tmp_path / "run"
    # SmolLM2 (the tiny random model answers only whitespace, which is never sent), one passage, no update
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.evaluate", "--config=configs/knowledge_eval.py:demo",
                          f"--out={run_dir}", "--config.eval.grader=judge-http", f"--config.eval.judge_url={server.url}",
                          "--config.eval.judge_model=gpt-4.1", "--config.eval.conditions=base",
                          "--config.data.offset=45", "--config.eval.max_new_tokens=4", "--config.mesh.edit=0"],
                         cwd=ROOT, env=dict(env, OPENAI_API_KEY=KEY), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert calls and all(h.get("Authorization") == f"Bearer {KEY}" for _, h, _ in server.requests)
    assert KEY not in out.stdout + out.stderr
    for root, _, files in os.walk(run_dir):
        for f in files:
            assert KEY.encode() not in open(os.path.join(root, f), "rb").read(), f


# ---- data ------------------------------------------------------------------------------------------------------

def test_disjoint_draw_takes_fresh_blocks_in_order():
    from seal_jax.rl.restem import RestemConfig, draw_contexts
    config = RestemConfig(iterations=3, contexts=4, samples=1, seed=0, outer=None, draw="disjoint")
    items = list(range(10))
    assert [draw_contexts(items, it, config) for it in (0, 1)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match=r"iteration 2 needs contexts \[8, 12\) but there are 10"):
        draw_contexts(items, 2, config)
    import dataclasses
    rnd = dataclasses.replace(config, draw="random")
    assert len(set(draw_contexts(items, 0, rnd))) == 4 and draw_contexts(items, 0, rnd) == draw_contexts(items, 0, rnd)


def test_eval_200_selection_is_seals_shuffle():
    """SEAL: random.seed(42); random.shuffle(raw); raw[start:start + n]: the same items in the same order."""
    import random
    from seal_jax.domains.knowledge.passages import seal_subset
    raw = [{"title": f"t{i % 48}", "context": f"c{i}"} for i in range(2067)]
    for start, n in [(0, 200), (0, 250), (50, 50), (100, 0)]:
        direct = list(raw)
        random.seed(42)
        random.shuffle(direct)
        expected = direct[start:start + n] if n > 0 else direct[start:]
        assert seal_subset(raw, 42, start, n) == expected
    assert raw == [{"title": f"t{i % 48}", "context": f"c{i}"} for i in range(2067)]  # the input is not shuffled
    assert seal_subset(raw, 43, 0, 200) != seal_subset(raw, 42, 0, 200)


def _squad_file(path, n, prefix):
    records = [{"title": f"{prefix} title {i}", "context": f"{prefix} passage {i}.",
                "questions": [{"question": f"q{i}?", "answer": f"a{i}"}]} for i in range(n)]
    path.write_text(json.dumps(records))
    return records


def test_paper_data_split_from_local_files_and_hub_offline(tmp_path, monkeypatch):
    """:paper with SEAL's local files: RL on the train file shuffled with seed 42 (round 1 its passages [0, 50),
    round 2 [100, 150)), evaluation on SEAL's 200 of the validation file; the hub path without network is a clear
    error; preset paths resolve from the repository."""
    import random
    from seal_jax.cli.settings import domain_for
    from seal_jax.domains.knowledge.passages import load_passages
    train, val = tmp_path / "squad_train.json", tmp_path / "squad_val.json"
    train_records, val_records = _squad_file(train, 160, "train"), _squad_file(val, 300, "val")
    c = load_config("knowledge.py", "paper")
    c.data.update(source=str(train), eval_source=str(val))
    rl, held = domain_for(c).load_data()
    direct = list(val_records)
    random.seed(42)
    random.shuffle(direct)
    assert [p.context for p in held] == [r["context"] for r in direct[:200]]
    shuffled = list(train_records)
    random.seed(42)
    random.shuffle(shuffled)
    assert [p.context for p in rl] == [r["context"] for r in shuffled[0:50] + shuffled[100:150]]
    assert not {p.context for p in rl} & {p.context for p in held}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"could not load the 'train' split of 'rajpurkar/squad'.*local file"):
        load_passages("rajpurkar/squad:train")
    # the preset's data paths: from the repository root whatever the working directory
    monkeypatch.chdir(tmp_path)
    mod = config_module("knowledge.py")
    assert mod.repo_file("seal_jax/data/demo_corpus.json", "hub/x") == os.path.join(ROOT, "seal_jax/data/demo_corpus.json")
    assert mod.repo_file("data/squad/missing.json", "rajpurkar/squad:train") == "rajpurkar/squad:train"
    paper = mod.get_config("paper").data
    for path in (paper.source, paper.eval_source):
        assert os.path.isabs(path) or path.startswith("rajpurkar/squad:")


# ---- reward and selection --------------------------------------------------------------------------------------

def test_top1_always_under_paper():
    """:paper keeps the best self-edit of every passage even when it does not beat the baseline; ties go to the
    earlier sample; an empty top self-edit is dropped. The threshold rule (demo) filters against the baseline."""
    from seal_jax.cli.settings import domain_for
    rows = [{"passage_id": "a", "sample": s, "reward": r, "baseline": 0.5, "ok": True, "self_edit": f"edit {s}"}
            for s, r in enumerate([0.25, 0.4, 0.4])]
    rows += [{"passage_id": "b", "sample": s, "reward": r, "baseline": 0.0, "ok": True, "self_edit": t}
             for s, (r, t) in enumerate([(0.0, "x"), (0.0, "y")])]
    rows += [{"passage_id": "c", "sample": s, "reward": r, "baseline": 0.0, "ok": True, "self_edit": t}
             for s, (r, t) in enumerate([(0.2, "x"), (0.9, "  ")])]
    paper = domain_for(load_config("knowledge.py", "paper"))
    assert paper.settings.keep == "top1"
    assert [(r["passage_id"], r["sample"]) for r in paper.keep(rows)] == [("a", 1), ("b", 0)]
    demo = domain_for(load_config("knowledge.py", "demo"))
    assert [(r["passage_id"], r["sample"]) for r in demo.keep(rows)] == [("c", 1)]  # a: below its baseline


def test_paper_reward_is_the_mean_of_3_inner_runs(monkeypatch):
    """The E-step's reward under :paper settings is the mean accuracy of 3 independent inner updates per
    self-edit (SEAL's eval_times=3); evaluation keeps 1."""
    import dataclasses
    import jax
    import numpy as np
    from seal_jax.cli.common import build_model
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import updates
    from seal_jax.domains.knowledge.domain import KnowledgeDomain
    paper = knowledge_settings(load_config("knowledge.py", "paper"))
    assert (paper.reward_repeats, paper.repeats) == (3, 1)
    c = load_config("knowledge.py", "smoke")
    cfg, params, tok = build_model(c.model)
    settings = dataclasses.replace(knowledge_settings(c), reward_repeats=3, grading=paper.grading)
    calls = []

    def fake_grade(grading, qs, preds, golds):  # a per-answer score that follows the answer text
        calls.append(len(preds))
        return [sum(map(ord, p)) % 5 / 4 for p in preds], [False] * len(preds)
    monkeypatch.setattr(updates, "grade_answers", fake_grade)
    domain = KnowledgeDomain(settings)
    passages = [Passage(f"p{i}", f"Place {i}", f"Place {i} was founded in {1800 + i}.",
                        ((f"When was Place {i} founded?", str(1800 + i)), ("Who lives there?", "Nobody")))
                for i in range(2)]
    items, _ = domain.items(0, passages, [["It is old.\nIt is big."], ["Founded long ago."]], [(0, 0), (1, 0)])
    results = [r for chunk in domain.score(params, cfg, tok, items, jax.random.PRNGKey(1)) for r in chunk]
    assert len(results) == 2 and sum(calls) == 2 * 3 * 2  # items x repeats x questions
    for r in results:
        assert len(r.repeat_rewards) == 3 and r.reward == pytest.approx(np.mean(r.repeat_rewards))


# ---- evaluation: CPT, continual, Table 2 -----------------------------------------------------------------------

def test_cpt_documents_and_settings_are_seals():
    """CPT: k=5 completions per passage kept whole (no line split), the passage appended once per completion;
    passage only is SEAL's title-only document plus the passage at lr 1e-4; 3 epochs, lr 1e-3, batch 8."""
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import evaluation
    c = load_config("knowledge_eval.py", "paper")
    settings = knowledge_settings(c)
    comps = [f"Implication {j}a.\nImplication {j}b." for j in range(6)] + [""]
    completions = {P.context: ["  "] + comps}
    docs = evaluation.condition_docs("file", [P], settings, completions=completions, k=5, cpt=True)[0]
    passage = f"{P.title}\n{P.context}"
    assert docs == [d for j in range(5) for d in (f"{P.title}\nImplication {j}a.\nImplication {j}b.", passage)]
    assert docs.count(passage) == 5
    assert evaluation.condition_docs("passage", [P], settings, cpt=True)[0] == [f"{P.title}\n", passage]
    single = evaluation.condition_docs("file", [P], settings, completions=completions)[0]  # k=1, split
    assert single == [f"{P.title}\nImplication 0a.", f"{P.title}\nImplication 0b.", passage]
    cpt = evaluation.CptSettings()
    assert (cpt.k, cpt.epochs, cpt.lr, cpt.passage_lr, cpt.batch_size) == (5, 3, 1e-3, 1e-4, 8)
    s = evaluation.cpt_settings(settings, cpt, "self_edit_base")
    assert (s.epochs, s.lr, s.adapt.inner.batch_size) == (3, 1e-3, 8)
    assert s.adapt.inner.lora == settings.adapt.inner.lora and settings.adapt.inner.lora.rank == 32
    assert evaluation.cpt_settings(settings, cpt, "passage").lr == 1e-4
    assert c.eval.mode == "single,cpt" and c.eval.cpt_k == 5 and settings.eval_self_edits == 1


def test_continual_protocol_on_the_tiny_model(monkeypatch):
    """Row 0 is the no-edit model; at step k the self-edit comes from the model with steps 0..k-1 merged; earlier
    passages are re-scored; 2 runs of 1 sequence, run j drawn as SEAL's job j (random.seed(42 + j);
    random.sample), SEAL's statistics (a run of one sequence has standard deviation 0)."""
    import jax
    import numpy as np
    from seal_jax.cli.common import build_model
    from seal_jax.cli.settings import knowledge_settings
    from seal_jax.domains.knowledge import evaluation, updates
    c = load_config("knowledge_eval.py", "smoke")
    cfg, params, tok = build_model(c.model)
    settings = knowledge_settings(c)
    monkeypatch.setattr(updates, "grade_answers", lambda grading, qs, preds, golds: (
        [sum(map(ord, p)) % 3 / 2 for p in preds], [False] * len(preds)))
    writers = []

    def fake_sample(gen_params, cfg_, tok_, prompts, k, sampling, key):
        writers.append(gen_params)
        return [["It is old.\nIt has a founder."] * k for _ in prompts]
    monkeypatch.setattr(evaluation, "sample_self_edits", fake_sample)
    pool = [Passage(f"p{i}", f"Place {i}", f"Place {i} was founded in {1800 + i} by Ada Vell.",
                    ((f"When was Place {i} founded?", str(1800 + i)), ("Who founded it?", "Ada Vell")))
            for i in range(4)]
    cont = evaluation.ContinualSettings(sequences=1, k=2, seed=42, condition="self_edit", runs=2)
    res = evaluation.continual(params, cfg, tok, pool, settings, jax.random.PRNGKey(0), cont)
    import random
    expected = []
    for job in range(2):  # continual_self_edits.py:403,418 in job INDEX=job (continual_self_edits.sh:34)
        random.seed(42 + job)
        expected.append([p.id for p in random.sample(pool, 2)])
    assert res["sequences"] == expected and res["seeds"] == [42, 43] and res["n_sequences"] == 2
    mats = np.asarray(res["matrices"])
    assert mats.shape == (2, 3, 2) and np.isnan(mats[:, 1, 1]).all() and not np.isnan(mats[:, 2]).any()
    for s, ids in enumerate(res["sequences"]):
        seq = [next(p for p in pool if p.id == i) for i in ids]
        base = updates.baseline(params, cfg, tok, seq, settings)
        assert list(mats[s, 0]) == [base[p.id]["accuracy"] for p in seq]  # row 0: no edit
    assert len(writers) == 4
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa
    assert writers[0] is params and writers[2] is params  # step 0 of each sequence: the initial model writes
    assert changed(writers[1], params) and changed(writers[3], params)  # step 1: the model with step 0 merged
    np.testing.assert_allclose(res["mean"], (mats[0] + mats[1]) / 2)
    np.testing.assert_array_equal(res["std"], np.where(np.isnan(mats[0]), np.nan, 0.0))


def test_table2_rows_carry_the_papers_numbers(tmp_path):
    from seal_jax.domains.knowledge.evaluation import format_table2, table2
    from seal_jax.runtime.plots import plot_table2
    rows = table2({"single": {"base": 0.3, "self_edit_rl": 0.5}, "cpt": {"passage": 0.25}})
    assert [(r["mode"], r["condition"], r["ours"], r["paper"]) for r in rows] == [
        ("single", "base", 30.0, 32.7), ("single", "self_edit_rl", 50.0, 47.0), ("cpt", "passage", 25.0, 36.0)]
    assert "SEAL: self-edits after RL" in format_table2(rows)
    assert os.path.getsize(plot_table2(rows, str(tmp_path / "t.png"))) > 0


# ---- the :smoke variant of the paper protocol, end to end ------------------------------------------------------

def test_smoke_paper_protocol_end_to_end(tmp_path, fake_openai):
    """:smoke with SEAL's data path (local files in SEAL's format, the eval subset by SEAL's shuffle), 3 reward
    repeats, top-1 selection, disjoint rounds and the judge at an OpenAI-compatible endpoint; then the paper's
    evaluation (every Table 2 row, single and CPT, continual) of the trained generator. Offline, tiny model."""
    import random
    corpus = json.load(open(os.path.join(ROOT, "seal_jax", "data", "demo_corpus.json")))
    records = corpus["data"] if isinstance(corpus, dict) else corpus
    records = [{k: r[k] for k in ("title", "context", "questions")} for r in records]
    train, val = tmp_path / "squad_train.json", tmp_path / "squad_val.json"
    train.write_text(json.dumps(records[:40]))
    val.write_text(json.dumps(records[40:]))
    server = fake_openai(lambda path, body, n: (200, "yes"))
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    paper = [f"--config.data.source={train}", f"--config.data.eval_source={val}", "--config.data.eval_n=2",
             "--config.eval.grader=judge-http", f"--config.eval.judge_url={server.url}",
             "--config.eval.judge_model=gpt-4.1", "--config.eval.judge_api=responses"]
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.train", "--config=configs/knowledge.py:smoke",
                          f"--workdir={run}", "--config.rl.reward_repeats=3", *paper],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in open(run / "records.jsonl")]
    shuffled = list(records[:40])
    random.seed(42)
    random.shuffle(shuffled)
    by_iteration = [sorted({r["passage_id"] for r in rows if r["iteration"] == it}) for it in (0, 1)]
    titles = {f"squad_train.json:{i}": r["context"] for i, r in enumerate(records[:40])}
    assert [sorted(titles[i] for i in ids) for ids in by_iteration] == [
        sorted(r["context"] for r in shuffled[0:3]), sorted(r["context"] for r in shuffled[3:6])]
    metrics = [m for m in map(json.loads, open(run / "metrics.jsonl")) if "reward_mean" in m]
    assert [m["kept_fraction"] for m in metrics] == [1.0, 1.0]  # top-1 always
    final = json.load(open(run / "eval.json"))
    assert set(final) >= {"base", "passage_only", "self_edit_before_rl", "self_edit_after_rl"}

    comp = tmp_path / "gpt41.json"
    comp.write_text(json.dumps([{"context": r["context"], "completions": [f"{r['title']} is notable.\nIt is real."]}
                                for r in records[40:]]))
    out_dir = tmp_path / "eval"
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.evaluate", "--config=configs/knowledge_eval.py:smoke",
                          f"--out={out_dir}", f"--config.generator_workdir={run}", *paper,
                          "--config.eval.conditions=base,passage,self_edit_base,file,self_edit_rl",
                          "--config.eval.mode=single,cpt", f"--config.eval.completions_file={comp}",
                          "--config.eval.continual=True", "--config.eval.continual_k=2",
                          "--config.eval.continual_sequences=2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.load(open(out_dir / "eval.json"))
    assert result["passages"] == 2 and result["skipped"] == {}
    assert [(r["mode"], r["condition"]) for r in result["table2"]] == [
        (m, c) for m in ("single", "cpt") for c in ("base", "passage", "self_edit_base", "file", "self_edit_rl")]
    assert all(0 <= r["ours"] <= 100 for r in result["table2"])
    assert [r["paper"] for r in result["table2"]][:5] == [32.7, 33.5, 39.7, 46.3, 47.0]
    cont = result["continual"]
    assert len(cont["sequences"]) == 2 and len(cont["mean"]) == 3 and len(cont["std"]) == 3
    assert cont["mean"][1][1] is None and cont["mean"][2][1] is not None
    assert all(v is not None for v in cont["mean"][0])  # row 0: the no-edit model on every passage
    assert all(cont["mean"][i][j] is not None for i in range(1, 3) for j in range(i))  # each edited passage, after
    assert "Base model" in out.stdout and "32.7" in out.stdout
    for png in ("conditions.png", "conditions_cpt.png", "table2.png", "forgetting.png", "rl.png"):
        assert (out_dir / png).stat().st_size > 0
    for root, _, files in os.walk(tmp_path):
        for f in files:
            assert KEY.encode() not in open(os.path.join(root, f), "rb").read(), f
