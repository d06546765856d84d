"""Gin loading and RunConfig validation."""

import pytest

from distributed_sac.config import UserError, load_gin
from tests.conftest import SMOKE_GIN


def test_smoke_config_loads_and_includes_minitaur_defaults():
    config = load_gin([SMOKE_GIN], [])
    assert config.env_name == "MinitaurBulletEnv-v0"
    assert config.num_iterations == 300
    assert config.updates_per_env_step == 1.0  # the tutorial's one gradient step per env step


def test_bindings_override_files():
    config = load_gin([SMOKE_GIN], ["RunConfig.seed = 7", "RunConfig.batch_size = 64"])
    assert (config.seed, config.batch_size) == (7, 64)


def test_unknown_configurable_is_named():
    with pytest.raises(UserError) as error:
        load_gin([SMOKE_GIN], ["NoSuchThing.value = 1"])
    message = str(error.value)
    assert "NoSuchThing" in message and "\n" not in message


def test_unknown_parameter_is_named_with_its_file_line(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("RunConfig.seed = 1\nRunConfig.num_iteratons = 5\n")
    with pytest.raises(UserError) as error:
        load_gin([str(bad)], [])
    message = str(error.value)
    assert "num_iteratons" in message and "line 2" in message and "\n" not in message


def test_missing_gin_file_is_named(tmp_path):
    missing = tmp_path / "nope.gin"
    with pytest.raises(UserError, match="gin file not found: .*nope.gin"):
        load_gin([str(missing)], [])


def test_syntax_error_is_one_line():
    with pytest.raises(UserError) as error:
        load_gin([SMOKE_GIN], ["RunConfig.seed = (3"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "binding, problem",
    [
        ("RunConfig.initial_collect_steps = 5000", "initial_collect_steps"),
        ("RunConfig.batch_size = 0", "batch_size"),
        ("RunConfig.updates_per_env_step = -1.0", "updates_per_env_step"),
        ("RunConfig.action_repeat = 0", "action_repeat must be at least 1, got 0"),
        ("RunConfig.num_collectors = 0", "num_collectors must be at least 1, got 0"),
    ],
)
def test_inconsistent_values_are_rejected(binding, problem):
    with pytest.raises(UserError, match=problem):
        load_gin([SMOKE_GIN], [binding])
