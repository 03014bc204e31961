"""docs/configs.md, generated from configs/*.py: `python -m seal_jax.cli.config_docs > docs/configs.md`.

The config files are the documentation of their fields (big_vision style: a comment beside or above the line
that sets a field); this module only collects it, so the page cannot drift from the code
(`tests/test_config_docs.py` compares the checked-in page with this output).

What it reads, per config file (every configs/*.py with a `get_config`, plus configs/common.py, which builds
the blocks they share):
  values    `get_config(preset)` for each preset, flattened to dotted fields (`inner.lora_rank`). A path that
            `repo_file` resolves only when a data file is present is shown as both choices, so the page does
            not depend on what is on disk.
  help      a trailing comment on the line that sets a field (`dtype="auto",  # base weights: ...`) is that
            field's help; a block of comment lines just above a statement is its section's notes (or, for
            `c.section.field = ...`, that field's); a comment inside a preset's branch (`elif preset == "demo":`)
            is a note on that preset. The docstrings of configs/common.py's `inner` and `rl` describe their
            sections.
  read by   PHASES below: which command and phase reads each section (FIELD_PHASES: fields that differ from
            their section). A section with no entry is an error, so a new section must say who reads it.
"""
from __future__ import annotations

import ast
import dataclasses
import fnmatch
import glob
import importlib.util
import io
import os
import re
import sys
import tokenize
from typing import Optional

from absl import app

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
PRESETS = ("smoke", "demo", "paper")

# Which command and phase reads each section (cli/settings.py turns sections into typed settings).
PHASES = {
    "domain": "train, evaluate: the task family (`cli/settings.domain_for`)",
    "seed": "train, evaluate: the run's PRNG key",
    "mesh": "train and plan (evaluate runs on one device; `runtime/sharding.make_mesh`)",
    "gpu_mesh": "plan on GPU topologies (`--topology=h100:...`); train on GPUs takes it as --config.mesh.fsdp/tp",
    "model": "train, evaluate, plan: the model loaded (`cli/common.build_model`)",
    "data": "train (RL contexts, final evaluation) and evaluate (the evaluated passages or tasks)",
    "self_edit": "self-edit sampling: train's E-step and the evaluation conditions that sample self-edits",
    "inner": "the inner update (`engine/adapt.py`, `engine/inner.py`): train's E-step, evaluation, plan",
    "ttt": "ARC test-time training data and answering (`domains/arc/ttt.py`, `inference.py`): E-step, evaluation",
    "rl": "train: the ReST-EM driver (`rl/restem.py`) and its M-step (`engine/outer.py`)",
    "eval": "answering and grading: train's E-step rewards, train's final evaluation, evaluate",
    "generator_workdir": "evaluate: the `seal_jax.cli.train` run whose newest checkpoint writes the self-edits",
}
FIELD_PHASES = {  # fnmatch patterns over dotted names, first match wins
    "rl.reward_repeats": "train: E-step (inner updates per self-edit; the reward is their mean)",
    "rl.keep": "train: which E-step records become M-step data",
    "rl.threshold": "train: which E-step records become M-step data",
    "rl.min_reward": "train: which E-step records become M-step data",
    "eval.final_eval": "train: an evaluation after the last iteration",
    "eval.eval_repeats": "evaluation (train's final evaluation, evaluate)",
    "eval.self_edits": "evaluation (train's final evaluation, evaluate)",
    "eval.oracle_*": "evaluation: ARC's oracle condition",
    "eval.conditions": "evaluate",
    "eval.mode": "evaluate",
    "eval.cpt_*": "evaluate (mode cpt)",
    "eval.continual*": "evaluate (continual)",
    "eval.learner": "evaluate",
    "eval.completions_file": "evaluate (condition file)",
    "data.offset": "evaluate",
    "data.rounds": "train: which RL passages each round takes",
    "self_edit.round_split_lines": "train: E-step (each round's training documents)",
    "model.attention_impl": "train, evaluate, plan: attention over packed rows (`model/transformer.attend_packed`; "
                            "inner.step_form=packed)",
    "inner.lora_impl": "the inner update's packed steps (`model/transformer.lora_delta_per_token`; "
                       "inner.step_form=packed)",
    "inner.step_edits": "the inner update's packed steps (`engine/packed.plan_steps`, `packed_step`; "
                        "inner.step_form=packed) and plan's packed round",
    "inner.remat": "the inner updates (`engine/chunks.train_in_chunks`) and plan's packed round",
    "inner.loss_chunk": "the inner updates' loss (`model/transformer.token_logprobs`)",
}


