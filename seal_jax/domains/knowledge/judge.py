"""LLM judges as SEAL runs them: is a predicted answer correct for the question, given the gold answer?

SEAL grades with GPT-4.1 (knowledge-incorporation/src/utils.py lines 38-45, 103-160; TTT_server.py lines 82-97):
its prompt below, verbatim; the verdict is correct when the reply holds the word "yes" and not the word "no"
(case-insensitive, whole words); an empty answer is wrong without a call; each prompt is tried on the Responses
API (3 attempts, sleeping 1.5 s, 3 s, 4.5 s after failures), then once on Chat Completions, then counted wrong.

Two backends share that prompt and rule: any OpenAI-compatible endpoint (`HttpJudge`; api "responses" is SEAL's
`POST {url}/responses` with the chat fallback, api "chat" is `POST {url}/chat/completions` only, for servers
without the Responses API) and a seal-jax model (`ModelJudge`). Both return (scores, failed): `failed` marks
answers whose every call failed (scored wrong), so callers count them. The API key is read from the environment
variable the grading names (OPENAI_API_KEY) and is only ever put in the Authorization header: never logged,
never in an error message, never written.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

from seal_jax.engine.sampling import SamplingConfig, generate
from seal_jax.tokenizer import chat_prompt

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You are a grading assistant. Your job is to determine whether a student's answer correctly answers the question "
    "based solely on the provided gold answer. "
    "Do not use any outside knowledge. The student answer can include additional information, but it must at least "
    "fully convey the gold answer and must not contradict it. "
    "Ignore style, phrasing, or extra details that do not affect correctness. Respond ONLY with 'yes' or 'no'.\n\n"
    "Question: {question}\nGold answer: {gold}\nStudent answer: {pred}\n"
    "Is the student answer correct based solely on the gold answer? Respond 'yes' or 'no'."
)
OPENAI_URL = "https://api.openai.com/v1"
_YES = re.compile(r"\byes\b", re.IGNORECASE)
_NO = re.compile(r"\bno\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool:
    """SEAL's verdict rule: "yes" present and "no" absent, as whole words, any case."""
    return bool(_YES.search(text or "")) and not _NO.search(text or "")


def judge_prompt(question: str, pred: str, gold: str) -> str:
    """SEAL's grading prompt for one answer (the prediction stripped, as SEAL does)."""
    return JUDGE_PROMPT.format(question=question, gold=gold, pred=pred.strip())


class JudgeCallError(Exception):
    """One judge request failed; the message names the status or error, never the key."""


def check_endpoint(url: str, model: str, api: str, key_env: str) -> None:
    """The start-up check of a judge-http grading: a clear error now, not hundreds of failed calls later."""
    if not url:
        raise ValueError("grader judge-http needs an endpoint: --config.eval.judge_url "
                         f"(e.g. {OPENAI_URL} or http://host:8000/v1)")
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise ValueError(f"judge_url {url!r} is not an http(s) URL")
    if not model:
        raise ValueError("grader judge-http needs --config.eval.judge_model (the endpoint's model name, e.g. gpt-4.1)")
    if api not in ("responses", "chat"):
        raise ValueError(f"judge_api {api!r}; choose responses (SEAL: the Responses API, chat fallback) or chat")
    if urllib.parse.urlparse(url).hostname == "api.openai.com" and not os.environ.get(key_env):
        raise ValueError(f"grader judge-http at {url} needs an API key in the environment variable {key_env}, "
                         "which is not set")


class HttpJudge:
    """SEAL's judge against an OpenAI-compatible endpoint, one request at a time."""

    def __init__(self, url: str, model: str, timeout: float = 60.0, retries: int = 3, api: str = "chat",
                 api_key_env: str = "OPENAI_API_KEY", backoff: float = 1.5):
        check_endpoint(url, model, api, api_key_env)
        self.url, self.model, self.timeout, self.retries = url.rstrip("/"), model, timeout, retries
        self.api, self.backoff, self._key_env = api, backoff, api_key_env

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self._key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{self.url}/{path}", data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise JudgeCallError(f"HTTP {e.code} from {self.url}/{path}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeCallError(f"{type(reason).__name__} calling {self.url}/{path}") from None
        except ValueError:
            raise JudgeCallError(f"a reply from {self.url}/{path} that is not JSON") from None

    def _responses(self, prompt: str) -> str:
        """SEAL's `client.responses.create(model=..., input=prompt).output_text`."""
        reply = self._post("responses", {"model": self.model, "input": prompt})
        if isinstance(reply.get("output_text"), str):
            return reply["output_text"]
        try:
            return "".join(part.get("text", "") for item in reply["output"] if item.get("type") == "message"
                           for part in item.get("content", []) if part.get("type") == "output_text")
        except (KeyError, TypeError, AttributeError):
            raise JudgeCallError(f"a Responses reply from {self.url} without output text") from None

    def _chat(self, prompt: str) -> str:
        """SEAL's fallback: `client.chat.completions.create(model=..., messages=[user prompt])`."""
        reply = self._post("chat/completions", {"model": self.model, "messages": [{"role": "user", "content": prompt}]})
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise JudgeCallError(f"a chat reply from {self.url} without choices[0].message.content") from None

    def ask(self, prompt: str) -> str | None:
        """The judge's reply text, or None when every attempt failed."""
        primary = self._responses if self.api == "responses" else self._chat
        for attempt in range(self.retries):
            try:
                return primary(prompt)
            except JudgeCallError as e:
                log.warning("judge call failed (%s), attempt %d of %d", e, attempt + 1, self.retries)
                time.sleep(self.backoff * (attempt + 1))
        if self.api == "responses":
            try:
                return self._chat(prompt)
            except JudgeCallError as e:
                log.warning("judge fallback call failed (%s)", e)
        return None

    def __call__(self, questions: Sequence[str], preds: Sequence[str],
                 golds: Sequence[str]) -> tuple[list[float], list[bool]]:
        scores, failed = [], []
        for q, p, g in zip(questions, preds, golds):
            if not p.strip():  # SEAL: an empty answer is wrong, and never sent
                scores.append(0.0)
                failed.append(False)
                continue
            reply = self.ask(judge_prompt(q, p, g))
            scores.append(float(reply is not None and parse_yes_no(reply)))
            failed.append(reply is None)
        return scores, failed


class ModelJudge:
    """A seal-jax model as the judge: SEAL's prompt as one chat turn, greedy, a few tokens, SEAL's verdict rule."""

    def __init__(self, params, cfg, tok, max_new_tokens: int = 8):
        self.params, self.cfg, self.tok, self.max_new_tokens = params, cfg, tok, max_new_tokens

    def __call__(self, questions, preds, golds):
        rows = [i for i, p in enumerate(preds) if p.strip()]
        scores, failed = [0.0] * len(preds), [False] * len(preds)
        if rows:
            prompts = [chat_prompt(self.tok, judge_prompt(questions[i], preds[i], golds[i])) for i in rows]
            out = generate(self.params, self.cfg, self.tok, prompts, SamplingConfig(max_new_tokens=self.max_new_tokens))
            for i, text in zip(rows, out.texts):
                scores[i] = float(parse_yes_no(text))
        return scores, failed
