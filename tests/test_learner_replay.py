"""The learner's replay: newest pairs kept, uniform sampling, checkpointed with the learner, and
the intake that drains the feed table and holds the update-to-data ratio."""

from typing import NamedTuple

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.train.utils import train_utils

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.learner.checkpoints import LearnerCheckpoints
from distributed_sac.learner.replay import ExperienceIntake, LearnerReplay, NStepReturns
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting
from distributed_sac.replay.transitions import PAIR_COLUMN
from tests.conftest import SMOKE_GIN


def _numbered_pairs(first: int, count: int, width: int = 3) -> np.ndarray:
    """Pairs whose every value is their number, so a sample tells which pair it is."""
    numbers = np.arange(first, first + count, dtype=np.float32)
    return np.broadcast_to(numbers[:, None, None], (count, 2, width)).copy()


def _episode_pairs(first_observation: float, length: int, terminal: bool) -> list:
    """An episode's pairs of packed steps [observation, reward, discount] and a pair number:
    observation t is first_observation + t, reward t is 10 ** t, discount 1 (0 on a terminal
    last step); the number is first_observation + t too, so rows of linked pairs differ there."""
    steps = [[first_observation + t, 10.0**t, 1.0] for t in range(length + 1)]
    if terminal:  # the pair into the terminal step carries its discount, 0
        steps[-2][2] = 0.0
    return [
        np.array(
            [steps[t] + [first_observation + t], steps[t + 1] + [first_observation + t]]
        ).astype(np.float32)
        for t in range(length)
    ]


def test_n_step_pairs_fold_up_to_n_rewards_of_one_episode():
    """Each folded pair: reward sum_k gamma^k d_0..d_(k-1) r_k over linked pairs, discount
    gamma^(m-1) d_0..d_(m-1), the second step m steps on; chains stop at an episode's end, at a
    pair of another episode in between and at the newest pair."""
    tf.random.set_seed(1)
    gamma = 0.5
    # Episode A (observations 0..5, not terminal), episode B (100..103, terminal), then A's
    # pairs continue nowhere: B's pairs start at another observation.
    pairs = _episode_pairs(0.0, 5, terminal=False) + _episode_pairs(100.0, 3, terminal=True)
    replay = LearnerReplay(capacity=64, pair_shape=(2, 4))
    replay.add(np.stack(pairs))
    returns = NStepReturns(steps=3, gamma=gamma, reward_index=1, discount_index=2, step_width=3)
    drawn = replay.sample_n_step(400, returns).numpy()
    expected = {}
    for start in range(len(pairs)):
        reward, weight, m = 0.0, 1.0, 0
        for k in range(3):
            index = start + k
            linked = index < len(pairs) and np.array_equal(
                pairs[index][0, :3], pairs[index - 1][1, :3]
            )
            if k and not linked:
                break
            reward += weight * pairs[index][0][1]
            weight *= gamma * pairs[index][0][2]
            m = k
        discount = weight / gamma
        expected[float(pairs[start][0][0])] = (reward, discount, pairs[start + m][1][0])
    seen = set()
    for first, second in drawn:
        reward, discount, next_observation = expected[float(first[0])]
        assert first[1] == np.float32(reward), (first, reward)
        assert first[2] == np.float32(discount), (first, discount)
        assert second[0] == next_observation, (first, second)
        seen.add(float(first[0]))
    # Starts are drawn among all but the last two pairs (each has two successors held).
    assert seen == {0.0, 1.0, 2.0, 3.0, 4.0, 100.0}


def test_replay_keeps_the_newest_pairs_and_samples_them_uniformly():
    tf.random.set_seed(0)
    replay = LearnerReplay(capacity=100, pair_shape=(2, 3))
    replay.add(_numbered_pairs(0, 70))
    assert replay.size == 70
    replay.add(_numbered_pairs(70, 180))  # 250 in all; more than the capacity in one call
    assert replay.size == 100 and int(replay.added.numpy()) == 250
    drawn = np.concatenate([replay.sample(500).numpy()[:, 0, 0] for _ in range(40)])
    counts = np.bincount(drawn.astype(int), minlength=250)
    assert counts[:150].sum() == 0  # only the newest 100 pairs are held
    # 20 000 draws over 100 pairs: 200 each, standard deviation 14.
    assert 130 < counts[150:].min() and counts[150:].max() < 270, counts[150:]


