"""What the benchmarks share: their arguments and one-line errors, parts run in fresh processes,
the launcher's run and role processes on 127.0.0.1, tables, and the figures' JSON.

Modules that import TensorFlow are imported where they are used: --help and an argument's error
then answer without it, and a benchmark's parent process stays small beside what it measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

from distributed_sac.config import load_gin
from distributed_sac.errors import UserError
from distributed_sac.layout import RunDir
from distributed_sac.reports import fields_of
from distributed_sac.runtime import processes
from distributed_sac.runtime.processes import Process, free_port, gin_flags
from distributed_sac.runtime.waits import poll_until
from distributed_sac.tools import cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL_GIN = os.path.join(REPO, "gin", "minitaur_tutorial.gin")
SMOKE_GIN = os.path.join(REPO, "gin", "smoke.gin")
RESULT_PREFIX = "RESULT "
STARTUP_TIMEOUT_S = 300  # for the launcher's replay server to answer


def fail(program: str, message: str):
    """Stops the benchmark with one line on stderr and exit code 1."""
    raise SystemExit(f"{program}: error: {message}")


class Parser(argparse.ArgumentParser):
    """A benchmark's arguments: --gin_file and --gin_bindings as the roles spell them, --output
    (the figures' JSON), --root_dir, --quick (setting `quick`: {argument: value}, bindings added
    to --gin_bindings), and with `parts` the hidden arguments of a part's process."""

    def __init__(self, program, doc, quick=None, output=True, root_dir=False, parts=None):
        super().__init__(prog=program, description=doc.strip().splitlines()[0])
        self.parts, self.quick = parts, quick
        self.add_argument("--gin_file", default=TUTORIAL_GIN)
        self.add_argument("--gin_bindings", "--gin_binding", action="append", default=[])
        if output:
            self.add_argument("--output", help="JSON file for the figures")
        if root_dir:
            self.add_argument("--root_dir", help="run dir (default: a new temp dir)")
        if quick:
            shown = ", ".join(
                f"{key} {os.path.relpath(value, REPO) if key == 'gin_file' else value}"
                for key, value in quick.items()
            )
            self.add_argument("--quick", action="store_true", help=f"a tiny run: {shown}")
        if parts:
            self.add_argument("--part", choices=sorted(parts), help=argparse.SUPPRESS)
            self.add_argument("--part_args", help=argparse.SUPPRESS)

    def parse(self) -> argparse.Namespace:
        """The arguments, with --quick's values, --output checked writable and the run config
        loaded (args.config); in a part's process, runs the part (printing its figures for
        `run_part`) and exits."""
        args = self.parse_args()
        if getattr(args, "part", None):
            figures = self.parts[args.part](**json.loads(args.part_args))
            print(RESULT_PREFIX + json.dumps(figures), flush=True)
            raise SystemExit(0)
        for name, value in self.quick.items() if getattr(args, "quick", False) else ():
            setattr(args, name, args.gin_bindings + value if name == "gin_bindings" else value)
        output = getattr(args, "output", None)
        if output and not os.access(os.path.dirname(os.path.abspath(output)), os.W_OK):
            fail(self.prog, f"cannot write --output {output}")
        args.config = load_config(self.prog, args.gin_file, args.gin_bindings)
        return args


def numbers(program: str, flag: str, text: str, example: str, kind=int) -> list:
    """A comma-separated list of numbers; one line saying what is wanted if it is not one."""
    try:
        return [kind(item) for item in text.split(",")]
    except ValueError:
        fail(program, f"--{flag} must be like {example}; got {text!r}")


def load_config(program: str, gin_file: str, bindings=()):
    """The run config; a missing gin file or a bad binding stops the benchmark in one line."""
    if not os.path.isfile(gin_file):
        fail(program, f"gin file not found: {gin_file}")
    try:
        return load_gin([gin_file], list(bindings))
    except UserError as error:
        fail(program, str(error))


def run_part(program: str, part: str, log_path: str, **kwargs) -> dict:
    """Runs `python -m benchmarks.<program> --part <part>` (so no part inherits another's threads,
    memory or TensorFlow state), its output in `log_path`; the figures it printed."""
    args = ["-m", f"benchmarks.{program}", "--part", part, "--part_args", json.dumps(kwargs)]
    process = Process([sys.executable, *args], log_path, cwd=REPO, name=part)
    code = process.wait()
    output = process.output()
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if code != 0 or not lines:
        tail = "\n".join(output.strip().splitlines()[-5:])
        fail(program, f"part {part} failed (exit {code}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def steps_per_s(step, seconds: float, per_call: int = 1) -> tuple[float, float]:
    """Calls `step` (`per_call` steps) for `seconds`: steps per second, and the process's CPU
    seconds per step (every thread: TensorFlow's pools included)."""
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        step()
        steps += per_call
    return steps / (time.perf_counter() - start), (time.process_time() - cpu_start) / steps


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line for line in cpuinfo if line.startswith("model name"))
            model = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def provenance(gin_file: str, bindings) -> dict:
    """What a benchmark's JSON says of where and on what it ran."""
    return {
        "machine": machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "gin_file": os.path.relpath(os.path.abspath(gin_file), REPO),
        "gin_bindings": list(bindings),
    }


