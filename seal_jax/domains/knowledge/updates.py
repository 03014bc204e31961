"""One knowledge update: train a LoRA on documents, answer the passages' questions without them, grade.

An `Item` is one update: the documents to train on and the passages whose questions test it (one passage for
a self-edit, several for continued pre-training on n passages jointly). `adapt_and_grade` runs items through
`engine.adapt` (`settings.repeats` independent trainings each) and grades a chunk's answers in one grader
call; `baseline` asks the untouched model the same questions.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import numpy as np

from seal_jax.domains.knowledge.grading import grade_answers
from seal_jax.domains.knowledge.passages import Passage
from seal_jax.domains.knowledge.settings import KnowledgeSettings
from seal_jax.domains.knowledge.self_edit import chatml_turns, encode_prompt
from seal_jax.engine.adapt import Adapted, Request, adapt_and_answer
from seal_jax.engine.answering import answer_per_edit
from seal_jax.engine.inner import tokenize_document

# SEAL's answer prompts, verbatim (src/utils.py lines 10-24): raw text for a base model, ChatML for an instruct one.
ANSWER_TEMPLATE_BASE = (
    "Let's answer a question directly and concisely.\n"
    "Question: {question}\n"
    "Answer:\n"
)
ANSWER_TEMPLATE_INSTRUCT = (
    "<|im_start|>system\nYou are an assistant to answer a question directly and concisely."
    "<|im_end|>\n"
    "<|im_start|>user\n{question}"
    "<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# SEAL's {question}: the title, then the question (query_server.py line 129, CPT.py line 139).
QUESTION_TEMPLATE = "Topic: {title}\n{question}"


@dataclasses.dataclass(frozen=True)
class Item:
    uid: int                      # the item's training keys derive from it
    passages: tuple[Passage, ...]
    documents: tuple[str, ...]
    sample: int = 0               # which self-edit of its passage (E-step items)
    self_edit: str = ""


@dataclasses.dataclass(frozen=True)
class Graded:
    item: Item
    reward: float                 # mean over repeats of the accuracy on the item's questions (0 for a failed one)
    repeat_rewards: list[float]
    answers: list[str]            # the first repeat's answers
    train_tokens: int             # over all repeats
    ok: bool
    reason: Optional[str]         # the first failed repeat's
    final_loss: float             # the first repeat's last loss
    judge_failures: int           # over all repeats


def passage_questions(passages: Sequence[Passage]) -> list[tuple[str, str, str]]:
    """(question as asked without its passage, question, gold answer) for every question of `passages`."""
    return [(QUESTION_TEMPLATE.format(title=p.title, question=q), q, a) for p in passages for q, a in p.questions]


def answer_prompts(tok, questions: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids of SEAL's answer prompt for each question (already "Topic: {title}\\n{question}")."""
    system, user = chatml_turns(ANSWER_TEMPLATE_INSTRUCT)
    return [encode_prompt(tok, chat, ANSWER_TEMPLATE_BASE.format(question=q), (system, user.format(question=q)))
            for q in questions]


def _grade_rows(settings: KnowledgeSettings, questions: Sequence[tuple[str, str, str]], answers: Sequence[str]):
    """Per (question, answer): (score, judge failed), graded in one call. A judge sees the question as asked
    ("Topic: {title}\\n{question}"), as SEAL's does."""
    scores, failed = grade_answers(settings.grading, [asked for asked, _, _ in questions], answers,
                                   [a for *_, a in questions])
    return list(zip(scores, failed))


def requests(settings: KnowledgeSettings, tok, item: Item, key) -> list[Request]:
    """The item's `repeats` trainings: the same documents and questions, key fold_in(fold_in(key, uid), r)."""
    documents = [tokenize_document(tok, d) for d in item.documents]
    prompts = answer_prompts(tok, [asked for asked, _, _ in passage_questions(item.passages)], settings.chat)
    return [Request(documents, settings.lr, settings.epochs,
                    np.asarray(jax.random.fold_in(jax.random.fold_in(key, item.uid), r)), prompts)
            for r in range(settings.repeats)]


def grade(settings: KnowledgeSettings, items: Sequence[Item], adapted: Sequence[Sequence[Adapted]]) -> list[Graded]:
    """A chunk's answers graded in one call, then combined per item over its repeats."""
    questions = [passage_questions(item.passages) for item in items]
    graded = iter(_grade_rows(settings, [q for qs, reps in zip(questions, adapted) for _ in reps for q in qs],
                              [a for reps in adapted for rep in reps for a in rep.answers]))
    out = []
    for item, qs, reps in zip(items, questions, adapted):
        per_repeat = [[next(graded) for _ in qs] for _ in reps]
        accs = [float(np.mean([s for s, _ in rows])) if rep.ok else 0.0 for rep, rows in zip(reps, per_repeat)]
        failed = [rep.reason for rep in reps if not rep.ok]
        out.append(Graded(item, float(np.mean(accs)), accs, reps[0].answers, sum(r.train_tokens for r in reps),
                          not failed, failed[0] if failed else None, reps[0].last_loss,
                          sum(int(f) for rows in per_repeat for _, f in rows)))
    return out


def adapt_and_grade(params, cfg, tok, items: Sequence[Item], settings: KnowledgeSettings, key, *, mesh=None,
                    desc: str = "inner updates") -> Iterator[list[Graded]]:
    """Train, answer and grade `items` chunk by chunk (`settings.adapt.edits_per_chunk` items per chunk)."""
    chunks = adapt_and_answer(params, cfg, tok, [requests(settings, tok, item, key) for item in items],
                              settings.adapt, mesh=mesh, desc=desc)
    for chunk in chunks:
        yield grade(settings, [items[i] for i in chunk.items], chunk.adapted)


def baseline(params, cfg, tok, passages: Sequence[Passage], settings: KnowledgeSettings) -> dict[str, dict]:
    """No-update answers and accuracy per passage id: {"answers", "scores", "judge_failures", "accuracy"}."""
    questions = [passage_questions([p]) for p in passages]
    prompts = [answer_prompts(tok, [asked for asked, _, _ in qs], settings.chat) for qs in questions]
    answers = answer_per_edit(params, cfg, tok, prompts, settings.adapt.answer, max_rows=settings.adapt.answer_rows)
    graded = iter(_grade_rows(settings, [q for qs in questions for q in qs], [a for texts in answers for a in texts]))
    res: dict[str, dict] = {}
    for p, texts in zip(passages, answers):
        r = res.setdefault(p.id, {"answers": [], "scores": [], "judge_failures": 0})
        for text in texts:
            score, failed = next(graded)
            r["answers"].append(text)
            r["scores"].append(score)
            r["judge_failures"] += int(failed)
    for r in res.values():
        r["accuracy"] = float(np.mean(r["scores"]))
    return res
