"""Knowledge self-edits: SEAL's prompts that ask for them, and a self-edit -> the inner update's training documents.

The templates below are SEAL's, verbatim, one string constant each with SEAL's placeholder names
(knowledge-incorporation/src/data_generation/make_squad_data.py lines 9-53). A base model reads the raw text of
one of the five base templates; an instruct model reads SEAL's one instruct prompt (a system line, then the
title and passage as the user turn), which we render through the tokenizer's chat template: for a ChatML
tokenizer that is SEAL's hand-written ChatML string exactly (tested). `Prompting` picks raw or chat.

`build_documents` is SEAL's `build_train_sequences` (src/utils.py lines 162-198), re-implemented: split on
`---`; with newline splitting, either SEAL's self-QA rule (taken when `Question N:` and `Answer:` both occur,
whatever the prompt) or one document per non-empty line with SEAL's preamble rule (drop line 1 when line 2
starts with "1."); numbering is kept; every document is "{title}\\n{text}"; the passage is appended.
"""
from __future__ import annotations

import dataclasses
import re

from seal_jax.domains.knowledge.passages import Passage
from seal_jax.tokenizer import chat_prompt

IMPLICATIONS_TEMPLATE = (
    "Let's read the following passage and produce a list of implications "
    "derived directly or indirectly from the content.\n\n"
    "Passage:\n{title}\n{context}\n\n"
    "Implications:\n"
)
IMPLICATIONS_LONG_TEMPLATE = (
    "Let's read the following passage and produce a long list of implications "
    "derived directly or indirectly from the content.\n\n"
    "Passage:\n{title}\n{context}\n\n"
    "Implications:\n"
)
IMPLICATIONS_VERY_LONG_TEMPLATE = (
    "Let's read the following passage and produce a very long list of implications "
    "derived directly or indirectly from the content.\n\n"
    "Passage:\n{title}\n{context}\n\n"
    "Implications:\n"
)
REWRITE_TEMPLATE = (
    "Let's read the following passage and rewrite it in a few different ways, each one separated by a newline.\n\n"
    "Passage:\n{title}\n{context}\n\n"
    "Rewritten passages:\n"
)
SELF_QA_TEMPLATE = (
    "Let's read the following passage and rewrite it in a question-answer format.\n\n"
    "Passage:\n{title}\n{context}\n\n"
    "Question 1: "
)
# SEAL's instruct-model prompt (make_squad_data.py lines 9-13), the same for every prompt key.
INSTRUCT_TEMPLATE = (
    "<|im_start|>system\nYou are an assistant tasked with analyzing the provided passage and producing a list of "
    "implications derived directly or indirectly from the content. <|im_end|>\n"
    "<|im_start|>user\n{title}\n{context}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# A training document (src/utils.py line 47).
TRAINING_SEQUENCE_TEMPLATE = "{title}\n{completion_text}"

PROMPTS = {"implications": IMPLICATIONS_TEMPLATE, "implications-long": IMPLICATIONS_LONG_TEMPLATE,
           "implications-very-long": IMPLICATIONS_VERY_LONG_TEMPLATE, "rewrite": REWRITE_TEMPLATE,
           "self-qa": SELF_QA_TEMPLATE}

_CHATML = re.compile(r"^<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n(.*?)<\|im_end\|>\n"
                     r"<\|im_start\|>assistant\n$", re.DOTALL)


def chatml_turns(template: str) -> tuple[str, str]:
    """(system, user) of one of SEAL's hand-written ChatML templates, placeholders left in."""
    m = _CHATML.match(template)
    if not m:
        raise ValueError("not a ChatML system + user template")
    return m.group(1), m.group(2)


def prompt_text(p: Passage, prompt: str = "implications") -> str:
    """SEAL's base-model prompt `prompt` (one of PROMPTS) for passage `p`, as raw text."""
    if prompt not in PROMPTS:
        raise ValueError(f"self-edit prompt {prompt!r}; choose one of {sorted(PROMPTS)}")
    return PROMPTS[prompt].format(title=p.title, context=p.context)


def instruct_turns(p: Passage) -> tuple[str, str]:
    """(system, user) of SEAL's instruct prompt for passage `p`."""
    system, user = chatml_turns(INSTRUCT_TEMPLATE)
    return system, user.format(title=p.title, context=p.context)


def encode_prompt(tok, chat: bool, raw: str, turns: tuple[str, str]) -> list[int]:
    """Token ids of a prompt: `raw` text as a completions endpoint tokenizes it (SEAL's base-model path), or the
    (system, user) `turns` through the tokenizer's chat template (SEAL's instruct path)."""
    if chat:
        return chat_prompt(tok, turns[1], system=turns[0])
    return list(tok(raw)["input_ids"])


def self_edit_prompt_ids(tok, p: Passage, prompt: str, chat: bool) -> list[int]:
    """The generator's prompt for a self-edit about `p`: SEAL's base template `prompt` raw, or its instruct prompt."""
    return encode_prompt(tok, chat, prompt_text(p, prompt), instruct_turns(p))


@dataclasses.dataclass(frozen=True)
class DocOptions:
    split_lines: bool = True      # SEAL's split_newlines: one document per line (or per Q/A block)
    drop_preamble: bool = True    # SEAL's preamble rule: drop line 1 when line 2 starts with "1."
    prefix_title: bool = True     # "{title}\n{text}" (SEAL always)
    append_passage: bool = True   # the passage itself as the last document (SEAL always)


_QUESTION_N = re.compile(r"Question\s+\d+:")
_ANSWER = re.compile(r"Answer\s*:")
_QA_BLOCK = re.compile(r"\n(?=Question\s+\d+:)")


def segments(self_edit: str, opts: DocOptions = DocOptions()) -> list[str]:
    """The self-edit's document bodies (before the title prefix), by SEAL's rules."""
    segs = [s.strip() for s in self_edit.split("---") if s.strip()] or [self_edit.strip()]
    if not opts.split_lines:
        return segs
    if _QUESTION_N.search(self_edit) and _ANSWER.search(self_edit):  # "Answer 1:" does not match, as in SEAL
        blocks = _QA_BLOCK.split(self_edit.strip())
        if not blocks[0].lstrip().startswith("Question"):
            blocks[0] = "Question 1: " + blocks[0].strip()
        return blocks
    lines = [line.strip() for s in segs for line in s.splitlines() if line.strip()]
    if opts.drop_preamble and len(lines) > 1 and lines[1].startswith("1."):
        lines = lines[1:]
    return lines


def build_documents(title: str, context: str, self_edit: str, opts: DocOptions = DocOptions()) -> list[str]:
    """Training documents from one self-edit (SEAL's build_train_sequences); "" gives the passage-only set."""
    bodies = segments(self_edit, opts)
    docs = [TRAINING_SEQUENCE_TEMPLATE.format(title=title, completion_text=b) if opts.prefix_title else b
            for b in bodies]
    if opts.append_passage:
        docs.append(TRAINING_SEQUENCE_TEMPLATE.format(title=title, completion_text=context.strip()))
    return docs


def self_edit_documents(p: Passage, self_edit: str, prompt: str = "implications",
                        opts: DocOptions = DocOptions()) -> list[str]:
    """Training documents from one self-edit about `p`. SEAL splits by content, so `prompt` does not matter."""
    del prompt
    return build_documents(p.title, p.context, self_edit, opts)


def passage_document(p: Passage) -> str:
    """The passage as one training document: its title, then its text."""
    return TRAINING_SEQUENCE_TEMPLATE.format(title=p.title, completion_text=p.context.strip())
