"""docs/configs.md is generated from configs/*.py (`seal_jax/cli/config_docs.py`): the checked-in page equals the
generator's output, every field of every preset is on it, and the comment rules pick up what a hand-read of a
small config says they should."""
import importlib.util
import os
import subprocess
import sys

import pytest

from seal_jax.cli import config_docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "configs.md")


def test_checked_in_page_is_the_generators_output():
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    assert page == config_docs.render(), \
        "docs/configs.md is stale: run `python -m seal_jax.cli.config_docs > docs/configs.md`"


def test_the_command_prints_the_page():
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.config_docs"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out == config_docs.render()


def _load(config_file: str):
    spec = importlib.util.spec_from_file_location(f"t_{config_file[:-3]}", os.path.join(ROOT, "configs", config_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("config_file", ["knowledge.py", "arc.py"])
def test_every_field_of_every_preset_is_on_its_files_section(config_file):
    page = config_docs.render()
    start = page.index(f"## `configs/{config_file}`")
    section = page[start:page.find("\n## ", start + 1)]
    module = _load(config_file)
    for preset in ("smoke", "demo", "paper"):
        for field, value in _leaves(module.get_config(preset).to_dict()):
            row = next((line for line in section.splitlines() if line.startswith(f"| `{field}` |")), None)
            assert row is not None, (config_file, field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):  # paths depend on the disk
                assert f"`{value!r}`" in row, (config_file, preset, field, row)


SAMPLE = '''
def get_config(arg="demo"):
    preset = common.preset_of(arg)
    # Notes on the inner block,
    # over two lines.
    c.inner = common.inner(lr=1e-3,  # the step size
                           epochs=10, batch_size=1)  # one document per step
    c.data = dict(source="demo", held_out=8)
    c.generator_workdir = ""  # a run directory
    if preset == "smoke":
        # smaller for tests
        c.inner.update(epochs=2)
    elif preset == "paper":
        c.data.source = "squad"  # SEAL's data
    return c
'''


def test_comment_rules_on_a_hand_read_config():
    got = config_docs.read_comments(SAMPLE)
    assert got.field_help == {"inner.lr": "the step size", "inner.batch_size": "one document per step",
                              "generator_workdir": "a run directory"}
    assert got.section_notes == {"inner": ["Notes on the inner block, over two lines."]}
    assert got.preset_notes == {"smoke": ["smaller for tests"], "paper": ["`data.source`: SEAL's data"]}


def test_a_section_without_a_reader_is_named():
    with pytest.raises(ValueError, match="'schedule_v2' has no entry in seal_jax/cli/config_docs.PHASES"):
        config_docs.phase_of("schedule_v2.warmup")
    assert config_docs.phase_of("rl.keep") != config_docs.phase_of("rl.lr")