def phase_of(field: str) -> str:
    """Who reads `field` (dotted name); a section without a PHASES entry is an error."""
    for pattern, phase in FIELD_PHASES.items():
        if fnmatch.fnmatchcase(field, pattern):
            return phase
    section = field.split(".", 1)[0]
    if section not in PHASES:
        raise ValueError(f"config section {section!r} has no entry in seal_jax/cli/config_docs.PHASES: "
                         "add one line saying which command and phase reads it")
    return PHASES[section]


# --- comments -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Comments:
    """What one file's comments say: help per field, notes per section, notes per preset (in source order)."""
    field_help: dict = dataclasses.field(default_factory=dict)      # "inner.answer_rows" -> text
    section_notes: dict = dataclasses.field(default_factory=dict)   # "mesh" -> [text, ...]
    preset_notes: dict = dataclasses.field(default_factory=dict)    # "demo" -> [text, ...]

    def merge(self, other: "Comments") -> "Comments":
        out = Comments(dict(other.field_help), {k: list(v) for k, v in other.section_notes.items()},
                       {k: list(v) for k, v in other.preset_notes.items()})
        out.field_help.update(self.field_help)
        for mine, theirs in ((self.section_notes, out.section_notes), (self.preset_notes, out.preset_notes)):
            for k, v in mine.items():
                theirs.setdefault(k, []).extend(t for t in v if t not in theirs[k])
        return out


def _comment_lines(source: str) -> dict[int, tuple[str, bool]]:
    """line -> (comment text without '#', whether the line holds only the comment)."""
    out = {}
    lines = source.splitlines()
    for t in tokenize.generate_tokens(io.StringIO(source).readline):
        if t.type == tokenize.COMMENT:
            row, col = t.start
            out[row] = (t.string.lstrip("#").strip(), not lines[row - 1][:col].strip())
    return out


def _block_above(comments: dict, line: int) -> str:
    """The contiguous comment-only lines ending just above `line`, joined into one paragraph."""
    texts = []
    row = line - 1
    while row in comments and comments[row][1]:
        texts.append(comments[row][0])
        row -= 1
    return " ".join(reversed(texts))


