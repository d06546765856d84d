"""Gin loading and RunConfig validation."""

import dataclasses
import os

import pytest

import gin
from distributed_sac.config import (
    BUNDLED_GIN_DIR,
    DEFAULT_GIN,
    FIELD_RULES,
    SEED_LIMIT,
    RunConfig,
    UserError,
    derived_seed,
    gin_headline,
    load_gin,
)
from tests.conftest import SMOKE_GIN


def test_smoke_config_loads_and_includes_minitaur_defaults():
    config = load_gin([SMOKE_GIN], [])
    assert config.env_name == "MinitaurBulletEnv-v0"
    assert config.num_iterations == 300
    assert config.updates_per_env_step == 1.0  # the tutorial's one gradient step per env step


def test_the_default_config_is_the_walking_one_and_the_tutorials_is_one_flag_away():
    default = load_gin([DEFAULT_GIN], [])
    assert os.path.basename(DEFAULT_GIN) == "minitaur.gin"
    assert gin_headline(DEFAULT_GIN).startswith("The default: SAC on MinitaurBulletEnv-v0")
    assert (default.action_repeat, default.replay_capacity) == (4, 300000)
    assert gin.query_parameter("make_agent.gamma") == 0.95  # a 0.8 s horizon (issue 26)
    tutorial = load_gin([os.path.join(BUNDLED_GIN_DIR, "minitaur_tutorial.gin")], [])
    assert (tutorial.action_repeat, tutorial.replay_capacity) == (1, 10000)
    assert gin.query_parameter("make_agent.gamma") == 0.99
    assert tutorial.initial_collect_steps == 10000 and tutorial.num_iterations == 100000


def test_a_gin_headline_is_its_opening_comment(tmp_path):
    path = tmp_path / "x.gin"
    path.write_text("# Line one,\n#   line two.\n\n# not this\nRunConfig.seed = 1\n")
    assert gin_headline(str(path)) == "Line one, line two."
    path.write_text("RunConfig.seed = 1\n# not a headline\n")
    assert gin_headline(str(path)) == ""


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
        ("RunConfig.action_repeat = 0", "action_repeat must be an integer of at least 1, got 0"),
        ("RunConfig.num_collectors = 0", "num_collectors must be an integer of at least 1, got 0"),
    ],
)
def test_inconsistent_values_are_rejected(binding, problem):
    with pytest.raises(UserError, match=problem):
        load_gin([SMOKE_GIN], [binding])


SEED_RANGE = "an integer from 0 to 4294967295"
AT_LEAST_1 = "an integer of at least 1"
AT_LEAST_0 = "an integer of at least 0"
TIMEOUT = "a number above 0 and at most 86400"

