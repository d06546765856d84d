"""The replay server's two tables: names, signatures, rate limiter, and reading their counters.

Table and key names are TF-Agents': the variables table is the one its ReverbVariableContainer
reads and writes. The experience items are packed pairs (see transitions), so TF-Agents'
ReverbReplayBuffer cannot read them.
"""

from __future__ import annotations

import reverb
import tree

from distributed_sac.config import RunConfig
from distributed_sac.errors import UserError
from distributed_sac.replay import weights
from distributed_sac.transitions import TransitionPacking

EXPERIENCE_TABLE = "uniform_table"
VARIABLES_TABLE = weights.VARIABLES_TABLE
TABLES = (EXPERIENCE_TABLE, VARIABLES_TABLE)


def experience_signature(collect_data_spec):
    """Signature of one experience item: a (t, t+1) pair of packed steps (see transitions)."""
    return TransitionPacking(collect_data_spec).signature()


def make_rate_limiter(config: RunConfig) -> reverb.rate_limiters.RateLimiter:
    """MinSize(initial budget) by default; SampleToInsertRatio when the config fixes UTD."""
    if config.samples_per_insert is None:
        return reverb.rate_limiters.MinSize(config.initial_collect_steps)
    spi = config.samples_per_insert
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=spi,
        min_size_to_sample=config.initial_collect_steps,
        # Reverb needs room for at least one insert and one sample either way.
        error_buffer=max(config.rate_limiter_slack_steps * spi, 2 * max(spi, 1.0)),
    )


def make_tables(config: RunConfig, collect_data_spec, policy_variables) -> list:
    experience = reverb.Table(
        EXPERIENCE_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=config.replay_capacity,
        rate_limiter=make_rate_limiter(config),
        signature=experience_signature(collect_data_spec),
    )
    variables = reverb.Table(
        VARIABLES_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=1,
        max_times_sampled=0,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=weights.weights_signature(policy_variables),
    )
    return [experience, variables]


def _describe(spec) -> str:
    return f"{spec.dtype.name}{list(spec.shape)}"


def check_signature(client: reverb.Client, table: str, expected, layout: str = "") -> None:
    """Raises a UserError naming the first difference between a server table and our config.

    `layout` describes what this config's tensors hold, to help tell two configs apart.
    """
    info = client.server_info(timeout=30)
    if table not in info:
        raise UserError(f"replay server has no table '{table}' (tables: {sorted(info)})")
    actual_flat = tree.flatten_with_path(info[table].signature)
    expected_flat = tree.flatten_with_path(expected)
    if len(actual_flat) != len(expected_flat):
        raise UserError(
            f"spec mismatch in table '{table}': server has {len(actual_flat)} tensors, this config "
            f"has {len(expected_flat)}; do all roles use the same gin config?"
        )
    for (path, want), (_, have) in zip(expected_flat, actual_flat):
        if want.shape != have.shape or want.dtype != have.dtype:
            name = "/".join(str(p) for p in path)
            raise UserError(
                f"spec mismatch in table '{table}' at {name}: server has {_describe(have)}, "
                f"this config has {_describe(want)}{f' ({layout})' if layout else ''}; "
                "do all roles use the same env and gin config?"
            )


def table_sizes(client: reverb.Client, timeout_s: int = 30) -> dict[str, int]:
    return {name: info.current_size for name, info in client.server_info(timeout_s).items()}


def items_inserted(client: reverb.Client, timeout_s: int = 30) -> int:
    """Experience items the server has taken in since it started (a restarted server counts
    from 0 again): one per environment step as TF-Agents counts them (a pair ends at each step;
    the reset step between two episodes ends none)."""
    info = client.server_info(timeout_s)[EXPERIENCE_TABLE]
    return info.rate_limiter_info.insert_stats.completed
