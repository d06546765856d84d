"""Starting and stopping processes: every role, benchmark part and test process goes through here,
and its command line (`python -m distributed_sac.<module>`, the gin flags, a free port) is made
here.

A process started here gets SIGTERM from the kernel when its parent dies (so a launcher, a
benchmark or pytest killed outright leaves nothing behind), leads its own process group (a Ctrl-C
at the terminal reaches the parent only, which stops its children in order), and is stopped with
SIGTERM, a bounded wait, then SIGKILL.

It stays in its parent's session on purpose. Linux's autogroup scheduler shares the CPU fairly
between sessions, not threads: with every role in a session of its own, the learner's TensorFlow
threads got one third of the 2 cores beside a collector and the replay server, and the cluster
trained slower than with the roles in one session (docs/performance.md has the figures).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

from distributed_sac.reports import ReportTail, failure_line

_PR_SET_PDEATHSIG = 1
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def module_command(module: str, args: Sequence[str] = ()) -> list[str]:
    """`python -m distributed_sac.<module> args`, in this Python."""
    return [sys.executable, "-m", f"distributed_sac.{module}", *args]


def gin_flags(gin_files: Iterable[str], bindings: Iterable[str] = ()) -> list[str]:
    """The flags that give a role, a tool or the launcher this config: `--gin_file F` for each
    file, then `--gin_bindings B` for each binding."""
    flags = []
    for path in gin_files:
        flags += ["--gin_file", path]
    for binding in bindings:
        flags += ["--gin_bindings", binding]
    return flags


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server about to be started."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_parent() -> None:
    """A preexec_fn: the kernel sends this process SIGTERM when its parent dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _own_group_dying_with_parent() -> None:
    os.setpgid(0, 0)
    die_with_parent()


def describe_exit(code: int) -> str:
    """'code 1', or for a process killed by a signal, 'signal SIGKILL'."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces, in
    parentheses): state first, then the parent's pid; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _status(pid: int) -> dict[str, str] | None:
    """/proc/<pid>/status as {field: value}; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return {key: value.strip() for key, value in (line.split(":", 1) for line in status)}
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def usage(pid: int) -> dict | None:
    """What process `pid` holds now: resident memory (MiB), open file descriptors and threads;
    None once it has exited."""
    fields = _status(pid)
    try:
        if fields is None or fields["State"].split()[0] == "Z":
            return None
        return {
            "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"]),
        }
    except (OSError, KeyError, ValueError):
        return None


def peak_rss_mb(pid: int) -> float | None:
    """Process `pid`'s peak resident memory so far (the kernel's VmHWM), MiB; None once it has
    exited."""
    fields = _status(pid)
    try:
        return int(fields["VmHWM"].split()[0]) / 1024
    except (TypeError, KeyError, ValueError):
        return None


def children(pid: int) -> dict[int, list[str]]:
    """{pid: command line} of the live processes whose parent is `pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if not fields or len(fields) < 2 or fields[1] != str(pid):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found[int(entry)] = cmdline.read().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
    return found


class Process:
    """A started command with its output appended to a log file (or written to an open fd);
    `pass_fds` stay open in it (the run lock)."""

    def __init__(
        self,
        args: Sequence[str],
        log: str | int,
        env: dict | None = None,
        cwd: str = REPO_ROOT,
        name: str | None = None,
        pass_fds: Sequence[int] = (),
    ):
        self.args = list(args)
        self.name = name or os.path.basename(self.args[0])
        self.log_path = log if isinstance(log, str) else None
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        output = open(log, "ab") if isinstance(log, str) else log
        try:
            # Logs are appended across restarts: read only this process's part of the file.
            self.log_offset = output.tell() if isinstance(log, str) else 0
            self.popen = subprocess.Popen(
                self.args,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                pass_fds=tuple(pass_fds),
                preexec_fn=_own_group_dying_with_parent,
            )
        finally:
            if isinstance(log, str):
                output.close()
        self._tail = ReportTail(self.log_path, self.log_offset) if self.log_path else None

    @classmethod
    def module(cls, module: str, args: Sequence[str], log: str | int, **kwargs) -> Process:
        """`python -m distributed_sac.<module> args`."""
        name = kwargs.pop("name", module.rsplit(".", 1)[-1])
        return cls(module_command(module, args), log, name=name, **kwargs)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system, all its threads) it has used so far; None once it has exited."""
        fields = _stat(self.pid)
        try:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (TypeError, IndexError, ValueError):
            return None

    def peak_rss_mb(self) -> float | None:
        """Its peak resident memory so far (the kernel's VmHWM), MiB; None once it has exited."""
        return peak_rss_mb(self.pid)

    def output(self) -> str:
        """What this process has written to its log so far."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def new_reports(self, *events: str) -> list[tuple[str, dict]]:
        """The reports of `events` this process wrote since the last call."""
        return self._tail.new_reports(*events)

    def failure(self, program: str | None = None) -> str | None:
        """Its one-line error or the last line of its traceback; None if it wrote neither."""
        return failure_line(self.output(), program or self.name)

    def send_signal(self, signum: int = signal.SIGTERM, group: bool = False) -> None:
        """Sends `signum` to the process (or its whole process group) if it still runs."""
        if self.poll() is not None:
            return
        if group:
            signal_group(self.pid, signum)
            return
        try:
            self.popen.send_signal(signum)
        except ProcessLookupError:
            pass


def signal_group(pid: int, signum: int) -> None:
    """Sends `signum` to the process group `pid` leads, if any of it is left."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run_bounded(
    args: Sequence[str],
    timeout_s: float,
    env: dict | None = None,
    cwd: str = REPO_ROOT,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Runs `args` to its end, stdout and stderr captured as text. It leads its own process group
    and dies with its parent; past `timeout_s` the whole group is killed (a child it started, such
    as podman-compose's podman, included) and subprocess.TimeoutExpired raised with its output."""
    popen = subprocess.Popen(
        list(args),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        preexec_fn=_own_group_dying_with_parent,
    )
    try:
        stdout, stderr = popen.communicate(input, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(popen.pid, signal.SIGKILL)
        stdout, stderr = popen.communicate()
        raise subprocess.TimeoutExpired(popen.args, timeout_s, stdout, stderr) from None
    finally:
        if popen.poll() is None:  # interrupted (Ctrl-C, a test's failure): leave nothing behind
            signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
    return subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)


def stop(processes: Iterable[Process], grace_s: float, group: bool = False) -> None:
    """SIGTERM to each, then waits at most `grace_s` in all, then SIGKILL to what is left.
    `group`: signal each process's whole process group (its children too)."""
    processes = list(processes)
    for process in processes:
        process.send_signal(signal.SIGTERM, group)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL, group)
            process.wait()
        if group:  # children that outlived their group leader
            signal_group(process.pid, signal.SIGKILL)
