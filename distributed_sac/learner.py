"""Learner role: SAC over the Reverb dataset; pushes weights, checkpoints, saves policies."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time

from absl import flags, logging

import gin
from distributed_sac import cli, replay
from distributed_sac.builder import Builder
from distributed_sac.config import FaultInjection, UserError, first_line
from distributed_sac.strategy import STRATEGIES, make_strategy

flags.DEFINE_enum("strategy", "cpu", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU address, with --strategy tpu.")
flags.DEFINE_integer(
    "mirrored_cpu_devices", 2, "Logical CPU devices for --strategy mirrored on a host without GPUs."
)
FLAGS = flags.FLAGS


def _crossed(previous: int, current: int, interval: int) -> bool:
    return interval > 0 and current // interval > previous // interval


class _Stop:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits after the current chunk."""

    def __init__(self):
        self.requested = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request)

    def _request(self, signum, _frame):
        name = signal.Signals(signum).name
        logging.info("got %s; stopping after this chunk of train steps", name)
        self.requested = True


def _all_finite(variables) -> bool:
    import tensorflow as tf

    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables if v.dtype.is_floating)


def _inject_nan_weights(policy_variables) -> None:
    import numpy as np

    logging.warning("FaultInjection: setting the actor's weights to NaN")
    for variable in policy_variables:
        variable.assign(np.full(variable.shape, np.nan, variable.dtype.as_numpy_dtype))


def _policy_summaries(agent, train_step, summary_interval: int):
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


class _WeightPusher:
    """Pushes weights, reconnecting when the replay server went away and came back."""

    def __init__(self, builder: Builder, policy_variables, train_step):
        self._builder = builder
        self._policy_variables = policy_variables
        self._train_step = train_step
        self._client = self._connect()

    def _connect(self) -> replay.WeightClient:
        server = self._builder.connect(cli.variables_address(), tables=(replay.VARIABLES_TABLE,))
        return replay.WeightClient(server, self._policy_variables, self._train_step)

    def push(self) -> None:
        try:
            self._client.push()
        except Exception as error:
            if not replay.is_connection_error(error):
                raise
            logging.warning("weight push failed (%s); reconnecting", first_line(error))
            started = time.monotonic()
            self._client = self._connect()
            self._client.push()
            cli.report("learner_reconnected", seconds=round(time.monotonic() - started, 2))


def main() -> None:
    import tensorflow as tf
    from tf_agents.train import learner as tfa_learner
    from tf_agents.train.utils import train_utils

    from distributed_sac.checkpoints import LearnerCheckpoints
    from distributed_sac.policy_export import PolicyExporter

    config = cli.load_config()
    faults = FaultInjection()
    cli.set_tf_threads(config.learner_tf_threads)
    # The network initialisation and SAC's sampling in training. Keras draws unseeded
    # initializers' seeds from Python's `random`, so seed that too (set_random_seed does).
    # Reverb's uniform sampler cannot be seeded: two runs with one seed are close, not equal.
    tf.keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.mirrored_cpu_devices)
    root_dir = cli.require_root_dir("learner")
    stop = _Stop()
    builder = Builder(config)
    address = cli.FLAGS.replay_server_address
    builder.connect(address, tables=(replay.EXPERIENCE_TABLE,))

    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(
            f"RunConfig.batch_size ({config.batch_size}) must be divisible by the strategy's "
            f"{replicas} replicas"
        )
    replica_batch_size = config.batch_size // replicas
    with strategy.scope():
        train_step = train_utils.create_train_step()
        agent = builder.make_agent(train_step)
    with open(os.path.join(root_dir, "operative_config.gin"), "w") as f:
        f.write(gin.operative_config_str())

    learner = tfa_learner.Learner(
        root_dir,
        train_step,
        agent,
        experience_dataset_fn=lambda: builder.make_dataset(
            address, agent.collect_data_spec, replica_batch_size
        ),
        after_train_strategy_step_fn=_policy_summaries(agent, train_step, config.summary_interval),
        # Checkpoints are ours (LearnerCheckpoints): strict restores, and saves only of finite
        # weights. The Learner has built every variable, optimizer slots included, by now.
        checkpoint_interval=0,
        summary_interval=config.summary_interval,
        strategy=strategy,
    )
    checkpoints = LearnerCheckpoints(root_dir, agent, train_step)
    restored = checkpoints.restore_latest()
    exporter = PolicyExporter(
        os.path.join(root_dir, tfa_learner.POLICY_SAVED_MODEL_DIR), agent.collect_policy, train_step
    )
    policy_variables = agent.collect_policy.variables()
    weights = _WeightPusher(builder, policy_variables, train_step)
    weights.push()  # collectors continue from the restored policy
    step = int(train_step.numpy())
    cli.report(
        "learner_start",
        train_step=step,
        restored_from=restored,
        strategy=FLAGS.strategy,
        replicas=replicas,
    )

    def diverged(what: str) -> UserError:
        return UserError(
            f"training diverged at train_step {int(train_step.numpy())}: {what}; "
            f"no weights from it were pushed or saved (last good checkpoint: {checkpoints.latest})"
        )

    window_start, window_step = time.monotonic(), step
    while step < config.num_iterations and not stop.requested:
        try:
            loss_info = learner.run(
                iterations=min(config.weight_push_interval, config.num_iterations - step)
            )
        except tf.errors.InvalidArgumentError as error:
            # SAC's own CheckNumerics on its losses, e.g. "Critic loss is inf or nan."
            which = re.search(r"(\w+) loss is inf or nan", str(error))
            if which is None:
                raise
            raise diverged(f"loss is NaN or inf ({which.group(1).lower()} loss)") from None
        previous, step = step, int(train_step.numpy())
        loss = float(loss_info.loss)
        if not math.isfinite(loss):
            raise diverged(f"loss is {loss}")
        if not _all_finite(agent.variables):
            raise diverged("weights are NaN or inf")
        weights.push()
        if _crossed(previous, step, config.log_interval):
            now = time.monotonic()
            rate = (step - window_step) / max(now - window_start, 1e-9)
            cli.report("learner_progress", train_step=step, loss=loss, steps_per_s=round(rate, 2))
            with learner.train_summary_writer.as_default(step=step):
                tf.summary.scalar("Throughput/TrainStepsPerSecond", rate)
            window_start, window_step = now, step
        if _crossed(previous, step, config.checkpoint_interval):
            cli.report("learner_checkpoint", train_step=step, path=checkpoints.save(step))
        if _crossed(previous, step, config.policy_save_interval):
            exporter.export()
        if faults.nan_weights_at_step is not None and previous < faults.nan_weights_at_step <= step:
            _inject_nan_weights(policy_variables)

    path = checkpoints.save(step)
    learner.train_summary_writer.flush()
    if stop.requested:
        cli.report("learner_stopped", train_step=step, path=path)
        # Not 0: training is unfinished, so a supervisor should start the learner again.
        sys.exit(128 + signal.SIGTERM)
    exporter.export()
    cli.report("learner_done", train_step=step, path=path)


def run() -> None:
    cli.run_role("learner", main)


if __name__ == "__main__":
    run()