def _target(node) -> Optional[list[str]]:
    """`c.a.b` -> ["a", "b"] (c being any name); None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return list(reversed(parts)) if isinstance(node, ast.Name) and parts else None


def _preset_of_test(test) -> Optional[str]:
    m = re.search(r"==\s*['\"](\w+)['\"]", ast.unparse(test))
    return m.group(1) if m and m.group(1) in PRESETS else None


# functions of configs/common.py whose dict(...) keywords are a section's fields
SECTION_BUILDERS = {"inner": "inner", "rl": "rl", "evaluation": "eval"}


def read_comments(source: str) -> Comments:
    """The help, section notes and preset notes one config file's comments give (see the module docstring)."""
    comments, tree, out = _comment_lines(source), ast.parse(source), Comments()

    def trailing(line: int) -> Optional[str]:
        c = comments.get(line)
        return c[0] if c and not c[1] else None

    def keywords(section: str, call: ast.Call, preset: Optional[str]) -> None:
        last_on_line = {}
        for kw in call.keywords:
            if kw.arg is not None:
                last_on_line[kw.value.end_lineno] = kw.arg
        for line, name in last_on_line.items():
            text = trailing(line)
            if text is None:
                continue
            if preset is None:
                out.field_help[f"{section}.{name}"] = text
            else:
                out.preset_notes.setdefault(preset, []).append(f"`{section}.{name}`: {text}")

    def note(preset: Optional[str], section: Optional[str], text: str, field: Optional[str] = None) -> None:
        if not text:
            return
        if preset is not None:
            out.preset_notes.setdefault(preset, []).append(text)
        elif field is not None:
            out.field_help[field] = (out.field_help.get(field, "") + " " + text).strip()
        elif section is not None:
            out.section_notes.setdefault(section, []).append(text)

    def section_call(value) -> Optional[tuple[str, ast.Call]]:
        """(section, call) for `dict(...)`, `common.inner(...)`, `common.rl(...)`, `common.evaluation(...)`."""
        if not isinstance(value, ast.Call):
            return None
        name = value.func.attr if isinstance(value.func, ast.Attribute) else getattr(value.func, "id", None)
        return (SECTION_BUILDERS[name], value) if name in SECTION_BUILDERS else None

    def visit(body, preset: Optional[str], builder: Optional[str]) -> None:
        for stmt in body:
            block = _block_above(comments, stmt.lineno)
            if isinstance(stmt, ast.If):
                visit(stmt.body, _preset_of_test(stmt.test) or preset, builder)
                visit(stmt.orelse, preset, builder)
                continue
            if isinstance(stmt, ast.Return) and builder and isinstance(stmt.value, ast.Call):
                for arg in stmt.value.args:  # return dict(dict(defaults...), **fields)
                    if isinstance(arg, ast.Call):
                        keywords(builder, arg, preset)
                continue
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = _target(stmt.targets[0])
                built = section_call(stmt.value)
                if target and len(target) == 1 and isinstance(stmt.value, ast.Call) and \
                        getattr(stmt.value.func, "id", None) == "dict":
                    note(preset, target[0], block)  # c.section = dict(...)
                    keywords(target[0], stmt.value, preset)
                elif target and len(target) == 1 and built and built[0] != "eval":
                    note(preset, target[0], block)  # c.inner = common.inner(...)
                    keywords(target[0], built[1], preset)
                elif built and built[0] == "eval":  # c = common.evaluation(..., eval fields)
                    note(preset, "eval", block)
                    keywords("eval", built[1], preset)
                elif target:  # c.field = v / c.section.field = v
                    field = ".".join(target)
                    text = trailing(stmt.end_lineno)
                    if preset is None:
                        note(None, None, " ".join(t for t in (block, text) if t), field=field)
                    else:
                        note(preset, None, block)
                        if text:
                            note(preset, None, f"`{field}`: {text}")
                else:
                    note(preset, None, block)
                continue
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and \
                    isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "update":
                target = _target(stmt.value.func.value)
                if target and len(target) == 1:  # c.section.update(...)
                    note(preset, target[0], block)
                    keywords(target[0], stmt.value, preset)
                continue
            note(preset, None, block)

    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in ("get_config", "base", *SECTION_BUILDERS):
            builder = SECTION_BUILDERS.get(fn.name)
            doc = ast.get_docstring(fn)
            if builder in ("inner", "rl") and doc:
                out.section_notes.setdefault(builder, []).append(" ".join(doc.split()))
            visit(fn.body, None, builder)
    return out


# --- values ---------------------------------------------------------------------------------------------------

def _repo_file(relative: str, otherwise: str) -> str:
    """configs' `repo_file`, shown as both choices (the page must not depend on what is on disk)."""
    return f"<repo>/{relative} if present, else {otherwise}"


def load_config_module(name: str):
    """configs/<name>.py as a module, with `repo_file` and `common.sibling` made independent of the disk."""
    spec = importlib.util.spec_from_file_location(f"seal_jax_config_docs_{name}", os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "repo_file"):
        module.repo_file = _repo_file
    if hasattr(module, "common"):
        module.common.sibling = load_config_module
    return module


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"inner": {"lr": 1e-3}} -> {"inner.lr": 1e-3}, in the config's order."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def preset_values(name: str) -> dict[str, dict]:
    """preset -> {dotted field: value} for configs/<name>.py."""
    module = load_config_module(name)
    return {p: flatten(module.get_config(p).to_dict()) for p in PRESETS}


def fmt(value) -> str:
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- the page ---------------------------------------------------------------------------------------------------

HEADER = """\
# Configuration reference

<!-- Generated by `python -m seal_jax.cli.config_docs > docs/configs.md` from configs/*.py; edit the configs'
comments, not this page (tests/test_config_docs.py fails when the two differ). -->

A run is one config file and a preset: `--config=configs/knowledge.py:demo`. Presets: `smoke` (a tiny random
model, offline, for tests), `demo` (the embedded SmolLM2-135M-Instruct on one CPU or device), `paper` (SEAL's
model and settings, on every device). Any field can be overridden on the command line, for example
`--config.rl.iterations=1 --config.inner.edits_per_chunk=8`; an unknown field is an error. The `*_eval.py` files
take their training file's config and add the evaluation fields, so the same overrides apply to both.
`cli/settings.py` is the only place that reads a config: each section becomes a typed settings object there.
Each table gives a field's value under every preset (**bold** where the presets differ), what it is, and, where it
differs from its section, who reads it. SEAL's settings behind the `paper` values are cited in
[fidelity-knowledge.md](fidelity-knowledge.md) and [fidelity-arc.md](fidelity-arc.md).
"""


