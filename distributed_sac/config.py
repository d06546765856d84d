"""The run configuration every role reads, and gin loading with one-line errors."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence

import gin
from distributed_sac.errors import UserError, one_line

# Registers FaultInjection with gin, so load_gin knows its bindings.
from distributed_sac.runtime import faults  # noqa: F401

BUNDLED_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
# What `launch/local.sh` and `play` use when given no --gin_file: the config that walks.
DEFAULT_GIN = os.path.join(BUNDLED_GIN_DIR, "minitaur.gin")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Knobs shared by all roles; gin binds them as `RunConfig.<name> = value`."""

    env_name: str = "MinitaurBulletEnv-v0"
    # None keeps the environment's own episode limit (1000 steps for Minitaur).
    max_episode_steps: int | None = None
    # Each action is applied for this many environment steps, their rewards summed: collectors,
    # learner and evaluator see one step per decision. The episode limit still counts
    # environment steps, so returns are the environment's own.
    action_repeat: int = 1
    # Per-dimension factors the observations are multiplied by before anyone sees them (None:
    # unchanged). Minitaur's joint velocities are ~40 times its joint angles in size, and its
    # base orientation moves by hundredths; the policy saved from such a run expects scaled
    # observations, so play it with the run's gin file.
    observation_scale: tuple[float, ...] | None = None
    # Each environment step applies this weight times the action applied last plus the rest
    # times the policy's action (0: the policy's action as it is).
    action_smoothing: float = 0.0
    seed: int = 0
    num_iterations: int = 100_000
    # Random-policy items in the experience table before training starts, counted across all
    # collectors; the learner starts training once it has drained this many.
    initial_collect_steps: int = 10_000
    replay_capacity: int = 10_000
    batch_size: int = 256
    # Gradient steps per environment step. None: collect and train freely. A number: the learner
    # trains that many steps per item it drains from the feed table, whose queue limiter holds
    # the collectors back, so the ratio holds for any collector count (see replay/tables).
    updates_per_env_step: float | None = None
    # Rewards the critic's target sums before it bootstraps: up to this many consecutive pairs
    # of one episode in the learner's replay folded into one (1: SAC's one-step target).
    n_step_returns: int = 1
    # Collectors the local launcher starts (its --num_collectors overrides; a cluster manifest
    # sets its own count). Below an update-to-data ratio of 1, more collectors feed the learner.
    num_collectors: int = 1
    # How far (in environment steps) inserts may run ahead of the learner's draining.
    rate_limiter_slack_steps: int = 1_000
    weight_push_interval: int = 100  # learner train steps between weight pushes
    weight_pull_interval: int = 100  # collector env steps between weight pulls
    eval_interval: int = 10_000  # train steps between evaluations
    num_eval_episodes: int = 20
    policy_save_interval: int = 5_000
    checkpoint_interval: int = 10_000  # learner train steps between checkpoints (0: only at exit)
    replay_checkpoint_interval_s: float = 600.0  # seconds between Reverb checkpoints (0: at exit)
    summary_interval: int = 1_000
    log_interval: int = 1_000  # learner train steps / collector env steps between log lines
    connect_timeout_s: float = 120.0  # how long a role retries an unreachable server
    # How long a role waits for one call to the server (a weight push or pull, a take from the
    # feed) before it takes the server for lost and reconnects; they return in milliseconds.
    server_call_timeout_s: float = 30.0
    # Speed knobs; none of them changes what is learned.
    # Batches sampled ahead from the learner's replay (the tutorial prefetched 50 from Reverb;
    # sampling in memory is cheap, and fewer ahead means fresher items in them).
    dataset_prefetch_batches: int = 2
    # TF threads per role (intra-op and inter-op); 0 lets TensorFlow use every core. Acting on
    # one observation gains nothing from more threads, and collectors share the cores.
    learner_tf_threads: int = 0
    actor_tf_threads: int = 1  # collectors and the evaluator

    def __post_init__(self):
        for field in dataclasses.fields(self):
            FIELD_RULES[field.name].check(field.name, getattr(self, field.name))
        if self.initial_collect_steps > self.replay_capacity:
            raise UserError(
                f"RunConfig.initial_collect_steps ({self.initial_collect_steps}) must be between 1 "
                f"and RunConfig.replay_capacity ({self.replay_capacity})"
            )
        if self.batch_size > self.replay_capacity:
            raise UserError(
                f"RunConfig.batch_size ({self.batch_size}) must not exceed "
                f"RunConfig.replay_capacity ({self.replay_capacity}): a batch larger than the "
                "replay repeats its pairs"
            )


# numpy's legacy seeding (np.random.seed, which Minitaur's randomizer draws from) takes
# 0 .. 2**32 - 1; TensorFlow, Python's random and NumpyActorPolicy accept those too.
SEED_LIMIT = 2**32
# TensorFlow and Reverb hold counts and sizes as int64.
INT64_MAX = 2**63 - 1
DAY_S = 86_400


