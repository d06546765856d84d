"""The replay server's process: one Reverb server of the run's tables, restored from and
checkpointed to <root_dir>/reverb, serving until a stop request, then checkpointed once more."""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import socket
import threading
import time
from typing import Callable

import reverb
from absl import logging

from distributed_sac.errors import (
    DiskFull,
    ServerCallTimeout,
    UserError,
    first_line,
    is_disk_full,
)
from distributed_sac.layout import RunDir
from distributed_sac.replay import server_checkpoints, tables
from distributed_sac.replay.connection import BoundedCall
from distributed_sac.reports import report, seconds_since
from distributed_sac.runtime.faults import FaultInjection
from distributed_sac.runtime.stopping import StopRequest

# The server's calls to itself (table sizes, checkpoints) run bounded, in a worker thread, so
# that its main thread always reads the stop signal: a call stuck inside Reverb would otherwise
# hold off the Python signal handler for as long as it lasts.
TABLE_SIZES_TIMEOUT_S = 30.0
# Reverb's Server.stop() gives its gRPC server a 5 s deadline; past this the process exits
# anyway, its checkpoint already written.
SERVER_STOP_TIMEOUT_S = 15.0


def check_port_free(port: int) -> None:
    # gRPC's own bind failure is a wall of JSON; say it plainly first.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise UserError(f"cannot listen on port {port}: {error.strerror}") from None


class SelfCalls:
    """The server's bounded calls to itself: its table sizes, and a checkpoint."""

    def __init__(self, client, checkpoint_timeout_s: float, directory: str):
        self._client = client
        self._sizes = BoundedCall("table sizes", TABLE_SIZES_TIMEOUT_S)
        self._checkpoint = BoundedCall("replay checkpoint", checkpoint_timeout_s)
        self._delay_s = FaultInjection().replay_checkpoint_delay_s
        self._directory = directory
        self.failures = 0  # periodic checkpoints that failed since the server started

    def table_sizes(self) -> dict[str, int]:
        return self._sizes(tables.table_sizes, self._client)

    def _write_checkpoint(self) -> str:
        if self._delay_s:
            logging.warning("FaultInjection: waiting %.0fs before the checkpoint", self._delay_s)
            time.sleep(self._delay_s)
        return self._client.checkpoint()

    def checkpoint(self) -> None:
        """Writes a checkpoint and reports it. When Reverb's write fails, removes what it left
        and raises a UserError (DiskFull for a full disk) naming the checkpoint a restart
        restores; ServerCallTimeout when it does not return in time (it may still be writing:
        what it wrote so far stays)."""
        # Read before the checkpoint: tables only grow (or stay full), so these sizes are at
        # most what the checkpoint holds; read after, they could count items inserted since.
        sizes = self.table_sizes()
        started = time.monotonic()
        directory = self._directory
        before = set(os.listdir(directory)) if os.path.isdir(directory) else set()
        lacking = os.path.isdir(directory) and server_checkpoints.lack_of_space(directory)
        if lacking:
            raise DiskFull(
                f"no space left on device for a replay checkpoint in {directory} ({lacking}); "
                f"{self._restored()}"
            )
        logging.info("writing a replay checkpoint")
        try:
            path = self._checkpoint(self._write_checkpoint)
        except ServerCallTimeout:
            raise
        except Exception as error:
            server_checkpoints.remove_unfinished(directory, before)
            if is_disk_full(error):
                raise DiskFull(
                    f"no space left on device writing a replay checkpoint to {directory}; "
                    f"{self._restored()}"
                ) from None
            raise UserError(
                f"a replay checkpoint to {directory} failed: {first_line(error)}; "
                f"{self._restored()}"
            ) from None
        if server_checkpoints.written_empty(path):
            shutil.rmtree(path, ignore_errors=True)  # a restart would load empty tables from it
            raise DiskFull(
                f"Reverb wrote the replay checkpoint {path} empty (a full disk?) and deleted the "
                f"one before; removed it; {self._restored()}"
            )
        report(
            "replay_checkpoint",
            path=path,
            table_sizes=sizes,
            seconds=seconds_since(started),
        )

    def _restored(self) -> str:
        complete = server_checkpoints.complete_checkpoints(self._directory)
        return f"the newest complete one is still {complete[-1] if complete else 'none'}"

    def periodic_checkpoint(self) -> bool:
        """A checkpoint whose failure is one report line, counted, and the server serves on (the
        next interval tries again): a full disk must not stop the run, nor loop its restarts.
        True when it was written."""
        try:
            self.checkpoint()
            return True
        except (UserError, OSError) as error:  # ServerCallTimeout included; OSError: its files
            self.failures += 1
            report("replay_checkpoint_failed", error=str(error), failures=self.failures)
            return False


def stop_server(server) -> None:
    """server.stop(), waited for at most SERVER_STOP_TIMEOUT_S; past it the threads' stacks go
    to the log and the process exits all the same."""
    stopping = threading.Thread(target=server.stop, name="server.stop", daemon=True)
    stopping.start()
    stopping.join(SERVER_STOP_TIMEOUT_S)
    if stopping.is_alive():
        logging.warning(
            "the Reverb server did not stop in %.0fs; exiting without it; threads:",
            SERVER_STOP_TIMEOUT_S,
        )
        faulthandler.dump_traceback(all_threads=True)


