"""A client that writes items or weights of another shape into the server (Reverb's server does
not check them against the table signatures; only its client does, unless told not to): the
standard client refuses them, and what a client that skips the check gets in neither corrupts
the learner's replay nor the collectors' policies, and the run goes on."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.specs import tensor_spec

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.layout import RunDir
from distributed_sac.replay import tables
from distributed_sac.replay.transitions import (
    NUMBER_LIMIT,
    PAIR_COLUMN,
    PAIR_ID_WIDTH,
    PairNumbering,
    pair_numbers,
)
from distributed_sac.runtime.waits import poll_until
from tests.conftest import (
    SMOKE_GIN,
    bindings,
    read,
    reports,
    run_tool,
    start_server,
    wait_until,
)


def insert_unchecked(address: str, table_names, column, value: np.ndarray) -> None:
    """Writes one item holding `value` into `table_names`, skipping the client's own check (as a
    client of another config or a hostile one may)."""
    client = reverb.Client(address)
    writer = client.trajectory_writer(num_keep_alive_refs=1, validate_items=False)
    writer.append({column: value})
    for table in table_names:
        writer.create_item(table, 1.0, {column: writer.history[column][-1]})
    writer.flush(timeout_ms=10_000)
    writer.close()


@pytest.fixture
def server(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path)
    return address, Builder(load_gin([SMOKE_GIN], []))


def test_the_standard_client_refuses_items_of_another_shape(server):
    address, builder = server
    width = builder.packing.width
    client = reverb.Client(address)
    with pytest.raises(ValueError, match="inconsistent with the table signature"):
        client.insert([np.zeros([2, width + 1], np.float32)], {tables.FEED_TABLE: 1.0})
    assert tables.table_sizes(client)[tables.FEED_TABLE] == 0


def test_the_learner_drops_a_take_holding_a_foreign_item_and_goes_on(server, caplog):
    address, builder = server
    width = builder.packing.width
    reader = builder.make_feed_reader(address)

    def write_good(first: int, count: int):
        for number in range(first, first + count):
            insert_unchecked(
                address,
                tables.EXPERIENCE_TABLES,
                PAIR_COLUMN,
                np.full([2, width], number, np.float32),
            )

    write_good(0, 5)
    insert_unchecked(address, tables.EXPERIENCE_TABLES, PAIR_COLUMN, np.zeros([2, width + 3]))
    write_good(5, 5)
    with caplog.at_level(logging.WARNING):
        first = reader.take(reader.available())
    assert "does not fit this config" in caplog.text
    assert len(first) == 0  # that take is lost to the learner
    write_good(100, 7)
    after = reader.take(reader.available())
    assert after.shape == (7, 2, width) and sorted(after[:, 0, 0]) == list(range(100, 107))


def test_weights_of_another_shape_are_ignored_until_the_next_push(server, caplog):
    address, builder = server
    policy = builder.make_policy()
    train_step = tf.Variable(5, dtype=tf.int64)
    pusher = builder.make_weight_client(address, policy.variables(), train_step)
    acting = builder.make_policy()
    puller = builder.make_weight_client(address, acting.variables())
    pusher.push()
    assert puller.pull() == 5
    before = [v.numpy().copy() for v in acting.variables()]
    # One tensor where the policy has many: a push from a client of another kind.
    insert_unchecked(address, [tables.VARIABLES_TABLE], "policy_variables", np.zeros(3, np.float32))
    with caplog.at_level(logging.WARNING):
        assert puller.pull() is None
    assert "do not fit this policy" in caplog.text
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, acting.variables()))
    train_step.assign(6)
    pusher.push()
    assert puller.pull() == 6


@pytest.mark.slow
def test_a_run_with_a_hostile_client_finishes(processes, tmp_path):
    """Server, learner and collector by hand; foreign items wait at the head of the feed (so the
    learner's first take meets them) and foreign weights arrive mid-run; the learner reaches its
    final step and the collector stops cleanly."""
    address, _, _ = start_server(processes, tmp_path)
    width = Builder(load_gin([SMOKE_GIN], [])).packing.width
    for shape in ([2, width + 1], [2, width - 1], [3]):
        insert_unchecked(address, tables.EXPERIENCE_TABLES, PAIR_COLUMN, np.ones(shape))
    common = [
        "--gin_file",
        SMOKE_GIN,
        "--replay_server_address",
        address,
        *bindings("RunConfig.num_iterations = 600"),
    ]
    learner = processes.role(
        "learner", [*common, "--root_dir", str(tmp_path / "run")], tmp_path / "learner.log"
    )
    collector = processes.role("collector", [*common, "--task", "0"], tmp_path / "collector.log")
    log = tmp_path / "learner.log"
    wait_until(lambda: reports(log, "learner_progress"), "training", learner, 240, log=log)
    for _ in range(3):
        insert_unchecked(address, [tables.VARIABLES_TABLE], "policy_variables", np.ones(3))
        time.sleep(1)
    assert learner.wait(timeout=300) == 0, read(tmp_path / "learner.log")[-3000:]
    assert collector.wait(timeout=120) == 0, read(tmp_path / "collector.log")[-3000:]
    assert [r["train_step"] for r in reports(tmp_path / "learner.log", "learner_done")] == [600]
    (done,) = reports(tmp_path / "collector.log", "collector_done")
    assert done["last_policy_train_step"] == 600
    dropped = read(tmp_path / "learner.log").count("does not fit this config")
    ignored = read(tmp_path / "collector.log").count("do not fit this policy")
    print(f"takes the learner dropped: {dropped}; foreign weights the collector ignored: {ignored}")
    assert dropped >= 1


def non_finite_pairs(builder: Builder) -> list[np.ndarray]:
    """Correctly shaped pairs, each with one field of its first step NaN or inf: an observation,
    a reward, an action (what a broken or hostile collector may write)."""
    good = tf.nest.map_structure(
        lambda t: t.numpy(), tensor_spec.zero_spec_nest(builder.collect_data_spec)
    )
    bad_steps = [
        good._replace(observation=np.full_like(good.observation, np.nan)),
        good._replace(reward=np.full_like(good.reward, np.nan)),
        good._replace(observation=np.full_like(good.observation, np.inf)),
        good._replace(action=np.full_like(good.action, -np.inf)),
    ]
    numbering = PairNumbering()  # numbered as a collector numbers its pairs
    return [
        builder.packing.pair(
            builder.packing.pack(bad), builder.packing.pack(good), numbering.take()
        )
        for bad in bad_steps
    ]


def insert_checked(port: int, pairs, timeout_s: float = 60) -> None:
    """Inserts `pairs` into the experience and feed tables as a collector does, through the
    standard client (they fit the signature), at 127.0.0.1; waits (bounded) while the feed is
    full."""
    client = reverb.Client(f"127.0.0.1:{port}")
    with client.trajectory_writer(num_keep_alive_refs=1) as writer:
        for pair in pairs:
            writer.append({PAIR_COLUMN: pair})
            for table in tables.EXPERIENCE_TABLES:
                writer.create_item(table, 1.0, {PAIR_COLUMN: writer.history[PAIR_COLUMN][-1]})

        def flushed() -> bool:
            try:
                writer.flush(timeout_ms=1000)
                return True
            except reverb.errors.DeadlineExceededError:
                return False

        assert poll_until(flushed, timeout_s, interval_s=0), "the feed stayed full"


@pytest.mark.slow
def test_non_finite_pairs_are_dropped_at_the_intake_and_counted(processes, tmp_path):
    """A client inserts correctly shaped pairs holding NaN or inf into the feed, before the run
    (the learner's first take meets them) and while it trains: the learner drops each at its
    intake, counts it in its reports, and finishes the run (it used to stop with 'training
    diverged', exit 2)."""
    address, _, _ = start_server(processes, tmp_path)
    port = int(address.rsplit(":", 1)[1])
    builder = Builder(load_gin([SMOKE_GIN], []))
    bad = non_finite_pairs(builder)
    insert_checked(port, bad)
    common = [
        "--gin_file",
        SMOKE_GIN,
        "--replay_server_address",
        address,
        *bindings("RunConfig.num_iterations = 400"),
    ]
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.logs)
    log = run.log("learner")  # where the launcher puts it, for status --root_dir
    learner = processes.role("learner", [*common, "--root_dir", run.root], log)
    collector = processes.role("collector", [*common, "--task", "0"], tmp_path / "collector.log")
    wait_until(lambda: reports(log, "learner_progress"), "training", learner)
    # Mid-run, behind the collector's pairs: two more, numbered by another source (the same
    # numbers again would be pairs the learner already had, skipped before the NaN check).
    insert_checked(port, non_finite_pairs(builder)[:2])
    inserted = len(bad) + 2
    assert learner.wait(timeout=300) == 0, read(log)[-3000:]
    assert collector.wait(timeout=120) == 0, read(tmp_path / "collector.log")[-3000:]
    (done,) = reports(log, "learner_done")
    dropped = reports(log, "learner_dropped_pairs")
    count = done["pairs_dropped_nonfinite"]
    print(
        f"inserted {inserted} non-finite pairs; the learner dropped {count} in {len(dropped)} "
        f"drains; finished at train_step {done['train_step']}"
    )
    assert done["train_step"] == 400
    assert count == inserted
    assert sum(r["count"] for r in dropped) == inserted
    assert "training diverged" not in read(log)
    screen = run_tool(
        "tools.status", ["--replay_server_address", address, "--root_dir", run.root], 120
    )
    assert screen.returncode == 0, screen.stderr[-3000:]
    shown = f"learner: {inserted} pairs dropped for NaN or inf (last "
    assert shown in screen.stdout, screen.stdout


def forged_pair(address: str, sequence: int) -> np.ndarray:
    """A real pair sampled from the experience table (as any client can), renumbered as the
    `sequence`th of its collector's source: correctly shaped and finite."""
    client = reverb.Client(address)
    sample = next(client.sample(tables.EXPERIENCE_TABLE, num_samples=1, emit_timesteps=False))
    pair = np.array(sample.data[0], np.float32)
    assert pair.shape == (2, Builder(load_gin([SMOKE_GIN], [])).packing.width)
    sources, _, numbered = pair_numbers(pair[None])
    assert numbered.all()
    numbering = PairNumbering(source=int(sources[0]))
    numbering.next_sequence = sequence
    pair[:, -PAIR_ID_WIDTH:] = numbering.take()
    return pair


@pytest.mark.slow
def test_a_forged_pair_number_does_not_stall_the_run(processes, tmp_path):
    """Once the learner trains, a client samples a pair of the experience table, which tells
    the only collector's source, and inserts into the feed and the experience table (as a
    collector's writer does) a pair of that source numbered 2^48 - 2. The learner's ledger then
    takes every later pair of that collector for one it already had; it resynchronises the
    source after more of them in a row than a restored feed can hand out again, and the run
    reaches its final step."""
    address, _, _ = start_server(processes, tmp_path)
    common = [
        "--gin_file",
        SMOKE_GIN,
        "--replay_server_address",
        address,
        *bindings("RunConfig.num_iterations = 600"),
    ]
    learner_log = tmp_path / "learner.log"
    learner = processes.role("learner", [*common, "--root_dir", str(tmp_path / "run")], learner_log)
    collector = processes.role("collector", [*common, "--task", "0"], tmp_path / "collector.log")
    wait_until(
        lambda: reports(learner_log, "learner_progress"), "training", learner, 240, log=learner_log
    )
    forged = forged_pair(address, NUMBER_LIMIT - 2)
    insert_unchecked(address, tables.EXPERIENCE_TABLES, PAIR_COLUMN, forged)
    forged_at = reports(learner_log, "learner_progress")[-1]["train_step"]
    wait_until(
        lambda: reports(learner_log, "learner_done"),
        f"train step 600 (forged at {forged_at})",
        learner,
        300,
        log=learner_log,
    )
    assert learner.wait(timeout=120) == 0, read(learner_log)[-3000:]
    assert collector.wait(timeout=120) == 0, read(tmp_path / "collector.log")[-3000:]
    assert [r["train_step"] for r in reports(learner_log, "learner_done")] == [600]
    figures = reports(learner_log, "learner_progress")[-1]
    print(f"forged at train step {forged_at}; learner's last report: {figures}")
    assert figures["sources_resynchronised"] == 1
    feed_size = tables.feed_size(load_gin([SMOKE_GIN], []))
    assert figures["pairs_duplicate"] == feed_size  # the real pairs the forged number cost
    assert "resynchronised source" in read(learner_log)
