"""The replay server's checkpoints: another config's or a corrupt one is refused with one line
and left in place; one cut short by a kill is passed over for the last complete one; its stop
says each step, and SIGUSR1 shows where its threads are."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import numpy as np
import reverb

from distributed_sac.layout import RunDir
from distributed_sac.replay import server_checkpoints, tables
from distributed_sac.transitions import PAIR_COLUMN
from tests.conftest import (
    PENDULUM_GIN,
    SMOKE_GIN,
    free_port,
    last_line,
    read,
    reports,
    stacks_and_logs,
    wait_for_line,
)

MINITAUR_PAIR_WIDTH = 44  # smoke.gin: observation 28 + action 8 + step fields + pair number 4


def start(processes, root, gin_file=SMOKE_GIN, name="server"):
    port = free_port()
    log = root.parent / f"{name}.log"
    args = ["--gin_file", gin_file, "--port", str(port), "--root_dir", str(root)]
    process = processes.role("replay_server", args, log)
    return process, log, f"localhost:{port}"


def checkpointed_run(processes, tmp_path, items=30) -> RunDir:
    """A root_dir whose replay server checkpointed `items` pairs on SIGTERM."""
    root = tmp_path / "run"
    server, log, address = start(processes, root)
    wait_for_line(log, "replay_server_ready", server)
    client = reverb.Client(address)
    for number in range(items):
        pair = np.full([2, MINITAUR_PAIR_WIDTH], number, np.float32)
        client.insert([pair], {tables.EXPERIENCE_TABLE: 1.0})
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
    assert "Current thread" in explained and "replay_server.py" in explained, explained[-3000:]
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
