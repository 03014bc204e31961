"""LLM judges: is a predicted answer correct for the question, given the gold answer? (yes/no)

Two backends share one prompt and one parser: a seal-jax model (batched greedy decoding) or any
OpenAI-compatible chat endpoint (`POST {url}/chat/completions`) with retries and a timeout. Both return
(scores, failed): a judge call that still fails after its retries, or a reply that is neither yes nor no,
scores the answer as wrong and is flagged in `failed`, so callers can count failures per record and per run.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Optional, Sequence

from seal_jax.engine.sampling import SamplingConfig, generate
from seal_jax.tokenizer import chat_prompt

JUDGE_PROMPT = ("You are grading a quiz. Decide whether the student's answer means the same as the reference "
                "answer for this question. Minor wording differences are fine; missing or wrong facts are not.\n\n"
                "Question: {question}\nReference answer: {gold}\nStudent answer: {pred}\n\n"
                "Reply with exactly one word: yes or no.")


def parse_verdict(text: str) -> Optional[bool]:
    """True for yes, False for no, None when the reply is neither."""
    words = text.strip().lower().lstrip("*\"' ").split()
    if not words:
        return None
    head = words[0].strip(".,!:;\"'*")
    return True if head == "yes" else False if head == "no" else None


class HttpJudge:
    def __init__(self, url: str, model: str, timeout: float = 30.0, retries: int = 3, api_key_env: str = "OPENAI_API_KEY"):
        self.url, self.model, self.timeout, self.retries = url.rstrip("/"), model, timeout, retries
        self.api_key = os.environ.get(api_key_env, "")

    def _ask(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "temperature": 0.0, "max_tokens": 4,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.url}/chat/completions", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())["choices"][0]["message"]["content"]

    def __call__(self, questions: Sequence[str], preds: Sequence[str],
                 golds: Sequence[str]) -> tuple[list[float], list[bool]]:
        scores, failed = [], []
        for q, p, g in zip(questions, preds, golds):
            verdict = None
            for attempt in range(self.retries):
                try:
                    verdict = parse_verdict(self._ask(JUDGE_PROMPT.format(question=q, gold=g, pred=p)))
                    break
                except (urllib.error.URLError, TimeoutError, OSError, KeyError, ValueError):
                    time.sleep(min(2.0, 0.25 * 2 ** attempt))
            failed.append(verdict is None)
            scores.append(float(bool(verdict)))
        return scores, failed


class ModelJudge:
    """A seal-jax model as the judge (greedy, a few tokens)."""

    def __init__(self, params, cfg, tok):
        self.params, self.cfg, self.tok = params, cfg, tok

    def __call__(self, questions, preds, golds):
        prompts = [chat_prompt(self.tok, JUDGE_PROMPT.format(question=q, gold=g, pred=p))
                   for q, p, g in zip(questions, preds, golds)]
        out = generate(self.params, self.cfg, self.tok, prompts, SamplingConfig(max_new_tokens=4))
        verdicts = [parse_verdict(t) for t in out.texts]
        return [float(bool(v)) for v in verdicts], [v is None for v in verdicts]
