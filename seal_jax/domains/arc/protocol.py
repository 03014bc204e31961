"""SEAL's few-shot ARC self-edits: the prompt, the tool schema, and how a reply becomes a TTT configuration.

The prompt is SEAL's (few-shot/utils/prompts.py, self-edit.py:get_prompt): a fixed Llama-3 string, written by
hand (no chat template, so no date line), with SEAL's system line, the demonstrations as rows of space-separated
digits (the test input is not shown), and the tool list. A tokenizer without Llama-3's header tokens gets the same
system line and user message through its own chat template.

A reply is parsed with SEAL's semantics (self-edit.py:442-555):
  - not a JSON object with "data_generation" and "training" objects: resampled (SEAL resamples replies that are
    not JSON, and crashes on the rest; we resample both, at most `max_resamples` rounds);
  - a missing augmentation key: no augmentations and 0 epochs; each group is on when its value is truthy;
  - a missing strategy, lr or epochs: 0 epochs (lr 0, all tokens); an unknown strategy: 0 epochs;
  - more than 375 optimiser steps (epochs x TTT examples // batch 2): 0 epochs;
  - a fractional epochs value is kept: SEAL hands it to HF's Trainer, which trains ceil(epochs x steps per
    epoch) steps, a partial last pass (`engine.inner.hf_max_steps`).
A 0-epoch self-edit still makes an adapter (the untrained one, equal to the base model) that is evaluated.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Optional

import numpy as np

from seal_jax.domains.arc.augment import GROUP_KEYS
from seal_jax.domains.arc.tasks import ArcTask
from seal_jax.tokenizer import chat_prompt

# few-shot/utils/prompts.py:2-41, verbatim (it starts and ends with a newline; the dashes are em dashes)
SELF_EDIT_PROMPT = """
You are configuring a model training pipeline by selecting from predefined tools.

You must make two decisions:

1. **Data Generation Tools** \u2014 For each of the following, choose true or false:
    - use_basic_augmentations
    - use_size_augmentations
    - use_chain_augmentations
    - use_repeat_augmentations

2. **Training Configuration** \u2014 Choose one of:
    - "train_using_all_tokens"
    - "train_using_output_tokens"

Also specify:
    - learning_rate (float)
    - num_train_epochs (integer)

### Output Format

Respond with a valid JSON object. Do not include any explanation, markdown, or extra text. Use lowercase `true`/`false` for booleans and ensure correct JSON syntax.

Example output:

{
  "data_generation": {
    "use_basic_augmentations": ...,
    "use_size_augmentations": ...,
    "use_chain_augmentations": ...,
    "use_repeat_augmentations": ...
  },
  "training": {
    "strategy": ...,
    "learning_rate": ...,
    "num_train_epochs": ...
  }
}
"""

# few-shot/utils/prompts.py:43, verbatim
SYSTEM_MESSAGE = "You are a helpful assistant that provide the correct output for the given task immediately."

LLAMA3_TEMPLATE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n")
STRATEGIES = {"train_using_all_tokens": "all", "train_using_output_tokens": "output"}
MAX_STEPS = 375      # self-edit.py:553: more optimiser steps than this -> 0 epochs
TTT_BATCH = 2        # the step guard's divisor: SEAL's TTT batch size


def grid_rows(grid) -> str:
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in np.asarray(grid))


def user_message(task: ArcTask) -> str:
    """The demonstrations, then the tool list (self-edit.py:368-389)."""
    demos = "".join(f"Input:\n{grid_rows(a)}\nOutput:\n{grid_rows(b)}\n" for a, b in task.train)
    return demos + "------\n\n" + SELF_EDIT_PROMPT


def prompt_text(task: ArcTask) -> str:
    """SEAL's self-edit prompt for `task`, the whole Llama-3 string."""
    return LLAMA3_TEMPLATE.format(system=SYSTEM_MESSAGE, user=user_message(task))


def is_llama3(tok) -> bool:
    return all(t in tok.get_vocab() for t in ("<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>"))


