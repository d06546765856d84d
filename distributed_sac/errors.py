"""The one kind of error a user sees as one line, and folding library messages onto one line."""

from __future__ import annotations

import errno
import re


class UserError(Exception):
    """A problem with the user's input or setup, reported as one line and a non-zero exit."""

    exit_code = 2  # a supervisor does not restart it: the same input fails the same way


class ServerUnreachable(UserError):
    """The replay server stayed unreachable (or stopped answering) past the role's deadline.

    Not a configuration error: a supervisor restarts the role, which waits for the server again.
    """

    exit_code = 3


class ServerCallTimeout(ServerUnreachable):
    """A call to the replay server did not return in time: the server is gone or hung."""


class CallAbandoned(Exception):
    """A wait on the replay server given up because the process was asked to stop."""


def one_line(error: BaseException) -> str:
    """An error message folded onto one line."""
    return re.sub(r"\s*\n\s*", " | ", str(error).strip())


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (Reverb and TF append long stacks and JSON)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


class DiskFull(UserError):
    """A write failed for want of disk space; what was there before it stays as it was.

    Exit code 2: restarting cannot help until someone frees space.
    """


def is_disk_full(error: BaseException) -> bool:
    """True for an error from a write that ran out of space (an OSError, or TensorFlow's
    errors, which carry only the message)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    message = str(error)
    return "No space left on device" in message or "Disk quota exceeded" in message