def section_of(field: str) -> str:
    return field.split(".", 1)[0] if "." in field else field


def render_fields(fields: list[str], values: dict, comments: Comments, heading: str) -> list[str]:
    lines = []
    present = {section_of(f) for f in fields}
    for section in [s for s in PHASES if s in present] + sorted(present - set(PHASES)):
        phase = phase_of(section if section in PHASES else f"{section}.")
        lines += ["", f"{heading} `{section}`", "", f"Read by: {phase}."]
        for note_text in comments.section_notes.get(section, []):
            lines += ["", note_text]
        lines += ["", "| field | " + " | ".join(PRESETS) + " | what it is |", "|---|" + "---|" * (len(PRESETS) + 1)]
        for f in (f for f in fields if section_of(f) == section):
            vals = [values[p].get(f, "(absent)") for p in PRESETS]
            differ = any(v != vals[0] for v in vals)
            shown = [(f"**{fmt(v)}**" if differ else fmt(v)) if v != "(absent)" else "-" for v in vals]
            help_text = comments.field_help.get(f, "")
            own_phase = phase_of(f)
            if own_phase != phase_of(section if section in PHASES else f"{section}."):
                help_text = f"{help_text} (read by: {own_phase})".strip()
            lines.append(f"| `{f}` | " + " | ".join(cell(s) for s in shown) + f" | {cell(help_text)} |")
    return lines


def docstring_block(module_source: str) -> list[str]:
    """A config file's docstring: prose paragraphs joined, its indented command paragraphs as a bash block."""
    doc = ast.get_docstring(ast.parse(module_source), clean=False) or ""
    out = []
    for para in doc.strip("\n").split("\n\n"):
        if para.startswith("    "):  # commands (a backslash-newline in a docstring already joined their lines)
            out += ["", "```bash", *(" ".join(line.split()) for line in para.splitlines()), "```"]
        else:
            out += ["", " ".join(para.split())]
    return out


def anchor(name: str) -> str:
    """GitHub's anchor for the heading `configs/<name>.py` (punctuation dropped, underscores kept)."""
    return f"#configs{name}py"


def render() -> str:
    """The whole of docs/configs.md."""
    common_source = open(os.path.join(CONFIGS, "common.py"), encoding="utf-8").read()
    common = read_comments(common_source)
    names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIGS, "*.py")))
    names = [n for n in names if n != "common"]
    lines = [HEADER.rstrip("\n")]
    lines += ["", "Files: " + ", ".join(f"[`configs/{n}.py`]({anchor(n)})" for n in names) + "."]
    values = {}
    for name in names:  # sorted: a training file comes before its *_eval.py
        source = open(os.path.join(CONFIGS, f"{name}.py"), encoding="utf-8").read()
        values[name] = preset_values(name)
        comments = read_comments(source).merge(common)
        lines += ["", f"## `configs/{name}.py`"]
        lines += docstring_block(source)
        base = name[: -len("_eval")] if name.endswith("_eval") else None
        fields = list(values[name]["smoke"])
        for p in PRESETS[1:]:
            fields += [f for f in values[name][p] if f not in fields]
        if base in values:
            base_comments = read_comments(open(os.path.join(CONFIGS, f"{base}.py"), encoding="utf-8").read())
            comments = comments.merge(base_comments.merge(common))
            changed = [f for f in fields if any(values[name][p].get(f) != values[base][p].get(f) for p in PRESETS)]
            lines += ["", f"Every field of [`configs/{base}.py`]({anchor(base)}), with these added or changed:"]
            fields = changed
        lines += render_fields(fields, values[name], comments, "###")
        notes = [(p, comments.preset_notes.get(p, [])) for p in PRESETS]
        if base in values:  # the training file's preset notes are on its own section
            own = read_comments(source).preset_notes
            notes = [(p, own.get(p, [])) for p in PRESETS]
        if any(n for _, n in notes):
            lines += ["", "### Preset notes"]
            for p, texts in notes:
                if texts:
                    lines += ["", f"`{p}`: " + " ".join(t if t.endswith(".") else t + "." for t in texts)]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; usage: python -m seal_jax.cli.config_docs "
                             "> docs/configs.md")
    sys.stdout.write(render())


if __name__ == "__main__":
    app.run(main)
