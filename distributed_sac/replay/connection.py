"""Reaching the replay server: connecting with retries, bounding calls that Reverb would retry
forever, telling a lost server from a bug, and remaking a role's server-bound parts when the
server went away and came back."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Callable, Generic, TypeVar

import reverb
import tensorflow as tf
from absl import logging

from distributed_sac.errors import (
    CallAbandoned,
    ServerCallTimeout,
    ServerUnreachable,
    first_line,
)
from distributed_sac.reports import report, seconds_since

T = TypeVar("T")
R = TypeVar("R")

# Reverb 0.14 retries an unavailable server forever inside Client.sample, Client.insert and a
# running TrajectoryDataset (only server_info and the writer's flush take a timeout), so those
# calls go through BoundedCall, with RunConfig.server_call_timeout_s.
_stopping = threading.Event()


def abandon_calls() -> None:
    """Makes bounded calls and `connect` that wait on the server give up (CallAbandoned), so a
    role asked to stop (a signal handler calls this) is not held by a server that is gone."""
    _stopping.set()


class BoundedCall:
    """Runs a blocking server call in a worker thread and waits for it at most `timeout_s`
    (ServerCallTimeout), or until a stop is requested once it has run a second (CallAbandoned).

    Reverb cannot cancel the call, so its thread is left waiting; while it is, the next call
    fails at once rather than leave another thread behind.
    """

    def __init__(self, what: str, timeout_s: float):
        self._what, self._timeout_s = what, timeout_s
        self._pending: concurrent.futures.Future | None = None

    def __call__(self, function: Callable[..., R], *args) -> R:
        if self._pending is not None and not self._pending.done():
            raise ServerCallTimeout(f"{self._what}: an earlier call is still waiting")
        future: concurrent.futures.Future = concurrent.futures.Future()

        def work():
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the waiting thread
                future.set_exception(error)

        self._pending = future
        threading.Thread(target=work, name=self._what, daemon=True).start()
        started = time.monotonic()
        while True:
            try:
                result = future.result(timeout=0.25)
            except concurrent.futures.TimeoutError:
                waited = time.monotonic() - started
                if waited >= self._timeout_s:
                    raise ServerCallTimeout(
                        f"{self._what}: no answer from the replay server in {self._timeout_s:.0f}s"
                    ) from None
                if waited >= 1.0 and _stopping.is_set():
                    raise CallAbandoned(self._what) from None
                continue
            except BaseException:
                self._pending = None
                raise
            self._pending = None
            return result

    def late(self, wait_s: float = 0.0) -> tuple[bool, R | None]:
        """(finished, result) of a call that timed out or was abandoned: it may still finish,
        once the server answers again. Waits for it up to `wait_s`; a call that failed, or
        none left behind, is (True, None)."""
        future = self._pending
        if future is None:
            return True, None
        try:
            result = future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            return False, None
        except Exception:
            result = None
        self._pending = None
        return True, result


def connect(address: str, timeout_s: float) -> reverb.Client:
    """A client whose server answered; retries with backoff, logging each retry, up to timeout_s
    (then ServerUnreachable), or until a stop is requested (CallAbandoned)."""
    client = reverb.Client(address)
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            client.server_info(timeout=max(1, int(min(remaining, 2))))
            return client
        except Exception as error:  # gRPC unavailable / deadline exceeded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerUnreachable(
                    f"replay server at {address} unreachable after {timeout_s:.0f}s "
                    f"({attempt} attempts)"
                ) from None
            logging.warning(
                "replay server at %s not reachable (attempt %d: %s); retrying in %.1fs",
                address,
                attempt,
                first_line(error, 120),
                delay,
            )
            if _stopping.wait(min(delay, remaining)):  # True: a stop was requested
                raise CallAbandoned(f"connecting to {address}") from None
            delay = min(delay * 2, 10.0)


# What Reverb raises when its server goes away mid-call: gRPC statuses, or plain RuntimeErrors
# from the writer and sampler.
_CONNECTION_ERROR_TYPES = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
)
_CONNECTION_ERROR_MESSAGES = (
    "socket closed",
    "connection reset",
    "failed to connect",
    "unavailable",
    "error when confirming that all items written",
    "broken pipe",
)


def is_connection_error(error: BaseException) -> bool:
    """True when `error` means the replay server went away (so reconnecting may help)."""
    # Reverb's own DeadlineExceededError: a call to a server that stopped answering. (Writers'
    # rate-limiter timeouts raise it too, but ExperienceWriter handles those itself.)
    if isinstance(
        error, (*_CONNECTION_ERROR_TYPES, reverb.errors.DeadlineExceededError, ServerCallTimeout)
    ):
        return True
    if isinstance(error, (RuntimeError, tf.errors.OpError, reverb.errors.ReverbError)):
        message = str(error).lower()
        return any(known in message for known in _CONNECTION_ERROR_MESSAGES)
    return False


class Reconnecting(Generic[T]):
    """The parts a role made from its server connection (clients, writer, weight client).

    When a call fails because the server went away, `recover` makes them anew through `connect`
    (which retries up to the config's connect_timeout_s, then raises ServerUnreachable) and reports
    `<role>_reconnected`; any other error is raised as it is.
    """

    def __init__(self, role: str, connect: Callable[[], T]):
        self.role = role
        self._connect = connect
        self.parts: T = connect()

    def recover(self, error: BaseException) -> None:
        if not is_connection_error(error):
            raise error
        logging.warning(
            "%s lost the replay server (%s); reconnecting", self.role, first_line(error)
        )
        started = time.monotonic()
        self.parts = self._connect()
        report(f"{self.role}_reconnected", seconds=seconds_since(started))

    def call(self, function: Callable[[T], R]) -> R:
        """`function(parts)`; after a lost server, once more on the remade parts."""
        try:
            return function(self.parts)
        except Exception as error:
            self.recover(error)
            return function(self.parts)
