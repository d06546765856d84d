"""Learner role: SAC on its own replay, fed from the server's feed table; pushes weights,
checkpoints, saves policies."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time
from typing import NamedTuple

from absl import flags, logging

import gin
from distributed_sac.builder import Builder
from distributed_sac.errors import CallAbandoned, ServerUnreachable, UserError
from distributed_sac.learner.step_record import write_reached
from distributed_sac.learner.strategy import STRATEGIES, make_strategy
from distributed_sac.learner.triggers import IntervalTrigger
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting, abandon_calls
from distributed_sac.reports import report
from distributed_sac.runtime import cli
from distributed_sac.runtime.faults import FaultInjection
from distributed_sac.runtime.rates import WindowedRate
from distributed_sac.runtime.stopping import StopRequest
from distributed_sac.sac import agent as agent_lib

flags.DEFINE_enum("strategy", "cpu", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU address, with --strategy tpu.")
flags.DEFINE_integer(
    "mirrored_cpu_devices", 2, "Logical CPU devices for --strategy mirrored on a host without GPUs."
)
FLAGS = flags.FLAGS


def policy_summaries(agent, train_step, summary_interval: int):
    """An after-train-step hook writing SAC's alpha and the policy's entropy (on the batch just
    trained on) every `summary_interval` steps; TF-Agents writes only the three losses."""
    import tensorflow as tf
    from tf_agents.trajectories import time_step as ts

    def write(experience):
        first = tf.nest.map_structure(lambda t: t[:, 0], experience)
        time_steps = ts.TimeStep(first.step_type, first.reward, first.discount, first.observation)
        # SacAgent has no public accessors for these; TF-Agents is pinned (0.19).
        _, log_pi = agent._actions_and_log_probs(time_steps, training=False)
        with tf.compat.v1.name_scope(None):  # tags without the loop's "while/cond/" scope
            tf.summary.scalar("Policy/alpha", tf.exp(agent._log_alpha), step=train_step)
            tf.summary.scalar("Policy/entropy", -tf.reduce_mean(log_pi), step=train_step)
        return tf.constant(True)

    def after_step(experience_and_info, _loss_info):
        if summary_interval <= 0:
            return
        experience, _ = experience_and_info
        tf.cond(
            tf.equal(train_step % summary_interval, 0),
            lambda: write(experience),
            lambda: tf.constant(False),
        )

    return after_step


class ServerParts(NamedTuple):
    weights: object  # WeightClient on the variables table
    feed: object  # FeedReader on the feed table


class ProgressLog:
    """Trigger action: a learner_progress report and Throughput/TrainStepsPerSecond."""

    def __init__(self, summary_writer, train_step: int, replay):
        self._summary_writer, self._replay = summary_writer, replay
        self._rate = WindowedRate()  # since the previous report
        self._rate.mark(train_step)

    def __call__(self, train_step: int, loss: float) -> None:
        import tensorflow as tf

        rate = self._rate.mark(train_step)
        report(
            "learner_progress",
            train_step=train_step,
            loss=loss,
            steps_per_s=round(rate, 2),
            **self._replay.figures(),
        )
        with self._summary_writer.as_default(step=train_step):
            tf.summary.scalar("Throughput/TrainStepsPerSecond", rate)


class Training:
    """Runs the Learner in chunks of weight_push_interval train steps, each once the intake has
    drained the experience it needs. After each chunk it checks loss and weights for NaN/inf,
    and only then records the step reached (learner_step), pushes weights and calls the
    triggers, so nothing from a diverged step leaves the process. The final step's weights are
    pushed by main, after the final checkpoint: a learner killed between the two would resume
    from an earlier checkpoint while collectors that saw the final step had stopped."""

    def __init__(self, learner, agent, checkpoints, server, intake, triggers, faults, run_dir):
        self._learner, self._agent, self._checkpoints = learner, agent, checkpoints
        self._run_dir = run_dir
        self._server, self._intake = server, intake
        self._triggers, self._faults = triggers, faults

    def _diverged(self, what: str) -> UserError:
        return UserError(
            f"training diverged at train_step {int(self._agent.train_step_counter.numpy())}: "
            f"{what}; no weights from it were pushed or saved (last good checkpoint: "
            f"{self._checkpoints.latest})"
        )

    def _run_chunk(self, iterations: int) -> float:
        import tensorflow as tf

        try:
            loss = float(self._learner.run(iterations=iterations).loss)
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

    def run(self, step: int, final_step: int, chunk: int, stop: StopRequest) -> int:
        """Trains from `step` until `final_step` or a stop request; the step reached."""
        while step < final_step and not stop.requested:
            iterations = min(chunk, final_step - step)
            try:
                if not self._intake.wait_for(step + iterations, lambda: stop.requested):
                    break
            except CallAbandoned:  # stopping while the server is away
                break
            loss = self._run_chunk(iterations)
            previous, step = step, int(self._agent.train_step_counter.numpy())
            write_reached(self._run_dir, step)
            if step < final_step:  # the final weights: main pushes them after its checkpoint
                try:
                    self._server.call(lambda parts: parts.weights.push())
                except CallAbandoned:  # the triggers below run again after the restart
                    break
            for trigger in self._triggers:
                trigger(previous, step, loss)
            nan_step = self._faults.nan_weights_at_step
            if nan_step is not None and previous < nan_step <= step:
                _inject_nan_weights(self._agent.collect_policy.variables())
        return step


def _inject_nan_weights(policy_variables) -> None:
    import numpy as np

    logging.warning("FaultInjection: setting the actor's weights to NaN")
    for variable in policy_variables:
        variable.assign(np.full(variable.shape, np.nan, variable.dtype.as_numpy_dtype))


def _replica_batch_size(batch_size: int, replicas: int) -> int:
    if batch_size % replicas:
        raise UserError(
            f"RunConfig.batch_size ({batch_size}) must be divisible by the strategy's "
            f"{replicas} replicas"
        )
    return batch_size // replicas


def make_learner(builder: Builder, run_dir, strategy, replay):
    """(agent, train_step, TF-Agents Learner) in the strategy's scope, its dataset sampling the
    learner's `replay`, each replica its share of the batch."""
    from tf_agents.train import learner as tfa_learner
    from tf_agents.train.utils import train_utils

    config = builder.config
    replicas = strategy.num_replicas_in_sync
    replica_batch_size = _replica_batch_size(config.batch_size, replicas)
    with strategy.scope():
        train_step = train_utils.create_train_step()
        agent = builder.make_agent(train_step)
    learner = tfa_learner.Learner(
        run_dir.root,  # TF-Agents writes its summaries to <root_dir>/train (layout.TRAIN)
        train_step,
        agent,
        experience_dataset_fn=lambda: builder.make_dataset(
            replay, replica_batch_size, agent_lib.discount_factor(agent)
        ),
        after_train_strategy_step_fn=policy_summaries(agent, train_step, config.summary_interval),
        # Checkpoints are ours (LearnerCheckpoints): strict restores, and saves only of finite
        # weights. The Learner has built every variable, optimizer slots included, by now.
        checkpoint_interval=0,
        summary_interval=config.summary_interval,
        strategy=strategy,
    )
    return agent, train_step, learner


