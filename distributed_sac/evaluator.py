"""Evaluator role: runs the greedy policy on fresh weights every eval_interval train steps."""

from __future__ import annotations

import json
import math
import os
import time

from absl import flags, logging

from distributed_sac import cli, evaluation, monitor, replay
from distributed_sac.builder import Builder
from distributed_sac.config import UserError, first_line

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
    evaluations = monitor.read_evaluations(metrics_path)
    return int(evaluations[-1]["train_step"]) if evaluations else None


def _due(step: int, last_evaluated, config) -> bool:
    if last_evaluated is None:
        return True
    if step >= config.num_iterations > last_evaluated:
        return True
    return step // config.eval_interval > last_evaluated // config.eval_interval


def main() -> None:
    import tensorflow as tf

    config = cli.load_config()
    if FLAGS.nice < 0:
        raise UserError(f"--nice must not be negative, got {FLAGS.nice}")
    os.nice(FLAGS.nice)
    cli.set_tf_threads(config.actor_tf_threads)
    root_dir = cli.require_root_dir("evaluator")
    builder = Builder(config)
    env = evaluation.make_eval_env(builder)
    tf_policy = builder.make_policy()
    greedy = builder.py_policy(tf_policy, greedy=True)

    def connect():
        """(weight client, experience server client), fresh; retries up to connect_timeout_s."""
        server = builder.connect(cli.variables_address(), tables=(replay.VARIABLES_TABLE,))
        experience = builder.connect(cli.FLAGS.replay_server_address, (replay.EXPERIENCE_TABLE,))
        return replay.WeightClient(server, tf_policy.variables(), train_step=None), experience

    weights, experience = connect()
    eval_dir = os.path.join(root_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    summaries = tf.summary.create_file_writer(eval_dir)
    metrics_path = os.path.join(eval_dir, "metrics.jsonl")

    last_evaluated = last_evaluated_step(metrics_path)
    cli.report("evaluator_start", nice=os.nice(0))
    if last_evaluated is not None:
        cli.report("evaluator_resumed", last_evaluated=last_evaluated)
    while last_evaluated is None or last_evaluated < config.num_iterations:
        try:
            step = weights.pull()
            pulled_time = time.time()
            env_steps = replay.items_inserted(experience)
        except Exception as error:
            if not replay.is_connection_error(error):
                raise
            logging.warning("lost the replay server (%s); reconnecting", first_line(error))
            started = time.monotonic()
            weights, experience = connect()
            cli.report("evaluator_reconnected", seconds=round(time.monotonic() - started, 2))
            continue
        if step is None or not _due(step, last_evaluated, config):
            time.sleep(FLAGS.poll_interval_s)
            continue
        greedy.sync()
        result = {
            "train_step": step,
            # Experience items on the server when the weights were pulled: the environment steps
            # behind this policy (see replay.items_inserted; from 0 after a server restart).
            "env_steps": env_steps,
            **evaluation.run_episodes(env, greedy, config.num_eval_episodes),
            "weights_time": pulled_time,  # when the evaluated weights were pulled
            "wall_time": time.time(),  # when the evaluation finished
        }
        if not math.isfinite(result["AverageReturn"]):
            logging.warning("non-finite AverageReturn at train_step %d", step)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(result) + "\n")
        with summaries.as_default(step=step):
            tf.summary.scalar("Metrics/AverageReturn", result["AverageReturn"])
            tf.summary.scalar("Metrics/AverageEpisodeLength", result["AverageEpisodeLength"])
        summaries.flush()
        cli.report("evaluation", **result)
        last_evaluated = step
    env.close()
    cli.report("evaluator_done", last_evaluated=last_evaluated)


def run() -> None:
    cli.run_role("evaluator", main)


if __name__ == "__main__":
    run()
