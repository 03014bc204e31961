"""Answering questions with adapted models: greedy answers and teacher-forced answer log-probs, an adapter per row.

Questions from E self-edits are flattened into rows; `adapter_of_row[i]` names the adapter (from a stack
`[E, L, ...]`) that answers row i, so all E adapted models answer in one batched call. With no adapter the
base model answers (the baseline, computed once per context by the caller). `answer_per_edit` does the
flatten -> one call -> regroup per edit that every caller needs.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import rows_lora
from seal_jax.model.transformer import sequence_logprobs
from seal_jax.engine.inner import round_up
from seal_jax.runtime.sharding import batch_multiple, place_batch, to_host
from seal_jax.engine.sampling import Generation, SamplingConfig, generate, row_bucket
from seal_jax.tokenizer import chat_prompt


def question_prompts(tok, questions: Sequence[str], template: str = "{question}") -> list[list[int]]:
    """Each question formatted with `template`, as one user turn of the chat template."""
    return [chat_prompt(tok, template.format(question=q)) for q in questions]


def answer_questions(params, cfg: ModelConfig, tok, questions: Sequence[str], *, template: str = "{question}",
                     max_new_tokens: int = 64, lora=None, lora_scale: float = 0.0,
                     adapter_of_row: Optional[Sequence[int]] = None) -> Generation:
    """Greedy answers, one per question."""
    return generate(params, cfg, tok, question_prompts(tok, questions, template),
                    SamplingConfig(max_new_tokens=max_new_tokens), lora=lora, lora_scale=lora_scale,
                    adapter_of_row=adapter_of_row)


def answer_per_edit(params, cfg: ModelConfig, tok, prompts_per_edit: Sequence[Sequence[Sequence[int]]],
                    sampling: SamplingConfig, *, lora=None, lora_scale: float = 0.0,
                    max_rows: int = 0) -> list[list[str]]:
    """Every edit's prompts as rows of one `generate` call (of calls of `max_rows` rows, when > 0), regrouped:
    [edit][prompt] answer texts. Greedy answers do not depend on the split.

    With a LoRA stack `[E, L, ...]`, edit e's rows are answered by adapter e; without one, by the base model.
    """
    prompts = [p for edit in prompts_per_edit for p in edit]
    adapter_of_row = None if lora is None else [e for e, edit in enumerate(prompts_per_edit) for _ in edit]
    step = max_rows if max_rows > 0 else max(1, len(prompts))
    texts = []
    for i in range(0, len(prompts), step):
        texts += generate(params, cfg, tok, prompts[i:i + step], sampling, lora=lora, lora_scale=lora_scale,
                          adapter_of_row=None if adapter_of_row is None else adapter_of_row[i:i + step]).texts
    texts = iter(texts)
    return [[next(texts) for _ in edit] for edit in prompts_per_edit]


@functools.partial(jax.jit, static_argnames=("cfg", "lora_scale"))
def _mean_logprobs(params, lora, rows, tokens, loss_mask, *, cfg: ModelConfig, lora_scale: float):
    if lora is not None and rows is not None:
        lora = rows_lora(lora, rows)
    lp = sequence_logprobs(params, cfg, tokens, loss_mask, lora=lora, lora_scale=lora_scale)
    return jnp.sum(lp, -1) / jnp.maximum(jnp.sum(loss_mask[:, 1:], -1), 1)


def answer_logprobs(params, cfg: ModelConfig, tok, questions: Sequence[str], answers: Sequence[str], *,
                    template: str = "{question}", lora=None, lora_scale: float = 0.0,
                    adapter_of_row: Optional[Sequence[int]] = None) -> np.ndarray:
    """Mean per-token log-prob of each gold answer (EOS excluded) after its chat-formatted question: [Q]."""
    n = len(questions)
    seqs = []
    for prompt, answer in zip(question_prompts(tok, questions, template), answers):
        a = tok.encode(answer, add_special_tokens=False)
        seqs.append((prompt + a, [0] * len(prompt) + [1] * len(a)))
    B, S = round_up(row_bucket(n), batch_multiple(params)), round_up(max(len(t) for t, _ in seqs), 16)
    tokens, mask = np.zeros((B, S), np.int32), np.zeros((B, S), np.int32)
    for i, (t, m) in enumerate(seqs):
        tokens[i, :len(t)], mask[i, :len(m)] = t, m
    rows = None if adapter_of_row is None else np.pad(np.asarray(adapter_of_row, np.int32), (0, B - n))
    tokens, mask, rows = place_batch((tokens, mask, rows), params)
    out = _mean_logprobs(params, lora, rows, tokens, mask, cfg=cfg, lora_scale=float(lora_scale))
    return to_host(out)[:n]
