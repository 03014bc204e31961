"""Knowledge incorporation: passages, self-edit prompts, self-edit -> training documents, grading.

A passage is `{title, context, questions: [{question, answer}]}` (SEAL's SQuAD format). The model reads a
passage and writes a self-edit (implications, a rewrite, or question/answer pairs); the self-edit becomes
training documents for the inner update; the adapted model then answers the questions *without* the
passage, and the fraction graded correct is the reward.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import string
from collections import Counter
from typing import Optional, Sequence

DEMO_CORPUS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "demo_corpus.json")

# Our own wording of SEAL's self-edit prompts.
PROMPTS = {
    "implications": "Read the passage below and list the implications that follow from it, one per line.\n\n"
                    "Title: {title}\n{context}",
    "implications-long": "Read the passage below. Write a long list of implications and consequences of its "
                         "facts, one complete, self-contained sentence per line.\n\nTitle: {title}\n{context}",
    "implications-very-long": "Read the passage below. Write a very long, thorough list of every implication, "
                              "consequence and restatement of its facts you can think of, one self-contained "
                              "sentence per line.\n\nTitle: {title}\n{context}",
    "rewrite": "Rewrite the passage below in your own words, several times, each version on its own lines.\n\n"
               "Title: {title}\n{context}",
    "self-qa": "Read the passage below and write question and answer pairs that test every fact in it. "
               "Format each pair as two lines: 'Question: ...' then 'Answer: ...'.\n\nTitle: {title}\n{context}",
}
QUESTION_TEMPLATE = "Topic: {title}\n{question}"


@dataclasses.dataclass(frozen=True)
class Passage:
    id: str
    title: str
    context: str
    questions: tuple[tuple[str, str], ...]  # (question, answer)


# ---- data ---------------------------------------------------------------------------------------


def parse_passages(records: Sequence[dict], source: str = "input") -> list[Passage]:
    """Validate SQuAD-style records; a malformed one is an error naming its index and field."""
    out = []
    for i, r in enumerate(records):
        where = f"{source}: record {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where} is a {type(r).__name__}, expected an object with title/context/questions")
        for field in ("title", "context", "questions"):
            if field not in r or r[field] is None:
                raise ValueError(f"{where} has no '{field}' field")
        if not str(r["context"]).strip():
            raise ValueError(f"{where} has an empty 'context'")
        if not r["questions"]:
            raise ValueError(f"{where} has no questions")
        qs = []
        for j, q in enumerate(r["questions"]):
            for field in ("question", "answer"):
                if not isinstance(q, dict) or not str(q.get(field) or "").strip():
                    raise ValueError(f"{where}, question {j} has no '{field}'")
            qs.append((str(q["question"]).strip(), str(q["answer"]).strip()))
        out.append(Passage(str(r.get("id", f"{source}:{i}")), str(r["title"]).strip(), str(r["context"]).strip(),
                           tuple(qs)))
    return out


def load_passages(source: str = "demo", limit: Optional[int] = None) -> list[Passage]:
    """Passages from 'demo' (shipped corpus), a local .json/.jsonl file, or 'rajpurkar/squad' (online)."""
    if source == "demo":
        source = DEMO_CORPUS
    if os.path.exists(source):
        records = _read_json_records(source)
    elif "/" in source and not source.startswith((".", "/")):
        records = _squad_from_hub(source)
    else:
        raise FileNotFoundError(f"passages {source!r}: no such file (use 'demo', a .json/.jsonl path or a hub name)")
    passages = parse_passages(records, os.path.basename(source))
    return passages[:limit] if limit else passages


def json_lines(text: str, path: str) -> list:
    """The values of a JSON-lines text; a bad line is an error naming its number."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not readable as JSON ({e.msg})") from None
    return rows


def _read_json_records(path: str) -> list[dict]:
    """Records of a local JSON (a list, or {"data": [...]}) or JSONL file, read through `datasets`."""
    import datasets
    from datasets.exceptions import DatasetGenerationError
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16).lstrip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e})") from None
    if not head.startswith(("[", "{")):
        raise ValueError(f"{path}: not readable as JSON (expected a list of records or JSON lines)")
    datasets.disable_progress_bars()
    kw = {"field": "data"} if head.startswith("{") and '"data"' in head[:200] else {}
    if head.startswith("{") and not kw:  # JSON lines: name the first bad line (datasets' error does not)
        with open(path, encoding="utf-8") as f:
            json_lines(f.read(), path)
    try:
        ds = datasets.load_dataset("json", data_files=path, split="train", **kw)
    except (DatasetGenerationError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({str(e).splitlines()[0][:200]})") from None
    return ds.to_list()


def _squad_from_hub(name: str) -> list[dict]:
    """A hub SQuAD dataset (needs internet), grouped into one record per context."""
    import datasets
    ds = datasets.load_dataset(name, split="validation")
    grouped: dict[str, dict] = {}
    for row in ds:
        rec = grouped.setdefault(row["context"], {"title": row["title"], "context": row["context"], "questions": []})
        rec["questions"].append({"question": row["question"], "answer": row["answers"]["text"][0]})
    return list(grouped.values())


def split_passages(passages: Sequence[Passage], held_out: int) -> tuple[list[Passage], list[Passage]]:
    """A fixed split: the last `held_out` passages are for evaluation, the rest for RL."""
    if not 0 < held_out < len(passages):
        raise ValueError(f"held_out={held_out} must be between 1 and {len(passages) - 1}")
    return list(passages[:-held_out]), list(passages[-held_out:])


# ---- self-edits -> training documents -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DocOptions:
    split_lines: bool = True      # one document per line of the self-edit
    drop_preamble: bool = True    # drop a first line that introduces the list ("Here are ...:")
    prefix_title: bool = True     # "Title\nline" so the fact is attached to its topic
    append_passage: bool = True   # the passage itself as one more document


_PREAMBLE = re.compile(r"^(here|sure|certainly|the following|below)\b.*|.*:\s*$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


def self_edit_documents(p: Passage, self_edit: str, prompt: str = "implications",
                        opts: DocOptions = DocOptions()) -> list[str]:
    """Training documents from one self-edit, as SEAL builds them."""
    if prompt == "self-qa":
        docs = [f"Question: {q}\nAnswer: {a}" for q, a in parse_self_qa(self_edit)]
    elif opts.split_lines:
        lines = [_BULLET.sub("", line).strip() for line in self_edit.splitlines()]
        lines = [line for line in lines if line]
        if opts.drop_preamble and lines and _PREAMBLE.match(lines[0]):
            lines = lines[1:]
        docs = lines
    else:
        docs = [self_edit.strip()] if self_edit.strip() else []
    if opts.prefix_title:
        docs = [f"{p.title}\n{d}" for d in docs]
    if opts.append_passage:
        docs.append(f"{p.title}\n{p.context}")
    return docs


def parse_self_qa(text: str) -> list[tuple[str, str]]:
    """'Question: ...' / 'Answer: ...' pairs, in order; unpaired lines are ignored."""
    pairs, question = [], None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^(?:Q|Question)\s*\d*\s*[:.]\s*(.+)$", line, re.IGNORECASE)
        if m:
            question = m.group(1).strip()
            continue
        m = re.match(r"^(?:A|Answer)\s*\d*\s*[:.]\s*(.+)$", line, re.IGNORECASE)
        if m and question:
            pairs.append((question, m.group(1).strip()))
            question = None
    return pairs


# ---- grading --------------------------------------------------------------------------------------


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
