"""Config schema: strict keys with suggestions, typed values, enums, overrides, recipes."""

import pytest

from seqlab.train.config import (
    ConfigError,
    apply_overrides,
    list_recipes,
    load_config,
    parse_override,
)


def test_override_values_follow_yaml_scalar_rules():
    assert parse_override("trainer.lr=3e-4") == (["trainer", "lr"], 3e-4)
    assert parse_override("trainer.max_steps=12") == (["trainer", "max_steps"], 12)
    assert parse_override("model.bidirectional=true") == (["model", "bidirectional"], True)
    assert parse_override("data.train=null") == (["data", "train"], None)
    assert parse_override("data.train=a=b.csv") == (["data", "train"], "a=b.csv")
    assert parse_override("data.columns=[a, b]") == (["data", "columns"], ["a", "b"])
    assert parse_override("predict.prompt='007'") == (["predict", "prompt"], "007")


@pytest.mark.parametrize("text", ["trainer.lr", "=3", "trainer..lr=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override(text)


def test_apply_overrides_makes_sections_and_leaves_input_alone():
    base = {"trainer": {"lr": 1.0}}
    result = apply_overrides(base, ["trainer.lr=2", "model.hidden_size=8"])
    assert result == {"trainer": {"lr": 2}, "model": {"hidden_size": 8}}
    assert base == {"trainer": {"lr": 1.0}}


def test_unknown_key_names_it_and_suggests_nearest():
    with pytest.raises(ConfigError) as info:
        load_config("adding-lstm", ["trainer.lrr=0.1"])
    message = str(info.value)
    assert "'trainer.lrr'" in message and "did you mean 'trainer.lr'" in message


def test_unknown_key_in_task_section():
    with pytest.raises(ConfigError, match=r"'model.hiden_size'.*did you mean 'model.hidden_size'"):
        load_config("adding-lstm", ["model.hiden_size=8"])


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainr'.*did you mean 'trainer'"):
        load_config("adding-lstm", ["trainr.lr=1"])


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError) as info:
        load_config("adding-lstm", ["trainer.batch_size=abc"])
    message = str(info.value)
    assert "'trainer.batch_size'" in message and "'abc'" in message and "integer" in message


def test_enum_lists_allowed_values():
    with pytest.raises(ConfigError) as info:
        load_config("adding-lstm", ["model.cell=lstmm"])
    message = str(info.value)
    assert "'model.cell'" in message and "'rnn'" in message and "'gru'" in message


def test_cell_option_of_another_cell_is_an_error():
    with pytest.raises(ConfigError, match=r"model.peephole=True only applies to model.cell=lstm"):
        load_config("digits-gru", ["model.peephole=true"])


def test_unknown_recipe_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'charlm-lstm'"):
        load_config("charlm-lstn")


def test_unknown_task_lists_kinds(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("task: clasify\n")
    with pytest.raises(ConfigError, match=r"task='clasify'.*classify.*did you mean 'classify'"):
        load_config(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


def test_every_recipe_validates_and_resolves():
    recipes = list_recipes()
    assert {"classify-bilstm", "tag-bilstm", "charlm-lstm", "adding-lstm", "copy-lstm",
            "digits-gru", "forecast-gru"} <= set(recipes)
    for name in recipes:
        assert recipes[name], f"{name} needs a one-line description"
        config = load_config(name)
        resolved = config.to_dict()
        assert resolved["recipe"] == name
        assert set(resolved) == {
                "recipe", "description", "task", "data", "model", "objective", "trainer", "predict"
            }


def test_resolved_config_round_trips(tmp_path):
    import yaml

    config = load_config("charlm-lstm", ["trainer.lr=0.01", "model.hidden_size=32"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    again = load_config(str(path))
    assert again.to_dict() == config.to_dict()
    assert again.trainer.lr == 0.01 and again.section("model").hidden_size == 32
