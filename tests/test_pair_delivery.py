"""Each experience pair reaches the learner's replay once across restarts of the server or the
learner, or its loss is counted: a restored server's feed re-delivers pairs drained after its
checkpoint, a take abandoned on a lost server finishes once the server is back, and `status`
reads the run's update-to-data ratio from counters that survive a relaunch."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.specs import array_spec, tensor_spec

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.layout import RunDir
from distributed_sac.learner.pair_ledger import PairLedger
from distributed_sac.learner.replay import ExperienceIntake
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting
from distributed_sac.replay.transitions import NUMBER_LIMIT, PairNumbering, pair_numbers
from distributed_sac.replay.writer import ExperienceWriter
from tests.conftest import (
    SMOKE_GIN,
    bindings,
    free_port,
    read,
    reports,
    run_tool,
    start_server,
    wait_for_line,
    wait_until,
)

# The learner's replay holds every pair of these runs, so it tells which pairs it got.
BIG_REPLAY = "RunConfig.replay_capacity = 20000"
RUN_UTD = r"effective UTD ([\d.]+) train steps per inserted item over the run"


def restored_replay(run: RunDir, extra_bindings=()):
    """The learner replay in the newest checkpoint under `run`: (pairs it holds, replay)."""
    builder = Builder(load_gin([SMOKE_GIN], [BIG_REPLAY, *extra_bindings]))
    replay = builder.make_learner_replay()
    latest = tf.train.latest_checkpoint(run.checkpoints)
    tf.train.Checkpoint(learner_replay=replay).restore(latest).expect_partial()
    return replay.pairs.numpy()[: replay.size], replay


def repeated_rows(pairs: np.ndarray) -> int:
    """Pairs held more than once (equal in every value)."""
    return len(pairs) - len(np.unique(pairs.reshape(len(pairs), -1), axis=0))


def server_args(port: int, root) -> list[str]:
    return [
        "--gin_file",
        SMOKE_GIN,
        "--port",
        str(port),
        "--root_dir",
        str(root),
        *bindings("RunConfig.replay_checkpoint_interval_s = 20", BIG_REPLAY),
    ]


@pytest.mark.slow
def test_a_restored_server_never_hands_the_learner_a_pair_twice(processes, tmp_path):
    """The server checkpoints every 2 s; it is killed -9 a second after one (the learner has
    drained pairs of the checkpointed feed since) and restarted on its checkpoint. The learner's
    replay then holds no pair twice, and what it never got is counted."""
    port = free_port()
    address = f"localhost:{port}"
    server_root = tmp_path / "server"
    server_log = tmp_path / "server.log"
    server = processes.role("replay_server", server_args(port, server_root), server_log)
    wait_for_line(server_log, "replay_server_ready", server)
    run = RunDir(str(tmp_path / "run"))
    common = [
        "--gin_file",
        SMOKE_GIN,
        "--replay_server_address",
        address,
        *bindings(
            BIG_REPLAY,
            "RunConfig.num_iterations = 100000",
            "RunConfig.connect_timeout_s = 120",
            "RunConfig.server_call_timeout_s = 5",
        ),
    ]
    learner_log = tmp_path / "learner.log"
    learner = processes.role("learner", [*common, "--root_dir", run.root], learner_log)
    collector = processes.role("collector", [*common, "--task", "0"], tmp_path / "collector.log")
    deadline = time.monotonic() + 300  # for the three waits below together
    wait_until(
        lambda: any(r["train_step"] >= 300 for r in reports(learner_log, "learner_progress")),
        "train step 300",
        learner,
        deadline - time.monotonic(),
        log=learner_log,
    )
    saved = len(reports(server_log, "replay_checkpoint"))
    wait_until(
        lambda: len(reports(server_log, "replay_checkpoint")) > saved,
        "a replay checkpoint",
        server,
        deadline - time.monotonic(),
        log=server_log,
    )
    checkpointed = reports(server_log, "replay_checkpoint")[-1]

    # Two progress reports (50 train steps each, two chunks of 25) after the checkpoint: the
    # learner has drained pairs since, the oldest first, so pairs the checkpoint's feed holds.
    def progress_since_checkpoint() -> bool:
        progress = reports(learner_log, "learner_progress")
        return len([r for r in progress if r["unix_time"] > checkpointed["unix_time"]]) >= 2

    wait_until(
        progress_since_checkpoint,
        "two progress reports",
        learner,
        deadline - time.monotonic(),
        log=learner_log,
    )
    server.send_signal(signal.SIGKILL)
    assert len(reports(server_log, "replay_checkpoint")) == saved + 1  # none since
    server.wait(timeout=30)
    restarted_log = tmp_path / "server-restarted.log"
    server = processes.role("replay_server", server_args(port, server_root), restarted_log)
    wait_for_line(restarted_log, "replay_server_ready", server)
    (ready,) = reports(restarted_log, "replay_server_ready")
    print(f"restored tables: {ready['table_sizes']}")
    wait_for_line(learner_log, "learner_reconnected", learner, timeout_s=120)
    wait_for_new_progress(learner_log, learner, 200)
    # The learner killed -9 too: what it drained since its last checkpoint is gone with it.
    learner.send_signal(signal.SIGKILL)
    learner.wait(timeout=30)
    learner = processes.role("learner", [*common, "--root_dir", run.root], learner_log)
    step_back = wait_for_new_progress(learner_log, learner, 200)
    learner.send_signal(signal.SIGTERM)
    assert learner.wait(timeout=120) == 128 + signal.SIGTERM, read(learner_log)[-3000:]
    collector.send_signal(signal.SIGTERM)
    pairs, replay = restored_replay(run)
    figures = replay.ledger.figures()
    starts = reports(learner_log, "learner_start")
    print(
        f"learner replay: {len(pairs)} pairs, {repeated_rows(pairs)} held twice; {figures}; "
        f"learner restarted at train step {starts[-1]['train_step']} after {step_back}"
    )
    assert repeated_rows(pairs) == 0
    assert_each_pair_once_or_counted(pairs, replay)
    assert figures["pairs_duplicate"] > 0  # the restored feed handed them out again
    assert figures["sources_resynchronised"] == 0  # no more in a row than the feed held
    assert figures["pairs_lost"] > 0  # the killed learner's, at least


def wait_for_new_progress(log, learner, steps: int, timeout_s: float = 300) -> int:
    """Waits until the learner (restarted: its log goes on) reports `steps` train steps past
    its newest report so far; the step it started from."""
    progress = reports(log, "learner_progress")
    start = progress[-1]["train_step"] if progress else 0
    seen = len(progress)
    wait_until(
        lambda: any(
            r["train_step"] >= start + steps for r in reports(log, "learner_progress")[seen:]
        ),
        f"train step {start + steps}",
        learner,
        timeout_s,
        log=log,
    )
    return start


def progress_since(log, seen: int) -> list[dict]:
    return reports(log, "learner_progress")[seen:]


def assert_each_pair_once_or_counted(pairs: np.ndarray, replay) -> None:
    """Every pair of every source up to the newest one the replay holds is in it once, or
    counted as lost (the replay is big enough to hold every pair the learner got)."""
    sources, sequences, numbered = pair_numbers(pairs)
    assert numbered.all()
    held = set(zip(sources.tolist(), sequences.tolist()))
    assert len(held) == len(pairs)  # no number twice
    written = sum(int(sequences[sources == s].max()) + 1 for s in set(sources.tolist()))
    figures = replay.ledger.figures()
    print(f"{written} pairs written up to the newest held: {len(held)} held, {figures}")
    assert written == len(held) + figures["pairs_lost"]


def write_pairs(address: str, builder: Builder, count: int) -> None:
    """`count` pairs of random steps into both experience tables, as a collector writes them."""
    writer = ExperienceWriter(reverb.Client(address), builder.collect_data_spec)
    spec = tensor_spec.to_nest_array_spec(builder.collect_data_spec)
    rng = np.random.RandomState(0)
    for _ in range(count + 1):  # count + 1 mid-episode steps make count pairs
        step = array_spec.sample_spec_nest(spec, rng)
        writer.write(step._replace(step_type=np.int32(1), next_step_type=np.int32(1)))
    assert writer.close(timeout_s=30)


def test_a_take_abandoned_on_a_hung_server_loses_no_pair(processes, tmp_path):
    """The server stops answering (SIGSTOP) while the learner takes from the feed: the take
    times out and the learner reconnects once the server answers again (SIGCONT). The take's
    thread, which Reverb cannot cancel, then gets its pairs: they reach the learner's replay."""
    config = load_gin([SMOKE_GIN], ["RunConfig.server_call_timeout_s = 2", BIG_REPLAY])
    builder = Builder(config)
    address, server, _ = start_server(processes, tmp_path, bindings=[BIG_REPLAY])
    write_pairs(address, builder, 60)

    stops = []

    class Parts:
        def __init__(self):
            self.feed = builder.make_feed_reader(address)
            take = self.feed.take

            def take_on_a_server_that_stops(count):
                if not stops:  # the first take: the server stops answering as it starts
                    stops.append(count)
                    server.send_signal(signal.SIGSTOP)
                    threading.Timer(4.0, lambda: server.send_signal(signal.SIGCONT)).start()
                return take(count)

            self.feed.take = take_on_a_server_that_stops

    parts = Reconnecting("learner", Parts)
    assert parts.call(lambda p: p.feed.available()) == 60
    replay = builder.make_learner_replay()
    intake = ExperienceIntake(replay, parts, config)
    drained = intake.drain()
    left = tables.table_sizes(reverb.Client(address))[tables.FEED_TABLE]
    time.sleep(3)
    drained += intake.drain()
    print(f"drained {drained} of 60 pairs; {left} left in the feed; {replay.figures()}")
    assert stops == [60]  # the take was cut short
    assert int(replay.added.numpy()) == 60
    pairs = replay.pairs.numpy()[:60]
    assert_each_pair_once_or_counted(pairs, replay)
    assert replay.ledger.figures()["pairs_lost"] == 0


