"""Greedy evaluation: the evaluator role and the benchmarks' tutorial loop score policies alike."""

from __future__ import annotations

EVAL_SEED_OFFSET = 1_000_000  # keeps evaluation episodes apart from every collector's


def make_eval_env(builder):
    """The evaluation environment, seeded from the run's seed (apart from the collectors')."""
    return builder.make_env(seed=builder.config.seed + EVAL_SEED_OFFSET)


def run_episodes(env, policy, num_episodes: int) -> dict:
    """Plays complete episodes with `policy`; AverageReturn and AverageEpisodeLength."""
    returns, lengths = [], []
    for _ in range(num_episodes):
        time_step = env.reset()
        total, length = 0.0, 0
        while not time_step.is_last():
            time_step = env.step(policy.action(time_step).action)
            total += float(time_step.reward)
            length += 1
        returns.append(total)
        lengths.append(length)
    return {
        "AverageReturn": sum(returns) / len(returns),
        "AverageEpisodeLength": sum(lengths) / len(lengths),
    }