def read_figures(program: str, path: str, keys) -> dict:
    """An earlier run's figures (a `write_figures` JSON) holding `keys`; fails in one line."""
    try:
        with open(path) as f:
            figures = json.load(f)
        missing = [key for key in keys if key not in figures]
    except (OSError, ValueError, TypeError) as error:
        fail(program, f"cannot read the figures in {path}: {error}")
    if missing:
        fail(program, f"cannot read the figures in {path}: no {', '.join(missing)}")
    return figures


def write_figures(path: str | None, figures: dict) -> None:
    """The figures as JSON to `path` (nothing without one), and a line saying where."""
    if path:
        with open(path, "w") as out:
            json.dump(figures, out, indent=1)
        print(f"figures: {path}")


def cell(value) -> str:
    """A figure as a table shows it: None as '-', floats to 2 decimals (1 from 10 up, 3
    significant digits below 0.1), lists joined."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.1 else f"{value:.{2 if abs(value) < 10 else 1}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    return str(value)


def print_table(rows, header=(), title=None) -> None:
    """Rows of figures in columns, the first (the labels) left-aligned, the others right."""
    rows = [[cell(value) for value in row] for row in ([header] if header else []) + list(rows)]
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    if title:
        print(f"\n{title}")
    for row in rows:
        cells = [text.rjust(width) for text, width in zip(row, widths)]
        print("  ".join([row[0].ljust(widths[0]), *cells[1:]]).rstrip())


class LauncherRun:
    """The launcher (what launch/local.sh runs) on a config in its own process, its output in
    `log_path` (default <root_dir>/launcher.out), and a bounded client on its replay server once
    that answers. `launcher_flags`: more of the launcher's own flags. Left by an exception, it
    stops the launcher and its roles at once."""

    def __init__(
        self,
        program,
        root_dir,
        gin_file,
        bindings,
        num_collectors=None,
        log_path=None,
        launcher_flags=(),
    ):
        self.program, self.port = program, free_port()
        self.log_path = log_path or os.path.join(root_dir, "launcher.out")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        args = ["--root_dir", root_dir, "--port", str(self.port), *gin_flags([gin_file], bindings)]
        args += list(launcher_flags)
        if num_collectors is not None:
            args += ["--num_collectors", str(num_collectors)]
        self.started_at = time.time()
        self.process = Process.module("tools.launcher", args, self.log_path)
        self._server = None

    def __enter__(self) -> LauncherRun:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None:
            processes.stop([self.process], grace_s=30, group=True)

    def check_running(self) -> None:
        """Stops the benchmark in one line if the launcher has exited."""
        if self.process.poll() is not None:
            error = self.process.failure("local.sh") or "no error line"
            code = self.process.returncode
            fail(self.program, f"launcher exited with {code}: {error} ({self.log_path})")

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

    def counters(self) -> dict:
        """monitor.server_counters, or {} while the server does not answer."""
        from distributed_sac.tools import monitor

        try:
            client, bounded = self._server
            return bounded(monitor.server_counters, client, 5)
        except Exception:  # starting, restarting or gone: the sample says so with None
            return {}

    def role_usage(self) -> dict:
        """{role: {pid, rss_mb, fds, threads}} of the launcher's live roles."""
        roles = {}
        for name, pid in sorted(cluster.role_pids(self.process.pid).items()):
            usage = processes.usage(pid)
            if usage is not None:
                roles[name] = {"pid": pid, **usage}
        return roles

    def wait_for_training(self, timeout_s: float) -> None:
        """Until the learner has pushed its first weights (the roles have started, the initial
        collection is in); the benchmark fails after `timeout_s`."""

        def trained() -> bool:
            self.check_running()
            return self.counters().get("train_step") is not None

        if not poll_until(trained, timeout_s, interval_s=1):
            fail(self.program, f"the learner pushed no weights in {timeout_s:.0f} s")

    def samples(
        self, interval_s: float, until_s=None, timeout_s=None, roles=False, from_training=False
    ):
        """From the replay server answering (with `from_training`, from the learner's first
        weights), every `interval_s` seconds: the server's counters (None while it does not
        answer) and with `roles` each role's usage; for `until_s` seconds with the launcher
        running (the last sample at `until_s`), or else until the launcher exits (failing past
        `timeout_s`)."""
        self.wait_for_server(STARTUP_TIMEOUT_S)
        if from_training:
            self.wait_for_training(STARTUP_TIMEOUT_S)
        self.sampled_from = time.monotonic()
        while True:
            now = time.monotonic() - self.sampled_from
            if until_s is not None:
                self.check_running()
            elif self.process.poll() is not None:
                return
            elif now > timeout_s:
                fail(self.program, f"the run did not end in {timeout_s:.0f} s")
            counters = self.counters()
            keys = ("train_step", "inserts", "drained", "table_sizes")
            sample = {"t_s": round(now, 1), **{key: counters.get(key) for key in keys}}
            yield {**sample, "roles": self.role_usage()} if roles else sample
            if until_s is not None and now >= until_s:
                return
            time.sleep(interval_s if until_s is None else max(0.0, min(interval_s, until_s - now)))

    def restarts(self) -> list[str]:
        return [line for line in self.process.output().splitlines() if "restarted (restart" in line]

    def finish_cleanly(self, timeout_s: float, what: str) -> None:
        """Until the launcher ends by itself (`finish`); fails in one line unless it exited 0."""
        code = self.finish(timeout_s)
        if code != 0:
            fail(self.program, f"{what} ended with exit {code}; see {self.log_path}")

    def finish(self, timeout_s: float, interrupt: bool = False) -> int:
        """The launcher's exit code: after a SIGINT (as Ctrl-C) if `interrupt`, else once it ends
        by itself; fails if it has not ended in `timeout_s` or a role outlives it by 10 s."""
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
        if code is None:
            fail(self.program, f"launcher did not end in {timeout_s:.0f} s ({self.log_path})")
        poll_until(lambda: not any(processes.alive(pid) for pid in roles.values()), 10)
        left = sorted(name for name, pid in roles.items() if processes.alive(pid))
        if left:
            fail(self.program, f"the launcher's roles outlived it: {left}")
        return code