def start_run(processes, run: RunDir, port: int, extra_bindings=()):
    """Server, learner and one collector by hand on one root_dir, logs where the launcher puts
    them; (server, learner, collector)."""
    address = f"localhost:{port}"
    os.makedirs(run.logs, exist_ok=True)
    config = [
        "--gin_file",
        SMOKE_GIN,
        *bindings("RunConfig.num_iterations = 100000", *extra_bindings),
    ]
    server = processes.role(
        "replay_server",
        [*config, "--port", str(port), "--root_dir", run.root],
        run.log("replay_server"),
    )
    wait_for_line(run.log("replay_server"), "replay_server_ready", server)
    client = [*config, "--replay_server_address", address, "--root_dir", run.root]
    learner = processes.role("learner", client, run.log("learner"))
    collector = processes.role("collector", [*client, "--task", "0"], run.log("collector-0"))
    return server, learner, collector


def wait_for_step(run: RunDir, learner, train_step: int, timeout_s: float = 300) -> int:
    def reached() -> int | None:
        steps = [r["train_step"] for r in reports(run.log("learner"), "learner_progress")]
        return steps[-1] if steps and steps[-1] >= train_step else None

    log = run.log("learner")
    return wait_until(reached, f"train step {train_step}", learner, timeout_s, log=log)


