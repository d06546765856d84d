"""The learner's training loop: TF-Agents' Learner run in chunks of train steps, its "every N
train steps" work (progress reports, checkpoints, policy exports), and its three endings:
finished, stopped, or giving up on a lost server."""

from __future__ import annotations

import math
import os
import re
import signal
import time

import numpy as np
import tensorflow as tf
from absl import logging

from distributed_sac.config import RunConfig
from distributed_sac.errors import CallAbandoned, ServerUnreachable, UserError
from distributed_sac.layout import RunDir
from distributed_sac.learner.checkpoints import LearnerCheckpoints
from distributed_sac.learner.parts import LearnerParts, ServerParts
from distributed_sac.learner.policy_export import PolicyExporter
from distributed_sac.learner.replay import ExperienceIntake, LearnerReplay
from distributed_sac.learner.step_record import write_reached
from distributed_sac.learner.triggers import IntervalTrigger
from distributed_sac.replay.connection import Reconnecting
from distributed_sac.reports import report, seconds_since, timed
from distributed_sac.runtime.faults import FaultInjection
from distributed_sac.runtime.rates import ProgressReport
from distributed_sac.runtime.stopping import StopRequest


class ProgressLog:
    """Trigger action: a learner_progress report and Throughput/TrainStepsPerSecond."""

    def __init__(self, summary_writer, train_step: int, replay: LearnerReplay):
        self._summary_writer, self._replay = summary_writer, replay
        self._report = ProgressReport("learner_progress", "steps_per_s", 2, count=train_step)

    def __call__(self, train_step: int, loss: float) -> None:
        figures = self._replay.figures()
        rate = self._report(train_step, train_step=train_step, loss=loss, **figures)
        with self._summary_writer.as_default(step=train_step):
            tf.summary.scalar("Throughput/TrainStepsPerSecond", rate)


def make_triggers(
    *,
    config: RunConfig,
    parts: LearnerParts,
    checkpoints: LearnerCheckpoints,
    exporter: PolicyExporter,
    train_step: int,
) -> list[IntervalTrigger]:
    """Logging, checkpointing and policy export, each every its own number of train steps; the
    reports say what each write took (a stop waits for the ones due at the end of its chunk)."""
    replay = parts.replay
    progress = ProgressLog(parts.learner.train_summary_writer, train_step, replay)

    def checkpoint(at: int, _loss) -> None:
        path, seconds = timed(checkpoints.save, at)
        report("learner_checkpoint", train_step=at, path=path, seconds=seconds, **replay.figures())

    def export(at: int, _loss) -> None:
        _, seconds = timed(exporter.export)
        report("policy_export", train_step=at, seconds=seconds)

    return [
        IntervalTrigger(config.log_interval, progress),
        IntervalTrigger(config.checkpoint_interval, checkpoint),
        IntervalTrigger(config.policy_save_interval, export),
    ]


