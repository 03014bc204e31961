"""Grading answers against the gold answer: SQuAD-normalised string graders, or an LLM judge.

`grade_answers(grading, questions, preds, golds)` returns (scores in [0, 1], judge-failure flags): a string
grader never fails; a judge call that fails after its retries scores the answer wrong and is flagged, so callers
count failures per record and per run (a reply that is neither yes nor no is a wrong answer, not a failure, as in
SEAL).
"""
from __future__ import annotations

import dataclasses
import functools
import re
import string
from collections import Counter
from typing import Sequence

from seal_jax.domains.knowledge.judge import HttpJudge, ModelJudge, check_endpoint
from seal_jax.weights import load_model


@dataclasses.dataclass(frozen=True)
class Grading:
    grader: str = "contains"      # exact | contains | f1 | judge-http | judge-model
    judge_url: str = ""           # judge-http: an OpenAI-compatible endpoint (http://host:8000/v1)
    judge_model: str = ""         # judge-http: the endpoint's model name; judge-model: a seal-jax model path or name
    judge_api: str = "chat"       # judge-http: responses (SEAL: Responses API, chat fallback) | chat
    judge_key_env: str = "OPENAI_API_KEY"  # judge-http: the environment variable holding the API key


def check_grading(grading: Grading) -> None:
    """A clear error at start-up for a grading that cannot work (unknown grader, judge without endpoint, model or
    key), instead of every answer failing later."""
    if grading.grader not in (*GRADERS, "judge-http", "judge-model"):
        raise ValueError(f"grader {grading.grader!r}; choose one of {sorted(GRADERS)}, judge-http or judge-model")
    if grading.grader == "judge-model" and not grading.judge_model:
        raise ValueError("grader judge-model needs --config.eval.judge_model (a seal-jax model path or name)")
    if grading.grader == "judge-http":
        check_endpoint(grading.judge_url, grading.judge_model, grading.judge_api, grading.judge_key_env)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def contains(pred: str, gold: str) -> float:
    g = normalize_answer(gold)
    return float(bool(g) and f" {g} " in f" {normalize_answer(pred)} ")


def token_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or common == 0:
        return float(p == g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


GRADERS = {"exact": exact_match, "contains": contains, "f1": token_f1}


def grade(preds: Sequence[str], golds: Sequence[str], grader: str = "contains") -> list[float]:
    if grader not in GRADERS:
        raise ValueError(f"grader {grader!r}; choose one of {sorted(GRADERS)} (or configure a judge)")
    fn = GRADERS[grader]
    return [fn(p, g) for p, g in zip(preds, golds)]


@functools.lru_cache(maxsize=1)
def model_judge(path: str) -> ModelJudge:
    """A seal-jax model as judge, loaded once per process (the one cache in this module)."""
    cfg, params, tok = load_model(path)
    return ModelJudge(params, cfg, tok)


def grade_answers(grading: Grading, questions: Sequence[str], preds: Sequence[str],
                  golds: Sequence[str]) -> tuple[list[float], list[bool]]:
    """Scores in [0, 1] and per-answer judge-failure flags, by `grading.grader`."""
    check_grading(grading)
    if grading.grader == "judge-http":
        return HttpJudge(grading.judge_url, grading.judge_model, api=grading.judge_api,
                         api_key_env=grading.judge_key_env)(questions, preds, golds)
    if grading.grader == "judge-model":
        return model_judge(grading.judge_model)(questions, preds, golds)
    return grade(preds, golds, grading.grader), [False] * len(preds)
