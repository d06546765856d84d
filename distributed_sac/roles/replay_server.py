"""Replay server role: one Reverb server holding the experience and the variables tables."""

from __future__ import annotations

from absl import flags

from distributed_sac.builder import Builder
from distributed_sac.replay import server_checkpoints, tables
from distributed_sac.replay.server import ReplayServer, check_port_free, start_server
from distributed_sac.reports import report
from distributed_sac.runtime import cli
from distributed_sac.runtime.addresses import check_port
from distributed_sac.runtime.stopping import StopRequest

flags.DEFINE_integer("port", 8008, "Port the Reverb server listens on.")
flags.DEFINE_integer("status_interval_s", 30, "Seconds between table-size log lines.")
flags.DEFINE_float(
    "checkpoint_timeout_s",
    600.0,
    "Seconds a Reverb checkpoint may take before the server gives up on it (the previous "
    "complete one stays the one restored); a full table's takes tens of seconds "
    "(docs/endurance.md).",
)
FLAGS = flags.FLAGS


def main() -> None:
    server_checkpoints.pin_utc()  # before Reverb names or orders any checkpoint
    config = cli.load_config()
    check_port_free(check_port(FLAGS.port, "--port"))
    run_dir = cli.run_dir("replay_server", required=False)
    builder = Builder(config)
    server = ReplayServer(
        start_server(
            FLAGS.port, run_dir, signatures=builder.signatures, make_tables=builder.make_tables
        ),
        port=FLAGS.port,
        run_dir=run_dir,
        checkpoint_timeout_s=FLAGS.checkpoint_timeout_s,
    )
    report("replay_server_ready", port=FLAGS.port, table_sizes=tables.table_sizes(server.client))
    # No abandon_calls here: the final checkpoint, a bounded call to itself, must not be dropped.
    stop = StopRequest()
    server.serve(stop, config.replay_checkpoint_interval_s, FLAGS.status_interval_s)
    server.final_checkpoint()
    server.stop()


def run() -> None:
    cli.run_role("replay_server", main)


if __name__ == "__main__":
    run()
