"""Replay server role: one Reverb server holding the experience and the variables tables."""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import socket
import threading
import time

from absl import flags, logging

from distributed_sac.builder import Builder
from distributed_sac.errors import (
    DiskFull,
    ServerCallTimeout,
    UserError,
    first_line,
    is_disk_full,
)
from distributed_sac.replay import server_checkpoints, tables
from distributed_sac.replay.connection import BoundedCall
from distributed_sac.reports import report
from distributed_sac.runtime import cli
from distributed_sac.runtime.addresses import check_port
from distributed_sac.runtime.faults import FaultInjection
from distributed_sac.runtime.stopping import StopRequest

flags.DEFINE_integer("port", 8008, "Port the Reverb server listens on.")
flags.DEFINE_integer("status_interval_s", 30, "Seconds between table-size log lines.")
flags.DEFINE_float(
    "checkpoint_timeout_s",
    600.0,
    "Seconds a Reverb checkpoint may take before the server gives up on it (the previous "
    "complete one stays the one restored). 1M Minitaur pairs took 23.6 s.",
)
FLAGS = flags.FLAGS
# The server's calls to itself (table sizes, checkpoints) run bounded, in a worker thread, so
# that its main thread always reads the stop signal: a call stuck inside Reverb would otherwise
# hold off the Python signal handler for as long as it lasts.
TABLE_SIZES_TIMEOUT_S = 30.0
# Reverb's Server.stop() gives its gRPC server a 5 s deadline; past this the process exits
# anyway, its checkpoint already written.
SERVER_STOP_TIMEOUT_S = 15.0


def _check_port_free(port: int) -> None:
    # gRPC's own bind failure is a wall of JSON; say it plainly first.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise UserError(f"cannot listen on port {port}: {error.strerror}") from None


class _SelfCalls:
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
            seconds=round(time.monotonic() - started, 2),
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


def _stop_server(server) -> None:
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


def _start_server(config, port: int, run_dir):
    """The Reverb server; with a run dir, it restores the newest checkpoint in <root>/reverb
    (Reverb loads it on start and keeps only the newest on save)."""
    import reverb

    builder = Builder(config)
    checkpointer = None
    if run_dir is not None:
        server_checkpoints.check_and_record(
            run_dir.reverb, run_dir.reverb_signatures, builder.signatures()
        )
        server_checkpoints.order_by_time(run_dir.reverb)
        checkpointer = reverb.checkpointers.DefaultCheckpointer(path=run_dir.reverb)
    else:
        logging.warning("no --root_dir: the tables live in memory only and are lost on exit")
    # Built before the server: an error here is the config's, not a checkpoint's.
    made = builder.make_tables()
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
            _stop_server(server)  # without a checkpoint: the one restored stays as it was
            del server  # its __del__ logs the port's release: before the error line, not after
            raise UserError(
                f"the Reverb checkpoint in {run_dir.reverb} holds tables of another config "
                f"({'; '.join(differences)}); use the gin config it was written with, or "
                "another --root_dir (it is left as it is)"
            )
    return server


def main() -> None:
    import reverb

    server_checkpoints.pin_utc()  # before Reverb names or orders any checkpoint
    config = cli.load_config()
    _check_port_free(check_port(FLAGS.port, "--port"))
    run_dir = cli.run_dir("replay_server", required=False)
    server = _start_server(config, FLAGS.port, run_dir)
    client = reverb.Client(f"localhost:{FLAGS.port}")
    report("replay_server_ready", port=FLAGS.port, table_sizes=tables.table_sizes(client))

    calls = _SelfCalls(
        client, FLAGS.checkpoint_timeout_s, run_dir.reverb if run_dir is not None else ""
    )
    # No abandon_calls here: the final checkpoint, a bounded call to itself, must not be dropped.
    stop = StopRequest()
    last_checkpoint = last_status = time.monotonic()
    interval = config.replay_checkpoint_interval_s
    final_written = False
    while not stop.requested:
        time.sleep(0.2)
        now = time.monotonic()
        if run_dir is not None and interval > 0 and now - last_checkpoint >= interval:
            written = calls.periodic_checkpoint()
            last_checkpoint = now
            # Stopped while it was written: it is the final one. Another would take as long
            # again (a big table's twice past the launcher's grace) for the few pairs
            # inserted meanwhile.
            final_written = written and stop.requested
        if now - last_status >= FLAGS.status_interval_s:
            logging.info("table sizes: %s", calls.table_sizes())
            last_status = now
    logging.info("stop requested (%s)", signal.Signals(stop.signals[0]).name)
    if final_written:
        logging.info("the replay checkpoint written at the stop request is the final one")
    elif run_dir is not None:
        delay_s = FaultInjection().replay_server_stop_delay_s
        if delay_s:
            logging.warning("FaultInjection: waiting %.0fs before the final checkpoint", delay_s)
            time.sleep(delay_s)
        try:
            calls.checkpoint()
        except ServerCallTimeout as error:
            raise ServerCallTimeout(
                f"the final Reverb checkpoint failed ({error}); the newest complete one in "
                f"{run_dir.reverb} is the one a restart restores"
            ) from None
        except UserError as error:
            raise type(error)(f"the final replay checkpoint failed: {error}") from None
    else:
        logging.info("final table sizes: %s", calls.table_sizes())
    logging.info("stopping the Reverb server")
    _stop_server(server)
    logging.info("Reverb server stopped")


def run() -> None:
    cli.run_role("replay_server", main)


if __name__ == "__main__":
    run()
