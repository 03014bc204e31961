"""The one interface a task family implements to be learned by SEAL: `Domain`.

A domain knows its contexts (a passage with questions, an ARC task) and nothing of the loop around them:

    context --self_edit_prompt--> the generator writes K self-edits (texts)
    texts   --items-------------> items (and rejected self-edits, already scored 0 with a reason)
    items   --score-------------> inner-update requests -> engine.adapt (train, answer) -> reward, chunk by chunk
    results --record / keep / m_step_target / metrics--> records.jsonl, the M-step's examples, metrics.jsonl

The ReST-EM driver (`seal_jax/rl/restem.py`) sees a domain only through these methods; the engine
(`seal_jax/engine`) never sees one. Contexts have an `id`; records name it under `context_field`.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
from typing import Any, Iterator, Sequence

import jax

from seal_jax.engine.sampling import SelfEditSampling, sample_self_edits
from seal_jax.tokenizer import chat_prompt

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class EStepTiming:
    seconds: float                # the E-step so far: sampling, baseline, inner updates, answers, rewards
    inner_tokens_per_s: float     # trained tokens over the wall time of the inner updates and answers


class Domain(abc.ABC):
    name: str                     # "knowledge", "arc": in logs and the results' heading
    context_field: str            # the record field holding a context's id ("passage_id", "task_id")
    nothing_kept: str             # the warning when the keep rule keeps no self-edit

    def __init__(self, settings):
        self.settings = settings  # the domain's typed settings (domains/<name>/settings.py)

    @property
    def self_edits(self) -> SelfEditSampling:
        """How the generator samples this domain's self-edits."""
        return self.settings.self_edits

    @abc.abstractmethod
    def load_data(self) -> tuple[list, list]:
        """(contexts for RL, held-out contexts for the final evaluation)."""

    @abc.abstractmethod
    def self_edit_prompt(self, context) -> str:
        """The user message that asks the generator for a self-edit (sampled in the E-step, trained on in the
        M-step)."""

    def prompt_ids(self, tok, context) -> list[int]:
        """Token ids of the self-edit prompt (sampled from in the E-step, trained on in the M-step): by default
        `self_edit_prompt` as one user turn of the chat template; a domain may prompt with raw text."""
        return chat_prompt(tok, self.self_edit_prompt(context))

    max_resamples: int = 0        # rounds of resampling the self-edits `acceptable` rejects (0: none)

    def acceptable(self, text: str) -> bool:
        """Whether a sampled self-edit is kept, or resampled (at most `max_resamples` rounds; SEAL's ARC
        resamples replies that are not JSON)."""
        return True

    @abc.abstractmethod
    def baseline(self, params, cfg, tok, contexts: Sequence) -> dict:
        """Per context id, what the model scores without any update ({} when the domain has no baseline)."""

    @abc.abstractmethod
    def items(self, iteration: int, contexts: Sequence, self_edits: Sequence[Sequence[str]],
              todo: Sequence[tuple[int, int]]) -> tuple[list, list[dict]]:
        """(items to adapt on, records of rejected self-edits) for the (context index, sample) pairs in `todo`;
        self_edits[i][s] is sample s for contexts[i]."""

    @abc.abstractmethod
    def score(self, params, cfg, tok, items: Sequence, key, *, mesh=None,
              desc: str = "inner updates") -> Iterator[list]:
        """Each item's inner updates (`engine.adapt.adapt_and_answer`), answers and reward, yielded chunk by
        chunk (chunks take like trainings together, not the items' order; each result names its item). A result
        has `train_tokens`."""

    @abc.abstractmethod
    def record(self, iteration: int, result: Any, baseline: dict) -> dict:
        """The records.jsonl row of a scored item."""

    @abc.abstractmethod
    def keep(self, records: Sequence[dict]) -> list[dict]:
        """ReST-EM's filter: the records whose self-edits the generator is trained to write."""

    @abc.abstractmethod
    def m_step_target(self, record: dict) -> str:
        """The completion the M-step trains on for a kept record."""

    @abc.abstractmethod
    def metrics(self, records: Sequence[dict], kept: Sequence[dict], contexts: Sequence, baseline: dict,
                e_step: EStepTiming) -> dict:
        """metrics.jsonl's row for an iteration, before the M-step adds its losses."""

    @abc.abstractmethod
    def final_eval(self, initial, trained, cfg, tok, held_out: Sequence, key) -> dict:
        """{condition: score} on the held-out contexts, before (`initial`) and after (`trained`) RL."""


def sample_acceptable(domain, params, cfg, tok, prompts: Sequence[list[int]], k: int, key,
                      sample=sample_self_edits) -> list[list[str]]:
    """k self-edits per prompt (`sample`: engine.sampling.sample_self_edits' signature); those
    `domain.acceptable` rejects are resampled, at most `domain.max_resamples` rounds (round r samples with
    fold_in(key, r)); what is still rejected after that is returned as it is."""
    texts = sample(params, cfg, tok, prompts, k, domain.self_edits, key)
    for r in range(1, domain.max_resamples + 1):
        bad = [(i, s) for i, row in enumerate(texts) for s, text in enumerate(row) if not domain.acceptable(text)]
        if not bad:
            break
        log.info("resampling %d self-edits (round %d of %d)", len(bad), r, domain.max_resamples)
        again = sample(params, cfg, tok, [prompts[i] for i, _ in bad], 1, domain.self_edits, jax.random.fold_in(key, r))
        for (i, s), row in zip(bad, again):
            texts[i][s] = row[0]
    return texts
