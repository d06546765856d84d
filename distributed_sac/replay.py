"""Reverb plumbing: the two tables, connecting with retries, writing experience, moving weights."""

from __future__ import annotations

import time

import numpy as np
import reverb
import tensorflow as tf
import tree
from absl import logging
from tf_agents.trajectories import trajectory as trajectory_lib

from distributed_sac.config import RunConfig, UserError
from distributed_sac.transitions import PAIR_COLUMN, TransitionPacking

# TF-Agents' table and key names. The experience items are packed pairs (see transitions), so
# TF-Agents' ReverbReplayBuffer cannot read them; the variables table is ReverbVariableContainer's.
EXPERIENCE_TABLE = "uniform_table"
VARIABLES_TABLE = "variables"
POLICY_KEY = "policy_variables"
TRAIN_STEP_KEY = "train_step"


def experience_signature(collect_data_spec):
    """Signature of one experience item: a (t, t+1) pair of packed steps (see transitions)."""
    return TransitionPacking(collect_data_spec).signature()


def weights_nest(policy_variables, train_step) -> dict:
    """What travels through the `variables` table: the policy's weights and its train step."""
    return {POLICY_KEY: list(policy_variables), TRAIN_STEP_KEY: train_step}


def weights_signature(policy_variables) -> dict:
    return tf.nest.map_structure(
        lambda v: tf.TensorSpec(v.shape, v.dtype),
        weights_nest(policy_variables, tf.TensorSpec((), tf.int64)),
    )


def make_rate_limiter(config: RunConfig) -> reverb.rate_limiters.RateLimiter:
    """MinSize(initial budget) by default; SampleToInsertRatio when the config fixes UTD."""
    if config.samples_per_insert is None:
        return reverb.rate_limiters.MinSize(config.initial_collect_steps)
    spi = config.samples_per_insert
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=spi,
        min_size_to_sample=config.initial_collect_steps,
        # Reverb needs room for at least one insert and one sample either way.
        error_buffer=max(config.rate_limiter_slack_steps * spi, 2 * max(spi, 1.0)),
    )


def make_tables(config: RunConfig, collect_data_spec, policy_variables) -> list:
    experience = reverb.Table(
        EXPERIENCE_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=config.replay_capacity,
        rate_limiter=make_rate_limiter(config),
        signature=experience_signature(collect_data_spec),
    )
    variables = reverb.Table(
        VARIABLES_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=1,
        max_times_sampled=0,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=weights_signature(policy_variables),
    )
    return [experience, variables]


def connect(address: str, timeout_s: float):
    """A client whose server answered; retries with backoff, logging each retry, up to timeout_s."""
    client = reverb.Client(address)
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            client.server_info(timeout=max(1, int(min(remaining, 2))))
            return client
        except Exception as error:  # gRPC unavailable / deadline exceeded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UserError(
                    f"replay server at {address} unreachable after {timeout_s:.0f}s "
                    f"({attempt} attempts)"
                ) from None
            reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
            logging.warning(
                "replay server at %s not reachable (attempt %d: %s); retrying in %.1fs",
                address,
                attempt,
                reason,
                delay,
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 10.0)


# What Reverb raises when its server goes away mid-call: gRPC statuses, or plain RuntimeErrors
# from the writer and sampler.
_CONNECTION_ERROR_TYPES = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
)
_CONNECTION_ERROR_MESSAGES = (
    "socket closed",
    "connection reset",
    "failed to connect",
    "unavailable",
    "error when confirming that all items written",
    "broken pipe",
)


def is_connection_error(error: BaseException) -> bool:
    """True when `error` means the replay server went away (so reconnecting may help)."""
    # Reverb's own DeadlineExceededError: a call to a server that stopped answering. (Writers'
    # rate-limiter timeouts raise it too, but ExperienceWriter handles those itself.)
    if isinstance(error, (*_CONNECTION_ERROR_TYPES, reverb.errors.DeadlineExceededError)):
        return True
    if isinstance(error, (RuntimeError, tf.errors.OpError, reverb.errors.ReverbError)):
        message = str(error).lower()
        return any(known in message for known in _CONNECTION_ERROR_MESSAGES)
    return False


def _describe(spec) -> str:
    return f"{spec.dtype.name}{list(spec.shape)}"


