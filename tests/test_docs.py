"""The documentation stays true: every seal-jax command in README.md and docs/ parses, links and paths resolve.

A command in a ```bash block (`python -m seal_jax.cli.<cmd> ...` or `seal <cmd> ...`) is parsed by absl exactly
as the command would parse it (its flags defined, its --config loaded from the repository, every
--config.<field> override applied), in one child process for all of them. Relative links, the repository
paths a page names in backticks or commands, and heading anchors of links into other pages must exist, and no
page may need a file outside the repository.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_DIRS = ("seal_jax", "configs", "launch", "tests", "docs", "bench", ".ci")

# The child: for each (module, argv), define the module's flags, parse argv as the command would, report the
# error (or None), then forget every flag that parse defined (config overrides define flags as they parse).
_PARSER = r"""
import importlib, json, sys
from absl import flags
from seal_jax.runtime.topology import default_to_cpu
default_to_cpu()
FLAGS = flags.FLAGS
results = []
for module, argv in json.load(sys.stdin):
    before = set(FLAGS)
    try:
        sys.argv = ["seal " + module, *argv]  # ml_collections reads --config and its overrides from sys.argv
        importlib.import_module("seal_jax.cli." + module).define_flags()
        FLAGS.unparse_flags()
        FLAGS(sys.argv)
        for name in set(FLAGS) - before:  # an unreadable config file raises on first attribute access
            getattr(getattr(FLAGS, name), "to_json", None)
        results.append(None)
    except BaseException as e:  # absl raises flags.Error; a bad config file raises anything
        results.append(f"{type(e).__name__}: {e}".splitlines()[0][:300])
    for name in set(FLAGS) - before:
        delattr(FLAGS, name)
print(json.dumps(results))
"""


def doc_pages() -> list[str]:
    pages = [os.path.join(REPO, "README.md")]
    for root, _, files in os.walk(os.path.join(REPO, "docs")):
        pages += [os.path.join(root, f) for f in sorted(files) if f.endswith(".md")]
    return pages


def rel(path: str) -> str:
    return os.path.relpath(path, REPO)


def bash_lines(text: str) -> list[str]:
    """The command lines of ```bash / ```sh / ```shell blocks, continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def seal_commands(line: str) -> list[tuple[str, list[str]]]:
    """(module, argv) for every seal-jax invocation on a shell line: `python -m seal_jax.cli.X ...` (any
    python, env-var prefixes, after && or ;) and `seal X ...` (the console script)."""
    from seal_jax.cli.entry import COMMANDS
    try:
        words = shlex.split(line, comments=True)
    except ValueError as e:
        raise AssertionError(f"unparseable shell line {line!r}: {e}")
    found, i = [], 0
    while i < len(words):
        w, module, start = words[i], None, None
        if w == "-m" and i + 1 < len(words) and words[i + 1].startswith("seal_jax.cli."):
            module, start = words[i + 1].removeprefix("seal_jax.cli."), i + 2
        elif os.path.basename(w) == "seal" and i + 1 < len(words) and words[i + 1] in COMMANDS:
            module, start = COMMANDS[words[i + 1]][0], i + 2
        if module is None:
            i += 1
            continue
        end = start
        while end < len(words) and words[end] not in ("&&", "||", ";", "|", ">", "2>&1", "&"):
            end += 1
        found.append((module, words[start:end]))
        i = end
    return found


def parse_errors(commands: list[tuple[str, list[str]]]) -> list[str | None]:
    """Each command's absl parse error, or None: one child process for all of them."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _PARSER], input=json.dumps(commands), capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, argv) for every seal-jax command the docs show; `--help` lines are only listed."""
    cmds = []
    for page in doc_pages():
        for line in bash_lines(open(page, encoding="utf-8").read()):
            for module, argv in seal_commands(line):
                if not any(a.startswith(("--help", "-h")) for a in argv):
                    cmds.append((rel(page), module, argv))
    return cmds


def test_every_documented_command_parses():
    cmds = documented_commands()
    assert len(cmds) >= 15, f"only {len(cmds)} seal-jax commands found in the docs: is the block parser broken?"
    modules = {m for _, m, _ in cmds}
    assert {"train", "evaluate", "plan"} <= modules, modules
    errors = parse_errors([(m, a) for _, m, a in cmds])
    bad = [f"{page}: {m} {' '.join(a)}\n    -> {e}" for (page, m, a), e in zip(cmds, errors) if e]
    assert not bad, "documented commands that do not parse:\n" + "\n".join(bad)


def test_the_check_fails_on_a_renamed_flag_or_field():
    """The same check on a documented command with a flag renamed, a config field renamed, an unknown preset
    file: each is reported (so a rename in the code without the docs fails the test above)."""
    good = ("train", ["--config=configs/knowledge.py:demo", "--workdir=runs/demo", "--config.inner.lr=1e-3"])
    renamed_flag = ("train", ["--config=configs/knowledge.py:demo", "--work_dir=runs/demo"])
    renamed_field = ("train", ["--config=configs/knowledge.py:demo", "--workdir=runs/demo",
                               "--config.inner.learning_rate=1e-3"])
    missing_file = ("train", ["--config=configs/knowledge_typo.py:demo", "--workdir=runs/demo"])
    errors = parse_errors([good, renamed_flag, renamed_field, missing_file])
    assert errors[0] is None, errors[0]
    assert errors[1] and "work_dir" in errors[1], errors[1]
    assert errors[2] and "learning_rate" in errors[2], errors[2]
    assert errors[3], errors[3]


def github_slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(page: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", open(page, encoding="utf-8").read(), flags=re.S | re.M)
    return {github_slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_links_and_named_paths_resolve():
    problems = []
    for page in doc_pages():
        text = open(page, encoding="utf-8").read()
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # http(s)://, mailto:
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(full):
                problems.append(f"{rel(page)}: link to missing {target}")
            elif anchor and full.endswith(".md") and anchor not in anchors(full):
                problems.append(f"{rel(page)}: link to missing heading {target}")
        named = re.findall(r"`([^`\s]+)`", prose)
        for line in bash_lines(text):
            named += re.findall(r"[\w./=-]+", line)
        for token in named:
            token = token.split("=", 1)[-1].split(":", 1)[0].rstrip(".,")
            if token.startswith(tuple(d + "/" for d in TOP_DIRS)) and not re.search(r"[*<>{}$]", token):
                if not os.path.exists(os.path.join(REPO, token)):
                    problems.append(f"{rel(page)}: names {token}, which is not in the repository")
    assert not problems, "\n".join(sorted(set(problems)))


def test_no_page_needs_files_outside_the_repository():
    offenders = [rel(p) for p in doc_pages() if "../shared" in open(p, encoding="utf-8").read()]
    assert not offenders, f"these pages point at ../shared, which a clone does not have: {offenders}"


@pytest.mark.parametrize("line, expected", [
    ("python -m seal_jax.cli.train --config=configs/knowledge.py:demo --workdir=runs/x",
     [("train", ["--config=configs/knowledge.py:demo", "--workdir=runs/x"])]),
    (".venv/bin/python -m seal_jax.cli.plan --topology=v5e:2x4 && seal evaluate --out=o 2>&1 | tee log",
     [("plan", ["--topology=v5e:2x4"]), ("evaluate", ["--out=o"])]),
    ("HF_TOKEN=x seal bench-step --edits=4  # a comment", [("bench_step", ["--edits=4"])]),
    ("pip install -e '.[tpu]'", []),
])
def test_command_extraction(line, expected):
    assert seal_commands(line) == expected
