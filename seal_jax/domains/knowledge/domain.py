"""Knowledge incorporation as a SEAL domain (SEAL section 3.1).

Context: a passage with questions. Self-edit: implications (or a rewrite, or Q/A pairs) the generator writes
after reading it. Item: the self-edit's training documents (self_edit.py). Reward: the fraction of the
passage's questions the adapted model answers correctly *without* the passage (updates.py, grading.py).
Reward: the mean over `reward_repeats` inner updates (SEAL: 3). Keep rule: top1 (SEAL) keeps the best self-edit
of every passage (ties to the earlier sample); threshold keeps it only if it beats the no-update baseline by
`threshold`. M-step target: the self-edit text, stripped (SEAL strips it at generation and again when it builds
the SFT set).

Rounds as SEAL's stored files show them (`:paper`): round 1 on passages [0, 50) of the shuffled train set with
each self-edit split into lines, round 2 on passages [100, 150) with whole self-edits (`settings.rounds`,
`settings.round_split_lines`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from seal_jax.domains.base import Domain, EStepTiming
from seal_jax.domains.knowledge.evaluation import run_conditions
from seal_jax.domains.knowledge.passages import Passage, load_passages, seal_subset, split_passages
from seal_jax.domains.knowledge.self_edit import DocOptions, prompt_text, self_edit_documents, self_edit_prompt_ids
from seal_jax.domains.knowledge.settings import KnowledgeSettings
from seal_jax.domains.knowledge.updates import Graded, Item, adapt_and_grade, baseline
from seal_jax.engine.outer import keep_best


def keep_top1(records, group: str) -> list[dict]:
    """SEAL's ReST-EM selection (build_SFT_dataset.py lines 20-30, 57-65): per passage, the self-edit with the
    highest reward, ties to the earliest sample, with no threshold against the baseline; kept unless its text is
    empty (SEAL drops an empty top completion rather than taking the next)."""
    best: dict = {}
    for r in sorted(records, key=lambda r: (r[group], r["sample"])):
        if r[group] not in best or r["reward"] > best[r[group]]["reward"]:
            best[r[group]] = r
    return [r for r in best.values() if r["self_edit"].strip()]


class KnowledgeDomain(Domain):
    """Contexts are passages; a self-edit is text to train on; reward = accuracy on questions without the passage."""
    name = "knowledge"
    context_field = "passage_id"
    settings: KnowledgeSettings
    nothing_kept = "no self-edit beat the baseline; the generator is unchanged"

    def load_data(self) -> tuple[list[Passage], list[Passage]]:
        """(RL passages, held-out passages). With an eval_source, SEAL's split: RL on `source` (its SQuAD train set)
        shuffled with seed 42, evaluation on SEAL's subset of `eval_source`; else the last `held_out` of `source`."""
        s = self.settings
        if not s.eval_source:
            return split_passages(load_passages(s.source, s.limit or None), s.held_out)
        if s.rounds:  # each round's range of the shuffled train set, in order
            shuffled = seal_subset(load_passages(s.source), s.shuffle_seed)
            end = max(hi for _, hi in s.rounds)
            if end > len(shuffled):
                raise ValueError(f"data.rounds reach passage {end}, but {s.source} holds {len(shuffled)}: "
                                 "pass a larger source or other ranges")
            train = [p for lo, hi in s.rounds for p in shuffled[lo:hi]]
        else:
            train = seal_subset(load_passages(s.source), s.shuffle_seed, 0, s.limit)
        return train, self.eval_passages()

    def eval_passages(self) -> list[Passage]:
        """SEAL's evaluation passages: eval_source shuffled with seed 42, [eval_start, eval_start + eval_n)."""
        s = self.settings
        return seal_subset(load_passages(s.eval_source), s.shuffle_seed, s.eval_start, s.eval_n)

    def self_edit_prompt(self, context: Passage) -> str:
        return prompt_text(context, self.settings.prompt)

    def prompt_ids(self, tok, context: Passage) -> list[int]:
        return self_edit_prompt_ids(tok, context, self.settings.prompt, self.settings.chat)

    def baseline(self, params, cfg, tok, contexts: Sequence[Passage]) -> dict[str, dict]:
        return baseline(params, cfg, tok, contexts, self.settings)

    def documents(self, iteration: int) -> DocOptions:
        """How round `iteration`'s self-edits become documents: SEAL's split_newlines of that round, if set."""
        s = self.settings
        if not s.round_split_lines:
            return s.documents
        split = s.round_split_lines[min(iteration, len(s.round_split_lines) - 1)]
        return dataclasses.replace(s.documents, split_lines=split)

    def items(self, iteration, contexts, self_edits, todo) -> tuple[list[Item], list[dict]]:
        samples = len(self_edits[0]) if self_edits else 0
        s = self.settings
        opts = self.documents(iteration)
        items = []
        for i, k in todo:
            passage, text = contexts[i], self_edits[i][k]
            documents = self_edit_documents(passage, text, s.prompt, opts)
            items.append(Item(i * samples + k, (passage,), tuple(documents), k, text))
        return items, []

    def score(self, params, cfg, tok, items, key, *, mesh=None, desc="inner updates") -> Iterator[list[Graded]]:
        """Rewards: the mean accuracy over `reward_repeats` independent inner updates per self-edit (SEAL: 3)."""
        settings = dataclasses.replace(self.settings, repeats=self.settings.reward_repeats)
        return adapt_and_grade(params, cfg, tok, items, settings, key, mesh=mesh, desc=desc)

    def record(self, iteration: int, result: Graded, baseline: dict) -> dict:
        passage_id = result.item.passages[0].id
        return {"iteration": iteration, "passage_id": passage_id, "sample": result.item.sample,
                "self_edit": result.item.self_edit, "reward": result.reward,
                "baseline": baseline[passage_id]["accuracy"], "gain": result.reward - baseline[passage_id]["accuracy"],
                "answers": result.answers, "ok": result.ok, "reason": result.reason, "final_loss": result.final_loss,
                "judge_failures": result.judge_failures}

    def keep(self, records):
        if self.settings.keep == "top1":
            return keep_top1(records, self.context_field)
        if self.settings.keep != "threshold":
            raise ValueError(f"rl.keep {self.settings.keep!r}; choose top1 or threshold")
        return keep_best(records, self.context_field, self.settings.threshold, self.settings.min_reward)

    def m_step_target(self, record: dict) -> str:
        """The kept self-edit stripped of surrounding whitespace (SEAL: make_squad_data.py:91 strips every
        completion, build_SFT_dataset.py:23 the SFT target again)."""
        return record["self_edit"].strip()

    def metrics(self, records, kept, contexts, baseline, e_step: EStepTiming) -> dict:
        rewards = [r["reward"] for r in records]
        return {"reward_mean": float(np.mean(rewards)), "reward_max": float(np.max(rewards)),
                "baseline_accuracy": float(np.mean([b["accuracy"] for b in baseline.values()])),
                "adapted_accuracy": float(np.mean(rewards)),
                "kept_fraction": len(kept) / max(1, len(contexts)), "e_step_s": e_step.seconds,
                "inner_tokens_per_s": e_step.inner_tokens_per_s,
                "failed_edits": sum(not r["ok"] for r in records),
                "judge_failures": sum(r.get("judge_failures", 0) for r in records)
                + sum(b["judge_failures"] for b in baseline.values())}

    def final_eval(self, initial, trained, cfg, tok, held_out, key) -> dict:
        """Held-out accuracy: base, passage only, passage + self-edits before and after RL."""
        before = run_conditions(initial, initial, cfg, tok, held_out, self.settings, key)
        after = run_conditions(trained, trained, cfg, tok, held_out, self.settings, key, conditions=("self_edit",))
        return {"base": before["base"], "passage_only": before["passage"],
                "self_edit_before_rl": before["self_edit"], "self_edit_after_rl": after["self_edit"]}
