"""A set of role processes under one run directory: started by name, supervised with
restarts, stopped in order. The launcher runs a whole cluster with it; the throughput benchmark
starts the parts it measures."""

from __future__ import annotations

import os
import time

from distributed_sac import processes
from distributed_sac.errors import UserError
from distributed_sac.layout import RunDir
from distributed_sac.processes import Process, describe_exit

CONFIG_ERROR_EXIT_CODE = 2  # entrypoint.run's exit code for a UserError: restarting cannot help
ROLE_MODULES = {
    "replay_server": "roles.replay_server",
    "learner": "roles.learner",
    "collector": "roles.collector",
    "evaluator": "roles.evaluator",
}


class Cluster:
    """The run's role processes by name, logs in <root_dir>/logs. `supervise` restarts the ones
    that die, up to `max_restarts` each, after a doubling backoff."""

    def __init__(
        self,
        run_dir: RunDir,
        role_args: list[str],
        console=None,
        max_restarts: int = 0,
        restart_backoff_s: float = 2.0,
        shutdown_grace_s: float = 8.0,
    ):
        self.run_dir = run_dir
        self.console = console
        os.makedirs(run_dir.logs, exist_ok=True)
        self.role_args = role_args
        self.max_restarts = max_restarts
        self.restart_backoff_s = restart_backoff_s
        self.shutdown_grace_s = shutdown_grace_s
        self.roles: dict[str, Process] = {}
        self._commands: dict[str, tuple[str, list[str]]] = {}
        self.restarts: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}
        self.stopping = False

    def start(self, name: str, role: str, extra: list[str]) -> Process:
        """Starts role `role` (a key of ROLE_MODULES) as `name` with the common and `extra` args."""
        self._commands[name] = (role, extra)
        self.roles[name] = Process.module(
            ROLE_MODULES[role], self.role_args + extra, self.run_dir.log(name), name=role
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
                if now >= self._restart_at[name]:
                    del self._restart_at[name]
                    self.start(name, *self._commands[name])
                    self._event(
                        f"{name}: restarted (restart {self.restarts[name]}/{self.max_restarts})"
                    )
                continue
            code = role.poll()
            if code in (None, 0):
                continue
            if code == CONFIG_ERROR_EXIT_CODE:
                self.fail(name, code)
            if self.restarts.get(name, 0) >= self.max_restarts:
                self.fail(
                    name, code, f" after {self.max_restarts} restarts" * (self.max_restarts > 0)
                )
            self.restarts[name] = self.restarts.get(name, 0) + 1
            delay = self.restart_backoff_s * 2 ** (self.restarts[name] - 1)
            self._restart_at[name] = now + delay
            self._event(
                f"{self.exit_line(name, code)[:300]}; restart "
                f"{self.restarts[name]}/{self.max_restarts} in {delay:.0f}s"
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
        to the others, the replay server last (it checkpoints its tables); SIGKILL to whatever
        is left after shutdown_grace_s in all."""
        grace_s = self.shutdown_grace_s
        start = time.monotonic()

        def left(fraction: float) -> float:
            return max(0.1, start + fraction * grace_s - time.monotonic())

        clients = [n for n in self.roles if n not in ("learner", "replay_server")]
        processes.stop([self.roles[n] for n in ("learner",) if n in self.roles], left(0.7))
        processes.stop([self.roles[n] for n in clients], left(0.7))
        processes.stop([self.roles[n] for n in ("replay_server",) if n in self.roles], left(1.0))

    def fail(self, name: str, code: int, context: str = "") -> None:
        self.stop_all()
        role = self.roles[name]
        raise UserError(f"{self.exit_line(name, code, context)} (log: {role.log_path})")

    def _event(self, message: str) -> None:
        if self.console is not None:
            self.console.event(message)
