"""One live run per root_dir.

The launcher takes an exclusive flock on <root_dir>/run.lock and hands the open file to every
role it starts. A flock belongs to the open file, not to a process, so it lasts until the last
of them has exited: a second launcher on the same root_dir is refused, and so is a relaunch
while a role of a killed launcher is still finishing (it could otherwise push stale weights or
write a checkpoint into the new run). The lock goes with the processes, however they end.
"""

from __future__ import annotations

import fcntl
import os
from typing import Callable

from distributed_sac.errors import UserError
from distributed_sac.layout import RunDir
from distributed_sac.runtime.waits import poll_until


def _holder(path: str) -> int | None:
    """The pid of the launcher that wrote the lock file, if it says one."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def hold(run_dir: RunDir, say: Callable[[str], None], orphan_wait_s: float = 30.0) -> int:
    """Takes the run's lock and returns its file descriptor (inheritable: pass it to the roles).

    Held by a live launcher: UserError at once. Held only by the roles of a launcher that is
    gone (they stop within seconds of losing it): waits up to `orphan_wait_s` for them first,
    telling `say` so.
    """
    fd = os.open(run_dir.run_lock, os.O_RDWR | os.O_CREAT, 0o644)
    waiting = False

    def taken() -> bool:
        nonlocal waiting
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            launcher = _holder(run_dir.run_lock)
            if launcher is not None and _alive(launcher):
                os.close(fd)
                raise UserError(
                    f"--root_dir {run_dir.root} is in use by a live run (launcher pid "
                    f"{launcher}); stop it first, or use another --root_dir"
                ) from None
            if not waiting:
                say(f"waiting up to {orphan_wait_s:.0f}s for the roles of a stopped run to exit")
                waiting = True
            return False

    if not poll_until(taken, orphan_wait_s, interval_s=0.5):
        os.close(fd)
        raise UserError(
            f"--root_dir {run_dir.root} is still held by roles of a stopped run after "
            f"{orphan_wait_s:.0f}s (see: fuser {run_dir.run_lock})"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.set_inheritable(fd, True)
    return fd
