"""Local cluster: every role as its own process, supervised, stopped together.

`launch/local.sh` runs this after preparing the venv. It validates the gin config before any
role starts, starts the replay server, then the learner, N collectors and the evaluator, prints
their progress, and exits 0 only when the learner reached its final step and every role exited
cleanly. A role that dies is started again after a backoff (the others reconnect to it, and the
learner and replay server resume from their checkpoints); a role that dies more than
--max_restarts times, or stops with a configuration error, stops the run, which exits non-zero
naming the role.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import socket
import subprocess
import sys
import time

# The launcher imports TensorFlow only to validate gin; keep its C++ start-up noise quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

from distributed_sac import monitor  # noqa: E402
from distributed_sac.config import UserError, load_gin  # noqa: E402
from distributed_sac.console import Console  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GIN = os.path.join(REPO_ROOT, "gin", "minitaur.gin")

flags.DEFINE_string("root_dir", None, "Run directory (default: ./runs/<date-time>).")
flags.DEFINE_integer("num_collectors", 1, "Number of collector processes.")
flags.DEFINE_multi_string("gin_file", [], f"Gin file, repeatable (default: {DEFAULT_GIN}).")
flags.DEFINE_multi_string("gin_binding", [], "Gin binding, repeatable.")
flags.DEFINE_integer("port", 8008, "Port of the replay server.")
flags.DEFINE_float("startup_timeout_s", 180, "How long the replay server may take to start.")
flags.DEFINE_float(
    "shutdown_grace_s", 8, "Seconds the roles get after SIGTERM, in all, before SIGKILL."
)
flags.DEFINE_integer(
    "evaluator_nice",
    0,
    "Niceness of the evaluator: above 0, evaluation yields the cores to training (faster "
    "training, but evaluations that fall behind skip to the newest weights).",
)
flags.DEFINE_integer("max_restarts", 3, "Restarts allowed per role before the run fails.")
flags.DEFINE_float(
    "restart_backoff_s", 2, "Delay before a role's first restart; doubles each time."
)
FLAGS = flags.FLAGS

PR_SET_PDEATHSIG = 1
CONFIG_ERROR_EXIT_CODE = 2  # cli.run_role's exit code for a UserError: restarting cannot help


def _die_with_parent() -> None:
    # If the launcher is killed outright, the kernel stops its roles too: nothing is left behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Role:
    """One supervised child process with its log file."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: str):
        self.name = name
        self.module = module
        self.log_path = os.path.join(log_dir, f"{name}.log")
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"distributed_sac.{module}", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops roles in order
                preexec_fn=_die_with_parent,
            )
        # Logs are appended across restarts and relaunches: read only this process's reports.
        self._start = self._offset = offset

    def poll(self) -> int | None:
        return self.process.poll()

    def new_reports(self, *events: str) -> list[tuple[str, dict]]:
        """(event, fields) of the report lines (see cli.report) of these events written since
        the last call."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return monitor.parse_reports(complete.decode(errors="replace"), *events)

    def last_line(self) -> str:
        """The role's own one-line error if it wrote one, else the last line of its log."""
        with open(self.log_path, "rb") as log:
            log.seek(self._start)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line]
        errors = [line for line in lines if line.startswith(f"{self.module}: error: ")]
        if errors:
            return errors[-1]
        return lines[-1] if lines else "(empty log)"

    def terminate(self) -> None:
        if self.poll() is None:
            self.process.send_signal(signal.SIGTERM)


class Cluster:
    """The run's roles by name; restarts the ones that die, up to --max_restarts each."""

    def __init__(self, root_dir: str, role_args: list[str], port: int, console: Console):
        self.root_dir = root_dir
        self.console = console
        self.log_dir = os.path.join(root_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.role_args = role_args
        self.port = port
        self.roles: dict[str, Role] = {}
        self._commands: dict[str, tuple[str, list[str]]] = {}
        self.restarts: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}
        self.stopping = False

    def start(self, name: str, module: str, extra: list[str]) -> Role:
        self._commands[name] = (module, extra)
        role = Role(name, module, self.role_args + extra, self.log_dir)
        self.roles[name] = role
        return role

    def supervise(self) -> None:
        """Schedules a restart for each role that died, starts those whose backoff is over."""
        now = time.monotonic()
        for name, role in self.roles.items():
            if name in self._restart_at:
                if now >= self._restart_at[name]:
                    del self._restart_at[name]
                    self.start(name, *self._commands[name])
                    self.console.event(
                        f"{name}: restarted (restart {self.restarts[name]}/{FLAGS.max_restarts})"
                    )
                continue
            code = role.poll()
            if code in (None, 0):
                continue
            if code == CONFIG_ERROR_EXIT_CODE:
                self.fail(role, code)
            if self.restarts.get(name, 0) >= FLAGS.max_restarts:
                self.fail(role, code, f" after {FLAGS.max_restarts} restarts")
            self.restarts[name] = self.restarts.get(name, 0) + 1
            delay = FLAGS.restart_backoff_s * 2 ** (self.restarts[name] - 1)
            self._restart_at[name] = now + delay
            self.console.event(
                f"{name} exited with code {code}: {role.last_line()[:200]}; restart "
                f"{self.restarts[name]}/{FLAGS.max_restarts} in {delay:.0f}s"
            )

    def finished(self, name: str) -> bool:
        return name not in self._restart_at and self.roles[name].poll() == 0

    def stop_all(self, grace_s: float) -> None:
        """SIGTERM to the learner first, so it checkpoints while collectors still feed it, then
        to the others, the replay server last (it checkpoints its tables); SIGKILL at the end."""
        start = time.monotonic()
        clients = [n for n in self.roles if n not in ("learner", "replay_server")]
        self._stop(["learner"], start + 0.7 * grace_s)
        self._stop(clients, start + 0.7 * grace_s)
        self._stop(["replay_server"], start + grace_s)

    def _stop(self, names: list[str], deadline: float) -> None:
        present = [self.roles[n] for n in names if n in self.roles]
        for role in present:
            role.terminate()
        for role in present:
            try:
                role.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                role.process.kill()
                role.process.wait()

    def fail(self, role: Role, code: int, context: str = "") -> None:
        self.stop_all(FLAGS.shutdown_grace_s)
        raise UserError(
            f"{role.name} exited with code {code}{context}: {role.last_line()} "
            f"(log: {role.log_path})"
        )


