"""What the benchmarks share: parts run in fresh processes, role processes and the launcher on
127.0.0.1, machine facts, config checks."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from distributed_sac.runtime.processes import free_port, gin_flags  # noqa: E402
from distributed_sac.runtime.waits import poll_until  # noqa: E402

TUTORIAL_GIN = os.path.join(REPO, "gin", "minitaur_tutorial.gin")
SMOKE_GIN = os.path.join(REPO, "gin", "smoke.gin")
RESULT_PREFIX = "RESULT "


def fail(program: str, message: str):
    """Stops the benchmark with one line on stderr and exit code 1."""
    raise SystemExit(f"{program}: error: {message}")


def add_gin_arguments(parser) -> None:
    """--gin_file and --gin_bindings (repeatable; --gin_binding too), as the roles spell them."""
    parser.add_argument("--gin_file", default=TUTORIAL_GIN)
    parser.add_argument("--gin_bindings", "--gin_binding", action="append", default=[])


def load_config(gin_file: str, bindings=()):
    from distributed_sac.config import load_gin

    return load_gin([gin_file], list(bindings))


def check_config(program: str, gin_file: str, bindings) -> None:
    """A missing gin file or bad binding stops the benchmark in one line, before any work."""
    if not os.path.isfile(gin_file):
        fail(program, f"gin file not found: {gin_file}")
    from distributed_sac.config import UserError

    try:
        load_config(gin_file, bindings)
    except UserError as error:
        fail(program, str(error))


def run_part(program: str, script: str, part: str, log_path: str, **kwargs) -> dict:
    """Runs `script --part part` in a fresh Python process (so no part inherits another's
    threads, memory or TensorFlow state), its output in `log_path`; returns the figures it
    printed."""
    from distributed_sac.runtime.processes import Process

    command = [sys.executable, script, "--part", part, "--part_args", json.dumps(kwargs)]
    process = Process(command, log_path, name=part)
    code = process.wait()
    output = process.output()
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if code != 0 or not lines:
        tail = "\n".join(output.strip().splitlines()[-5:])
        fail(program, f"part {part} failed (exit {code}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def serve_part(parts: dict, part: str, part_args: str) -> None:
    """In the child process: runs one part and prints its figures for `run_part`."""
    print(RESULT_PREFIX + json.dumps(parts[part](**json.loads(part_args))), flush=True)


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def parser(program: str, doc: str, quick_help: str, root_dir: bool = True):
    """A benchmark's argument parser: the gin arguments, --output, --quick and (for those that
    keep a run) --root_dir; the benchmark adds its own."""
    import argparse

    parser = argparse.ArgumentParser(prog=program, description=doc.splitlines()[0])
    add_gin_arguments(parser)
    if root_dir:
        parser.add_argument("--root_dir", default=None, help="run dir (default: a new temp dir)")
    parser.add_argument("--output", default=None, help="JSON file for the figures")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def provenance(gin_file: str, bindings) -> dict:
    """What a benchmark's JSON says of where and on what it ran."""
    return {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "gin_file": os.path.relpath(os.path.abspath(gin_file), REPO),
        "gin_bindings": list(bindings),
    }


def write_figures(path: str | None, figures: dict) -> None:
    """The figures as JSON to `path` (nothing without one), and a line saying where."""
    if path:
        with open(path, "w") as out:
            json.dump(figures, out, indent=1)
        print(f"figures: {path}")


class LauncherRun:
    """The launcher (what launch/local.sh runs) on a config in its own process, its output in
    <root_dir>/launcher.out, and a bounded client on its replay server once that answers."""

    def __init__(self, program: str, root_dir: str, num_collectors: int, launcher_args: list):
        from distributed_sac.runtime import processes

        self.program, self.root_dir = program, root_dir
        self.port = free_port()
        self.log_path = os.path.join(root_dir, "launcher.out")
        args = ["--root_dir", root_dir, "--port", str(self.port)]
        args += ["--num_collectors", str(num_collectors), *launcher_args]
        self.process = processes.Process.module("tools.launcher", args, self.log_path)
        self._server = None

    def check_running(self) -> None:
        """Stops the benchmark in one line if the launcher has exited."""
        if self.process.poll() is not None:
            error = self.process.failure("local.sh") or "no error line"
            fail(
                self.program,
                f"launcher exited with {self.process.returncode}: {error} ({self.log_path})",
            )

    def wait_for_server(self, timeout_s: float) -> None:
        """Until the replay server answers (a loaded machine can take a minute to import
        TensorFlow); the benchmark fails after `timeout_s`."""
        from absl import logging

        from distributed_sac.replay.connection import BoundedCall, connect

        logging.set_verbosity(logging.ERROR)  # connect()'s retry warnings while it starts

        def answered() -> bool:
            self.check_running()
            try:
                self._server = (connect(f"localhost:{self.port}", 1), BoundedCall("server", 10))
                return True
            except Exception:  # not up yet
                return False

        if not poll_until(answered, timeout_s, interval_s=0):
            fail(self.program, f"replay server not up after {timeout_s:.0f} s")

    def counters(self) -> dict | None:
        """monitor.server_counters, or None while the server does not answer."""
        from distributed_sac.tools import monitor

        try:
            client, bounded = self._server
            return bounded(monitor.server_counters, client, 5)
        except Exception:  # starting, restarting or gone: the sample says so with None
            return None

    def role_usage(self) -> dict:
        """{role: {pid, rss_mb, fds, threads}} of the launcher's live roles."""
        from distributed_sac.runtime import processes
        from distributed_sac.tools import cluster

        roles = {}
        for name, pid in sorted(cluster.role_pids(self.process.pid).items()):
            usage = processes.usage(pid)
            if usage is not None:
                roles[name] = {"pid": pid, **usage}
        return roles

    def restarts(self) -> list[str]:
        return [line for line in self.process.output().splitlines() if "restarted (restart" in line]

    def kill(self) -> None:
        """Stops the launcher and its roles at once (the benchmark failed)."""
        from distributed_sac.runtime import processes

        processes.stop([self.process], grace_s=30, group=True)

    def finish(self, interrupt: bool, timeout_s: float) -> int:
        """The launcher's exit code: after a SIGINT (as Ctrl-C) if `interrupt`, else once it ends
        by itself; fails if it has not ended in `timeout_s` or a role outlives it by 10 s."""
        import signal
        import subprocess

        from distributed_sac.runtime import processes
        from distributed_sac.tools import cluster

        roles = cluster.role_pids(self.process.pid)  # once it exits, they are no longer its
        code = None
        try:
            if interrupt:
                self.process.send_signal(signal.SIGINT)
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            processes.stop([self.process], grace_s=30, group=True)
        poll_until(lambda: not any(processes.alive(pid) for pid in roles.values()), 10)
        left = sorted(name for name, pid in roles.items() if processes.alive(pid))
        if code is None or left:
            fail(self.program, f"launcher did not stop its roles in time (left: {left})")
        return code


