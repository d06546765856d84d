"""Replay server role: one Reverb server holding the experience and the variables tables."""

from __future__ import annotations

import signal
import socket
import threading

from absl import flags, logging

from distributed_sac import cli, replay
from distributed_sac.builder import Builder
from distributed_sac.config import UserError

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


def main() -> None:
    import reverb

    config = cli.load_config()
    _check_port_free(FLAGS.port)
    tables = Builder(config).make_tables()
    try:
        server = reverb.Server(tables, port=FLAGS.port)
    except ValueError as error:
        raise UserError(f"cannot listen on port {FLAGS.port}: {error}") from None
    cli.report("replay_server_ready", port=FLAGS.port)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = reverb.Client(f"localhost:{FLAGS.port}")
    while not stop.wait(FLAGS.status_interval_s):
        logging.info("table sizes: %s", replay.describe_tables(client))
    logging.info("stopping replay server; final table sizes: %s", replay.describe_tables(client))
    server.stop()


def run() -> None:
    cli.run_role("replay_server", main)


if __name__ == "__main__":
    run()
