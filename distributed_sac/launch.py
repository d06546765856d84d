"""Local cluster: every role as its own process, supervised, stopped together.

`launch/local.sh` runs this after preparing the venv. It validates the gin config before any
role starts, starts the replay server, then the learner, N collectors and the evaluator, prints
their progress, and exits 0 only when the learner reached its final step and every role exited
cleanly. If a role dies, it stops the rest and exits non-zero naming the role.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import signal
import subprocess
import sys
import time

# The launcher imports TensorFlow only to validate gin; keep its C++ start-up noise quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

from distributed_sac.config import UserError, load_gin  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIN = os.path.join(REPO_ROOT, "gin", "minitaur.gin")

flags.DEFINE_string("root_dir", None, "Run directory (default: ./runs/<date-time>).")
flags.DEFINE_integer("num_collectors", 1, "Number of collector processes.")
flags.DEFINE_multi_string("gin_file", [], f"Gin file, repeatable (default: {DEFAULT_GIN}).")
flags.DEFINE_multi_string("gin_binding", [], "Gin binding, repeatable.")
flags.DEFINE_integer("port", 8008, "Port of the replay server.")
flags.DEFINE_float("startup_timeout_s", 180, "How long the replay server may take to start.")
flags.DEFINE_float("shutdown_grace_s", 8, "Seconds a role gets after SIGTERM before SIGKILL.")
FLAGS = flags.FLAGS

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the launcher is killed outright, the kernel stops its roles too: nothing is left behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Role:
    """One supervised child process with its log file."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: str):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"distributed_sac.{module}", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops roles in order
                preexec_fn=_die_with_parent,
            )
        self._offset = 0

    def poll(self) -> int | None:
        return self.process.poll()

    def new_reports(self, event: str) -> list[dict]:
        """Report lines (see cli.report) with this event name written since the last call."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        marker = f" {event} {{"
        found = []
        for line in complete.decode(errors="replace").splitlines():
            if marker in line:
                found.append(json.loads(line[line.index(marker) + len(event) + 2 :]))
        return found

    def last_line(self) -> str:
        with open(self.log_path, "rb") as log:
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line]
        return lines[-1] if lines else "(empty log)"

    def terminate(self) -> None:
        if self.poll() is None:
            self.process.send_signal(signal.SIGTERM)


class Cluster:
    def __init__(self, root_dir: str, role_args: list[str], port: int):
        self.root_dir = root_dir
        self.log_dir = os.path.join(root_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.role_args = role_args
        self.port = port
        self.roles: dict[str, Role] = {}
        self.stopping = False

    def start(self, name: str, module: str, extra: list[str]) -> Role:
        role = Role(name, module, self.role_args + extra, self.log_dir)
        self.roles[name] = role
        return role

    def stop_all(self, grace_s: float) -> None:
        for role in self.roles.values():
            role.terminate()
        deadline = time.monotonic() + grace_s
        for role in self.roles.values():
            try:
                role.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                role.process.kill()
                role.process.wait()

    def fail(self, role: Role, code: int) -> None:
        self.stop_all(FLAGS.shutdown_grace_s)
        raise UserError(
            f"{role.name} exited with code {code}: {role.last_line()} (log: {role.log_path})"
        )


def _print(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def run_cluster(cluster: Cluster, num_collectors: int, num_iterations: int) -> None:
    address = f"localhost:{cluster.port}"
    server_args = ["--port", str(cluster.port), "--root_dir", cluster.root_dir]
    server = cluster.start("replay_server", "replay_server", server_args)
    deadline = time.monotonic() + FLAGS.startup_timeout_s
    while not server.new_reports("replay_server_ready"):
        code = server.poll()
        if code is not None:
            cluster.fail(server, code)
        if time.monotonic() > deadline:
            cluster.stop_all(FLAGS.shutdown_grace_s)
            raise UserError(
                f"replay server not ready after {FLAGS.startup_timeout_s:.0f}s "
                f"(log: {server.log_path})"
            )
        time.sleep(0.2)
    _print(f"replay server ready on {address}")

    client_args = ["--replay_server_address", address, "--root_dir", cluster.root_dir]
    learner = cluster.start("learner", "learner", client_args)
    workers = [learner]
    for task in range(num_collectors):
        workers.append(
            cluster.start(f"collector-{task}", "collector", client_args + ["--task", str(task)])
        )
    evaluator = cluster.start("evaluator", "evaluator", client_args)
    workers.append(evaluator)
    _print(
        f"started learner, {num_collectors} collector(s), evaluator; training to step "
        f"{num_iterations}"
    )

    while True:
        for report in learner.new_reports("learner_progress"):
            _print(
                f"train_step {report['train_step']}/{num_iterations}  "
                f"loss {report['loss']:.4g}  {report['steps_per_s']:.1f} steps/s"
            )
        for report in evaluator.new_reports("evaluation"):
            _print(
                f"eval at train_step {report['train_step']}: AverageReturn "
                f"{report['AverageReturn']:.3f}, AverageEpisodeLength "
                f"{report['AverageEpisodeLength']:.1f}"
            )
        for role in cluster.roles.values():
            code = role.poll()
            if code not in (None, 0):
                cluster.fail(role, code)
        if all(role.poll() == 0 for role in workers):
            break
        time.sleep(0.5)

    server.terminate()
    try:
        code = server.process.wait(timeout=FLAGS.shutdown_grace_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        code = server.process.wait()
    if code != 0:
        raise UserError(
            f"replay_server exited with code {code} on shutdown " f"(log: {server.log_path})"
        )
    _print("all roles exited cleanly")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cluster = None

    def on_signal(signum, _frame):
        if cluster is not None and not cluster.stopping:
            cluster.stopping = True
            _print(f"got {signal.Signals(signum).name}; stopping every role")
            cluster.stop_all(FLAGS.shutdown_grace_s)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if FLAGS.num_collectors < 1:
            raise UserError("--num_collectors must be at least 1")
        gin_files = [os.path.abspath(f) for f in (FLAGS.gin_file or [DEFAULT_GIN])]
        config = load_gin(gin_files, FLAGS.gin_binding)  # fails here, before any role starts
        root_dir = os.path.abspath(
            FLAGS.root_dir or os.path.join("runs", f"{datetime.datetime.now():%Y%m%d-%H%M%S}")
        )
        role_args = []
        for path in gin_files:
            role_args += ["--gin_file", path]
        for binding in FLAGS.gin_binding:
            role_args += ["--gin_bindings", binding]
        cluster = Cluster(root_dir, role_args, FLAGS.port)
        _print(f"run directory: {root_dir}")
        _print(f"role logs:     {cluster.log_dir}/<role>.log")
        _print(f"TensorBoard:   tensorboard --logdir {root_dir}")
        run_cluster(cluster, FLAGS.num_collectors, config.num_iterations)
    except UserError as error:
        print(f"local.sh: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1 if cluster is not None and cluster.roles else 2)


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
