"""Shared test helpers: free ports and role processes that are always stopped."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from distributed_sac.layout import RunDir
from distributed_sac.reports import fields_of
from distributed_sac.runtime.processes import (
    Process,
    die_with_parent,
    free_port,
    gin_flags,
    module_command,
    stop,
)
from distributed_sac.runtime.waits import poll_until
from distributed_sac.tools.cluster import ROLE_MODULES
from tests.podman import build_image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO_ROOT, "gin")
SMOKE_GIN = os.path.join(GIN_DIR, "smoke.gin")
PENDULUM_GIN = os.path.join(GIN_DIR, "pendulum.gin")
LOCAL_SH = os.path.join(REPO_ROOT, "launch", "local.sh")
# The best policy of a run of the default config, committed for users to play (README).
SHIPPED_POLICY = os.path.join(REPO_ROOT, "docs", "minitaur_default_policy")


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"pytest got {signal.Signals(signum).name}")


def pytest_configure(config):
    # A SIGTERM'd pytest tears its fixtures down (stopping every process, container and network
    # namespace they made) instead of dying on the spot. Were pytest SIGKILLed, every process
    # started here still gets SIGTERM from the kernel (distributed_sac.runtime.processes), and the
    # container and namespace fixtures remove what a killed run left behind.
    signal.signal(signal.SIGTERM, _interrupt)


# Tests that share a session (or module) fixture run on one pytest-xdist worker
# (launch/test.sh: -n 3 --dist loadgroup), which then makes that fixture once.
SHARED_FIXTURE_GROUPS = {
    "smoke_run": "smoke_run",
    "podman_env": "podman",
}


def pytest_addoption(parser):
    parser.addoption(
        "--cpu_times",
        metavar="FILE",
        help="append each test's CPU seconds (its own and its reaped processes') and wall time "
        "to FILE as JSON lines (what docs/testing.md's CPU table comes from)",
    )


def _cpu_seconds() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With --cpu_times: the suite is bound by CPU, so a test's cost is its CPU seconds, not its
    wall time beside another worker's test. A process a test starts counts once reaped (every
    Processes entry and subprocess.run is)."""
    path = item.config.getoption("cpu_times")
    if not path:
        yield
        return
    (own0, children0), began = _cpu_seconds(), time.monotonic()
    yield
    own1, children1 = _cpu_seconds()
    line = {
        "test": item.nodeid,
        "cpu_s": round(own1 - own0 + children1 - children0, 1),
        "wall_s": round(time.monotonic() - began, 1),
    }
    with open(path, "a") as f:  # each worker appends whole lines
        f.write(json.dumps(line) + "\n")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items if config.pluginmanager.hasplugin("xdist") else ():
        group = next((g for f, g in SHARED_FIXTURE_GROUPS.items() if f in item.fixturenames), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    # The slow tests first, so that the workers do not end on one long test each after the other
    # ran out of work. A stable sort: the same order on every worker, as xdist requires.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class Processes:
    """Starts commands through distributed_sac.runtime.processes (each dies with pytest, even a
    killed one) and stops every one of them, with its process group, at teardown."""

    def __init__(self):
        self.started: list[Process] = []

    def start(self, args, log_path, env=None, cwd=REPO_ROOT) -> Process:
        """Runs `args` with stdout and stderr appended to `log_path` (or written to it, when it
        is an open file descriptor such as a pseudo-terminal)."""
        log = log_path if isinstance(log_path, int) else str(log_path)
        process = Process(args, log, env=env, cwd=cwd)
        self.started.append(process)
        return process

    def role(self, role, args, log_path, env=None) -> Process:
        """A role (replay_server, learner, collector, evaluator) as the launcher starts it."""
        return self.start(module_command(ROLE_MODULES[role], args), log_path, env=env)

    def stop_all(self):
        stop(self.started, grace_s=10, group=True)


@pytest.fixture
def processes():
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for_line(path, needle, proc=None, timeout_s=120):
    """Waits until `needle` appears in the file at `path`; fails if `proc` exits first."""

    def seen() -> bool:
        return os.path.exists(path) and needle in read(path)

    if poll_until(lambda: seen() or (proc is not None and proc.poll() is not None), timeout_s):
        if seen():
            return
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
    proc = processes.role(
        "replay_server", [*gin_flags([gin_file], bindings), "--port", str(port)], log
    )
    wait_for_line(log, "replay_server_ready", proc)
    return f"localhost:{port}", proc, log


def run_processes_of(root_dir) -> list[str]:
    result = run_to_end(["pgrep", "-af", str(root_dir)], 30)
    return [line for line in result.stdout.splitlines() if "pgrep" not in line]


def stacks_and_logs(process_lines) -> str:
    """For processes that should have exited (pgrep -af lines): each one's thread stacks (a
    role's SIGUSR1 handler writes them to its log, see entrypoint.run) and its log's tail, so a
    failure says where they were."""
    logs = {}
    for line in process_lines:
        pid = int(line.split()[0])
        try:
            logs[pid] = os.readlink(f"/proc/{pid}/fd/1")
            os.kill(pid, signal.SIGUSR1)
        except OSError:  # gone meanwhile
            pass
    time.sleep(1.0)
    return "\n".join(
        f"--- pid {pid}, {log}:\n{read(log)[-6000:] if os.path.isfile(log) else '(not a file)'}"
        for pid, log in logs.items()
    )


def reports(log_path, event) -> list[dict]:
    """The fields of every `event` report line in a log; [] before it exists."""
    return fields_of(str(log_path), event)


# The launcher as local.sh runs it, without local.sh's venv check: in this Python.
LAUNCHER_MODULE = tuple(module_command("tools.launcher"))


def launch(processes, root_dir, *extra, out=None, command=(LOCAL_SH,)):
    """launch/local.sh (or `command`) on the smoke config; its output goes to `out` (default:
    beside root_dir, <name>-launcher.out). Returns (process, output path)."""
    root_dir.mkdir(parents=True, exist_ok=True)
    args = [
        *command,
        "--gin_file",
        SMOKE_GIN,
        "--root_dir",
        str(root_dir),
        "--port",
        str(free_port()),
        *extra,
    ]
    out = out or root_dir.parent / f"{root_dir.name}-launcher.out"
    return processes.start(args, out), out


@pytest.fixture
def no_leftovers(tmp_path, processes):
    """After the test, once its processes are stopped, no process of the run may remain."""
    yield
    processes.stop_all()
    # Roles stopped by their parent's death exit on their own.
    poll_until(lambda: not run_processes_of(tmp_path), 10)
    leftovers = run_processes_of(tmp_path)
    explained = stacks_and_logs(leftovers) if leftovers else ""
    for line in leftovers:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, f"processes left behind: {leftovers}\n{explained}"


class SmokeRun(NamedTuple):
    root: Path  # its root_dir
    output: str  # what the launcher printed
    code: int  # the launcher's exit code


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """One finished smoke run for the whole session (launch/local.sh --gin_file gin/smoke.gin
    --num_collectors 2 --evaluator_nice 3, ~1 min): test_cluster checks the run itself, the plot
    and play tests use its eval/metrics.jsonl and policies/greedy_policy."""
    procs = Processes()
    root = tmp_path_factory.mktemp("smoke") / "run"
    try:
        launcher, out = launch(procs, root, "--num_collectors", "2", "--evaluator_nice", "3")
        try:
            code = launcher.wait(timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the smoke run did not finish in 600 s:\n{read(out)[-3000:]}")
    finally:
        procs.stop_all()
    return SmokeRun(root, read(out), code)


@pytest.fixture
def smoke_root(smoke_run) -> Path:
    """The root_dir of the session's smoke run, which must have finished cleanly."""
    assert smoke_run.code == 0, smoke_run.output[-3000:]
    return smoke_run.root


def run_to_end(command, timeout_s=120, cwd=REPO_ROOT, env=None):
    """Runs `command` to completion (bounded, and dying with pytest) in `cwd`, in `env`
    (default: this process's environment); the result, with stdout and stderr apart."""
    return subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        env=env,
        preexec_fn=die_with_parent,
    )


def run_tool(module, args, timeout_s=300, prefix=(), env=None):
    """`python -m distributed_sac.<module> args`, run to the end (run_to_end)."""
    return run_to_end([*prefix, *module_command(module, args)], timeout_s, env=env)


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


def run_python(code: str, timeout_s=60, cwd=REPO_ROOT):
    """`python -c code`, run to the end (run_to_end)."""
    return run_to_end([sys.executable, "-c", code], timeout_s, cwd)


def one_error_line(result, tool: str) -> str:
    """The single stderr line of a tool's bad-input exit (code 2, no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{tool}: error: "), lines[0]
    return lines[0]


def standalone_action(policy_dir, cwd) -> list[float]:
    """Runs README's standalone-policy snippet on `policy_dir` in a fresh Python that imports
    neither tf_agents nor this package; the action it prints for an all-zero observation."""
    readme = read(os.path.join(REPO_ROOT, "README.md"))
    snippet = readme.split("<!-- standalone policy -->\n```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace("runs/x/policies/best_greedy_policy", str(policy_dir))
    check = "\nimport sys\nassert not {'tf_agents', 'distributed_sac'} & set(sys.modules)\n"
    result = run_python(snippet + check, timeout_s=120, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    # numpy prints "[[ 0.05 -0.03 ...]]": the numbers of the action.
    return [float(x) for x in re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", result.stdout)]


RUN_TIMEOUT_S = 420


def bindings(*lines: str) -> list[str]:
    return gin_flags((), lines)


def wait_until(condition, what: str, process, timeout_s: float = 240, log=None):
    """Polls `condition` until it returns something truthy, and returns that; fails if `process`
    (the launcher, a role) exits first or after `timeout_s`, saying `what` it waited for, with
    the tail of the file `log` when given."""

    def failure(message: str) -> AssertionError:
        return AssertionError(message + (f"; {log}:\n{read(log)[-3000:]}" if log else ""))

    def holds():
        value = condition()
        if not value and process.poll() is not None:
            raise failure(f"{process.name} exited ({process.returncode}) before {what}")
        return value

    value = poll_until(holds, timeout_s)
    if not value:
        raise failure(f"timed out after {timeout_s}s waiting for {what}")
    return value


def pid_of(root, role: str) -> int:
    (pid,) = [
        int(line.split()[0])
        for line in run_processes_of(root)
        if f"distributed_sac.{ROLE_MODULES[role]} " in line
    ]
    return pid


def finish(launcher, out) -> str:
    code = launcher.wait(timeout=RUN_TIMEOUT_S)
    output = read(out)
    assert code == 0, output[-3000:]
    assert "all roles exited cleanly" in output
    return output


def start_by_hand(processes, tmp_path, *extra_bindings, root=None):
    """Server, learner and one collector started by hand on the smoke config (no launcher to
    restart anything), with short connect and call timeouts, the learner's run under `root`
    (default tmp_path/run), logs in tmp_path; (server, learner, collector, run)."""
    address, server, _ = start_server(processes, tmp_path)
    run = RunDir(str(root or tmp_path / "run"))
    common = [
        "--gin_file",
        SMOKE_GIN,
        "--replay_server_address",
        address,
        *bindings(
            "RunConfig.num_iterations = 100000",
            "RunConfig.connect_timeout_s = 10",
            "RunConfig.server_call_timeout_s = 5",
            *extra_bindings,
        ),
    ]
    learner = processes.role("learner", [*common, "--root_dir", run.root], tmp_path / "learner.log")
    collector = processes.role("collector", [*common, "--task", "0"], tmp_path / "collector.log")
    log = tmp_path / "learner.log"
    wait_until(lambda: reports(log, "learner_progress"), "training", learner, log=log)
    return server, learner, collector, run


@pytest.fixture(scope="session")
def podman_env() -> dict:
    """The image, built once for the session; the environment that points podman at it."""
    return build_image()