def timed(function, *args):
    """(function(*args), seconds it took)."""
    started = time.monotonic()
    result = function(*args)
    return result, round(time.monotonic() - started, 2)


def make_triggers(config, learner, checkpoints, exporter, train_step: int, replay) -> list:
    """Logging, checkpointing and policy export, each every its own number of train steps; the
    reports say what each write took (a stop waits for the ones due at the end of its chunk)."""
    progress = ProgressLog(learner.train_summary_writer, train_step, replay)

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


def checkpoint_before_giving_up(checkpoints, train_step: int, replay, since) -> None:
    """Saves the learner's train step and replay before it gives up on a lost server, unless
    nothing changed `since` (train step, pairs drained) its start: the pairs it drained are gone
    from the feed, and its restart would otherwise train the steps since its last checkpoint
    again."""
    drained = int(replay.added.numpy())
    if (train_step, drained) == since:
        path = checkpoints.latest
    else:
        path = checkpoints.save(train_step)
    report("learner_gave_up", train_step=train_step, path=path, **replay.figures())


def main() -> None:
    import tensorflow as tf

    from distributed_sac.learner.checkpoints import LearnerCheckpoints
    from distributed_sac.learner.policy_export import PolicyExporter
    from distributed_sac.learner.replay import ExperienceIntake

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
    address = FLAGS.replay_server_address
    builder.connect(address, (tables.FEED_TABLE,))  # a wrong server fails before any TF work

    def connect() -> ServerParts:
        weights = builder.make_weight_client(
            cli.variables_address(), agent.collect_policy.variables(), train_step
        )
        return ServerParts(weights, builder.make_feed_reader(address))

    # Made outside the strategy's scope: one copy on the host, not one per replica.
    replay = builder.make_learner_replay()
    agent, train_step, learner = make_learner(builder, run_dir, strategy, replay)
    with open(run_dir.operative_config, "w") as f:
        f.write(gin.operative_config_str())
    checkpoints = LearnerCheckpoints(run_dir.checkpoints, agent, train_step, replay)
    restored = checkpoints.restore_latest()
    exporter = PolicyExporter(run_dir.policies, agent.collect_policy, train_step)
    server = Reconnecting("learner", connect)
    step = int(train_step.numpy())
    write_reached(run_dir, step)  # before the push: consumers take no step above the record
    server.call(lambda parts: parts.weights.push())  # collectors continue from the restored policy
    report(
        "learner_start",
        train_step=step,
        restored_from=restored,
        **replay.figures(),
        strategy=FLAGS.strategy,
        replicas=strategy.num_replicas_in_sync,
        action_repeat=config.action_repeat,  # environment steps per pair (learning_curve)
    )
    triggers = make_triggers(config, learner, checkpoints, exporter, step, replay)
    intake = ExperienceIntake(replay, server, config)
    faults = FaultInjection()
    training = Training(learner, agent, checkpoints, server, intake, triggers, faults, run_dir)
    started = (step, int(replay.added.numpy()))
    try:
        step = training.run(step, config.num_iterations, config.weight_push_interval, stop)
    except ServerUnreachable:  # exits 3 (restartable): the restart resumes from this checkpoint
        learner.train_summary_writer.flush()
        checkpoint_before_giving_up(checkpoints, int(train_step.numpy()), replay, started)
        raise
    if stop.requested and faults.stop_delay_s:
        logging.warning(
            "FaultInjection: waiting %.0fs before the final checkpoint", faults.stop_delay_s
        )
        time.sleep(faults.stop_delay_s)
    learner.train_summary_writer.flush()
    if stop.requested:
        path, seconds = timed(checkpoints.save, step)
        # From the signal to the checkpoint written: what a supervisor's grace period must cover.
        report(
            "learner_stopped",
            train_step=step,
            path=path,
            checkpoint_seconds=seconds,
            seconds_since_signal=round(time.monotonic() - stop.at, 2),
        )
        # Not 0: training is unfinished, so a supervisor should start the learner again.
        sys.exit(128 + signal.SIGTERM)
    if faults.kill_before_final_checkpoint and restored is None:
        logging.warning("FaultInjection: killing the learner before its final checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    # A run that ends on a multiple of the intervals was just checkpointed and exported by the
    # triggers, with these very weights: saving them again would cost a second write of each.
    path = checkpoints.latest if checkpoints.latest_is_at(step) else checkpoints.save(step)
    # The final weights only now: whoever sees them finds training finished for good.
    server.call(lambda parts: parts.weights.push())
    if exporter.exported_at != step:
        exporter.export()
    report(
        "learner_done",
        train_step=step,
        path=path,
        **replay.figures(),
    )


def run() -> None:
    cli.run_role("learner", main)


if __name__ == "__main__":
    run()
