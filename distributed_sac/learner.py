"""Learner role: SAC over the Reverb dataset; pushes weights, checkpoints, saves policies."""

from __future__ import annotations

import os
import time

from absl import flags, logging

import gin
from distributed_sac import cli, replay
from distributed_sac.builder import Builder
from distributed_sac.config import UserError

flags.DEFINE_enum("strategy", "cpu", ["cpu", "mirrored", "tpu"], "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU address, with --strategy tpu.")
FLAGS = flags.FLAGS


def make_strategy(name: str, tpu_address):
    import tensorflow as tf

    if name == "cpu":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if not tpu_address:
        raise UserError("--strategy tpu needs --tpu ADDRESS")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _crossed(previous: int, current: int, interval: int) -> bool:
    return interval > 0 and current // interval > previous // interval


def main() -> None:
    from tf_agents.train import learner as tfa_learner
    from tf_agents.train.utils import train_utils

    from distributed_sac.policy_export import PolicyExporter

    config = cli.load_config()
    cli.set_tf_threads(config.learner_tf_threads)
    root_dir = cli.require_root_dir("learner")
    builder = Builder(config)
    address = cli.FLAGS.replay_server_address
    builder.connect(address, tables=(replay.EXPERIENCE_TABLE,))
    weights_server = builder.connect(cli.variables_address(), tables=(replay.VARIABLES_TABLE,))

    strategy = make_strategy(FLAGS.strategy, FLAGS.tpu)
    with strategy.scope():
        train_step = train_utils.create_train_step()
        agent = builder.make_agent(train_step)
    with open(os.path.join(root_dir, "operative_config.gin"), "w") as f:
        f.write(gin.operative_config_str())

    learner = tfa_learner.Learner(
        root_dir,
        train_step,
        agent,
        experience_dataset_fn=lambda: builder.make_dataset(address, agent.collect_data_spec),
        checkpoint_interval=config.checkpoint_interval,
        summary_interval=config.summary_interval,
        strategy=strategy,
    )
    exporter = PolicyExporter(
        os.path.join(root_dir, tfa_learner.POLICY_SAVED_MODEL_DIR), agent.collect_policy, train_step
    )
    weights = replay.WeightClient(weights_server, agent.collect_policy.variables(), train_step)
    weights.push()
    step = int(train_step.numpy())
    logging.info("learner starts at train_step %d of %d", step, config.num_iterations)

    window_start, window_step = time.monotonic(), step
    while step < config.num_iterations:
        loss_info = learner.run(
            iterations=min(config.weight_push_interval, config.num_iterations - step)
        )
        previous, step = step, int(train_step.numpy())
        weights.push()
        if _crossed(previous, step, config.log_interval):
            now = time.monotonic()
            rate = (step - window_step) / max(now - window_start, 1e-9)
            cli.report(
                "learner_progress",
                train_step=step,
                loss=float(loss_info.loss),
                steps_per_s=round(rate, 2),
            )
            window_start, window_step = now, step
        if _crossed(previous, step, config.policy_save_interval):
            exporter.export()

    for trigger in learner.triggers:  # final checkpoint
        trigger(step, force_trigger=True)
    exporter.export()
    cli.report("learner_done", train_step=step)


def run() -> None:
    cli.run_role("learner", main)


if __name__ == "__main__":
    run()