def start_server(
    port: int,
    run_dir: RunDir | None,
    *,
    signatures: Callable[[], dict],
    make_tables: Callable[[], list[reverb.Table]],
) -> reverb.Server:
    """The Reverb server of the tables `make_tables` makes, whose `signatures` they are; with a
    run dir, it restores the newest checkpoint in <root>/reverb (Reverb loads it on start and
    keeps only the newest on save)."""
    checkpointer = None
    if run_dir is not None:
        server_checkpoints.check_and_record(run_dir.reverb, run_dir.reverb_signatures, signatures())
        server_checkpoints.order_by_time(run_dir.reverb)
        checkpointer = reverb.checkpointers.DefaultCheckpointer(path=run_dir.reverb)
    else:
        logging.warning("no --root_dir: the tables live in memory only and are lost on exit")
    # Built before the server: an error here is the config's, not a checkpoint's.
    made = make_tables()
    configured = {table.name: table.info for table in made}
    try:
        server = reverb.Server(made, port=port, checkpointer=checkpointer)
    except ValueError as error:
        raise UserError(f"cannot listen on port {port}: {error}") from None
    except Exception as error:
        if checkpointer is None or not server_checkpoints.complete_checkpoints(run_dir.reverb):
            raise
        # An unreadable checkpoint; Reverb leaves it in place.
        raise UserError(
            f"cannot load the Reverb checkpoint in {run_dir.reverb}: {first_line(error)}; it is "
            "left as it is (move it away to start with empty tables)"
        ) from None
    if checkpointer is not None:
        # Reverb restores each table's size, limiter and selectors from the checkpoint, in
        # place of the config's: a checkpoint of another replay_capacity or UTD would
        # silently run the tables of that config.
        restored = reverb.Client(f"localhost:{port}").server_info(timeout=30)
        differences = tables.settings_differences(restored, configured)
        if differences:
            stop_server(server)  # without a checkpoint: the one restored stays as it was
            del server  # its __del__ logs the port's release: before the error line, not after
            raise UserError(
                f"the Reverb checkpoint in {run_dir.reverb} holds tables of another config "
                f"({'; '.join(differences)}); use the gin config it was written with, or "
                "another --root_dir (it is left as it is)"
            )
    return server


class ReplayServer:
    """A started Reverb server and its bounded calls to itself (`calls`); with a run dir, it
    checkpoints its tables every `checkpoint_interval_s` (0: only at the end) and at the end."""

    def __init__(
        self,
        server: reverb.Server,
        *,
        port: int,
        run_dir: RunDir | None,
        checkpoint_timeout_s: float,
    ):
        self._server, self._run_dir = server, run_dir
        self.client = reverb.Client(f"localhost:{port}")
        directory = run_dir.reverb if run_dir is not None else ""
        self.calls = SelfCalls(self.client, checkpoint_timeout_s, directory)
        self._final_written = False

    def serve(self, stop: StopRequest, checkpoint_interval_s: float, status_interval_s: float):
        """Serves until a stop request, logging the table sizes every `status_interval_s`."""
        last_checkpoint = last_status = time.monotonic()
        checkpoints = self._run_dir is not None and checkpoint_interval_s > 0
        while not stop.requested:
            time.sleep(0.2)
            now = time.monotonic()
            if checkpoints and now - last_checkpoint >= checkpoint_interval_s:
                written = self.calls.periodic_checkpoint()
                last_checkpoint = now
                # Stopped while it was written: it is the final one. Another would take as long
                # again (a big table's twice past the launcher's grace) for the few pairs
                # inserted meanwhile.
                self._final_written = written and stop.requested
            if now - last_status >= status_interval_s:
                logging.info("table sizes: %s", self.calls.table_sizes())
                last_status = now
        logging.info("stop requested (%s)", signal.Signals(stop.signals[0]).name)

    def final_checkpoint(self) -> None:
        """The checkpoint a restart restores (with a run dir), unless the one written at the
        stop request is it; a failed one is an error naming the newest complete one."""
        run_dir = self._run_dir
        if self._final_written:
            logging.info("the replay checkpoint written at the stop request is the final one")
        elif run_dir is not None:
            delay_s = FaultInjection().replay_server_stop_delay_s
            if delay_s:
                logging.warning(
                    "FaultInjection: waiting %.0fs before the final checkpoint", delay_s
                )
                time.sleep(delay_s)
            try:
                self.calls.checkpoint()
            except ServerCallTimeout as error:
                raise ServerCallTimeout(
                    f"the final Reverb checkpoint failed ({error}); the newest complete one in "
                    f"{run_dir.reverb} is the one a restart restores"
                ) from None
            except UserError as error:
                raise type(error)(f"the final replay checkpoint failed: {error}") from None
        else:
            logging.info("final table sizes: %s", self.calls.table_sizes())

    def stop(self) -> None:
        logging.info("stopping the Reverb server")
        stop_server(self._server)
        logging.info("Reverb server stopped")
