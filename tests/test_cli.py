"""The command line as a user meets it (`python -m seal_jax.cli.<command>`, in a subprocess): --config is required
and listed in --help; config, load and mesh mistakes print one line saying what to do, never a traceback; a
start that fails leaves nothing in the workdir that refuses the corrected rerun; a real bug keeps its traceback."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_COMMANDS = {"train": "configs/knowledge.py:smoke", "evaluate": "configs/knowledge_eval.py:smoke",
                   "plan": "configs/knowledge.py:smoke"}


def _cli(*args, timeout=600):
    """`python -m seal_jax.cli.<args>` from the repo root (8 fake CPU devices, from tests/conftest.py)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _one_line_error(out, *expected):
    """A failed command whose stderr ends in one `error: ...` line holding `expected`, with no traceback."""
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr[-3000:]
    for text in expected:
        assert text in last, (text, last)
    return last


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_config_is_required_and_listed_in_help(command):
    out = _cli(f"seal_jax.cli.{command}", "--help")
    assert "--config: (required)" in out.stdout, out.stdout[-3000:]
    other_required = {"train": ["--workdir=/nonexistent/x"], "evaluate": ["--out=/nonexistent/y"], "plan": []}
    _one_line_error(_cli(f"seal_jax.cli.{command}", *other_required[command]), "--config is required",
                    "--config=configs/")


def test_evaluate_help_names_its_flags():
    """What a launcher passes to evaluate: --config and --out (no --workdir), documented in --help."""
    out = _cli("seal_jax.cli.evaluate", "--help")
    assert "--out: (required)" in out.stdout and "--config.generator_workdir" in out.stdout
    _one_line_error(_cli("seal_jax.cli.evaluate", f"--config={CONFIG_COMMANDS['evaluate']}", "--workdir=/tmp/x",
                         "--out=/tmp/y"), "Unknown command line flag 'workdir'")


def test_config_mistakes_are_one_line(tmp_path):
    wd = f"--workdir={tmp_path / 'run'}"
    cases = [
        (["--config=configs/knowledge.py:bogus"], ["--config=configs/knowledge.py:bogus", "unknown preset 'bogus'",
                                                    "choose smoke, demo or paper"]),
        (["--config=configs/nope.py"], ["--config=configs/nope.py", "no such config file"]),
        ([f"--config={CONFIG_COMMANDS['train']}", "--config.rl.iterationz=2"],
         ["--config.rl.iterationz", "no field 'iterationz'", 'Did you mean "iterations"']),
        ([f"--config={CONFIG_COMMANDS['train']}", "--config.rl.iterations=many"],
         ["--config.rl.iterations=many", "invalid literal for int()"]),
        ([f"--config={CONFIG_COMMANDS['train']}", "--config.domain=chess"], ["config: unknown domain 'chess'"]),
    ]
    for args, expected in cases:
        _one_line_error(_cli("seal_jax.cli.train", *args, wd), *expected)
    assert not (tmp_path / "run").exists()


def test_load_errors_are_one_line(tmp_path):
    """A model that is not there (a path, a hub repo that cannot be fetched: offline here, as gated or private
    would be) or a generator run that is not there: one line naming it and what to pass instead."""
    _one_line_error(_cli("seal_jax.cli.evaluate", f"--config={CONFIG_COMMANDS['evaluate']}", f"--out={tmp_path / 'a'}",
                         "--config.model.name=meta-llama/Llama-3.2-1B-Instruct"),
                    "loading the model: model 'meta-llama/Llama-3.2-1B-Instruct'", "--config.model.name=/path/to/dir")
    _one_line_error(_cli("seal_jax.cli.evaluate", f"--config={CONFIG_COMMANDS['evaluate']}", f"--out={tmp_path / 'b'}",
                         f"--config.generator_workdir={tmp_path / 'no_run'}"),
                    "loading the generator:", "no such run directory")
    _one_line_error(_cli("seal_jax.cli.generate", f"--model={tmp_path / 'no_model'}", "--prompt=hi"),
                    "loading the model: model", "no such file or directory")
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "no_run"))


def test_failed_start_leaves_nothing_that_blocks_the_corrected_rerun(tmp_path):
    """A run whose model does not load, then one whose mesh does not divide the 8 devices, both in the same
    workdir: each fails with one line and writes nothing, and the corrected run starts there (and is stopped
    at once: no iterations). A workdir holding another config is refused before any model loads."""
    run = tmp_path / "run"
    base = ["seal_jax.cli.train", f"--config={CONFIG_COMMANDS['train']}", f"--workdir={run}",
            "--config.rl.iterations=0", "--config.eval.final_eval=False"]
    _one_line_error(_cli(*base, f"--config.model.name={tmp_path / 'missing'}"), "loading the model:",
                    "no such file or directory")
    assert not run.exists()
    _one_line_error(_cli(*base, "--config.mesh.edit=-1", "--config.mesh.fsdp=3"),
                    "building the mesh: 8 devices do not divide into fsdp=3 x tp=1", "--config.mesh.fsdp=1")
    assert not run.exists()
    out = _cli(*base, "--config.mesh.edit=-1", "--config.mesh.fsdp=2")
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.load(open(run / "config.json"))
    assert saved["mesh"] == {"edit": -1, "fsdp": 2, "tp": 1} and saved["rl"]["iterations"] == 0
    _one_line_error(_cli(*base, "--config.seed=1", f"--config.model.name={tmp_path / 'missing'}"),
                    "holds a run with a different config", "use a new --workdir")
    assert json.load(open(run / "config.json")) == saved


def test_a_bug_keeps_its_traceback():
    """Only start-up steps turn errors into one line: the same ValueError raised by a command's own work is a
    bug and shows its traceback; --verbosity=1 shows the traceback behind a start-up error too."""
    script = ("import sys\n"
              "from seal_jax.cli.common import StartError, run, start_step\n"
              "def main(argv):\n"
              "    if sys.argv[-1] == 'start':\n"
              "        with start_step('loading the model'):\n"
              "            raise FileNotFoundError('no such file: m.gguf')\n"
              "    raise ValueError('a bug, not a config mistake')\n"
              "run(main)\n")
    cli = lambda *args: subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True,
                                       text=True, timeout=300)
    out = cli("work")
    assert out.returncode != 0 and "Traceback" in out.stderr and "ValueError: a bug" in out.stderr
    _one_line_error(cli("start"), "error: loading the model: no such file: m.gguf")
    out = cli("--verbosity=1", "start")
    assert out.returncode != 0 and "Traceback" in out.stderr and "StartError: loading the model" in out.stderr