@pytest.mark.slow
def test_status_shows_the_runs_ratio_after_the_server_lost_its_tables(processes, tmp_path):
    """A run held at one train step per pair whose server is killed -9 before it wrote a
    checkpoint (a lost volume does the same), and restarted: it starts empty, its counters
    from 0, while the learner goes on from its train step. `status --root_dir` still says one
    train step per pair over the run (from the server's counters it said 2 to 3), and the
    pairs that never reached the learner's replay."""
    run = RunDir(str(tmp_path / "run"))
    at_exit_only = ("RunConfig.replay_checkpoint_interval_s = 0",)
    port = free_port()
    server, learner, collector = start_run(processes, run, port, at_exit_only)
    step = wait_for_step(run, learner, 500)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    server = processes.role(
        "replay_server",
        ["--gin_file", SMOKE_GIN, "--port", str(port), "--root_dir", run.root],
        run.log("replay_server"),
    )
    wait_for_step(run, learner, step + 600)
    result = run_tool(
        "tools.status",
        ["--replay_server_address", f"localhost:{port}", "--root_dir", run.root],
    )
    print(result.stdout, result.stderr[-2000:])
    assert result.returncode == 0
    utd = float(re.search(RUN_UTD, result.stdout)[1])
    assert 0.9 < utd < 1.1, result.stdout
    # The pairs the lost tables held undrained, from the learner's counters.
    shown = re.search(
        r"pairs in the learner's replay: ([\d,]+) taken, ([\d,]+) never reached it", result.stdout
    )
    learner_figures = reports(run.log("learner"), "learner_progress")[-1]
    assert int(shown[1].replace(",", "")) <= learner_figures["pairs_drained"]
    assert int(shown[2].replace(",", "")) <= learner_figures["pairs_lost"]


