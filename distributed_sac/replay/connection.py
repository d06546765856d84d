"""Reaching the replay server: connecting with retries, telling a lost server from a bug, and
remaking a role's server-bound parts when the server went away and came back."""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

import reverb
import tensorflow as tf
from absl import logging

from distributed_sac.errors import UserError, first_line
from distributed_sac.reports import report

T = TypeVar("T")
R = TypeVar("R")


def connect(address: str, timeout_s: float) -> reverb.Client:
    """A client whose server answered; retries with backoff, logging each retry, up to timeout_s."""
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
                raise UserError(
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
            time.sleep(min(delay, remaining))
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
    if isinstance(error, (*_CONNECTION_ERROR_TYPES, reverb.errors.DeadlineExceededError)):
        return True
    if isinstance(error, (RuntimeError, tf.errors.OpError, reverb.errors.ReverbError)):
        message = str(error).lower()
        return any(known in message for known in _CONNECTION_ERROR_MESSAGES)
    return False


class Reconnecting(Generic[T]):
    """The parts a role made from its server connection (clients, writer, weight client).

    When a call fails because the server went away, `recover` makes them anew through `connect`
    (which retries up to the config's connect_timeout_s, then raises a UserError) and reports
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
        report(f"{self.role}_reconnected", seconds=round(time.monotonic() - started, 2))

    def call(self, function: Callable[[T], R]) -> R:
        """`function(parts)`; after a lost server, once more on the remade parts."""
        try:
            return function(self.parts)
        except Exception as error:
            self.recover(error)
            return function(self.parts)