def derived_seed(seed: int, offset: int) -> int:
    """The seed of one role's generators, `offset` apart from the run's seed (a collector's
    task, the evaluator's offset), wrapped into the range every generator takes."""
    return (seed + offset) % SEED_LIMIT


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one RunConfig field accepts: an integer (or any finite number) from `low` to `high`
    (`low` itself excluded when `above`; integers at most int64's largest), or None when
    `optional`."""

    integer: bool
    low: int
    high: int | None = None
    above: bool = False
    optional: bool = False

    @property
    def _high(self) -> float:
        if self.high is not None:
            return self.high
        return INT64_MAX if self.integer else math.inf

    def expected(self, value=None) -> str:
        """What the field takes, in words; the upper bound only when it is the field's own or
        `value` is beyond it."""
        kind = "an integer" if self.integer else "a number"
        show_high = self.high is not None or (_is_number(value) and value > self._high)
        if self.above:
            text = f"{kind} above {self.low}" + (f" and at most {self._high}" if show_high else "")
        elif show_high:
            text = f"{kind} from {self.low} to {self._high}"
        else:
            text = f"{kind} of at least {self.low}"
        return f"None or {text}" if self.optional else text

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if not _is_number(value) or (self.integer and not isinstance(value, int)):
            return False
        return (value > self.low if self.above else value >= self.low) and value <= self._high

    def check(self, name: str, value) -> None:
        """UserError naming the field, the value (with its type when that is what is wrong) and
        what the field takes."""
        if self.accepts(value):
            return
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        right_type = value is None or (numeric and (isinstance(value, int) or not self.integer))
        kind = "" if right_type else f" (a {type(value).__name__})"
        raise UserError(f"RunConfig.{name} must be {self.expected(value)}, got {value!r}{kind}")


def _is_number(value) -> bool:
    """A finite int or float; not a bool, which Python counts as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


class TextRule:
    """A non-empty string (RunConfig.env_name)."""

    def check(self, name: str, value) -> None:
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"RunConfig.{name} must be a non-empty string, got {value!r}")


class FactorsRule:
    """None, or one positive finite factor per observation dimension."""

    def check(self, name: str, value) -> None:
        if value is None:
            return
        factor = Rule(integer=False, low=0, above=True)
        if (
            not isinstance(value, (tuple, list))
            or not value
            or not all(factor.accepts(v) for v in value)
        ):
            raise UserError(
                f"RunConfig.{name} must be None or a tuple of numbers above 0, got {value!r}"
            )


def _count(low: int = 1, optional: bool = False) -> Rule:
    return Rule(integer=True, low=low, optional=optional)


# Every RunConfig field, checked when a RunConfig is made: before the launcher starts any role,
# and in each role before it does anything else (tests/test_config.py checks none is missing).
FIELD_RULES = {
    "env_name": TextRule(),
    "max_episode_steps": _count(optional=True),
    "action_repeat": _count(),
    # Below 1: at 1 the policy's action would never reach the motors.
    "action_smoothing": Rule(integer=False, low=0, high=0.99),
    "observation_scale": FactorsRule(),
    "seed": Rule(integer=True, low=0, high=SEED_LIMIT - 1),
    "num_iterations": _count(),
    "initial_collect_steps": _count(),
    "replay_capacity": _count(),
    "batch_size": _count(),
    "updates_per_env_step": Rule(integer=False, low=0, above=True, optional=True),
    "n_step_returns": _count(),
    "num_collectors": _count(),
    "rate_limiter_slack_steps": _count(0),  # the feed holds at least 2 (replay/tables)
    "weight_push_interval": _count(),
    "weight_pull_interval": _count(),
    "eval_interval": _count(),
    "num_eval_episodes": _count(),
    "policy_save_interval": _count(0),  # 0: only the final export
    "checkpoint_interval": _count(0),  # 0: only at exit
    "replay_checkpoint_interval_s": Rule(integer=False, low=0),  # 0: only at exit
    "summary_interval": _count(0),  # 0: no summaries
    "log_interval": _count(),  # collectors report every log_interval env steps
    # At most a day: a role waiting longer for its server is a typo, not a plan.
    "connect_timeout_s": Rule(integer=False, low=0, high=DAY_S, above=True),
    "server_call_timeout_s": Rule(integer=False, low=0, high=DAY_S, above=True),
    "dataset_prefetch_batches": _count(0),
    "learner_tf_threads": _count(0),  # 0: every core
    "actor_tf_threads": _count(0),
}


def _check_gin_file(path: str) -> None:
    """UserError unless `path` is a readable UTF-8 file (gin would fail with a traceback)."""
    if os.path.isdir(path):
        raise UserError(f"gin file is a directory: {path}")
    if not os.path.isfile(path):
        raise UserError(f"gin file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            f.read()
    except UnicodeDecodeError as error:
        raise UserError(f"gin file {path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise UserError(f"cannot read gin file {path}: {error.strerror}") from None


def gin_headline(path: str) -> str:
    """A gin file's opening comment up to its first empty or non-comment line, as one line
    (what the launcher prints of the config it runs); empty when it opens with no comment."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def load_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> RunConfig:
    """Parses gin files and bindings; any unknown name or bad line raises a one-line UserError."""
    # sac/agent.py registers the agent's configurables, so gin can tell unknown names apart.
    # Imported here, not at the top: it loads TensorFlow and TF-Agents (2.6 s of CPU), which the
    # launcher refusing a bad flag and plot (through evaluation) do not need.
    from distributed_sac.sac import agent  # noqa: F401

    gin.clear_config()
    # `include 'minitaur_tutorial.gin'` finds the project's bundled configs from anywhere.
    gin.add_config_file_search_path(BUNDLED_GIN_DIR)
    for path in gin_files:
        _check_gin_file(path)
        # `include 'x.gin'` inside a gin file resolves next to that file.
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
    # gin logs "Path not found" for every include before it tries the search paths.
    logging.disable(logging.ERROR)
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings))
    except Exception as error:  # gin raises ValueError, SyntaxError, TokenError...
        raise UserError(f"bad gin config: {one_line(error)}") from None
    finally:
        logging.disable(logging.NOTSET)
    try:
        config = RunConfig()
    except UserError as error:  # gin appends "In call to configurable ..." lines; drop them
        raise UserError(str(error).splitlines()[0]) from None
    except Exception as error:  # a binding of the wrong type reaches the constructor
        raise UserError(f"bad gin config: {one_line(error)}") from None
    agent.check_bindings()
    return config
