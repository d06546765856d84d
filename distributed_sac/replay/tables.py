"""The replay server's tables: names, signatures, rate limiters, and reading their counters.

- experience (`uniform_table`): the newest `replay_capacity` (t, t+1) pairs, what the server
  checkpoints, restores and reports; the collectors' global random-action budget is read off it.
- feed (`learner_feed`): the same items (a collector writes each pair once and both tables
  reference it), each taken exactly once by the learner into its own replay (learner_replay).
  Its rate limiter holds the update-to-data ratio: inserts wait while `rate_limiter_slack_steps`
  items are undrained, and the learner trains only as far as the items it has drained allow.
- variables (`variables`): the newest pushed weights.

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
from distributed_sac.replay.transitions import TransitionPacking

EXPERIENCE_TABLE = "uniform_table"
FEED_TABLE = "learner_feed"
VARIABLES_TABLE = weights.VARIABLES_TABLE
TABLES = (EXPERIENCE_TABLE, FEED_TABLE, VARIABLES_TABLE)
EXPERIENCE_TABLES = (EXPERIENCE_TABLE, FEED_TABLE)  # what a collector writes each pair into


def experience_signature(collect_data_spec):
    """Signature of one experience item: a (t, t+1) pair of packed steps (see transitions)."""
    return TransitionPacking(collect_data_spec).signature()


def feed_size(config: RunConfig) -> int:
    """Undrained items the feed holds: the limiter's slack when the config fixes the UTD (inserts
    wait beyond it); otherwise a whole replay, the oldest dropped first (a learner that far
    behind would have evicted them from its replay anyway)."""
    if config.updates_per_env_step is None:
        return config.replay_capacity
    return max(config.rate_limiter_slack_steps, 2)


def make_feed_rate_limiter(config: RunConfig) -> reverb.rate_limiters.RateLimiter:
    """A queue's limiter (inserts wait while the feed is full) when the config fixes the UTD;
    otherwise inserts never wait."""
    if config.updates_per_env_step is None:
        return reverb.rate_limiters.MinSize(1)
    return reverb.rate_limiters.Queue(feed_size(config))


def make_tables(config: RunConfig, collect_data_spec, policy_variables) -> list:
    signature = experience_signature(collect_data_spec)
    experience = reverb.Table(
        EXPERIENCE_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=config.replay_capacity,
        # Read by the learner only through the feed; inserts never wait here.
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=signature,
    )
    feed = reverb.Table(
        FEED_TABLE,
        sampler=reverb.selectors.Fifo(),
        remover=reverb.selectors.Fifo(),
        max_size=feed_size(config),
        max_times_sampled=1,
        rate_limiter=make_feed_rate_limiter(config),
        signature=signature,
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
    return [experience, feed, variables]


def _describe_limiter(info: reverb.TableInfo) -> str:
    """A table's rate limiter as this module builds them: MinSize(n) or Queue(n)."""
    limiter = info.rate_limiter_info
    if limiter.min_diff < -1e300 and limiter.max_diff > 1e300:  # ±DBL_MAX: no bound
        return f"MinSize({limiter.min_size_to_sample})"
    if (limiter.samples_per_insert, limiter.min_diff, limiter.min_size_to_sample) == (1, 0, 1):
        return f"Queue({limiter.max_diff:.0f})"
    return (
        f"RateLimiter(samples_per_insert={limiter.samples_per_insert:g}, "
        f"min_size_to_sample={limiter.min_size_to_sample}, "
        f"min_diff={limiter.min_diff:g}, max_diff={limiter.max_diff:g})"
    )


def _settings(info: reverb.TableInfo) -> dict[str, str]:
    """What a table is, apart from its signature and contents: what a Reverb checkpoint
    restores in place of the server's own tables."""
    return {
        "max_size": str(info.max_size),
        "max_times_sampled": str(info.max_times_sampled),
        "rate limiter": _describe_limiter(info),
        "sampler": " ".join(str(info.sampler_options).split()),
        "remover": " ".join(str(info.remover_options).split()),
    }


def settings_differences(restored: dict, configured: dict) -> list[str]:
    """Each way the restored tables ({name: TableInfo}, from server_info) differ from this
    config's (from Table.info), as "<table> <setting>: <restored> there, <ours> in this config"."""
    differences = []
    for table in sorted(set(restored) | set(configured)):
        if table not in restored or table not in configured:
            where = "this config" if table in configured else "the checkpoint"
            differences.append(f"{table}: only in {where}")
            continue
        theirs, ours = _settings(restored[table]), _settings(configured[table])
        differences += [
            f"{table} {setting}: {theirs[setting]} there, {ours[setting]} in this config"
            for setting in ours
            if theirs[setting] != ours[setting]
        ]
    return differences


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
    """Experience items the server has taken in (Reverb checkpoints the count with the tables:
    a restored server goes on from its checkpoint's, one without a checkpoint from 0): one per
    environment step as TF-Agents counts them (a pair ends at each step; the reset step between
    two episodes ends none)."""
    info = client.server_info(timeout_s)[EXPERIENCE_TABLE]
    return info.rate_limiter_info.insert_stats.completed
