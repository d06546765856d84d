"""The evaluator's loop: pull, check whether due, play greedy episodes, keep a better policy,
append the evaluation to metrics.jsonl; a restarted evaluator goes on where its lines end."""

from __future__ import annotations

import dataclasses
import math
import os
import time

import reverb
import tensorflow as tf
from absl import logging

from distributed_sac.acting import evaluation
from distributed_sac.acting.best_policy import BestPolicyKeeper, describe
from distributed_sac.config import RunConfig
from distributed_sac.layout import RunDir
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting
from distributed_sac.replay.weights import WeightClient
from distributed_sac.reports import report
from distributed_sac.runtime.stopping import StopRequest
from distributed_sac.sac.numpy_policy import NumpyActorPolicy


@dataclasses.dataclass(frozen=True)
class ServerParts:
    """The evaluator's clients of the replay server."""

    weights: WeightClient  # pulls the greedy policy's weights
    experience: reverb.Client  # its items inserted: the env steps behind the weights


def last_evaluated_step(metrics_path: str) -> int | None:
    """The train step of the last complete line of metrics.jsonl (a restarted evaluator goes on
    from there); None when there is none."""
    evaluations, _ = evaluation.read_evaluations(metrics_path)
    return evaluations[-1]["train_step"] if evaluations else None


def is_due(step: int, last_evaluated: int | None, config: RunConfig) -> bool:
    """Weights of `step` are evaluated when they cross an eval_interval boundary, or are the
    final step's."""
    if last_evaluated is None:
        return True
    if step >= config.num_iterations > last_evaluated:
        return True
    return step // config.eval_interval > last_evaluated // config.eval_interval


def log_evaluation(run_dir: RunDir, summaries, result: dict) -> None:
    """The evaluation's line in metrics.jsonl, its TensorBoard scalars and its report."""
    if not math.isfinite(result["AverageReturn"]):
        logging.warning("non-finite AverageReturn at train_step %d", result["train_step"])
    evaluation.append_evaluation(run_dir.metrics, result)
    with summaries.as_default(step=result["train_step"]):
        tf.summary.scalar("Metrics/AverageReturn", result["AverageReturn"])
        tf.summary.scalar("Metrics/AverageEpisodeLength", result["AverageEpisodeLength"])
    summaries.flush()
    report("evaluation", **result)


def write(run_dir: RunDir, summaries, result: dict, best: BestPolicyKeeper) -> None:
    """A better policy kept, then the evaluation's line."""
    # The best policy before the line: a kill while the policy is saved (seconds) leaves the
    # previous best and no line, and a kill between the two (an instant) leaves a record that
    # a restarted evaluator appends as the line (restore_cut_line). Line first, a kill during
    # the save lost a best policy whose evaluation metrics.jsonl kept.
    if best.offer(result):
        report("best_policy", path=best.policy_dir, **result)
    log_evaluation(run_dir, summaries, result)


def restore_cut_line(
    run_dir: RunDir, summaries, best_record: dict | None, last_evaluated: int | None
) -> int | None:
    """Appends the best policy's record as its evaluation when metrics.jsonl has no line for
    it (the evaluator was killed after saving the policy, before writing the line); the last
    evaluated train step after that."""
    if best_record is None:
        return last_evaluated
    if last_evaluated is not None and best_record["train_step"] <= last_evaluated:
        return last_evaluated
    logging.info("metrics.jsonl lacks the best policy's evaluation; appending its record")
    log_evaluation(run_dir, summaries, best_record)
    return best_record["train_step"]


class Evaluator:
    """Evaluates `greedy` on `env` with the weights its `server` parts pull, every eval_interval
    train steps, until the final step's evaluation or a stop request."""

    def __init__(
        self,
        *,
        config: RunConfig,
        run_dir: RunDir,
        env,
        greedy: NumpyActorPolicy,
        server: Reconnecting[ServerParts],
    ):
        self._config, self._run_dir = config, run_dir
        self._env, self._greedy, self._server = env, greedy, server
        os.makedirs(run_dir.eval, exist_ok=True)
        self._summaries = tf.summary.create_file_writer(run_dir.eval)
        self.last_evaluated = last_evaluated_step(run_dir.metrics)
        self._best = BestPolicyKeeper(run_dir.best_greedy_policy, greedy.tf_policy)

    def resume(self) -> None:
        """Says where it goes on from, and appends the evaluation a kill cut off."""
        if self._best.best is not None:
            logging.info("best policy so far: %s", describe(self._best.best))
        if self.last_evaluated is not None:
            report("evaluator_resumed", last_evaluated=self.last_evaluated)
        self.last_evaluated = restore_cut_line(
            self._run_dir, self._summaries, self._best.best, self.last_evaluated
        )

    def _finished(self) -> bool:
        return (
            self.last_evaluated is not None and self.last_evaluated >= self._config.num_iterations
        )

    def run(self, stop: StopRequest, poll_interval_s: float) -> None:
        """Evaluates until the final step's evaluation is written or a stop request (an
        evaluation being played is dropped; a policy being saved and its line are finished)."""
        config = self._config
        while not stop.requested and not self._finished():
            try:
                parts = self._server.parts
                step, pulled_time = parts.weights.pull(), time.time()
                env_steps = tables.items_inserted(parts.experience)
            except Exception as error:
                self._server.recover(error)
                continue
            if step is None or not is_due(step, self.last_evaluated, config):
                time.sleep(poll_interval_s)
                continue
            self._greedy.sync()
            episodes = evaluation.run_episodes(
                self._env, self._greedy, config.num_eval_episodes, lambda: stop.requested
            )
            if episodes is None:
                break  # stopped mid-evaluation: nothing of it was written
            result = {
                "train_step": step,
                # Experience items on the server when the weights were pulled, times the action
                # repeat: the environment steps behind this policy (see tables.items_inserted;
                # from 0 after a server restart; learning_curve counts on across restarts).
                "env_steps": env_steps * config.action_repeat,
                **episodes,
                "weights_time": pulled_time,  # when the evaluated weights were pulled
                "wall_time": time.time(),  # when the evaluation finished
            }
            # A stop requested from here on is read once the policy and the line are written
            # (see `write`): the signal handler only sets a flag.
            write(self._run_dir, self._summaries, result, self._best)
            self.last_evaluated = step
