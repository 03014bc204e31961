"""configs/*.py: every preset builds into typed settings (the fields the entry points read all exist), the shared
blocks come from configs/common.py, and a bad preset is a clear error."""
import pytest

from conftest import config_module as load

CONFIGS = ["knowledge.py", "arc.py", "knowledge_eval.py", "arc_eval.py"]


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
