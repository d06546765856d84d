"""Evaluator role: runs the greedy policy on fresh weights every eval_interval train steps."""

from __future__ import annotations

import math
import os
import signal
import sys
import time

from absl import flags, logging

from distributed_sac.acting import evaluation
from distributed_sac.acting.best_policy import BestPolicyKeeper, describe
from distributed_sac.builder import Builder
from distributed_sac.errors import UserError
from distributed_sac.learner.step_record import LearnerStep
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting, abandon_calls
from distributed_sac.reports import report
from distributed_sac.runtime import cli
from distributed_sac.runtime.stopping import StopRequest

flags.DEFINE_float("poll_interval_s", 1.0, "Seconds between checks for new weights.")
flags.DEFINE_integer(
    "nice",
    0,
    "Niceness added to this process. Above 0, on cores shared with the learner and collectors, "
    "evaluation yields to them; an evaluation that falls behind scores the newest weights.",
)
FLAGS = flags.FLAGS


def last_evaluated_step(metrics_path: str) -> int | None:
    """The train step of the last complete line of metrics.jsonl (a restarted evaluator goes on
    from there); None when there is none."""
    evaluations, _ = evaluation.read_evaluations(metrics_path)
    return evaluations[-1]["train_step"] if evaluations else None


def is_due(step: int, last_evaluated: int | None, config) -> bool:
    """Weights of `step` are evaluated when they cross an eval_interval boundary, or are the
    final step's."""
    if last_evaluated is None:
        return True
    if step >= config.num_iterations > last_evaluated:
        return True
    return step // config.eval_interval > last_evaluated // config.eval_interval


def _log_evaluation(run_dir, summaries, result: dict) -> None:
    """The evaluation's line in metrics.jsonl, its TensorBoard scalars and its report."""
    import tensorflow as tf

    if not math.isfinite(result["AverageReturn"]):
        logging.warning("non-finite AverageReturn at train_step %d", result["train_step"])
    evaluation.append_evaluation(run_dir.metrics, result)
    with summaries.as_default(step=result["train_step"]):
        tf.summary.scalar("Metrics/AverageReturn", result["AverageReturn"])
        tf.summary.scalar("Metrics/AverageEpisodeLength", result["AverageEpisodeLength"])
    summaries.flush()
    report("evaluation", **result)


def _write(run_dir, summaries, result: dict, best: BestPolicyKeeper) -> None:
    # The best policy before the line: a kill while the policy is saved (seconds) leaves the
    # previous best and no line, and a kill between the two (an instant) leaves a record that
    # a restarted evaluator appends as the line (restore_cut_line). Line first, a kill during
    # the save lost a best policy whose evaluation metrics.jsonl kept.
    if best.offer(result):
        report("best_policy", path=best.policy_dir, **result)
    _log_evaluation(run_dir, summaries, result)


def restore_cut_line(
    run_dir, summaries, best_record: dict | None, last_evaluated: int | None
) -> int | None:
    """Appends the best policy's record as its evaluation when metrics.jsonl has no line for
    it (the evaluator was killed after saving the policy, before writing the line); the last
    evaluated train step after that."""
    if best_record is None:
        return last_evaluated
    if last_evaluated is not None and best_record["train_step"] <= last_evaluated:
        return last_evaluated
    logging.info("metrics.jsonl lacks the best policy's evaluation; appending its record")
    _log_evaluation(run_dir, summaries, best_record)
    return best_record["train_step"]


def main() -> None:
    import tensorflow as tf

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
    server = Reconnecting(
        "evaluator",
        lambda: (
            builder.make_weight_client(
                cli.variables_address(), greedy.tf_variables, accept=learner_step.acceptable
            ),
            builder.connect(cli.FLAGS.replay_server_address, (tables.EXPERIENCE_TABLE,)),
        ),
    )
    os.makedirs(run_dir.eval, exist_ok=True)
    summaries = tf.summary.create_file_writer(run_dir.eval)
    last_evaluated = last_evaluated_step(run_dir.metrics)
    best = BestPolicyKeeper(run_dir.best_greedy_policy, greedy.tf_policy)
    # From evaluator_start on, a stop is read by the loop, so it never kills the evaluator mid-save
    # (a SavedModel written, its record or its metrics.jsonl line not yet). Until here nothing is
    # being saved, and a stop during the start (seconds of TensorFlow and pybullet) ends it at once.
    stop = StopRequest(
        "once a best policy being saved and its metrics.jsonl line are written (an evaluation "
        "being played is dropped)",
        on_request=abandon_calls,
    )
    report("evaluator_start", nice=os.nice(0))
    if best.best is not None:
        logging.info("best policy so far: %s", describe(best.best))
    if last_evaluated is not None:
        report("evaluator_resumed", last_evaluated=last_evaluated)
    last_evaluated = restore_cut_line(run_dir, summaries, best.best, last_evaluated)
    while not stop.requested and (last_evaluated is None or last_evaluated < config.num_iterations):
        try:
            weights, experience = server.parts
            step, pulled_time = weights.pull(), time.time()
            env_steps = tables.items_inserted(experience)
        except Exception as error:
            server.recover(error)
            continue
        if step is None or not is_due(step, last_evaluated, config):
            time.sleep(FLAGS.poll_interval_s)
            continue
        greedy.sync()
        episodes = evaluation.run_episodes(
            env, greedy, config.num_eval_episodes, lambda: stop.requested
        )
        if episodes is None:
            break  # stopped mid-evaluation: nothing of it was written
        result = {
            "train_step": step,
            # Experience items on the server when the weights were pulled, times the action
            # repeat: the environment steps behind this policy (see tables.items_inserted; from 0
            # after a server restart; learning_curve counts on across restarts).
            "env_steps": env_steps * config.action_repeat,
            **episodes,
            "weights_time": pulled_time,  # when the evaluated weights were pulled
            "wall_time": time.time(),  # when the evaluation finished
        }
        # A stop requested from here on is read once the policy and the line are written (see
        # _write): the signal handler only sets a flag.
        _write(run_dir, summaries, result, best)
        last_evaluated = step
    env.close()
    if stop.requested:
        report(
            "evaluator_stopped",
            last_evaluated=last_evaluated,
            seconds_since_signal=round(time.monotonic() - stop.at, 2),
        )
        # Not 0: the run's evaluations are unfinished, so a supervisor should start it again.
        sys.exit(128 + signal.SIGTERM)
    report("evaluator_done", last_evaluated=last_evaluated)


def run() -> None:
    cli.run_role("evaluator", main)


if __name__ == "__main__":
    run()