def test_replay_drops_and_counts_pairs_holding_nan_or_inf():
    replay = LearnerReplay(capacity=10, pair_shape=(2, 3))
    pairs = _numbered_pairs(0, 6)
    pairs[1, 0, 2] = np.nan
    pairs[3, 1, 0] = np.inf
    pairs[4, 0, 1] = -np.inf
    replay.add(pairs)
    replay.add(_numbered_pairs(6, 2))
    figures = replay.figures()
    assert {k: figures[k] for k in ("replay_size", "pairs_drained", "pairs_dropped_nonfinite")} == {
        "replay_size": 5,
        "pairs_drained": 5,
        "pairs_dropped_nonfinite": 3,
    }
    assert sorted(replay.pairs.numpy()[:5, 0, 0]) == [0, 2, 5, 6, 7]


def test_replay_goes_into_the_learner_checkpoint(tmp_path):
    builder = Builder(load_gin([SMOKE_GIN], []))
    train_step = train_utils.create_train_step()
    agent = builder.make_agent(train_step)
    replay = builder.make_learner_replay()
    width = builder.packing.width
    replay.add(_numbered_pairs(0, 2500, width))  # smoke.gin holds 2 000
    train_step.assign(7)
    saved = LearnerCheckpoints(str(tmp_path), agent, train_step, replay).save(7)

    fresh_step = train_utils.create_train_step()
    fresh_agent = builder.make_agent(fresh_step)
    fresh = builder.make_learner_replay()
    restored = LearnerCheckpoints(str(tmp_path), fresh_agent, fresh_step, fresh).restore_latest()
    assert restored == saved
    assert int(fresh.added.numpy()) == 2500 and fresh.size == 2000
    np.testing.assert_array_equal(fresh.pairs.numpy(), replay.pairs.numpy())


class _Parts(NamedTuple):
    feed: object


def test_intake_drains_the_feed_and_trains_only_as_far_as_the_ratio_allows():
    config = load_gin(
        [SMOKE_GIN],
        [
            "RunConfig.updates_per_env_step = 2.0",
            "RunConfig.initial_collect_steps = 10",
            "RunConfig.rate_limiter_slack_steps = 100",
        ],
    )
    builder = Builder(config)
    server = reverb.Server(builder.make_tables())
    try:
        address = f"localhost:{server.port}"
        client = builder.connect(address)
        replay = builder.make_learner_replay()
        feed = Reconnecting("test", lambda: _Parts(builder.make_feed_reader(address)))
        intake = ExperienceIntake(replay, feed, config, poll_s=0.01)
        # 10 initial pairs, then 2 train steps per pair.
        assert [intake.pairs_needed(s) for s in (0, 1, 2, 3, 20)] == [10, 11, 11, 12, 20]

        def write(count: int) -> None:
            width = builder.packing.width
            with client.trajectory_writer(num_keep_alive_refs=1) as writer:
                for pair in _numbered_pairs(replay.added.numpy() + 1000, count, width):
                    writer.append({PAIR_COLUMN: pair})
                    for table in tables.EXPERIENCE_TABLES:
                        writer.create_item(
                            table, 1.0, {PAIR_COLUMN: writer.history[PAIR_COLUMN][-1]}
                        )

        write(17)
        assert intake.wait_for(10, lambda: False)  # needs 15 of the 17
        assert int(replay.added.numpy()) == 15
        # It took only what it needs: the rest waits, holding back collectors beyond the slack.
        assert tables.table_sizes(client)[tables.FEED_TABLE] == 2
        assert intake.wait_for(14, lambda: False)
        assert int(replay.added.numpy()) == 17
        checks = []
        # 20 train steps need 20 pairs; none come, so it waits until the stop request.
        assert not intake.wait_for(20, lambda: checks.append(1) or len(checks) > 3)
        assert len(checks) == 4 and int(replay.added.numpy()) == 17
        write(5)
        assert intake.wait_for(20, lambda: False)
        assert int(replay.added.numpy()) == 20
    finally:
        server.stop()
