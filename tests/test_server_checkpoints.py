"""The replay server's checkpoints: another config's (other signatures or other table settings)
or a corrupt one is refused with one line and left in place; one cut short by a kill is passed
over for the last complete one; a time-zone change neither deletes nor hides the newest; a stop
during a periodic checkpoint makes it the final one; its stop says each step, and SIGUSR1 shows
where its threads are."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import reverb

from distributed_sac.layout import RunDir
from distributed_sac.replay import server_checkpoints, tables
from distributed_sac.replay.transitions import PAIR_COLUMN
from distributed_sac.tools.cluster import CONFIG_ERROR_EXIT_CODE
from tests.conftest import (
    PENDULUM_GIN,
    SMOKE_GIN,
    bindings,
    free_port,
    last_line,
    read,
    reports,
    stacks_and_logs,
    wait_for_line,
)

MINITAUR_PAIR_WIDTH = 44  # smoke.gin: observation 28 + action 8 + step fields + pair number 4


def start(
    processes, root, gin_file=SMOKE_GIN, name="server", gin_bindings=(), env=None, log_dir=None
):
    """A replay server on `root` (its log in `log_dir`, default beside `root`)."""
    port = free_port()
    log = (log_dir or root.parent) / f"{name}.log"
    args = ["--gin_file", gin_file, "--port", str(port), "--root_dir", str(root)]
    process = processes.role("replay_server", [*args, *bindings(*gin_bindings)], log, env=env)
    return process, log, f"localhost:{port}"


def insert_pairs(address: str, first: int, count: int) -> None:
    """Pairs numbered first..first+count-1 (each value of pair n is n) into the experience table."""
    client = reverb.Client(address)
    for number in range(first, first + count):
        pair = np.full([2, MINITAUR_PAIR_WIDTH], number, np.float32)
        client.insert([pair], {tables.EXPERIENCE_TABLE: 1.0})


def pair_numbers(address: str, count: int) -> set[int]:
    """The numbers of `count` pairs sampled (with replacement) from the experience table."""
    samples = reverb.Client(address).sample(tables.EXPERIENCE_TABLE, count)
    return {int(np.asarray(sample[0].data[0]).flat[0]) for sample in samples}


def checkpointed_run(processes, tmp_path, items=30, gin_bindings=(), env=None) -> RunDir:
    """A root_dir whose replay server checkpointed `items` pairs on SIGTERM."""
    root = tmp_path / "run"
    server, log, address = start(processes, root, gin_bindings=gin_bindings, env=env)
    wait_for_line(log, "replay_server_ready", server)
    insert_pairs(address, 0, items)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    (saved,) = reports(log, "replay_checkpoint")
    assert saved["table_sizes"][tables.EXPERIENCE_TABLE] == items
    return RunDir(str(root))


def fingerprint(directory) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(directory).rglob("*"))
        if path.is_file()
    }


def test_another_configs_checkpoint_is_refused_and_kept(processes, tmp_path):
    run = checkpointed_run(processes, tmp_path)
    before = fingerprint(run.reverb)
    server, log, _ = start(processes, Path(run.root), PENDULUM_GIN, name="pendulum")
    assert server.wait(timeout=120) == 2
    line = last_line(read(log))
    print(line)
    assert line.startswith(
        f"replay_server: error: the Reverb checkpoint in {run.reverb} holds other tables than "
        f"this config's (table 'learner_feed': ['{PAIR_COLUMN} float32[2, 44]'] there, "
        f"['{PAIR_COLUMN} float32[2, 12]'] here)"
    )
    assert line.endswith(
        "use the gin config it was written with, or another --root_dir (it is " "left as it is)"
    )
    assert fingerprint(run.reverb) == before  # nothing deleted, nothing rewritten


def test_a_corrupt_checkpoint_is_refused_and_kept(processes, tmp_path):
    run = checkpointed_run(processes, tmp_path)
    (newest,) = server_checkpoints.complete_checkpoints(run.reverb)
    chunks = Path(newest) / "chunks.tfrecord"
    chunks.write_bytes(os.urandom(chunks.stat().st_size))
    before = fingerprint(run.reverb)
    server, log, _ = start(processes, Path(run.root), name="again")
    assert server.wait(timeout=120) == 2
    line = last_line(read(log))
    print(line)
    assert line.startswith(
        f"replay_server: error: cannot load the Reverb checkpoint in {run.reverb}: "
    )
    assert line.endswith("it is left as it is (move it away to start with empty tables)")
    assert fingerprint(run.reverb) == before


def test_a_checkpoint_cut_short_by_a_kill_is_passed_over(processes, tmp_path):
    """A newer checkpoint directory without Reverb's DONE file (the server was killed while
    writing it) is passed over: the server restores the last complete one."""
    run = checkpointed_run(processes, tmp_path, items=30)
    (complete,) = server_checkpoints.complete_checkpoints(run.reverb)
    partial = Path(run.reverb) / "9999-12-31T23:59:59.000000000+00:00"  # newest by name
    partial.mkdir()
    for written in Path(complete).iterdir():  # the first bytes of each file, and no DONE
        if written.name != "DONE":
            (partial / written.name).write_bytes(written.read_bytes()[:100])
    server, log, address = start(processes, Path(run.root), name="after_kill")
    wait_for_line(log, "replay_server_ready", server)
    (ready,) = reports(log, "replay_server_ready")
    assert ready["table_sizes"][tables.EXPERIENCE_TABLE] == 30
    sample = next(reverb.Client(address).sample(tables.EXPERIENCE_TABLE, 1))
    assert np.asarray(sample[0].data[0]).shape == (2, MINITAUR_PAIR_WIDTH)


def test_sigusr1_shows_the_servers_threads_and_its_stop_says_each_step(processes, tmp_path):
    """`kill -USR1` writes every thread's stack to the role's log and changes nothing else (the
    test helpers use it to explain a process that did not exit); SIGTERM then logs the stop
    request, the final checkpoint and the Reverb server's stop, in that order, and exits 0."""
    root = tmp_path / "run"
    server, log, address = start(processes, root)
    wait_for_line(log, "replay_server_ready", server)
    reverb.Client(address).insert(
        [np.zeros([2, MINITAUR_PAIR_WIDTH], np.float32)], {tables.EXPERIENCE_TABLE: 1.0}
    )
    explained = stacks_and_logs([f"{server.pid} replay_server"])
    assert f"--- pid {server.pid}, {log}:" in explained
    # faulthandler says "Current thread" only when a Python thread took the signal; the kernel
    # may hand it to one of Reverb's threads, and then every Python thread is a "Thread".
    assert "(most recent call first)" in explained, explained[-3000:]
    assert "replay_server.py" in explained, explained[-3000:]
    assert server.poll() is None
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    output = read(log)
    steps = [
        "stop requested (SIGTERM)",
        " replay_checkpoint {",
        "stopping the Reverb server",
        "Reverb server stopped",
    ]
    positions = [output.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), (positions, output[-3000:])
    (saved,) = reports(log, "replay_checkpoint")
    assert saved["table_sizes"][tables.EXPERIENCE_TABLE] == 1