class Training:
    """Runs the Learner in chunks of weight_push_interval train steps, each once the intake has
    drained the experience it needs. After each chunk it checks loss and weights for NaN/inf,
    and only then records the step reached (learner_step), pushes weights and calls the
    triggers, so nothing from a diverged step leaves the process. The final step's weights are
    pushed by `finish`, after the final checkpoint: a learner killed between the two would
    resume from an earlier checkpoint while collectors that saw the final step had stopped."""

    def __init__(
        self,
        *,
        parts: LearnerParts,
        checkpoints: LearnerCheckpoints,
        exporter: PolicyExporter,
        server: Reconnecting[ServerParts],
        config: RunConfig,
        run_dir: RunDir,
    ):
        self._parts, self._agent, self._replay = parts, parts.agent, parts.replay
        self._checkpoints, self._exporter = checkpoints, exporter
        self._server, self._config, self._run_dir = server, config, run_dir
        self._intake = ExperienceIntake(parts.replay, server, config)
        self._faults = FaultInjection()
        self._triggers: list[IntervalTrigger] = []
        self._restored: str | None = None
        self.step = int(parts.train_step.numpy())  # the train step reached

    def _push(self) -> None:
        self._server.call(lambda parts: parts.weights.push())

    def start(self, restored: str | None, **fields) -> None:
        """Pushes the weights it starts from (the `restored` checkpoint's: collectors continue
        from them) and reports learner_start with `fields`."""
        self._restored = restored
        write_reached(self._run_dir, self.step)  # before the push: consumers take no step above
        self._push()
        report(
            "learner_start",
            train_step=self.step,
            restored_from=restored,
            **self._replay.figures(),
            **fields,
            action_repeat=self._config.action_repeat,  # env steps per pair (learning_curve)
        )
        self._triggers = make_triggers(
            config=self._config,
            parts=self._parts,
            checkpoints=self._checkpoints,
            exporter=self._exporter,
            train_step=self.step,
        )

    def _diverged(self, what: str) -> UserError:
        return UserError(
            f"training diverged at train_step {int(self._agent.train_step_counter.numpy())}: "
            f"{what}; no weights from it were pushed or saved (last good checkpoint: "
            f"{self._checkpoints.latest})"
        )

    def _run_chunk(self, iterations: int) -> float:
        try:
            loss = float(self._parts.learner.run(iterations=iterations).loss)
        except tf.errors.InvalidArgumentError as error:
            # SAC's own CheckNumerics on its losses, e.g. "Critic loss is inf or nan."
            which = re.search(r"(\w+) loss is inf or nan", str(error))
            if which is None:
                raise
            raise self._diverged(f"loss is NaN or inf ({which.group(1).lower()} loss)") from None
        if not math.isfinite(loss):
            raise self._diverged(f"loss is {loss}")
        if not all(
            bool(tf.reduce_all(tf.math.is_finite(v)))
            for v in self._agent.variables
            if v.dtype.is_floating
        ):
            raise self._diverged("weights are NaN or inf")
        return loss

    def _train(self, stop: StopRequest) -> None:
        final_step, chunk = self._config.num_iterations, self._config.weight_push_interval
        while self.step < final_step and not stop.requested:
            iterations = min(chunk, final_step - self.step)
            try:
                if not self._intake.wait_for(self.step + iterations, lambda: stop.requested):
                    break
            except CallAbandoned:  # stopping while the server is away
                break
            loss = self._run_chunk(iterations)
            previous, self.step = self.step, int(self._agent.train_step_counter.numpy())
            write_reached(self._run_dir, self.step)
            if self.step < final_step:  # the final weights: `finish` pushes them
                try:
                    self._push()
                except CallAbandoned:  # the triggers below run again after the restart
                    break
            for trigger in self._triggers:
                trigger(previous, self.step, loss)
            nan_step = self._faults.nan_weights_at_step
            if nan_step is not None and previous < nan_step <= self.step:
                _inject_nan_weights(self._agent.collect_policy.variables())

    def run(self, stop: StopRequest) -> None:
        """Trains until the final step or a stop request. A server that stays unreachable
        (ServerUnreachable, exit code 3: restartable) is given up on after a checkpoint, which
        the restart resumes from."""
        started = (self.step, int(self._replay.added.numpy()))
        try:
            self._train(stop)
        except ServerUnreachable:
            self._parts.learner.train_summary_writer.flush()
            self._checkpoint_before_giving_up(started)
            raise
        if stop.requested and self._faults.stop_delay_s:
            logging.warning(
                "FaultInjection: waiting %.0fs before the final checkpoint",
                self._faults.stop_delay_s,
            )
            time.sleep(self._faults.stop_delay_s)
        self._parts.learner.train_summary_writer.flush()

    def _checkpoint_before_giving_up(self, since: tuple[int, int]) -> None:
        """Saves the train step and replay, unless nothing changed `since` (train step, pairs
        drained) the start: the pairs drained are gone from the feed, and the restart would
        otherwise train the steps since the last checkpoint again."""
        train_step = int(self._parts.train_step.numpy())
        if (train_step, int(self._replay.added.numpy())) == since:
            path = self._checkpoints.latest
        else:
            path = self._checkpoints.save(train_step)
        report("learner_gave_up", train_step=train_step, path=path, **self._replay.figures())

    def save_stopped(self, stop: StopRequest) -> None:
        """The checkpoint of a stopped run, and its learner_stopped report."""
        path, seconds = timed(self._checkpoints.save, self.step)
        # From the signal to the checkpoint written: what a supervisor's grace period must cover.
        report(
            "learner_stopped",
            train_step=self.step,
            path=path,
            checkpoint_seconds=seconds,
            seconds_since_signal=seconds_since(stop.at),
        )

    def finish(self) -> None:
        """The final checkpoint, weights and policy export, and the learner_done report."""
        step = self.step
        if self._faults.kill_before_final_checkpoint and self._restored is None:
            logging.warning("FaultInjection: killing the learner before its final checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        # A run that ends on a multiple of the intervals was just checkpointed and exported by
        # the triggers, with these very weights: saving them again would cost a second write.
        checkpoints = self._checkpoints
        path = checkpoints.latest if checkpoints.latest_is_at(step) else checkpoints.save(step)
        # The final weights only now: whoever sees them finds training finished for good.
        self._push()
        if self._exporter.exported_at != step:
            self._exporter.export()
        report("learner_done", train_step=step, path=path, **self._replay.figures())


def _inject_nan_weights(policy_variables) -> None:
    logging.warning("FaultInjection: setting the actor's weights to NaN")
    for variable in policy_variables:
        variable.assign(np.full(variable.shape, np.nan, variable.dtype.as_numpy_dtype))
