"""Collector role: steps its own environment with the collect policy and writes (t, t+1) pairs."""

from __future__ import annotations

import hashlib
import os
import socket
import time

from absl import flags, logging

from distributed_sac import cli, replay
from distributed_sac.builder import Builder
from distributed_sac.config import UserError, first_line

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
    try:
        task = int(flag)
    except ValueError:
        raise UserError(f"--task must be a non-negative integer or 'auto', got {flag!r}") from None
    if task < 0:
        raise UserError(f"--task must be a non-negative integer or 'auto', got {flag!r}")
    return task


def main() -> None:
    import tensorflow as tf
    from tf_agents.policies import random_py_policy
    from tf_agents.trajectories import trajectory

    task = task_id(FLAGS.task)
    config = cli.load_config()
    cli.set_tf_threads(config.actor_tf_threads)
    builder = Builder(config)
    seed = config.seed + task  # every collector explores differently, reproducibly
    tf.random.set_seed(seed)
    env = builder.make_env(seed=seed)
    tf_policy = builder.make_policy()
    collect_policy = builder.py_policy(tf_policy, seed=seed)
    random_policy = random_py_policy.RandomPyPolicy(
        env.time_step_spec(), env.action_spec(), seed=seed
    )

    def connect():
        """(experience client, weight client, writer), fresh; retries up to connect_timeout_s."""
        client = builder.connect(cli.FLAGS.replay_server_address, (replay.EXPERIENCE_TABLE,))
        weights_server = builder.connect(cli.variables_address(), (replay.VARIABLES_TABLE,))
        weights = replay.WeightClient(weights_server, tf_policy.variables(), train_step=None)
        return client, weights, replay.ExperienceWriter(client, tf_policy.trajectory_spec)

    client, weights, writer = connect()
    items_created = 0  # by writers replaced after a reconnect
    summaries = None
    if cli.FLAGS.root_dir:
        summaries = tf.summary.create_file_writer(
            os.path.join(cli.FLAGS.root_dir, "collect", str(task))
        )

    initial_collect_done = False
    policy_step = None
    policy_versions = set()
    # Policy lag: train steps between the newest pushed weights and the ones acted with,
    # read at each pull just before switching.
    lags = []
    env_steps = episodes = 0
    random_steps = 0  # taken with random actions (the initial collection)
    episode_return, episode_length = 0.0, 0
    window_start, window_steps = time.monotonic(), 0

    def refresh_policy() -> bool:
        """Pulls the newest weights; True once the learner has reached its final step."""
        nonlocal policy_step
        pulled = weights.pull()
        if pulled is not None:
            if policy_step is not None:
                lags.append(pulled - policy_step)
            if pulled != policy_step:
                collect_policy.sync()
            policy_step = pulled
            policy_versions.add(pulled)
        return policy_step is not None and policy_step >= config.num_iterations

    training_done = False
    time_step = env.reset()
    while not training_done:
        try:
            while not training_done:
                if env_steps % config.weight_pull_interval == 0:
                    if not initial_collect_done:
                        # The random-action budget is global: read how full the table already is.
                        initial_collect_done = (
                            replay.table_size(client) >= config.initial_collect_steps
                        )
                    if refresh_policy():
                        training_done = True
                        break

                use_learned = initial_collect_done and policy_step is not None
                random_steps += not use_learned
                action_step = (collect_policy if use_learned else random_policy).action(time_step)
                next_time_step = env.step(action_step.action)
                writer.write(trajectory.from_transition(time_step, action_step, next_time_step))
                # Held back by the rate limiter: the learner is behind, or it has finished.
                while not writer.wait_for_room(timeout_s=1.0):
                    if refresh_policy():
                        training_done = True
                        break
                env_steps += 1
                if not time_step.is_last():
                    episode_return += float(next_time_step.reward)
                    episode_length += 1
                if next_time_step.is_last():
                    episodes += 1
                    logging.info(
                        "episode %d: return %.3f, length %d, policy step %s",
                        episodes,
                        episode_return,
                        episode_length,
                        policy_step,
                    )
                    if summaries is not None:
                        with summaries.as_default(step=env_steps):
                            tf.summary.scalar("Metrics/EpisodeReturn", episode_return)
                            tf.summary.scalar("Metrics/EpisodeLength", episode_length)
                    episode_return, episode_length = 0.0, 0
                time_step = next_time_step

                if env_steps % config.log_interval == 0:
                    now = time.monotonic()
                    rate = (env_steps - window_steps) / max(now - window_start, 1e-9)
                    window_start, window_steps = now, env_steps
                    lag = round(sum(lags) / len(lags), 1) if lags else None
                    cli.report(
                        "collector_progress",
                        task=task,
                        env_steps=env_steps,
                        random_steps=random_steps,
                        env_steps_per_s=round(rate, 1),
                        policy_step=policy_step,
                        policy_lag=lag,
                    )
                    lags.clear()
                    if summaries is not None:
                        with summaries.as_default(step=env_steps):
                            tf.summary.scalar("Throughput/EnvStepsPerSecond", rate)
                            if lag is not None:
                                tf.summary.scalar("Throughput/PolicyLagTrainSteps", lag)
        except Exception as error:
            if not replay.is_connection_error(error):
                raise
            logging.warning("lost the replay server (%s); reconnecting", first_line(error))
            started = time.monotonic()
            items_created += writer.items_created
            client, weights, writer = connect()
            # The episode's pairs written before the loss may be gone: start a fresh episode.
            time_step = env.reset()
            episode_return, episode_length = 0.0, 0
            cli.report(
                "collector_reconnected",
                task=task,
                seconds=round(time.monotonic() - started, 2),
            )
    all_items_sent = writer.close()
    env.close()
    if summaries is not None:
        summaries.flush()
    cli.report(
        "collector_done",
        task=task,
        env_steps=env_steps,
        random_steps=random_steps,
        episodes=episodes,
        items_created=items_created + writer.items_created,
        all_items_sent=all_items_sent,
        policy_versions=len(policy_versions),
        last_policy_step=policy_step,
    )


def run() -> None:
    cli.run_role("collector", main)


if __name__ == "__main__":
    run()
