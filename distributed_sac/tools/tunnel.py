"""A mutual-TLS tunnel to or in front of the replay server: stunnel, configured and run in the
foreground (Reverb's gRPC has no authentication; docs/deployment.md#mutual-tls-between-hosts).

On the replay server's host, in front of the server (whose plain port the host firewalls):

    python -m distributed_sac.tools.tunnel --side server --accept 0.0.0.0:8443 \
        --connect 127.0.0.1:8008 --ca_file ca.pem --cert_file server.pem --key_file server.key

On each other host, for the roles there (which then use --replay_server_address localhost:8008):

    python -m distributed_sac.tools.tunnel --side client --accept 127.0.0.1:8008 \
        --connect SERVER_HOST:8443 --ca_file ca.pem --cert_file collector.pem \
        --key_file collector.key

The server end admits only a TLS client that presents a certificate signed by the run's CA
(tools/tls_certs.py); the client end talks only to a server whose certificate that CA signed
for --server_name. TLS 1.3 only. stunnel reads the configuration from a pipe (nothing is
written to disk) and replaces this process, so a stop signal reaches it directly.
"""

from __future__ import annotations

import os
import shutil
import sys

from absl import flags

from distributed_sac.errors import UserError
from distributed_sac.runtime import entrypoint
from distributed_sac.runtime.addresses import check_address

FLAGS = flags.FLAGS
flags.DEFINE_enum("side", None, ["server", "client"], "Which end of the tunnel this is.")
flags.DEFINE_string("accept", None, "host:port the tunnel listens on.")
flags.DEFINE_string("connect", None, "host:port it forwards to (the server, or the server's end).")
flags.DEFINE_string("ca_file", None, "The run's CA certificate (ca.pem).")
flags.DEFINE_string("cert_file", None, "This end's certificate, signed by the run's CA.")
flags.DEFINE_string("key_file", None, "This end's private key.")
flags.DEFINE_string(
    "server_name", "replay-server", "Client side: the name the server's certificate must carry."
)
flags.DEFINE_enum(
    "log_level", "notice", ["err", "warning", "notice", "info", "debug"], "stunnel's log level."
)
flags.DEFINE_bool("print_config", False, "Print the stunnel configuration and exit.")

STUNNEL = "stunnel4"  # Debian's name for stunnel 5; /usr/bin/stunnel is its wrapper


def stunnel_config(
    side: str,
    accept: str,
    connect: str,
    ca_file: str,
    cert_file: str,
    key_file: str,
    server_name: str = "replay-server",
    log_level: str = "notice",
) -> str:
    """stunnel's configuration for one end of the tunnel, foreground, logging to stderr."""
    lines = [
        "foreground = yes",
        "pid =",  # no pid file: the supervisor (tini, a test, a shell) holds the process
        "syslog = no",
        f"debug = {log_level}",
        "[reverb]",
        f"client = {'yes' if side == 'client' else 'no'}",
        f"accept = {accept}",
        f"connect = {connect}",
        f"CAfile = {ca_file}",
        f"cert = {cert_file}",
        f"key = {key_file}",
        "sslVersionMin = TLSv1.3",
        # The peer's certificate must chain to the run's CA, and only to it: CAfile is the
        # only trust store (stunnel loads no system CAs).
        "verifyChain = yes",
        # gRPC sends small frames and waits for answers: Nagle's delay would cost a round trip.
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
    ]
    if side == "server":
        lines.append("requireCert = yes")  # implied by verifyChain; said so it stays so
    else:
        # Any certificate of the run's CA chains; only the server's carries this name (and
        # the serverAuth usage), so a client's certificate cannot pose as the server.
        lines.append(f"checkHost = {server_name}")
    return "\n".join(lines) + "\n"


def checked_config() -> str:
    for flag in ("side", "accept", "connect", "ca_file", "cert_file", "key_file"):
        if not getattr(FLAGS, flag):
            raise UserError(f"--{flag} is required")
    check_address(FLAGS.accept, "--accept")
    check_address(FLAGS.connect, "--connect")
    for flag in ("ca_file", "cert_file", "key_file"):
        path = getattr(FLAGS, flag)
        if not os.path.isfile(path):
            raise UserError(f"--{flag} {path} is not a file")
        if not os.access(path, os.R_OK):
            raise UserError(f"--{flag} {path} is not readable by this user")
    return stunnel_config(
        FLAGS.side,
        FLAGS.accept,
        FLAGS.connect,
        os.path.abspath(FLAGS.ca_file),
        os.path.abspath(FLAGS.cert_file),
        os.path.abspath(FLAGS.key_file),
        FLAGS.server_name,
        FLAGS.log_level,
    )


def main() -> None:
    config = checked_config()
    if FLAGS.print_config:
        print(config, end="")
        return
    stunnel = shutil.which(STUNNEL) or shutil.which("stunnel")
    if stunnel is None:
        raise UserError(
            "stunnel not found; install the Debian package stunnel4 "
            "(source launch/common.sh && ensure_system_packages test)"
        )
    # The configuration goes through a pipe: far below a pipe's buffer, so the write cannot block.
    read_end, write_end = os.pipe()
    os.write(write_end, config.encode())
    os.close(write_end)
    os.set_inheritable(read_end, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(stunnel, [stunnel, "-fd", str(read_end)])


def run() -> None:
    entrypoint.run("tunnel", main)


if __name__ == "__main__":
    run()
