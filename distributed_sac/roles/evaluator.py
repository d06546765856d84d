"""Evaluator role: runs the greedy policy on fresh weights every eval_interval train steps."""

from __future__ import annotations

import functools
import os
import signal
import sys

from absl import flags

from distributed_sac.acting import evaluation
from distributed_sac.acting.evaluator import Evaluator, ServerParts
from distributed_sac.builder import Builder
from distributed_sac.errors import UserError
from distributed_sac.learner.step_record import LearnerStep
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting, abandon_calls
from distributed_sac.reports import report, seconds_since
from distributed_sac.runtime import cli
from distributed_sac.runtime.stopping import StopRequest
from distributed_sac.sac.numpy_policy import NumpyActorPolicy

flags.DEFINE_float("poll_interval_s", 1.0, "Seconds between checks for new weights.")
flags.DEFINE_integer(
    "nice",
    0,
    "Niceness added to this process. Above 0, on cores shared with the learner and collectors, "
    "evaluation yields to them; an evaluation that falls behind scores the newest weights.",
)
FLAGS = flags.FLAGS


def connect(builder: Builder, greedy: NumpyActorPolicy, learner_step: LearnerStep) -> ServerParts:
    """The evaluator's clients of the server: a weight client pulling into `greedy` (train steps
    the learner has not reached refused), and the experience table's."""
    weights = builder.make_weight_client(
        cli.variables_address(), greedy.tf_variables, accept=learner_step.acceptable
    )
    experience = builder.connect(FLAGS.replay_server_address, (tables.EXPERIENCE_TABLE,))
    return ServerParts(weights=weights, experience=experience)


def main() -> None:
    config = cli.load_config()
    if FLAGS.nice < 0:
        raise UserError(f"--nice must not be negative, got {FLAGS.nice}")
    os.nice(FLAGS.nice)
    cli.set_tf_threads(config.actor_tf_threads)
    run_dir = cli.run_dir("evaluator")
    builder = Builder(config)
    env = evaluation.make_eval_env(builder)
    greedy = builder.make_acting_policy(greedy=True)
    # Evaluates no train step the learner has not reached (see learner/step_record.py).
    learner_step = LearnerStep(run_dir, config.num_iterations)
    server = Reconnecting("evaluator", functools.partial(connect, builder, greedy, learner_step))
    evaluator = Evaluator(config=config, run_dir=run_dir, env=env, greedy=greedy, server=server)
    # From evaluator_start on, a stop is read by the loop, so it never kills the evaluator mid-save
    # (a SavedModel written, its record or its metrics.jsonl line not yet). Until here nothing is
    # being saved, and a stop during the start (seconds of TensorFlow and pybullet) ends it at once.
    stop = StopRequest(
        "once a best policy being saved and its metrics.jsonl line are written (an evaluation "
        "being played is dropped)",
        on_request=abandon_calls,
    )
    report("evaluator_start", nice=os.nice(0))
    evaluator.resume()
    evaluator.run(stop, FLAGS.poll_interval_s)
    env.close()
    if stop.requested:
        report(
            "evaluator_stopped",
            last_evaluated=evaluator.last_evaluated,
            seconds_since_signal=seconds_since(stop.at),
        )
        # Not 0: the run's evaluations are unfinished, so a supervisor should start it again.
        sys.exit(128 + signal.SIGTERM)
    report("evaluator_done", last_evaluated=evaluator.last_evaluated)


def run() -> None:
    cli.run_role("evaluator", main)


if __name__ == "__main__":
    run()
