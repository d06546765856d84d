"""What a user watches: status, TensorBoard summaries, the launcher's progress line."""

from __future__ import annotations

import glob
import io
import os
import pty
import re
import select
import signal
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distributed_sac.acting import evaluation
from distributed_sac.layout import RunDir
from distributed_sac.runtime.processes import module_command
from distributed_sac.tools.console import Console
from tests.conftest import (
    LOCAL_SH,
    SMOKE_GIN,
    free_port,
    last_line,
    launch,
    read,
    reports,
    run_processes_of,
    run_tool,
    wait_until,
)


def status(*args, timeout=120):
    return run_tool("tools.status", args, timeout)


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1).replace(",", ""))


def tags_under(directory) -> set[str]:
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        events = EventAccumulator(path, size_guidance={"tensors": 0})
        events.Reload()
        tags |= set(events.Tags()["tensors"]) | set(events.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_a_live_cluster_status_every_field_a_second_launcher_refused_summaries_written(
    processes, tmp_path, no_leftovers
):
    root = tmp_path / "run"
    run = RunDir(str(root))
    port = free_port()
    launcher = processes.start(
        [
            LOCAL_SH,
            "--gin_file",
            SMOKE_GIN,
            "--root_dir",
            str(root),
            "--port",
            str(port),
            "--gin_bindings",
            "RunConfig.num_iterations = 100000",
            "--gin_bindings",
            "RunConfig.replay_checkpoint_interval_s = 5",
        ],
        tmp_path / "launcher.out",
    )
    wait_until(lambda: os.path.exists(run.metrics), "an evaluation", launcher)
    wait_until(
        lambda: any(
            r["train_step"] >= 300 for r in reports(run.log("learner"), "learner_progress")
        ),
        "train_step 300",
        launcher,
    )
    wait_until(
        lambda: reports(run.log("collector-0"), "collector_progress"),
        "collector progress",
        launcher,
    )
    address = f"localhost:{port}"
    # smoke.gin's learner trains in bursts between inserts; 5 s windows hold several.
    result = status(
        "--replay_server_address", address, "--root_dir", str(root), "--interval_s", "5"
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    screen = result.stdout
    assert number(r"uniform_table ([\d,]+)/2,000", screen) > 0
    assert "variables 1/1" in screen
    assert number(r"inserts/s ([\d,.]+)", screen) > 0
    assert number(r"drained by the learner/s ([\d,.]+)", screen) > 0
    assert number(r"train_step (\d+)", screen) >= 300
    assert number(r"steps/s ([\d,.]+)   effective", screen) > 0
    # smoke.gin: 1 step per env step; with --root_dir, from the server's cumulative counters.
    assert (
        0.2
        < number(r"effective UTD ([\d.]+) train steps per inserted item over the run", screen)
        < 5
    )
    assert number(r"collector-0: env_steps ([\d,]+)", screen) > 0
    # The collector acts with pulled weights by now (the learner is past train step 300).
    assert number(r"collector-0: .* policy train step (\d+)", screen) > 0
    assert re.search(r"collector-0: .* lag [\d.]+ ", screen)
    evaluated = {e["train_step"] for e in evaluation.read_evaluations(run.metrics)[0]}
    assert number(r"last evaluation: train_step (\d+)", screen) in evaluated
    assert re.search(r"AverageReturn -?[\d.]+  AverageEpisodeLength [\d.]+", screen)
    # The replay server's newest periodic checkpoint: its size, cost and cadence.
    checkpoint = re.search(
        r"replay checkpoint: ([\d,]+) items in ([\d.]+) s, \d+s ago \(every 5 s and at exit\)",
        screen,
    )
    assert checkpoint and int(checkpoint[1].replace(",", "")) > 0, screen
    # The best policy is one of the evaluations (a later one may have replaced it since).
    best = re.search(r"best policy: AverageReturn (-?[\d.]+) at train step (\d+)", screen)
    evaluations = evaluation.read_evaluations(run.metrics)[0]
    assert (best[1], int(best[2])) in {
        (f"{e['AverageReturn']:.3f}", e["train_step"]) for e in evaluations
    }

    # A second launcher on the live root_dir is refused and leaves the run untouched (one live run
    # per root_dir; tests/test_run_lock.py has the relaunch beside an orphaned role).
    logs_before = {name: os.path.getsize(run.log(name)) for name in ("learner", "replay_server")}
    second, second_out = launch(processes, root, out=tmp_path / "second.out")
    assert second.wait(timeout=120) == 2
    line = last_line(read(second_out))
    print(line)
    assert line == (
        f"local.sh: error: --root_dir {root} is in use by a live run (launcher pid "
        f"{launcher.pid}); stop it first, or use another --root_dir"
    )
    assert launcher.poll() is None
    assert len([p for p in run_processes_of(root) if "distributed_sac.roles." in p]) == 4
    assert "replay server ready" not in read(second_out)
    wait_until(
        lambda: os.path.getsize(run.log("learner")) > logs_before["learner"],
        "the live run's learner to write on",
        launcher,
    )

    # --watch redraws until interrupted.
    watch_out = tmp_path / "watch.out"
    watch = processes.start(
        module_command(
            "tools.status", ["--replay_server_address", address, "--watch", "--interval_s", "1"]
        ),
        watch_out,
    )
    wait_until(lambda: read(watch_out).count("replay server localhost") >= 3, "3 screens", watch)
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=30) == 0, read(watch_out)

    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=30)
    assert {"Losses/critic_loss", "Losses/actor_loss", "Losses/alpha_loss"} <= tags_under(run.train)
    assert {"Policy/alpha", "Policy/entropy", "Throughput/TrainStepsPerSecond"} <= tags_under(
        run.train
    )
    assert {
        "Metrics/EpisodeReturn",
        "Metrics/EpisodeLength",
        "Throughput/EnvStepsPerSecond",
        "Throughput/PolicyLagTrainSteps",
    } <= tags_under(run.collect(0))
    assert {"Metrics/AverageReturn", "Metrics/AverageEpisodeLength"} <= tags_under(run.eval)
    assert {
        "Replay/table_size",
        "Replay/inserts_per_s",
        "Replay/drained_per_s",
        "Replay/feed_size",
        "Replay/updates_per_insert",
    } <= tags_under(run.replay)


