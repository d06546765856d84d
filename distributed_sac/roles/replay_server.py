"""Replay server role: one Reverb server holding the experience and the variables tables."""

from __future__ import annotations

import signal
import socket
import threading
import time

from absl import flags, logging

from distributed_sac import cli
from distributed_sac.builder import Builder
from distributed_sac.errors import UserError, first_line
from distributed_sac.faults import FaultInjection
from distributed_sac.replay import server_checkpoints, tables
from distributed_sac.replay.connection import check_port
from distributed_sac.reports import report

flags.DEFINE_integer("port", 8008, "Port the Reverb server listens on.")
flags.DEFINE_integer("status_interval_s", 30, "Seconds between table-size log lines.")
FLAGS = flags.FLAGS


def _check_port_free(port: int) -> None:
    # gRPC's own bind failure is a wall of JSON; say it plainly first.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise UserError(f"cannot listen on port {port}: {error.strerror}") from None


def _checkpoint(client) -> None:
    # Read before the checkpoint: tables only grow (or stay full), so these sizes are at most
    # what the checkpoint holds; read after, they could count items inserted since.
    sizes = tables.table_sizes(client)
    started = time.monotonic()
    path = client.checkpoint()
    report(
        "replay_checkpoint",
        path=path,
        table_sizes=sizes,
        seconds=round(time.monotonic() - started, 2),
    )


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
        checkpointer = reverb.checkpointers.DefaultCheckpointer(path=run_dir.reverb)
    else:
        logging.warning("no --root_dir: the tables live in memory only and are lost on exit")
    try:
        return reverb.Server(builder.make_tables(), port=port, checkpointer=checkpointer)
    except ValueError as error:
        raise UserError(f"cannot listen on port {port}: {error}") from None
    except Exception as error:
        if checkpointer is None:
            raise
        # An unreadable checkpoint; Reverb leaves it in place.
        raise UserError(
            f"cannot load the Reverb checkpoint in {run_dir.reverb}: {first_line(error)}; it is "
            "left as it is (move it away to start with empty tables)"
        ) from None


def main() -> None:
    import reverb

    config = cli.load_config()
    _check_port_free(check_port(FLAGS.port, "--port"))
    run_dir = cli.run_dir("replay_server", required=False)
    server = _start_server(config, FLAGS.port, run_dir)
    client = reverb.Client(f"localhost:{FLAGS.port}")
    report("replay_server_ready", port=FLAGS.port, table_sizes=tables.table_sizes(client))

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    last_checkpoint = last_status = time.monotonic()
    interval = config.replay_checkpoint_interval_s
    while not stop.wait(1.0):
        now = time.monotonic()
        if run_dir is not None and interval > 0 and now - last_checkpoint >= interval:
            _checkpoint(client)
            last_checkpoint = now
        if now - last_status >= FLAGS.status_interval_s:
            logging.info("table sizes: %s", tables.table_sizes(client))
            last_status = now
    if run_dir is not None:
        delay_s = FaultInjection().replay_server_stop_delay_s
        if delay_s:
            logging.warning("FaultInjection: waiting %.0fs before the final checkpoint", delay_s)
            time.sleep(delay_s)
        _checkpoint(client)
    logging.info("stopping replay server; final table sizes: %s", tables.table_sizes(client))
    server.stop()


def run() -> None:
    cli.run_role("replay_server", main)


if __name__ == "__main__":
    run()
