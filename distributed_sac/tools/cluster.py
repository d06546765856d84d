"""A set of role processes under one run directory: started by name, supervised with
restarts, stopped in order. The launcher runs a whole cluster with it; the throughput benchmark
starts the parts it measures."""

from __future__ import annotations

import collections
import os
import signal
import time

from distributed_sac.errors import UserError
from distributed_sac.layout import RunDir
from distributed_sac.runtime import processes
from distributed_sac.runtime.processes import Process, describe_exit
from distributed_sac.tools.console import Console

# entrypoint.run's exit code for a UserError: restarting cannot help. (ServerUnreachable exits
# 3: the role is restarted and waits for the server again.)
CONFIG_ERROR_EXIT_CODE = UserError.exit_code
# Seconds the roles get after SIGTERM, in all, before SIGKILL; the learner (stopped first, so
# that it checkpoints while the collectors still feed it) has this share of them.
SHUTDOWN_GRACE_S = 8.0
LEARNER_GRACE_FRACTION = 0.7
# Seconds the replay server, stopped last, gets for its final checkpoint before SIGKILL: its own
# budget, since it grows with the table (a 1M-pair table takes about three times
# SHUTDOWN_GRACE_S: docs/endurance.md; killed halfway, the next start would restore the
# checkpoint before). It exits as soon as it is written.
REPLAY_SERVER_GRACE_S = 120.0
ROLE_MODULES = {
    "replay_server": "roles.replay_server",
    "learner": "roles.learner",
    "collector": "roles.collector",
    "evaluator": "roles.evaluator",
}


def role_name(command: list[str]) -> str | None:
    """The name a Cluster gives the role process with this command line ('learner',
    'collector-2'); None for any other process."""
    for role, module in ROLE_MODULES.items():
        if f"distributed_sac.{module}" in command:
            if role != "collector":
                return role
            task = command[command.index("--task") + 1] if "--task" in command else "0"
            return f"collector-{task}"
    return None


def role_pids(launcher_pid: int) -> dict[str, int]:
    """{role name: pid} of the live role processes a launcher started."""
    found = {}
    for pid, command in processes.children(launcher_pid).items():
        name = role_name(command)
        if name is not None:
            found[name] = pid
    return found