def numbered(numbering, count: int, fields: int = 3) -> np.ndarray:
    """`count` pairs of zeros with the next numbers of `numbering`."""
    rows = [np.concatenate([np.zeros(fields, np.float32), numbering.take()]) for _ in range(count)]
    return np.stack([np.stack([row, row]) for row in rows])


def test_the_ledger_skips_pairs_it_had_counts_gaps_and_survives_a_checkpoint(tmp_path):
    ledger = PairLedger(feed_size=10)
    first, second = PairNumbering(source=(1 << 47) + 5), PairNumbering()
    assert len(ledger.admit(numbered(first, 10))) == 10
    first.next_sequence = 5  # a restored feed: pairs 5..9 again, then 10..14
    kept = ledger.admit(numbered(first, 10))
    assert len(kept) == 5 and ledger.figures()["pairs_duplicate"] == 5
    first.next_sequence = 20  # 15..19 never came
    second.next_sequence = 3  # a source first seen at 3: 0..2 never came
    foreign = np.full([1, 2, 7], np.nan, np.float32)
    kept = ledger.admit(np.concatenate([numbered(first, 2), numbered(second, 1), foreign]))
    assert len(kept) == 4
    assert ledger.figures() == {
        "pairs_duplicate": 5,
        "pairs_lost": 8,
        "pairs_unnumbered": 1,
        "sources_resynchronised": 0,
    }
    saved = tf.train.Checkpoint(ledger=ledger).save(str(tmp_path / "ledger"))
    restored = PairLedger(feed_size=10)
    tf.train.Checkpoint(ledger=restored).restore(saved).assert_consumed()
    first.next_sequence = 21
    assert len(restored.admit(numbered(first, 2))) == 1  # 21 it had, 22 it had not
    assert restored.figures() == {
        "pairs_duplicate": 6,
        "pairs_lost": 8,
        "pairs_unnumbered": 1,
        "sources_resynchronised": 0,
    }


def test_the_ledger_resynchronises_a_source_after_more_duplicates_in_a_row_than_a_feed_holds():
    """A forged pair numbered near 2^48 makes its source's real pairs look like duplicates: the
    first `feed_size` are skipped, the next one resynchronises the source. A restored feed's
    duplicates (at most `feed_size` in a row, across takes) resynchronise nothing."""

    def sequences(pairs) -> list[int]:
        return pair_numbers(pairs)[1].tolist()

    ledger = PairLedger(feed_size=4)
    real = PairNumbering(source=7)
    assert sequences(ledger.admit(numbered(real, 3))) == [0, 1, 2]
    forged = PairNumbering(source=7)
    forged.next_sequence = NUMBER_LIMIT - 2
    assert len(ledger.admit(numbered(forged, 1))) == 1
    assert sequences(ledger.admit(numbered(real, 8))) == [7, 8, 9, 10]  # 3..6 skipped
    assert ledger.figures() == {
        "pairs_duplicate": 4,
        "pairs_lost": NUMBER_LIMIT - 2 - 3,  # the forged jump, counted as lost
        "pairs_unnumbered": 0,
        "sources_resynchronised": 1,
    }
    real.next_sequence = 7  # a restored feed: 7..10 again (the feed's 4), in two takes
    assert sequences(ledger.admit(numbered(real, 2))) == []
    assert sequences(ledger.admit(numbered(real, 4))) == [11, 12]
    figures = ledger.figures()
    assert figures["pairs_duplicate"] == 8 and figures["sources_resynchronised"] == 1