@pytest.mark.parametrize("utd", ["1.0", "None"])
def test_a_checkpoint_of_the_same_config_resumes_with_its_tables(processes, tmp_path, utd):
    """smoke.gin (replay_capacity 2000) with a fixed UTD (the feed a queue of the limiter's
    slack, 100) or none (the feed a whole replay whose inserts never wait)."""
    same = (f"RunConfig.updates_per_env_step = {utd}",)
    run = checkpointed_run(processes, tmp_path, items=30, gin_bindings=same)
    server, log, address = start(processes, Path(run.root), name="same", gin_bindings=same)
    wait_for_line(log, "replay_server_ready", server)
    (ready,) = reports(log, "replay_server_ready")
    assert ready["table_sizes"][tables.EXPERIENCE_TABLE] == 30
    assert pair_numbers(address, 200) <= set(range(30))
    info = reverb.Client(address).server_info(timeout=30)
    assert info[tables.EXPERIENCE_TABLE].max_size == 2000
    limiter = info[tables.FEED_TABLE].rate_limiter_info
    if utd == "None":
        assert info[tables.FEED_TABLE].max_size == 2000
        assert limiter.max_diff > 1e300
    else:
        assert info[tables.FEED_TABLE].max_size == 100
        assert (limiter.min_diff, limiter.max_diff) == (0, 100)


def test_a_checkpoint_of_other_table_settings_is_refused_and_kept(processes, tmp_path):
    """Tables checkpointed without a UTD and with 3000 pairs, restarted under smoke.gin (UTD
    1.0, 2000 pairs): Reverb would restore the checkpoint's sizes and limiters (the feed
    unbounded, so the ratio is not held); the server refuses with one line naming each
    difference, exit code 2 (the launcher does not restart it), and touches nothing."""
    run = checkpointed_run(
        processes,
        tmp_path,
        gin_bindings=("RunConfig.updates_per_env_step = None", "RunConfig.replay_capacity = 3000"),
    )
    before = fingerprint(run.reverb)
    server, log, _ = start(processes, Path(run.root), name="smoke")
    code = server.wait(timeout=120)
    output = read(log)
    line = last_line(output)
    print(code, line)
    assert code == 2 == CONFIG_ERROR_EXIT_CODE, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert line == (
        f"replay_server: error: the Reverb checkpoint in {run.reverb} holds tables of another "
        "config (learner_feed max_size: 3000 there, 100 in this config; learner_feed rate "
        "limiter: MinSize(1) there, Queue(100) in this config; uniform_table max_size: 3000 "
        "there, 2000 in this config); use the gin config it was written with, or another "
        "--root_dir (it is left as it is)"
    )
    assert not reports(log, "replay_server_ready")
    assert fingerprint(run.reverb) == before