def check_signature(client: reverb.Client, table: str, expected, layout: str = "") -> None:
    """Raises a UserError naming the first difference between a server table and our config.

    `layout` describes what this config's tensors hold, to help tell two configs apart.
    """
    info = client.server_info()
    if table not in info:
        raise UserError(f"replay server has no table '{table}' (tables: {sorted(info)})")
    actual_flat = tree.flatten_with_path(info[table].signature)
    expected_flat = tree.flatten_with_path(expected)
    if len(actual_flat) != len(expected_flat):
        raise UserError(
            f"spec mismatch in table '{table}': server has {len(actual_flat)} tensors, this config "
            f"has {len(expected_flat)}; do all roles use the same gin config?"
        )
    for (path, want), (_, have) in zip(expected_flat, actual_flat):
        if want.shape != have.shape or want.dtype != have.dtype:
            name = "/".join(str(p) for p in path)
            raise UserError(
                f"spec mismatch in table '{table}' at {name}: server has {_describe(have)}, "
                f"this config has {_describe(want)}{f' ({layout})' if layout else ''}; "
                "do all roles use the same env and gin config?"
            )


def table_size(client: reverb.Client, table: str = EXPERIENCE_TABLE) -> int:
    return client.server_info(timeout=30)[table].current_size


def items_inserted(client: reverb.Client) -> int:
    """Experience items the server has taken in since it started (a restarted server counts
    from 0 again): one per environment step as TF-Agents counts them (a pair ends at each step;
    the reset step between two episodes ends none)."""
    info = client.server_info(timeout=30)[EXPERIENCE_TABLE]
    return info.rate_limiter_info.insert_stats.completed


class ExperienceWriter:
    """Writes each overlapping (t, t+1) pair of a collector's trajectories as one item.

    Each item is one packed [2, width] step of its own (see transitions), so it is one chunk:
    the cheapest thing for the learner to sample. Reverb's writer queues items without
    blocking, so a collector held back by the rate limiter would run ahead and pile up stale
    experience in memory. `wait_for_room` bounds that queue.
    """

    def __init__(self, client: reverb.Client, collect_data_spec, max_pending_items: int = 16):
        self._packing = TransitionPacking(collect_data_spec)
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)
        self._max_pending_items = max_pending_items
        self._previous = None  # the packed step before this one, in the same episode
        self.items_created = 0

    def write(self, traj: trajectory_lib.Trajectory) -> None:
        packed = self._packing.pack(traj)
        if self._previous is not None:
            self._writer.append({PAIR_COLUMN: np.stack([self._previous, packed])})
            self._writer.create_item(
                EXPERIENCE_TABLE,
                priority=1.0,
                trajectory={PAIR_COLUMN: self._writer.history[PAIR_COLUMN][-1]},
            )
            self.items_created += 1
        # A boundary (LAST -> FIRST) step closes the episode: pairs never span two episodes.
        # Tracked here rather than with the writer's end_episode(), which waits for every
        # pending item and so would block forever once a finished learner stops sampling.
        self._previous = None if traj.is_boundary() else packed

    def wait_for_room(self, timeout_s: float) -> bool:
        """Blocks until few items are pending on the server; False if that took over timeout_s."""
        try:
            self._writer.flush(self._max_pending_items, timeout_ms=int(timeout_s * 1000))
            return True
        except reverb.errors.DeadlineExceededError:
            return False

    def close(self, timeout_s: float = 5.0) -> bool:
        """Sends what the rate limiter admits within timeout_s; False if items were left unsent."""
        try:
            self._writer.flush(timeout_ms=int(timeout_s * 1000))
            all_sent = True
        except reverb.errors.DeadlineExceededError:
            # Training is over, so the limiter admits no more; those items would have no reader.
            all_sent = False
        self._writer.close()
        return all_sent


class WeightClient:
    """Pushes or pulls policy weights and train step through the `variables` table."""

    def __init__(self, client: reverb.Client, policy_variables, train_step: tf.Variable | None):
        self._client = client
        self._variables = list(policy_variables)
        self._train_step = train_step

    def push(self) -> None:
        values = weights_nest([v.numpy() for v in self._variables], self._train_step.numpy())
        self._client.insert(tree.flatten(values), priorities={VARIABLES_TABLE: 1.0})

    def available(self) -> bool:
        return self._client.server_info(timeout=30)[VARIABLES_TABLE].current_size > 0

    def pull(self) -> int | None:
        """Assigns the newest pushed weights; returns their train step, or None before any push."""
        if not self.available():
            return None
        sample = next(self._client.sample(VARIABLES_TABLE, num_samples=1, emit_timesteps=False))
        flat = [np.asarray(column[0]) for column in sample.data]  # items hold one timestep
        values = tree.unflatten_as(weights_nest(self._variables, 0), flat)
        for variable, value in zip(self._variables, values[POLICY_KEY]):
            variable.assign(value)
        return int(values[TRAIN_STEP_KEY])


def describe_tables(client: reverb.Client) -> dict[str, int]:
    return {name: info.current_size for name, info in client.server_info(timeout=30).items()}