class RestartBudget:
    """One role's restarts within a sliding window of `window_s` seconds: a role that crashes
    now and then over days keeps running, one that crashes in a loop stops the run."""

    def __init__(self, max_restarts: int, window_s: float):
        self.max_restarts, self.window_s = max_restarts, window_s
        self._times: collections.deque[float] = collections.deque()

    def recent(self, now: float) -> int:
        """Restarts within the window before `now`."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times)

    def take(self, now: float) -> int | None:
        """Records a restart at `now` and returns how many the window holds with it; None (and
        nothing recorded) when the window already holds max_restarts."""
        if self.recent(now) >= self.max_restarts:
            return None
        self._times.append(now)
        return len(self._times)


class Cluster:
    """The run's role processes by name, logs in <root_dir>/logs. `supervise` restarts the ones
    that die, up to `max_restarts` each within any `restart_window_s`, after a backoff that
    doubles with each restart in the window."""

    def __init__(
        self,
        run_dir: RunDir,
        role_args: list[str],
        *,
        console: Console | None = None,
        max_restarts: int = 0,
        restart_backoff_s: float = 2.0,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        restart_window_s: float = 3600.0,
        run_lock_fd: int | None = None,
        replay_server_grace_s: float = REPLAY_SERVER_GRACE_S,
    ):
        self.run_dir = run_dir
        self.console = console
        os.makedirs(run_dir.logs, exist_ok=True)
        self.role_args = role_args
        # Every role holds the run lock with the launcher (see run_lock).
        self._pass_fds = () if run_lock_fd is None else (run_lock_fd,)
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.restart_backoff_s = restart_backoff_s
        self.shutdown_grace_s = shutdown_grace_s
        self.replay_server_grace_s = replay_server_grace_s
        self.roles: dict[str, Process] = {}
        self._commands: dict[str, tuple[str, list[str]]] = {}
        self._budgets: dict[str, RestartBudget] = {}
        # A pending restart: when it is due, and its number within the window.
        self._restart_at: dict[str, tuple[float, int]] = {}

    def start(self, name: str, role: str, extra: list[str]) -> Process:
        """Starts role `role` (a key of ROLE_MODULES) as `name` with the common and `extra` args."""
        self._commands[name] = (role, extra)
        self.roles[name] = Process.module(
            ROLE_MODULES[role],
            self.role_args + extra,
            self.run_dir.log(name),
            name=role,
            pass_fds=self._pass_fds,
        )
        return self.roles[name]

    def exit_line(self, name: str, code: int, context: str = "") -> str:
        """'<name> exited with <code or signal>[context]: <its error>'; a process that wrote no
        error (one killed by a signal) gets no error part."""
        error = self.roles[name].failure()
        return f"{name} exited with {describe_exit(code)}{context}" + (
            f": {error}" if error else ""
        )

    def supervise(self) -> None:
        """Schedules a restart for each role that died, starts those whose backoff is over."""
        now = time.monotonic()
        for name, role in self.roles.items():
            if name in self._restart_at:
                due, number = self._restart_at[name]
                if now >= due:
                    del self._restart_at[name]
                    self.start(name, *self._commands[name])
                    self._event(f"{name}: restarted (restart {number}/{self.max_restarts})")
                continue
            code = role.poll()
            if code in (None, 0):
                continue
            if code == CONFIG_ERROR_EXIT_CODE:
                self.fail(name, code)
            budget = self._budgets.setdefault(
                name, RestartBudget(self.max_restarts, self.restart_window_s)
            )
            number = budget.take(now)
            if number is None:
                within = f" within {self.restart_window_s:.0f}s"
                self.fail(
                    name,
                    code,
                    f" after {self.max_restarts} restarts{within}" * (self.max_restarts > 0),
                )
            delay = self.restart_backoff_s * 2 ** (number - 1)
            self._restart_at[name] = (now + delay, number)
            self._event(
                f"{self.exit_line(name, code)[:300]}; restart "
                f"{number}/{self.max_restarts} in {delay:.0f}s"
            )

    def check_alive(self) -> None:
        """Raises a UserError naming the first role that exited (for runs without restarts)."""
        for name, role in self.roles.items():
            code = role.poll()
            if code is not None:
                raise UserError(f"{self.exit_line(name, code)} (log: {role.log_path})")

    def finished(self, name: str) -> bool:
        return name not in self._restart_at and self.roles[name].poll() == 0

    def stop(self, names, grace_s: float) -> None:
        processes.stop([self.roles.pop(n) for n in names if n in self.roles], grace_s)

    def stop_all(self) -> None:
        """SIGTERM to the learner first, so it checkpoints while collectors still feed it, then
        to the collectors and the evaluator, SIGKILL to whatever of them is left after
        shutdown_grace_s in all; then the replay server (see stop_replay_server)."""
        grace_s = self.shutdown_grace_s
        start = time.monotonic()

        def left(fraction: float) -> float:
            return max(0.1, start + fraction * grace_s - time.monotonic())

        clients = [n for n in self.roles if n not in ("learner", "replay_server")]
        learner_done = left(LEARNER_GRACE_FRACTION)
        processes.stop([self.roles[n] for n in ("learner",) if n in self.roles], learner_done)
        processes.stop([self.roles[n] for n in clients], left(1.0))
        self.stop_replay_server()

    def stop_replay_server(self) -> None:
        """SIGTERM to the replay server, SIGKILL if it has not written its checkpoint and exited
        after replay_server_grace_s."""
        server = [self.roles[n] for n in ("replay_server",) if n in self.roles]
        processes.stop(server, self.replay_server_grace_s)  # kept in self.roles: fail() names it

    def kill_all(self) -> None:
        """SIGKILL to every role's process group, at once."""
        for role in self.roles.values():
            role.send_signal(signal.SIGKILL, group=True)

    def fail(self, name: str, code: int, context: str = "") -> None:
        self.stop_all()
        role = self.roles[name]
        raise UserError(f"{self.exit_line(name, code, context)} (log: {role.log_path})")

    def _event(self, message: str) -> None:
        if self.console is not None:
            self.console.event(message)
