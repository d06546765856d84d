"""Local cluster: every role as its own process, supervised, stopped together.

`launch/local.sh` runs this after preparing the venv. It validates the gin config before any
role starts, starts the replay server, then the learner, N collectors and the evaluator, prints
their progress, and exits 0 only when the learner reached its final step and every role exited
cleanly. A role that dies is started again after a backoff (the others reconnect to it, and the
learner and replay server resume from their checkpoints); a role that dies more than
--max_restarts times within --restart_window_s, or stops with a configuration error (exit code
2), stops the run, which exits non-zero naming the role and its error. A role that gave up on an
unreachable replay server (exit code 3) is restarted like a crashed one.
"""

from __future__ import annotations

import datetime
import os
import shlex
import signal
import socket
import sys
import time

from absl import app, flags

from distributed_sac.config import DEFAULT_GIN, gin_headline, load_gin
from distributed_sac.errors import UserError
from distributed_sac.layout import RunDir
from distributed_sac.learner import step_record
from distributed_sac.reports import read_reports
from distributed_sac.runtime import run_lock
from distributed_sac.runtime.addresses import check_port
from distributed_sac.runtime.processes import REPO_ROOT, describe_exit, gin_flags
from distributed_sac.runtime.stopping import StopRequest
from distributed_sac.runtime.waits import poll_until
from distributed_sac.sac import envs
from distributed_sac.tools.cluster import (
    REPLAY_SERVER_GRACE_S,
    SHUTDOWN_GRACE_S,
    Cluster,
)
from distributed_sac.tools.console import Console

LOCAL_SH = os.path.join(REPO_ROOT, "launch", "local.sh")

flags.DEFINE_string("root_dir", None, "Run directory (default: ./runs/<date-time>).")
flags.DEFINE_integer(
    "num_collectors", None, "Number of collector processes (default: RunConfig.num_collectors)."
)
flags.DEFINE_multi_string("gin_file", [], f"Gin file, repeatable (default: {DEFAULT_GIN}).")
flags.DEFINE_multi_string("gin_bindings", [], "Gin binding, repeatable.")
flags.DEFINE_alias("gin_binding", "gin_bindings")  # the launcher's earlier spelling
flags.DEFINE_integer("port", 8008, "Port of the replay server.")
flags.DEFINE_float("startup_timeout_s", 180, "How long the replay server may take to start.")
flags.DEFINE_float(
    "shutdown_grace_s",
    SHUTDOWN_GRACE_S,
    "Seconds the learner, collectors and evaluator get after SIGTERM, in all, before SIGKILL.",
)
flags.DEFINE_float(
    "replay_server_grace_s",
    REPLAY_SERVER_GRACE_S,
    "Seconds the replay server, stopped last, gets to write its checkpoint before SIGKILL "
    "(it grows with the table: docs/endurance.md).",
)
flags.DEFINE_integer(
    "evaluator_nice",
    0,
    "Niceness of the evaluator: above 0, evaluation yields the cores to training (faster "
    "training, but evaluations that fall behind skip to the newest weights).",
)
flags.DEFINE_integer(
    "max_restarts", 3, "Restarts allowed per role within --restart_window_s before the run fails."
)
flags.DEFINE_float(
    "restart_window_s",
    3600,
    "The sliding window --max_restarts counts in: a role may crash now and then for days.",
)
flags.DEFINE_float(
    "restart_backoff_s", 2, "Delay before a role's first restart; doubles each time."
)
flags.DEFINE_float(
    "orphan_wait_s",
    30,
    "How long a launch waits for roles of a stopped run (whose launcher was killed) still "
    "holding the --root_dir to finish their stop, before it gives up.",
)
FLAGS = flags.FLAGS


def wait_until_ready(cluster: Cluster, timeout_s: float) -> dict:
    """The replay server's ready report, once it came; UserError if it died or took too long."""
    server = cluster.roles["replay_server"]

    def ready() -> list:
        found = server.new_reports("replay_server_ready")
        code = server.poll()
        if not found and code is not None:
            cluster.fail("replay_server", code)
        return found

    found = poll_until(ready, timeout_s)
    if not found:
        cluster.stop_all()
        raise UserError(f"replay server not ready after {timeout_s:.0f}s (log: {server.log_path})")
    return found[0][1]