def prompt_ids(tok, task: ArcTask) -> list[int]:
    """Token ids of the prompt: SEAL's string for a Llama-3 tokenizer (one BOS), else the model's chat template
    with SEAL's system line and user message."""
    if is_llama3(tok):
        return tok.encode(prompt_text(task), add_special_tokens=False)
    return chat_prompt(tok, user_message(task), system=SYSTEM_MESSAGE)


@dataclasses.dataclass(frozen=True)
class TttConfig:
    """A self-edit's test-time training: augmentation groups, loss mode, lr, epochs (0: untrained adapter)."""
    groups: tuple[str, ...]       # among basic, size, chain, repeat
    loss: str                     # "all" | "output"
    lr: float
    epochs: float                 # as the reply wrote it (int or float; a fraction: a partial last pass)
    note: str = ""                # why SEAL's rules changed what the reply asked for ("" if nothing)

    @classmethod
    def from_record(cls, d: dict) -> "TttConfig":
        return cls(tuple(d["groups"]), d["loss"], float(d["lr"]), d["epochs"], d.get("note", ""))


def reply_object(text: str) -> tuple[Optional[dict], Optional[str]]:
    """(the reply's JSON object, None), or (None, why it must be resampled)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        return None, f"not valid JSON ({getattr(e, 'msg', type(e).__name__)})"
    if not isinstance(obj, dict):
        return None, "the JSON is not an object"
    for key in ("data_generation", "training"):
        if not isinstance(obj.get(key), dict):
            return None, f"no {key!r} object in the JSON"
    return obj, None


def acceptable(text: str) -> bool:
    """A reply SEAL would keep rather than resample."""
    return reply_object(text)[0] is not None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_reply(text: str) -> tuple[Optional[TttConfig], Optional[str]]:
    """(TttConfig, None) with SEAL's fallbacks applied, or (None, why) for a reply SEAL would resample."""
    obj, why = reply_object(text)
    if obj is None:
        return None, why
    gen, train = obj["data_generation"], obj["training"]
    notes = []
    epochs_zero = False
    if all(k in gen for k in GROUP_KEYS.values()):
        groups = tuple(g for g, k in GROUP_KEYS.items() if gen[k])
    else:
        groups, epochs_zero = (), True
        notes.append("missing augmentation keys: no augmentations, 0 epochs")
    if not all(k in train for k in ("strategy", "num_train_epochs", "learning_rate")):
        notes.append("missing training keys: 0 epochs")
        return TttConfig(groups, "all", 0.0, 0, "; ".join(notes)), None
    strategy, lr, epochs = train["strategy"], train["learning_rate"], train["num_train_epochs"]
    loss = STRATEGIES.get(strategy, "all") if isinstance(strategy, str) else "all"
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        epochs_zero = True
        notes.append("unknown strategy: 0 epochs")
    if not _number(lr) or lr < 0:
        lr, epochs_zero = 0.0, True           # SEAL's TrainingArguments would raise
        notes.append("learning_rate not a number >= 0: 0 epochs")
    if not _number(epochs) or epochs < 0:
        epochs, epochs_zero = 0, True
        notes.append("num_train_epochs not a number >= 0: 0 epochs")
    epochs = 0 if epochs_zero else epochs
    return TttConfig(groups, loss, float(lr), epochs, "; ".join(notes)), None


def step_guard(edit: TttConfig, n_examples: int) -> TttConfig:
    """SEAL's guard (self-edit.py:553): epochs x examples // 2 > 375 trains 0 epochs."""
    if edit.epochs * n_examples // TTT_BATCH > MAX_STEPS:
        note = f"{edit.epochs} epochs x {n_examples} examples // {TTT_BATCH} > {MAX_STEPS} steps: 0 epochs"
        return dataclasses.replace(edit, epochs=0, note="; ".join(n for n in (edit.note, note) if n))
    return edit


def reply_json(edit: TttConfig) -> str:
    """A TttConfig in SEAL's schema (what a hand-picked configuration looks like as a reply)."""
    return json.dumps({"data_generation": {k: g in edit.groups for g, k in GROUP_KEYS.items()},
                       "training": {"strategy": {v: k for k, v in STRATEGIES.items()}[edit.loss],
                                    "learning_rate": edit.lr, "num_train_epochs": edit.epochs}})