class BenchCluster:
    """Role processes on 127.0.0.1 for one measurement (the launcher's Cluster, without restarts),
    logs in `work_dir`. With `tls_dir` (tools/tls_certs.py's files) the collectors reach the server
    through a mutual-TLS tunnel, as from another host."""

    def __init__(self, program: str, gin_file: str, bindings, work_dir: str, tls_dir=None):
        self.config = load_config(program, gin_file, bindings)
        self.run_dir = RunDir(work_dir)
        self.roles = cluster.Cluster(self.run_dir, gin_flags([gin_file], bindings))
        self.port = free_port()
        self.address = self.collector_address = f"127.0.0.1:{self.port}"
        self.client = None
        self.tls_dir = tls_dir
        self.tunnels: dict[str, Process] = {}

    def _start_tunnel(self, side: str, accept: str, connect: str) -> None:
        args = ["--side", side, "--accept", accept, "--connect", connect]
        args += ["--ca_file", os.path.join(self.tls_dir, "ca.pem")]
        args += ["--cert_file", os.path.join(self.tls_dir, f"{side}.pem")]
        args += ["--key_file", os.path.join(self.tls_dir, f"{side}.key")]
        name = f"tunnel-{side}"
        self.tunnels[name] = Process.module("tools.tunnel", args, self.run_dir.log(name), name=name)

    def start_server(self) -> None:
        from distributed_sac.replay.connection import connect

        self.roles.start("replay_server", "replay_server", ["--port", str(self.port)])
        self.client = connect(self.address, timeout_s=120)
        if self.tls_dir:  # the server's end of the tunnel, then the collectors'
            tls_address = f"127.0.0.1:{free_port()}"
            self.collector_address = f"127.0.0.1:{free_port()}"
            self._start_tunnel("server", tls_address, self.address)
            self._start_tunnel("client", self.collector_address, tls_address)

    def start_collector(self, task: int) -> None:
        args = ["--replay_server_address", self.collector_address, "--task", str(task)]
        self.roles.start(f"collector-{task}", "collector", args)

    def start_learner(self) -> Process:
        root_dir = os.path.join(self.run_dir.root, "learner_root")
        args = ["--replay_server_address", self.address, "--root_dir", root_dir]
        return self.roles.start("learner", "learner", args)

    def table_size(self) -> int:
        from distributed_sac.replay import tables

        return tables.table_sizes(self.client)[tables.EXPERIENCE_TABLE]

    def counters(self) -> dict:
        """monitor.server_counters: items inserted and drained, the newest weights' train step."""
        from distributed_sac.tools import monitor

        return monitor.server_counters(self.client)

    def wait_until(self, predicate, timeout_s: float, what: str) -> None:
        """Until `predicate()` holds; RuntimeError after `timeout_s`, UserError once a role
        exited."""
        if not poll_until(lambda: predicate() or self.roles.check_alive(), timeout_s, 0.5):
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")

    def reports(self, role: str, event: str, since: float = 0) -> list[dict]:
        """`role`'s reports of `event` from unix time `since` on."""
        found = fields_of(self.run_dir.log(role), event)
        return [report for report in found if report["unix_time"] >= since]

    def stop_all(self) -> None:
        self.roles.stop(reversed(list(self.roles.roles)), grace_s=10)
        processes.stop(self.tunnels.values(), grace_s=10)
