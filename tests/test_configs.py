"""configs/*.py: every preset builds into typed settings (the fields the entry points read all exist), the shared
blocks come from configs/common.py, and a bad preset is a clear error."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["knowledge.py", "arc.py", "knowledge_eval.py", "arc_eval.py"]


def load(config_file: str):
    spec = importlib.util.spec_from_file_location(config_file[:-3], os.path.join(ROOT, "configs", config_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config_file", CONFIGS)
@pytest.mark.parametrize("preset", ["smoke", "demo", "paper"])
def test_every_preset_builds_typed_settings(config_file, preset):
    from seal_jax.cli.settings import domain_for, inner_config, restem_config
    c = load(config_file).get_config(preset)
    domain, restem = domain_for(c), restem_config(c)
    assert domain.name == c.domain and restem.iterations == c.rl.iterations
    assert domain.settings.adapt.inner == inner_config(c.inner)
    assert (c.model.name == "random:tiny") == (preset == "smoke") and (c.mesh.edit == -1) == (preset == "paper")
    assert ("generator_workdir" in c) == config_file.endswith("_eval.py")


def test_eval_configs_extend_their_training_config():
    for domain in ("knowledge", "arc"):
        train, evaluation = load(f"{domain}.py").get_config("demo"), load(f"{domain}_eval.py").get_config("demo")
        for section in ("mesh", "model", "inner", "rl", "self_edit"):
            assert evaluation[section] == train[section], (domain, section)
        assert set(evaluation.eval) > set(train.eval) and "conditions" in evaluation.eval


@pytest.mark.parametrize("config_file", CONFIGS)
def test_unknown_preset_is_named(config_file):
    with pytest.raises(ValueError, match="unknown preset 'tiny'; choose smoke, demo or paper"):
        load(config_file).get_config("tiny")