# What this project's server ran before it pinned TZ: plain Reverb, naming each checkpoint by
# the local time. Writes 30 numbered pairs and checkpoints them to the directory argv[1].
REVERB_UNDER_LOCAL_TIME = f"""
import sys
import numpy as np
import reverb
from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
builder = Builder(load_gin([{SMOKE_GIN!r}], []))
checkpointer = reverb.checkpointers.DefaultCheckpointer(path=sys.argv[1])
server = reverb.Server(builder.make_tables(), port=None, checkpointer=checkpointer)
client = reverb.Client(f"localhost:{{server.port}}")
for number in range(30):
    pair = np.full([2, {MINITAUR_PAIR_WIDTH}], number, np.float32)
    client.insert([pair], {{{tables.EXPERIENCE_TABLE!r}: 1.0}})
print("checkpoint:", client.checkpoint(), flush=True)
server.stop()
"""


@pytest.mark.parametrize("first_writer", ["replay_server", "reverb_under_local_time"])
def test_a_time_zone_change_keeps_and_restores_the_newest_checkpoint(
    processes, tmp_path, first_writer
):
    """30 pairs checkpointed under TZ=Etc/GMT-5 (UTC+5), by the server or by plain Reverb as
    older versions of it did; then 20 more by a server under UTC. Reverb names a checkpoint by
    its local time, keeps only the newest by name and restores the newest by name: the fresh
    one, 5 hours "older" by name, was deleted as soon as it was written. Now the newest is the
    one kept and the one a third start (under UTC+5 again) restores."""
    utc_plus_5 = {"TZ": "Etc/GMT-5"}
    if first_writer == "replay_server":
        run = checkpointed_run(processes, tmp_path, items=30, env=utc_plus_5)
        (first,) = server_checkpoints.complete_checkpoints(run.reverb)
        assert first.endswith("+00:00"), first  # the server runs in UTC whatever its TZ
    else:
        run = RunDir(str(tmp_path / "run")).create()
        log = tmp_path / "reverb.log"
        writer = processes.start(
            [sys.executable, "-c", REVERB_UNDER_LOCAL_TIME, run.reverb], log, env=utc_plus_5
        )
        assert writer.wait(timeout=120) == 0, read(log)[-3000:]
        (first,) = server_checkpoints.complete_checkpoints(run.reverb)
        assert first.endswith("+05:00"), first
    server, log, address = start(processes, Path(run.root), name="utc", env={"TZ": "UTC"})
    wait_for_line(log, "replay_server_ready", server)
    if first_writer != "replay_server":  # named in UTC+5: renamed to the same instant in UTC
        renamed = f"{os.path.basename(first)} (written under another UTC offset) renamed "
        assert renamed + server_checkpoints.utc_name(os.path.basename(first)) in read(log)
    insert_pairs(address, 30, 20)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0, read(log)[-3000:]
    (saved,) = reports(log, "replay_checkpoint")
    assert saved["table_sizes"][tables.EXPERIENCE_TABLE] == 50
    kept = server_checkpoints.complete_checkpoints(run.reverb)
    print(f"written: {saved['path']}; kept: {kept}")
    assert kept == [saved["path"]]  # the fresh one kept; the older deleted by Reverb
    assert os.listdir(run.reverb) == [os.path.basename(saved["path"])]
    third, third_log, address = start(processes, Path(run.root), name="third", env=utc_plus_5)
    wait_for_line(third_log, "replay_server_ready", third)
    (ready,) = reports(third_log, "replay_server_ready")
    assert ready["table_sizes"][tables.EXPERIENCE_TABLE] == 50
    assert pair_numbers(address, 400) & set(range(30, 50))


def test_a_stop_during_a_periodic_checkpoint_writes_no_second_one(processes, tmp_path):
    """SIGTERM while a periodic checkpoint is under way (made 8 s slow): the server waited
    for it, then wrote a whole second one (16 s in all; a big table's two would outlast the
    launcher's 120 s grace). Now the one under way is the final one."""
    root = tmp_path / "run"
    slow = (
        "RunConfig.replay_checkpoint_interval_s = 2",
        "FaultInjection.replay_checkpoint_delay_s = 8",
    )
    server, log, address = start(processes, root, gin_bindings=slow)
    wait_for_line(log, "replay_server_ready", server)
    insert_pairs(address, 0, 30)
    wait_for_line(log, "writing a replay checkpoint", server, timeout_s=30)
    sent = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0, read(log)[-3000:]
    took = time.monotonic() - sent
    saved = reports(log, "replay_checkpoint")
    print(f"exited {took:.1f} s after SIGTERM; checkpoints written: {len(saved)}")
    assert len(saved) == 1, read(log)[-3000:]
    assert took < 8 + 5, read(log)[-3000:]
    assert saved[0]["table_sizes"][tables.EXPERIENCE_TABLE] == 30
    again, again_log, _ = start(processes, root, name="again")
    wait_for_line(again_log, "replay_server_ready", again)
    (ready,) = reports(again_log, "replay_server_ready")
    assert ready["table_sizes"][tables.EXPERIENCE_TABLE] == 30
