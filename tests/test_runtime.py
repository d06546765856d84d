"""The runtime's helpers: the stop request (real signals to a real child process), the bounded
wait and the windowed rate (on the real clock), and the command lines."""

from __future__ import annotations

import signal
import socket
import sys
import textwrap
import time

import pytest

from distributed_sac.runtime.processes import free_port, gin_flags, module_command
from distributed_sac.runtime.rates import WindowedRate, per_second
from distributed_sac.runtime.waits import poll_until
from tests.conftest import read, wait_for_line

# A child that makes a StopRequest, says so, and reports each signal from its callback; it
# ends after `signals` of them (with its StopRequest, a stop signal does not end it).
STOPPING_CHILD = """
import signal, sys, time
from absl import logging
from distributed_sac.runtime.stopping import StopRequest

logging.set_verbosity(logging.INFO)
expected = int(sys.argv[1])
stop = StopRequest(
    "at the test's end",
    on_request=lambda: print("callback", len(stop.signals), flush=True),
)
print("requested before any signal:", stop.requested, flush=True)
started = time.monotonic()
print("waited", stop.wait(0.3), round(time.monotonic() - started, 2), flush=True)
print("ready", flush=True)
started = time.monotonic()
stop.wait(60)
print("first stop after", round(time.monotonic() - started, 2), flush=True)
while len(stop.signals) < expected:
    time.sleep(0.05)
names = [signal.Signals(signum).name for signum in stop.signals]
print("stopped by", " ".join(names), "at set:", stop.at is not None, flush=True)
"""


def start_stopping_child(processes, tmp_path, signals: int):
    log = tmp_path / "child.log"
    child = processes.start(
        [sys.executable, "-c", textwrap.dedent(STOPPING_CHILD), str(signals)], log
    )
    wait_for_line(log, "ready", child, timeout_s=60)
    return child, log


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda signum: signum.name
)
def test_a_stop_signal_sets_the_request_instead_of_ending_the_process(processes, tmp_path, signum):
    child, log = start_stopping_child(processes, tmp_path, 1)
    child.send_signal(signum)
    assert child.wait(timeout=30) == 0, read(log)
    output = read(log)
    assert "requested before any signal: False" in output
    assert f"got {signum.name}; stopping at the test's end" in output  # the `when` log line
    assert "callback 1" in output
    assert f"stopped by {signum.name} at set: True" in output
    # wait() returns at the signal, not at its timeout; without one, it waits its timeout out.
    first_stop_s = float(output.split("first stop after ")[1].split()[0])
    assert first_stop_s < 10, output
    waited, waited_s = output.split("waited ")[1].split()[:2]
    assert waited == "False" and 0.3 <= float(waited_s) < 5, output


def test_the_stop_request_counts_signals_for_a_second_one(processes, tmp_path):
    """The launcher kills its roles at a second signal: the callback sees the count."""
    child, log = start_stopping_child(processes, tmp_path, 2)
    child.send_signal(signal.SIGTERM)
    wait_for_line(log, "callback 1", child, timeout_s=30)
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == 0, read(log)
    output = read(log)
    assert "callback 2" in output
    assert "stopped by SIGTERM SIGINT at set: True" in output


def test_poll_until_returns_the_first_truthy_value_once_it_holds():
    started = time.monotonic()
    value = poll_until(lambda: time.monotonic() - started >= 0.3 and ["it holds"], 30, 0.05)
    took = time.monotonic() - started
    assert value == ["it holds"]
    assert 0.3 <= took < 5


def test_poll_until_gives_the_last_falsy_value_at_its_deadline():
    calls = []
    started = time.monotonic()
    value = poll_until(lambda: calls.append(time.monotonic()) or [], 0.5, 0.1)
    took = time.monotonic() - started
    assert value == []
    assert 0.5 <= took < 5
    assert calls[-1] - started >= 0.5  # once more at the deadline
    assert 2 <= len(calls) <= 7  # every 0.1 s, not busy


def test_poll_until_calls_the_condition_once_without_time_and_lets_it_give_up():
    assert poll_until(lambda: "at once", 0) == "at once"
    assert poll_until(lambda: 0, 0) == 0

    def exited():
        raise RuntimeError("the process exited")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        poll_until(exited, 30)
    assert time.monotonic() - started < 1


def test_rate_since_the_previous_mark():
    rate = WindowedRate()
    assert rate.count is None and rate.per_s() is None
    started = time.monotonic()
    assert rate.mark(1000) is None  # one mark: no rate yet
    time.sleep(0.2)
    first = rate.mark(1100)
    assert 100 / (time.monotonic() - started) <= first <= 100 / 0.2
    time.sleep(0.2)
    second = rate.mark(1150)  # the interval since the previous mark only
    assert second <= 50 / 0.2
    assert rate.count == 1150


def test_rate_over_a_sliding_window():
    rate = WindowedRate(window_s=1.0)
    rate.mark(0)
    time.sleep(0.6)
    rate.mark(1000)
    assert rate.per_s() <= 1000 / 0.6
    time.sleep(0.6)
    # The first mark is over 1 s old now: the rate is the last 100 over 0.6 s, not 1100 over 1.2.
    latest = rate.mark(1100)
    assert latest is None or latest <= 100 / 0.6  # None: the second mark aged out too (load)


def test_per_second_between_two_marks():
    assert per_second((10.0, 100), (12.0, 300)) == 100.0
    assert per_second((10.0, 300), (12.0, 100)) is None  # went back: its source restarted
    assert per_second((10.0, None), (12.0, 100)) is None
    assert per_second((10.0, 100), (10.0, 100)) == 0.0  # no time between: no division by zero


def test_command_lines():
    assert module_command("tools.launcher", ["--port", "1"]) == [
        sys.executable,
        "-m",
        "distributed_sac.tools.launcher",
        "--port",
        "1",
    ]
    assert gin_flags(["a.gin", "b.gin"], ["X.y = 1"]) == [
        "--gin_file",
        "a.gin",
        "--gin_file",
        "b.gin",
        "--gin_bindings",
        "X.y = 1",
    ]
    assert gin_flags((), ["X.y = 1", "X.z = 2"]) == [
        "--gin_bindings",
        "X.y = 1",
        "--gin_bindings",
        "X.z = 2",
    ]
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))  # free: a server can listen on it