class BenchCluster:
    """Role processes on 127.0.0.1 for one measurement (the launcher's Cluster, without restarts):
    logs in `work_dir`, server counters read through the monitor."""

    def __init__(self, gin_file: str, bindings, work_dir: str, tls_dir: str | None = None):
        from distributed_sac.layout import RunDir
        from distributed_sac.tools.cluster import Cluster

        self.config = load_config(gin_file, bindings)
        self.run_dir = RunDir(work_dir)
        self.roles = Cluster(self.run_dir, gin_flags([gin_file], bindings))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client = None
        # With tls_dir (tools/tls_certs.py's files), collectors reach the server through a
        # mutual-TLS tunnel, as from another host: their client end, then the server's end.
        self.tls_dir = tls_dir
        self.tunnels: dict = {}  # name -> Process
        self.collector_address = self.address

    def start_tunnel(self, side: str, accept: str, connect: str, cert: str) -> None:
        from distributed_sac.runtime.processes import Process

        args = ["--side", side, "--accept", accept, "--connect", connect]
        args += ["--ca_file", os.path.join(self.tls_dir, "ca.pem")]
        args += ["--cert_file", os.path.join(self.tls_dir, f"{cert}.pem")]
        args += ["--key_file", os.path.join(self.tls_dir, f"{cert}.key")]
        name = f"tunnel-{side}"
        self.tunnels[name] = Process.module("tools.tunnel", args, self.run_dir.log(name), name=name)

    def start_server(self) -> None:
        from distributed_sac.replay.connection import connect

        self.roles.start("replay_server", "replay_server", ["--port", str(self.port)])
        self.client = connect(self.address, timeout_s=120)
        if self.tls_dir:
            tls_address = f"127.0.0.1:{free_port()}"
            self.collector_address = f"127.0.0.1:{free_port()}"
            self.start_tunnel("server", tls_address, self.address, "server")
            self.start_tunnel("client", self.collector_address, tls_address, "client")

    def start_collector(self, task: int) -> None:
        args = ["--replay_server_address", self.collector_address, "--task", str(task)]
        self.roles.start(f"collector-{task}", "collector", args)

    def start_learner(self):
        root_dir = os.path.join(self.run_dir.root, "learner_root")
        args = ["--replay_server_address", self.address, "--root_dir", root_dir]
        return self.roles.start("learner", "learner", args)

    def table_size(self) -> int:
        from distributed_sac.replay import tables

        return tables.table_sizes(self.client)[tables.EXPERIENCE_TABLE]

    def counters(self) -> dict:
        """Items inserted and sampled so far, and the train step of the newest pushed weights."""
        from distributed_sac.tools import monitor

        return monitor.server_counters(self.client)

    def wait_until(self, predicate, timeout_s: float, what: str) -> None:
        """Until `predicate()` holds; RuntimeError after `timeout_s`, UserError once a role
        exited."""

        def holds() -> bool:
            return predicate() or self.roles.check_alive()

        if not poll_until(holds, timeout_s, interval_s=0.5):
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")

    def collector_reports(self, task: int, since: float) -> list[dict]:
        from distributed_sac.reports import fields_of

        reports = fields_of(self.run_dir.log(f"collector-{task}"), "collector_progress")
        return [report for report in reports if report["unix_time"] >= since]

    def stop_all(self) -> None:
        from distributed_sac.runtime.processes import stop

        self.roles.stop(reversed(list(self.roles.roles)), grace_s=10)
        stop(self.tunnels.values(), grace_s=10)
