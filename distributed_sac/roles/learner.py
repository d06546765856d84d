"""Learner role: SAC on its own replay, fed from the server's feed table; pushes weights,
checkpoints, saves policies."""

from __future__ import annotations

import functools
import signal
import sys

import tensorflow as tf
from absl import flags

import gin
from distributed_sac.builder import Builder
from distributed_sac.learner.checkpoints import LearnerCheckpoints
from distributed_sac.learner.parts import LearnerParts, ServerParts
from distributed_sac.learner.policy_export import PolicyExporter
from distributed_sac.learner.strategy import STRATEGIES, make_strategy
from distributed_sac.learner.training import Training
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting, abandon_calls
from distributed_sac.runtime import cli
from distributed_sac.runtime.stopping import StopRequest

flags.DEFINE_enum("strategy", "cpu", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU address, with --strategy tpu.")
flags.DEFINE_integer(
    "mirrored_cpu_devices", 2, "Logical CPU devices for --strategy mirrored on a host without GPUs."
)
FLAGS = flags.FLAGS


def connect(builder: Builder, parts: LearnerParts) -> ServerParts:
    """The learner's clients of the server: a weight client pushing the agent's collect policy
    with its train step, and the feed's reader."""
    weights = builder.make_weight_client(
        cli.variables_address(), parts.agent.collect_policy.variables(), parts.train_step
    )
    return ServerParts(weights=weights, feed=builder.make_feed_reader(FLAGS.replay_server_address))


def main() -> None:
    config = cli.load_config()
    cli.set_tf_threads(config.learner_tf_threads)
    # The network initialisation and SAC's sampling in training. Keras draws unseeded
    # initializers' seeds from Python's `random`, so seed that too (set_random_seed does).
    # Which pairs the replay holds when depends on the collectors' timing, so two runs with one
    # seed are close, not equal.
    tf.keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.mirrored_cpu_devices)
    run_dir = cli.run_dir("learner")
    stop = StopRequest("after this chunk of train steps", on_request=abandon_calls)
    builder = Builder(config)
    # A wrong server fails before any TF work.
    builder.connect(FLAGS.replay_server_address, (tables.FEED_TABLE,))
    parts = builder.make_learner(run_dir.root, strategy)
    with open(run_dir.operative_config, "w") as f:
        f.write(gin.operative_config_str())
    checkpoints = LearnerCheckpoints(
        run_dir.checkpoints, agent=parts.agent, train_step=parts.train_step, replay=parts.replay
    )
    restored = checkpoints.restore_latest()
    training = Training(
        parts=parts,
        checkpoints=checkpoints,
        exporter=PolicyExporter(run_dir.policies, parts.agent.collect_policy, parts.train_step),
        server=Reconnecting("learner", functools.partial(connect, builder, parts)),
        config=config,
        run_dir=run_dir,
    )
    training.start(restored, strategy=FLAGS.strategy, replicas=strategy.num_replicas_in_sync)
    training.run(stop)
    if stop.requested:
        training.save_stopped(stop)
        # Not 0: training is unfinished, so a supervisor should start the learner again.
        sys.exit(128 + signal.SIGTERM)
    training.finish()


def run() -> None:
    cli.run_role("learner", main)


if __name__ == "__main__":
    run()