def _wait_until_ready(cluster: Cluster, server: Role) -> dict:
    """The server's ready report, once it came."""
    deadline = time.monotonic() + FLAGS.startup_timeout_s
    while True:
        ready = server.new_reports("replay_server_ready")
        if ready:
            return ready[0][1]
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


def exposed_interfaces() -> list[str]:
    """Network interfaces other than loopback: the replay server listens on all of them."""
    return [name for _, name in socket.if_nameindex() if name != "lo"]


def _show_reports(cluster: Cluster, console: Console, env_steps: dict) -> None:
    """Learner progress, evaluations, restores and reconnects, as they appear in the logs."""
    for name, role in cluster.roles.items():
        events = role.new_reports(
            "replay_server_ready",
            "learner_start",
            "learner_progress",
            "collector_progress",
            "evaluation",
            "collector_reconnected",
            "evaluator_reconnected",
            "learner_reconnected",
        )
        for event, report in events:
            if event == "learner_progress":
                console.update(train_step=report["train_step"])
                if not console.live:
                    console.event(
                        f"train_step {report['train_step']}/{console.total_steps}  "
                        f"loss {report['loss']:.4g}  {report['steps_per_s']:.1f} steps/s"
                    )
            elif event == "collector_progress":
                env_steps[role.process.pid] = report["env_steps"]  # per process: restarts add up
                console.update(env_steps=sum(env_steps.values()))
            elif event == "evaluation":
                console.update(average_return=report["AverageReturn"])
                console.event(
                    f"eval at train_step {report['train_step']}: AverageReturn "
                    f"{report['AverageReturn']:.3f}, AverageEpisodeLength "
                    f"{report['AverageEpisodeLength']:.1f}"
                )
            elif event == "learner_start" and report["restored_from"]:
                console.event(f"learner resumed at train_step {report['train_step']}")
            elif event == "replay_server_ready":
                console.event(f"replay server up, tables: {report['table_sizes']}")
            elif event.endswith("_reconnected"):
                console.event(f"{name} reconnected after {report['seconds']:.1f}s")


def run_cluster(cluster: Cluster, num_collectors: int) -> None:
    console = cluster.console
    address = f"localhost:{cluster.port}"
    server_args = ["--port", str(cluster.port), "--root_dir", cluster.root_dir]
    server = cluster.start("replay_server", "replay_server", server_args)
    tables = _wait_until_ready(cluster, server)["table_sizes"]
    restored = f" (restored tables: {tables})" if any(tables.values()) else ""
    console.event(f"replay server ready on {address}{restored}")

    client_args = ["--replay_server_address", address, "--root_dir", cluster.root_dir]
    cluster.start("learner", "learner", client_args)
    workers = ["learner", "evaluator"]
    for task in range(num_collectors):
        name = f"collector-{task}"
        cluster.start(name, "collector", client_args + ["--task", str(task)])
        workers.append(name)
    cluster.start("evaluator", "evaluator", client_args + ["--nice", str(FLAGS.evaluator_nice)])
    console.event(
        f"started learner, {num_collectors} collector(s), evaluator; training to step "
        f"{console.total_steps}"
    )

    replay_monitor = monitor.ReplayMonitor(address, os.path.join(cluster.root_dir, "replay"))
    env_steps: dict[int, int] = {}
    while not all(cluster.finished(name) for name in workers):
        _show_reports(cluster, console, env_steps)
        figures = replay_monitor.poll()
        if figures:  # fresher than the learner's progress reports
            console.update(train_step=figures["train_step"])
        cluster.supervise()
        time.sleep(0.5)
    _show_reports(cluster, console, env_steps)
    console.close()

    server = cluster.roles["replay_server"]
    server.terminate()
    try:
        code = server.process.wait(timeout=FLAGS.shutdown_grace_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        code = server.process.wait()
    if code != 0:
        raise UserError(
            f"replay_server exited with code {code} on shutdown (log: {server.log_path})"
        )
    console.event("all roles exited cleanly")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cluster = None

    def on_signal(signum, _frame):
        if cluster is not None and not cluster.stopping:
            cluster.stopping = True
            cluster.console.event(f"got {signal.Signals(signum).name}; stopping every role")
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
        console = Console(config.num_iterations)
        cluster = Cluster(root_dir, role_args, FLAGS.port, console)
        console.event(f"run directory: {root_dir}")
        console.event(f"role logs:     {cluster.log_dir}/<role>.log")
        console.event(f"TensorBoard:   tensorboard --logdir {root_dir}")
        interfaces = exposed_interfaces()
        if interfaces:
            console.event(
                f"warning: the replay server accepts anyone on port {FLAGS.port} of this host's "
                f"interfaces ({', '.join(interfaces)}), without authentication; keep it on a "
                "private network (README: Security)"
            )
        console.event(
            "status:        python -m distributed_sac.status --replay_server_address "
            f"localhost:{FLAGS.port} --root_dir {root_dir}"
        )
        run_cluster(cluster, FLAGS.num_collectors)
    except UserError as error:
        if cluster is not None:
            cluster.console.close()
        print(f"local.sh: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1 if cluster is not None and cluster.roles else 2)


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