# (field, gin value, what the one line says after "RunConfig.<field> must be ").
BAD_VALUES = [
    ("replay_capacity", "1e4", f"{AT_LEAST_1}, got 10000.0 (a float)"),
    ("replay_capacity", "None", f"{AT_LEAST_1}, got None"),
    ("seed", "4294967296", f"{SEED_RANGE}, got 4294967296"),
    ("seed", "-1", f"{SEED_RANGE}, got -1"),
    ("seed", "3.0", f"{SEED_RANGE}, got 3.0 (a float)"),
    ("batch_size", "'32'", f"{AT_LEAST_1}, got '32' (a str)"),
    ("batch_size", "2.5", f"{AT_LEAST_1}, got 2.5 (a float)"),
    ("num_iterations", "True", f"{AT_LEAST_1}, got True (a bool)"),
    ("num_iterations", "0", f"{AT_LEAST_1}, got 0"),
    (
        "num_iterations",
        "9223372036854775808",
        "an integer from 1 to 9223372036854775807, got " "9223372036854775808",
    ),
    ("initial_collect_steps", "0", f"{AT_LEAST_1}, got 0"),
    ("max_episode_steps", "0", f"None or {AT_LEAST_1}, got 0"),
    ("action_repeat", "1.5", f"{AT_LEAST_1}, got 1.5 (a float)"),
    ("num_eval_episodes", "0", f"{AT_LEAST_1}, got 0"),
    ("eval_interval", "0", f"{AT_LEAST_1}, got 0"),
    ("weight_push_interval", "-5", f"{AT_LEAST_1}, got -5"),
    ("weight_pull_interval", "0", f"{AT_LEAST_1}, got 0"),
    ("log_interval", "0", f"{AT_LEAST_1}, got 0"),
    ("checkpoint_interval", "-1", f"{AT_LEAST_0}, got -1"),
    ("policy_save_interval", "-1", f"{AT_LEAST_0}, got -1"),
    ("summary_interval", "100.0", f"{AT_LEAST_0}, got 100.0 (a float)"),
    ("rate_limiter_slack_steps", "-1", f"{AT_LEAST_0}, got -1"),
    ("dataset_prefetch_batches", "-1", f"{AT_LEAST_0}, got -1"),
    ("learner_tf_threads", "-2", f"{AT_LEAST_0}, got -2"),
    ("actor_tf_threads", "0.5", f"{AT_LEAST_0}, got 0.5 (a float)"),
    ("updates_per_env_step", "0.0", "None or a number above 0, got 0.0"),
    ("updates_per_env_step", "'1'", "None or a number above 0, got '1' (a str)"),
    ("updates_per_env_step", "1e999", "None or a number above 0, got inf"),
    ("replay_checkpoint_interval_s", "-1.0", "a number of at least 0, got -1.0"),
    ("connect_timeout_s", "0", f"{TIMEOUT}, got 0"),
    ("connect_timeout_s", "None", f"{TIMEOUT}, got None"),
    ("server_call_timeout_s", "1e9", f"{TIMEOUT}, got 1000000000.0"),
    ("env_name", "''", "a non-empty string, got ''"),
    ("env_name", "None", "a non-empty string, got None"),
    ("observation_scale", "(1.0, 0.0)", "None or a tuple of numbers above 0, got (1.0, 0.0)"),
    ("observation_scale", "()", "None or a tuple of numbers above 0, got ()"),
]


@pytest.mark.parametrize("field, value, expected", BAD_VALUES)
def test_each_bad_field_value_is_one_line_naming_field_value_and_range(field, value, expected):
    with pytest.raises(UserError) as error:
        load_gin([SMOKE_GIN], [f"RunConfig.{field} = {value}"])
    assert str(error.value) == f"RunConfig.{field} must be {expected}"


def test_every_field_has_a_rule():
    assert set(FIELD_RULES) == {field.name for field in dataclasses.fields(RunConfig)}


@pytest.mark.parametrize(
    "binding, message",
    [
        # The smoke config's replay holds 2000 pairs.
        (
            "RunConfig.batch_size = 2001",
            "RunConfig.batch_size (2001) must not exceed RunConfig.replay_capacity (2000): a batch "
            "larger than the replay repeats its pairs",
        ),
        (
            "RunConfig.initial_collect_steps = 2001",
            "RunConfig.initial_collect_steps (2001) must be between 1 and "
            "RunConfig.replay_capacity (2000)",
        ),
    ],
)
def test_fields_that_must_fit_each_other(binding, message):
    with pytest.raises(UserError) as error:
        load_gin([SMOKE_GIN], [binding])
    assert str(error.value) == message


def test_edge_values_are_accepted():
    config = load_gin(
        [SMOKE_GIN],
        [
            "RunConfig.seed = 4294967295",
            "RunConfig.checkpoint_interval = 0",
            "RunConfig.policy_save_interval = 0",
            "RunConfig.summary_interval = 0",
            "RunConfig.replay_checkpoint_interval_s = 0",
            "RunConfig.updates_per_env_step = None",
            "RunConfig.connect_timeout_s = 86400",
            "RunConfig.server_call_timeout_s = 5",  # an integer where a number is asked
            "RunConfig.batch_size = 2000",
            "RunConfig.rate_limiter_slack_steps = 0",
        ],
    )
    assert config.seed == 2**32 - 1 and config.batch_size == config.replay_capacity


def test_derived_seeds_stay_in_range_and_keep_existing_runs_seeds():
    assert derived_seed(0, 3) == 3 and derived_seed(7, 1_000_000) == 1_000_007
    assert derived_seed(SEED_LIMIT - 1, 1) == 0
    assert derived_seed(SEED_LIMIT - 1, SEED_LIMIT - 1) == SEED_LIMIT - 2