def exposed_interfaces() -> list[str]:
    """Network interfaces other than loopback: the replay server listens on all of them."""
    return [name for _, name in socket.if_nameindex() if name != "lo"]


SHOWN_EVENTS = (
    "replay_server_ready",
    "learner_start",
    "learner_progress",
    "collector_progress",
    "evaluation",
    "collector_reconnected",
    "evaluator_reconnected",
    "learner_reconnected",
    "learner_dropped_pairs",
)


def show_reports(cluster: Cluster, console: Console, env_steps: dict) -> None:
    """Learner progress, evaluations, restores and reconnects, as they appear in the logs."""
    for name, role in cluster.roles.items():
        for event, report in role.new_reports(*SHOWN_EVENTS):
            if event == "learner_progress":
                console.update(train_step=report["train_step"])
                if not console.live:
                    console.event(
                        f"train_step {report['train_step']}/{console.total_steps}  "
                        f"loss {report['loss']:.4g}  {report['steps_per_s']:.1f} steps/s"
                    )
            elif event == "collector_progress":
                env_steps[role.pid] = report["env_steps"]  # per process: restarts add up
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
            elif event == "learner_dropped_pairs":
                console.event(
                    f"learner dropped {report['count']} pairs holding {report['reason']} "
                    f"({report['pairs_dropped_nonfinite']} since it started)"
                )
            elif event == "replay_server_ready":
                console.event(f"replay server up, tables: {report['table_sizes']}")
            elif event.endswith("_reconnected"):
                console.event(f"{name} reconnected after {report['seconds']:.1f}s")


def run_cluster(cluster: Cluster, port: int, num_collectors: int) -> None:
    """Starts every role, shows progress and supervises until the learner, the collectors and
    the evaluator have finished; then stops the replay server."""
    # Imported here: monitor loads Reverb and TensorFlow (2.0 s of CPU), which the
    # launcher refusing a bad flag does not need.
    from distributed_sac.tools import monitor

    console = cluster.console
    address = f"localhost:{port}"
    cluster.start("replay_server", "replay_server", ["--port", str(port)])
    tables = wait_until_ready(cluster, FLAGS.startup_timeout_s)["table_sizes"]
    restored = f" (restored tables: {tables})" if any(tables.values()) else ""
    console.event(f"replay server ready on {address}{restored}")

    client_args = ["--replay_server_address", address]
    cluster.start("learner", "learner", client_args)
    workers = ["learner", "evaluator"]
    for task in range(num_collectors):
        workers.append(f"collector-{task}")
        cluster.start(workers[-1], "collector", client_args + ["--task", str(task)])
    cluster.start("evaluator", "evaluator", client_args + ["--nice", str(FLAGS.evaluator_nice)])
    console.event(
        f"started learner, {num_collectors} collector(s), evaluator; training to step "
        f"{console.total_steps}"
    )
    replay_monitor = monitor.ReplayMonitor(address, cluster.run_dir.replay, run_dir=cluster.run_dir)
    env_steps: dict[int, int] = {}
    while not all(cluster.finished(name) for name in workers):
        show_reports(cluster, console, env_steps)
        figures = replay_monitor.poll()
        if figures:  # fresher than the learner's progress reports
            console.update(train_step=figures["train_step"])
        cluster.supervise()
        time.sleep(0.5)
    show_reports(cluster, console, env_steps)
    console.close()
    server = cluster.roles["replay_server"]
    cluster.stop_replay_server()
    if server.poll() != 0:
        raise UserError(
            f"replay_server exited with {describe_exit(server.poll())} on shutdown "
            f"(log: {server.log_path})"
        )
    console.event("all roles exited cleanly")


def runnable_path(path: str) -> str:
    """`path` as a shell runs it from the current directory: relative when below it."""
    if not path.startswith(os.getcwd() + os.sep):
        return path
    relative = os.path.relpath(path)
    return relative if os.sep in relative else os.path.join(".", relative)


def console_script(name: str) -> str:
    """How to run one of this installation's console scripts from the current directory."""
    return runnable_path(os.path.join(os.path.dirname(sys.executable), name))


