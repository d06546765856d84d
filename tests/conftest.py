"""Shared test helpers: free ports and role processes that are always stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO_ROOT, "gin")
SMOKE_GIN = os.path.join(GIN_DIR, "smoke.gin")
PENDULUM_GIN = os.path.join(GIN_DIR, "pendulum.gin")
LOCAL_SH = os.path.join(REPO_ROOT, "launch", "local.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Starts commands in their own process group and stops every one of them at teardown."""

    def __init__(self):
        self.started = []

    def start(self, args, log_path, env=None, cwd=REPO_ROOT):
        """Runs `args` with stdout and stderr appended to `log_path` (or written to it, when it
        is an open file descriptor such as a pseudo-terminal)."""
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
        log = log_path if isinstance(log_path, int) else open(log_path, "ab")
        try:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if not isinstance(log_path, int):
                log.close()
        self.started.append(proc)
        return proc

    def role(self, module, args, log_path, env=None):
        return self.start(
            [sys.executable, "-m", f"distributed_sac.{module}", *args], log_path, env=env
        )

    def stop_all(self):
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes():
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for_line(path, needle, proc=None, timeout_s=120):
    """Waits until `needle` appears in the file at `path`; fails if `proc` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                if needle in f.read():
                    return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    with open(path, errors="replace") as f:
        tail = f.read()[-3000:]
    raise AssertionError(f"{needle!r} not seen in {path}; tail:\n{tail}")


def read(path) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def start_server(processes, tmp_path, gin_file=SMOKE_GIN, bindings=()):
    """A live replay server on a free port; returns (address, process, log path)."""
    port = free_port()
    log = tmp_path / f"replay_server_{port}.log"
    args = ["--gin_file", gin_file, "--port", str(port)]
    for binding in bindings:
        args += ["--gin_bindings", binding]
    proc = processes.role("replay_server", args, log)
    wait_for_line(log, "replay_server_ready", proc)
    return f"localhost:{port}", proc, log


def run_processes_of(root_dir) -> list[str]:
    result = subprocess.run(["pgrep", "-af", str(root_dir)], capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if "pgrep" not in line]


def reports(log_path, event) -> list[dict]:
    """The fields of every `event` report line (see cli.report) in a log; [] before it exists."""
    if not os.path.exists(log_path):
        return []
    marker = f" {event} "
    return [
        json.loads(line.split(marker, 1)[1])
        for line in read(log_path).splitlines()
        if marker in line
    ]


def launch(processes, root_dir, *extra):
    root_dir.mkdir(parents=True, exist_ok=True)
    args = [
        LOCAL_SH,
        "--gin_file",
        SMOKE_GIN,
        "--root_dir",
        str(root_dir),
        "--port",
        str(free_port()),
        *extra,
    ]
    out = root_dir.parent / f"{root_dir.name}-launcher.out"
    return processes.start(args, out), out


@pytest.fixture
def no_leftovers(tmp_path, processes):
    """After the test, once its processes are stopped, no process of the run may remain."""
    yield
    processes.stop_all()
    deadline = time.monotonic() + 10  # roles stopped by their parent's death exit on their own
    while run_processes_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = run_processes_of(tmp_path)
    for line in leftovers:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A finished smoke run (launch/local.sh --gin_file gin/smoke.gin, ~1 min), once per test
    module: its root_dir, with eval/metrics.jsonl and policies/greedy_policy."""
    procs = Processes()
    root = tmp_path_factory.mktemp("smoke") / "run"
    try:
        launcher, out = launch(procs, root)
        try:
            code = launcher.wait(timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the smoke run did not finish in 600 s:\n{read(out)[-3000:]}")
        assert code == 0, read(out)[-3000:]
    finally:
        procs.stop_all()
    return root


def run_tool(module, args, timeout_s=300, prefix=()):
    """Runs `python -m distributed_sac.<module> args` to completion (bounded); the result."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", f"distributed_sac.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        cwd=REPO_ROOT,
    )


def unwritable_dir(path):
    """A directory that the command prefix returned alongside cannot write into: mode 0555, and
    for root (whom permissions do not stop) setpriv drops the capabilities that override them."""
    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() != 0:
        return path, ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a directory unwritable")
    return path, ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def one_error_line(result, tool: str) -> str:
    """The single stderr line of a tool's bad-input exit (code 2, no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{tool}: error: "), lines[0]
    return lines[0]