def test_status_bad_inputs(tmp_path):
    port = free_port()  # nothing listens there
    result = status("--replay_server_address", f"localhost:{port}", "--timeout_s", "2")
    assert result.returncode == 3  # ServerUnreachable: the server may come back; not bad input
    assert re.fullmatch(
        rf"status: error: replay server at localhost:{port} unreachable after 2s \(\d attempts\)",
        result.stderr.strip(),
    ), result.stderr
    missing = tmp_path / "nope"
    result = status("--replay_server_address", "localhost:1", "--root_dir", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip() == f"status: error: --root_dir {missing} is not a directory"


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_shows_step_env_steps_rate_return_and_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("distributed_sac.tools.console.time.monotonic", lambda: clock[0])
    terminal = _FakeTerminal()
    console = Console(1000, stream=terminal)
    assert console.live
    console.update(train_step=100, env_steps=1200)
    clock[0] += 10
    console.update(train_step=300, average_return=1.25)
    assert console.progress_line() == (
        "train_step 300/1000  env steps 1,200  20.0 steps/s  AverageReturn 1.250  ETA 0m35s"
    )
    console.event("eval at train_step 300")
    # The event is a line of its own; the progress line is drawn again below it.
    assert terminal.getvalue().endswith("\r\x1b[K" + console.progress_line())
    assert "eval at train_step 300\n" in terminal.getvalue()

    plain = io.StringIO()  # not a TTY: no progress line, no escape codes
    console = Console(1000, stream=plain)
    console.update(train_step=5)
    console.event("hello")
    assert "\x1b" not in plain.getvalue() and plain.getvalue().endswith("hello\n")


@pytest.mark.slow
def test_launcher_draws_a_live_line_on_a_terminal(processes, tmp_path, no_leftovers):
    """(On a pipe it prints plain lines: test_cluster checks that.)"""
    root = tmp_path / "run"
    master, terminal = pty.openpty()
    args = [LOCAL_SH, "--gin_file", SMOKE_GIN, "--root_dir", str(root), "--port", str(free_port())]
    launcher = processes.start(args, terminal)
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 420
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the launcher has exited
                    break
                if not chunk:
                    break
                output += chunk
            elif launcher.poll() is not None:
                break
    finally:
        os.close(master)
    assert launcher.wait(timeout=30) == 0, output[-2000:]
    text = output.decode(errors="replace")
    assert "all roles exited cleanly" in text
    redraws = re.findall(r"\r\x1b\[Ktrain_step (\d+)/300[^\r\n]*", text)
    assert len(redraws) >= 3, text[-2000:]
    assert re.search(r"\r\x1b\[Ktrain_step \d+/300  env steps [\d,]+  [\d.]+ steps/s", text)
    assert "ETA" in text
    assert not re.search(r"\] train_step \d+/300  loss", text)  # no plain progress lines
    assert last_line(text.replace("\r\x1b[K", "\n")).endswith("all roles exited cleanly")
