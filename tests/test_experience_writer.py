"""The collector's writer: (t, t+1) pairs within episodes, and it never blocks past its timeout."""

import threading

import reverb
from tf_agents.policies import random_py_policy
from tf_agents.trajectories import trajectory

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.replay import tables
from distributed_sac.replay.writer import ExperienceWriter
from tests.conftest import PENDULUM_GIN


def _write_episodes(builder, writer, num_steps):
    env = builder.make_env(seed=0)
    policy = random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), seed=0)
    time_step = env.reset()
    boundaries = 0
    for _ in range(num_steps):
        action_step = policy.action(time_step)
        next_time_step = env.step(action_step.action)
        traj = trajectory.from_transition(time_step, action_step, next_time_step)
        boundaries += int(traj.is_boundary())
        writer.write(traj)
        writer.wait_for_room(timeout_s=0.2)
        time_step = next_time_step
    return boundaries


def test_pairs_never_span_episodes_and_a_blocked_limiter_never_hangs_the_writer():
    # Five-step episodes; the feed's limiter admits 10 items (the slack) and then waits for a
    # learner to drain them, which never comes, as after the learner's last step.
    config = load_gin(
        [PENDULUM_GIN],
        [
            "RunConfig.max_episode_steps = 5",
            "RunConfig.initial_collect_steps = 10",
            "RunConfig.rate_limiter_slack_steps = 10",
        ],
    )
    builder = Builder(config)
    server = reverb.Server(builder.make_tables())
    try:
        client = builder.connect(f"localhost:{server.port}")
        writer = ExperienceWriter(
            client, builder.make_policy().trajectory_spec, max_pending_items=4
        )
        outcome = {}

        def work():
            outcome["boundaries"] = _write_episodes(builder, writer, num_steps=60)
            outcome["all_sent"] = writer.close(timeout_s=1.0)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(timeout=120)
        assert not worker.is_alive(), "the writer blocked on the rate limiter"
        # Each 6-step cycle (5 steps + 1 boundary) gives 5 pairs; no pair crosses a boundary.
        assert outcome["boundaries"] == 10
        assert writer.items_created == 50
        assert outcome["all_sent"] is False  # the limiter held items back, as it should
        sizes = tables.table_sizes(client)
        assert sizes[tables.FEED_TABLE] == 10
        # The experience table's inserts never wait: it also has the pairs whose feed items the
        # limiter held (this test writes on after wait_for_room times out; a collector does not).
        assert sizes[tables.EXPERIENCE_TABLE] >= 10
    finally:
        server.stop()
