"""Collector role: steps its own environment with the collect policy and writes (t, t+1) pairs."""

from __future__ import annotations

import functools
import hashlib
import socket

import tensorflow as tf
from absl import flags

from distributed_sac.acting.collector import Collector, ServerParts
from distributed_sac.builder import Builder
from distributed_sac.config import SEED_LIMIT, derived_seed
from distributed_sac.errors import UserError
from distributed_sac.learner.step_record import LearnerStep
from distributed_sac.replay import tables
from distributed_sac.replay.transitions import PairNumbering
from distributed_sac.reports import report
from distributed_sac.runtime import cli
from distributed_sac.sac.numpy_policy import NumpyActorPolicy

flags.DEFINE_string(
    "task",
    "0",
    "Unique collector id (an integer; seeds its environment and policy), or 'auto': derived "
    "from the hostname, distinct per container when replicas cannot be numbered.",
)
FLAGS = flags.FLAGS


def task_id(flag: str) -> int:
    """--task as an integer; 'auto' hashes the hostname (a container's id) to one."""
    if flag == "auto":
        digest = hashlib.sha256(socket.gethostname().encode()).digest()
        return int.from_bytes(digest[:4], "big") % 1_000_000
    bad = UserError(f"--task must be 'auto' or an integer from 0 to {SEED_LIMIT - 1}, got {flag!r}")
    try:
        task = int(flag)
    except ValueError:
        raise bad from None
    if not 0 <= task < SEED_LIMIT:  # it offsets the run's seed (config.derived_seed)
        raise bad
    return task


def connect(
    builder: Builder, policy: NumpyActorPolicy, learner_step: LearnerStep, numbering: PairNumbering
) -> ServerParts:
    """The collector's clients of the server: the experience table's, a weight client pulling
    into `policy` (train steps the learner has not reached refused), a writer of its pairs."""
    client = builder.connect(FLAGS.replay_server_address, (tables.EXPERIENCE_TABLE,))
    weights = builder.make_weight_client(
        cli.variables_address(),
        policy.tf_variables,
        update_period=builder.config.weight_pull_interval,
        accept=learner_step.acceptable,
    )
    writer = builder.make_experience_writer(client, numbering)
    return ServerParts(client=client, weights=weights, writer=writer)


def main() -> None:
    task = task_id(FLAGS.task)
    config = cli.load_config()
    cli.set_tf_threads(config.actor_tf_threads)
    seed = derived_seed(config.seed, task)  # every collector explores differently
    tf.random.set_seed(seed)
    run_dir = cli.run_dir("collector", required=False)
    summaries = run_dir and tf.summary.create_file_writer(run_dir.collect(task))
    builder = Builder(config)
    env = builder.make_env(seed=seed)
    policy = builder.make_acting_policy(seed=seed)
    learner_step = LearnerStep(run_dir, config.num_iterations)
    collector = Collector(
        config=config,
        task=task,
        seed=seed,
        env=env,
        policy=policy,
        learner_step=learner_step,
        # One numbering for this process's writers, see transitions.
        connect=functools.partial(
            connect,
            builder,
            policy=policy,
            learner_step=learner_step,
            numbering=PairNumbering(),
        ),
        summaries=summaries,
    )
    collector.run()
    done = collector.close()
    if summaries is not None:
        summaries.flush()
    report("collector_done", **done)


def run() -> None:
    cli.run_role("collector", main)


if __name__ == "__main__":
    run()
