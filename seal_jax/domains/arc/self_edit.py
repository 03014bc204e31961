"""ARC self-edits: the JSON the generator writes to configure its own test-time training, and that training's data.

A self-edit chooses which augmentation families to train on, the loss mode, the learning rate and the epochs.
`parse_self_edit` is strict: anything malformed or out of range is rejected with a reason (reward 0), never an
exception; `check_budget` rejects one that asks for more optimiser steps than allowed. `ttt_examples` builds
the training data: leave-one-out (and leave-two-out) tasks from the demonstrations under every chosen
augmentation, with colour and example-order permutations.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Optional

import numpy as np

from seal_jax.domains.arc.tasks import (FAMILIES, IDENTITY, ArcTask, colour_permutation, format_completion,
                                        format_prompt, grid_to_text, map_pairs)


@dataclasses.dataclass(frozen=True)
class SelfEdit:
    augmentations: tuple[str, ...]
    loss: str            # "all" | "output"
    lr: float
    epochs: int

    @classmethod
    def from_record(cls, d: dict) -> "SelfEdit":  # a record's "parsed" field, after a JSON round trip
        return cls(tuple(d["augmentations"]), d["loss"], float(d["lr"]), int(d["epochs"]))

    def to_json(self) -> str:
        """The self-edit in the prompt's JSON format: what ReST-EM trains the generator to write."""
        return json.dumps({"augmentations": list(self.augmentations), "loss": self.loss,
                           "learning_rate": self.lr, "epochs": self.epochs})


@dataclasses.dataclass(frozen=True)
class Limits:
    lr_min: float = 1e-6
    lr_max: float = 1e-2
    epochs_max: int = 10
    max_steps: int = 400       # cost guard: epochs * examples / batch


SELF_EDIT_PROMPT = (
    "You will adapt yourself to a visual puzzle by choosing your own training data and settings.\n"
    "Here are the puzzle's examples:\n\n{examples}\n\n"
    "Available data augmentations (choose any):\n"
    "- basic: rotations, flips and transposes\n- size: upscaled, taller or wider grids\n"
    "- chain: combinations of two basic transforms\n- repeat: grids tiled side by side or stacked\n"
    "Also choose: loss on 'all' tokens or only on 'output' grids, a learning rate, and a number of epochs.\n"
    'Answer with JSON only, e.g. {{"augmentations": ["basic", "size"], "loss": "output", '
    '"learning_rate": 0.0001, "epochs": 2}}')

DEFAULT_SELF_EDIT = SelfEdit(("basic",), "output", 1e-4, 2)


def self_edit_prompt(task: ArcTask) -> str:
    examples = "\n".join(f"Input:\n{grid_to_text(a)}\nOutput:\n{grid_to_text(b)}\n" for a, b in task.train)
    return SELF_EDIT_PROMPT.format(examples=examples)


def parse_self_edit(text: str, limits: Limits = Limits()) -> tuple[Optional[SelfEdit], Optional[str]]:
    """(SelfEdit, None) or (None, reason). Takes the first JSON object in the text."""
    starts = [m.start() for m in itertools.islice(re.finditer(r"\{", text), 50)]
    obj, error = None, None
    for i in starts:  # the first '{' that opens a whole JSON object
        try:
            obj, _ = json.JSONDecoder().raw_decode(text, i)
            break
        except json.JSONDecodeError as e:
            error = error or e.msg
        except (RecursionError, ValueError):  # hostile nesting, or numbers too long to convert
            error = error or "nested too deeply or a number too large"
    if obj is None:
        if error is None:
            return None, "no JSON object in the self-edit"
        return None, f"malformed JSON ({error})" if "}" in text else f"malformed or truncated JSON object ({error})"
    augs = obj.get("augmentations", [])
    if isinstance(augs, str):
        augs = [augs]
    if not isinstance(augs, list) or not all(isinstance(a, str) for a in augs):
        return None, "'augmentations' must be a list of names"
    unknown = [a for a in augs if a not in FAMILIES]
    if unknown:
        return None, f"unknown augmentations {unknown[:3]} (choose from {sorted(FAMILIES)})"
    loss = obj.get("loss", "output")
    if loss not in ("all", "output"):
        return None, f"loss must be 'all' or 'output', got {str(loss)[:20]!r}"
    lr, epochs = obj.get("learning_rate", obj.get("lr")), obj.get("epochs")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (limits.lr_min <= lr <= limits.lr_max):
        return None, f"learning_rate must be a number in [{limits.lr_min}, {limits.lr_max}], got {str(lr)[:20]}"
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not (1 <= epochs <= limits.epochs_max):
        return None, f"epochs must be an integer in [1, {limits.epochs_max}], got {str(epochs)[:20]}"
    return SelfEdit(tuple(dict.fromkeys(augs)), loss, float(lr), epochs), None


def check_budget(edit: SelfEdit, n_examples: int, batch_size: int, limits: Limits = Limits()) -> Optional[str]:
    steps = edit.epochs * -(-n_examples // batch_size)
    return None if steps <= limits.max_steps else f"{steps} optimiser steps exceed the budget of {limits.max_steps}"


# ---- test-time training data --------------------------------------------------------------------


def ttt_examples(task: ArcTask, edit: SelfEdit, rng: np.random.Generator, *, leave_two_out: bool = False,
                 colour_perms: int = 1, max_examples: int = 64) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: leave-one-out (and -two-out) tasks from the demonstrations, each under the
    identity and every chosen transform, with colour and example-order permutations, capped at max_examples."""
    demos = list(task.train)
    bases = []
    for i in range(len(demos)):
        bases.append((tuple(d for j, d in enumerate(demos) if j != i), demos[i]))
    if leave_two_out and len(demos) > 2:
        for i, k in itertools.combinations(range(len(demos)), 2):
            bases.append((tuple(d for j, d in enumerate(demos) if j not in (i, k)), demos[i]))
    transforms = [IDENTITY] + [t for fam in edit.augmentations for t in FAMILIES[fam]]
    out = []
    for (context, query), t in itertools.product(bases, transforms):
        for _ in range(max(1, colour_perms)):
            perm = colour_permutation(rng) if colour_perms > 0 else np.arange(10)
            f = lambda g: perm[t.apply(g)]
            ctx = list(map_pairs(context, f))
            rng.shuffle(ctx)
            q_in, q_out = f(query[0]), f(query[1])
            if max(q_out.shape) > 30 or any(max(a.shape + b.shape) > 30 for a, b in ctx):
                continue
            out.append((format_prompt(ctx, q_in), format_completion(q_out)))
    order = rng.permutation(len(out))[:max_examples]
    return [out[i] for i in sorted(order)]
