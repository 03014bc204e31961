"""Knowledge self-edits: the prompts that ask for them, and a self-edit -> the inner update's training documents.

The generator reads a passage and writes implications, a rewrite, or question/answer pairs (SEAL's prompts, in
our own wording); `self_edit_documents` turns that text into documents the way SEAL does: one per line, a
list's preamble dropped, each prefixed by the passage's title, the passage itself appended.
"""
from __future__ import annotations

import dataclasses
import re

from seal_jax.domains.knowledge.passages import Passage

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


def prompt_text(p: Passage, prompt: str = "implications") -> str:
    """The user message asking for a self-edit about `p` (one of PROMPTS)."""
    if prompt not in PROMPTS:
        raise ValueError(f"self-edit prompt {prompt!r}; choose one of {sorted(PROMPTS)}")
    return PROMPTS[prompt].format(title=p.title, context=p.context)


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
        docs.append(passage_document(p))
    return docs


def passage_document(p: Passage) -> str:
    """The passage as one training document: its title, then its text."""
    return f"{p.title}\n{p.context}"


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