def resume_command(root_dir: str) -> str:
    """The command that resumes this run: the same flags, with its root_dir."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--root_dir":
            skip = True
        elif not arg.startswith("--root_dir="):
            args.append(arg)
    return shlex.join([runnable_path(LOCAL_SH), "--root_dir", root_dir, *args])


def stopped_line(cluster: Cluster) -> str:
    """Where a stopped run got to (the learner's last checkpoint), and how to resume it."""
    saved = read_reports(
        cluster.run_dir.log("learner"), "learner_checkpoint", "learner_stopped", "learner_done"
    )
    where = f"at train_step {saved[-1][1]['train_step']}" if saved else "before any checkpoint"
    return f"run stopped {where}; resume it with: {resume_command(cluster.run_dir.root)}"


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cluster = None

    def on_signal():
        signum = stop.signals[-1]
        name = signal.Signals(signum).name
        if cluster is not None and len(stop.signals) == 1:
            cluster.console.event(f"got {name}; stopping every role (again to kill them at once)")
            cluster.stop_all()
            cluster.console.event(stopped_line(cluster))
        elif cluster is not None:  # a second signal while stopping: the user will not wait
            cluster.kill_all()
            cluster.console.event(
                f"got {name} again; killed every role (the run resumes from its last checkpoints)"
            )
        sys.exit(128 + signum)

    # SIGHUP (the terminal went away) stops in order as Ctrl-C does.
    stop = StopRequest(on_request=on_signal)
    try:
        if FLAGS.num_collectors is not None and FLAGS.num_collectors < 1:
            raise UserError("--num_collectors must be at least 1")
        check_port(FLAGS.port, "--port")
        gin_files = [os.path.abspath(f) for f in (FLAGS.gin_file or [DEFAULT_GIN])]
        config = load_gin(gin_files, FLAGS.gin_bindings)  # fails here, before any role starts
        envs.check_env(config)
        run_dir = RunDir(
            os.path.abspath(
                FLAGS.root_dir or os.path.join("runs", f"{datetime.datetime.now():%Y%m%d-%H%M%S}")
            )
        ).create()
        lock_fd = run_lock.hold(
            run_dir, lambda line: print(f"local.sh: {line}", flush=True), FLAGS.orphan_wait_s
        )
        if step_record.read_reached(run_dir) is None:
            # Nothing reached yet: from their start on, the roles check pushed train steps
            # against the learner's record, never only against the server's number.
            step_record.write_reached(run_dir, 0)
        role_args = ["--root_dir", run_dir.root, *gin_flags(gin_files, FLAGS.gin_bindings)]
        console = Console(config.num_iterations)
        cluster = Cluster(
            run_dir,
            role_args,
            console=console,
            max_restarts=FLAGS.max_restarts,
            restart_backoff_s=FLAGS.restart_backoff_s,
            shutdown_grace_s=FLAGS.shutdown_grace_s,
            restart_window_s=FLAGS.restart_window_s,
            run_lock_fd=lock_fd,
            replay_server_grace_s=FLAGS.replay_server_grace_s,
        )
        for path in gin_files:
            headline = gin_headline(path)
            console.event(f"config:        {path}" + (f": {headline}" if headline else ""))
        console.event(f"run directory: {run_dir.root}")
        console.event(f"role logs:     {run_dir.logs}/<role>.log")
        console.event(f"TensorBoard:   tensorboard --logdir {run_dir.root}")
        interfaces = exposed_interfaces()
        if interfaces:
            console.event(
                f"warning: the replay server accepts anyone on port {FLAGS.port} of this host's "
                f"interfaces ({', '.join(interfaces)}), without authentication; keep it on a "
                "private network (README: Security)"
            )
        console.event(
            f"status:        {console_script('distributed-sac-status')} --replay_server_address "
            f"localhost:{FLAGS.port} --root_dir {run_dir.root}"
        )
        run_cluster(cluster, FLAGS.port, FLAGS.num_collectors or config.num_collectors)
    except UserError as error:
        if cluster is not None:
            cluster.console.close()
        print(f"local.sh: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1 if cluster is not None and cluster.roles else 2)


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
