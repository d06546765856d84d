"""Running a command under absl (a UserError becomes one line on stderr and its exit code: 2, or 3
for an unreachable replay server), and
checking a tool's --output before any slow work.

Shared by the role binaries (through runtime/cli.py) and the tools (plot, play). It defines no
flags, so a tool whose flags differ from the roles' (plot's repeatable --root_dir) can use it too.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from typing import Callable

from absl import app, logging

from distributed_sac.errors import CallAbandoned, UserError

FINAL_LINE_DELAY_S = 0.2


def run(name: str, main: Callable[[], None]) -> None:
    """Parses flags and runs `main`; `name: error: <message>` and the error's exit code (2, or 3
    for ServerUnreachable) on a UserError. `kill -USR1 <pid>` writes every thread's stack to
    stderr (a role's log), so a process that does not stop can say where it is."""

    def absl_main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.get_absl_handler().use_absl_log_file = False
        final_line, stream = None, sys.stderr
        try:
            main()
            code = 0
        except CallAbandoned as abandoned:  # asked to stop while the server was away
            final_line = f"{name}: stopped while waiting for the replay server ({abandoned})"
            code, stream = 128 + signal.SIGTERM, sys.stdout
        except UserError as error:
            final_line, code = f"{name}: error: {error}", error.exit_code
        except SystemExit as exit_request:
            code = exit_request.code if isinstance(exit_request.code, int) else 1
        _exit_now(code, final_line, stream)

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app.run(absl_main)


def _exit_now(code: int, final_line: str | None = None, stream=sys.stderr) -> None:
    """Exits without the interpreter's teardown, which takes seconds once TensorFlow and pybullet
    are loaded: a stopping cluster should be gone at once. Commands flush what they write (logs,
    summaries, checkpoints, videos) before they return; this flushes the streams, silences stdout
    and stderr, then writes `final_line` where it belongs, so it stays the last line: Reverb's
    client threads log from C++ until the process ends (a learner that gave up on its server once
    ended its log with "Unable to find table 'learner_feed'" after its error)."""
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if final_line is not None:
        target = os.dup(stream.fileno())
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        # A write another thread began before the silencing still lands where it began; on a
        # loaded machine it can be held off the CPU for a while. Let those land first.
        time.sleep(FINAL_LINE_DELAY_S)
        os.write(target, f"{final_line}\n".encode())
    os._exit(code)


def check_output_path(path: str, extensions: tuple[str, ...]) -> str:
    """`path` as given, when its extension is one of `extensions` and its directory exists and is
    writable; UserError otherwise (before any slow work, so a typo costs nothing)."""
    if not path:
        raise UserError("--output is empty")
    extension = os.path.splitext(path)[1].lower()
    if extension not in extensions:
        raise UserError(
            f"unsupported output format '{extension or path}' in --output {path}: "
            f"use {', '.join(extensions)}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UserError(f"output directory does not exist: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"output directory is not writable: {directory}")
    if os.path.isdir(path):
        raise UserError(f"--output {path} is a directory")
    return path
