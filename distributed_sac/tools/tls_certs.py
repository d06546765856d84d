"""Makes a run's certificate authority and the certificates of its mutual-TLS tunnels (openssl).

    python -m distributed_sac.tools.tls_certs --dir certs [--clients learner,collector,evaluator]

writes into --dir (created with mode 0700; every key 0600):

- ca.pem: the run's CA certificate, which every tunnel trusts (public);
- ca.key: the CA's key. It signs certificates only: keep it on the machine that made them;
- server.pem, server.key: the replay server's tunnel (distributed_sac.tools.tunnel --side
  server), named --server_name, usable only to serve (extendedKeyUsage serverAuth);
- <client>.pem, <client>.key for each of --clients: a client tunnel's, usable only as a client
  (extendedKeyUsage clientAuth), so that it cannot stand in for the server.

EC P-256 keys, signed with SHA-256. An existing file is never overwritten: a second CA in the
same directory would make the first run's certificates useless. To revoke a certificate, make a
new CA and certificates for every host (no revocation list is kept).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile

from absl import flags

from distributed_sac.errors import UserError, one_line
from distributed_sac.runtime import entrypoint
from distributed_sac.runtime.processes import run_bounded

FLAGS = flags.FLAGS
flags.DEFINE_string("dir", None, "Directory to write the CA and the certificates into.")
flags.DEFINE_string(
    "server_name",
    "replay-server",
    "The name in the server's certificate, which client tunnels check (--server_name of "
    "distributed_sac.tools.tunnel); not an address, so the server may move.",
)
flags.DEFINE_list("clients", ["client"], "Names of the client certificates to make.")
flags.DEFINE_integer("days", 365, "Days the CA and the certificates stay valid.")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
OPENSSL_TIMEOUT_S = 60


def openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise UserError(
            "openssl not found; install the Debian package openssl "
            "(source launch/common.sh && ensure_system_packages test)"
        )
    try:
        result = run_bounded(["openssl", *args], OPENSSL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"openssl {args[0]} did not finish in {OPENSSL_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise UserError(f"openssl {args[0]} failed: {one_line(Exception(result.stderr))}")


def new_key(path: str) -> None:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)


def make_ca(directory: str, days: int) -> None:
    key, cert = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    new_key(key)
    openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", str(days), "-sha256",
        "-subj", "/CN=distributed_sac run CA",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def make_leaf(directory: str, name: str, file_stem: str, usage: str, days: int) -> None:
    """A certificate signed by the CA in `directory`, for `usage` (serverAuth or clientAuth)."""
    key, cert = (
        os.path.join(directory, f"{file_stem}.key"),
        os.path.join(directory, f"{file_stem}.pem"),
    )
    new_key(key)
    with tempfile.TemporaryDirectory() as scratch:
        request, extensions = os.path.join(scratch, "request.csr"), os.path.join(scratch, "ext")
        with open(extensions, "w") as f:
            f.write(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage={usage}\n"
                f"subjectAltName=DNS:{name}\n"
            )
        openssl("req", "-new", "-key", key, "-out", request, "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", request, "-out", cert, "-days", str(days), "-sha256",
            "-CA", os.path.join(directory, "ca.pem"), "-CAkey", os.path.join(directory, "ca.key"),
            "-set_serial", "0x" + secrets.token_hex(16), "-extfile", extensions,
        )  # fmt: skip


def make_certificates(directory: str, server_name: str, clients: list[str], days: int) -> list[str]:
    """Writes the CA, the server's and each client's certificate; the files written."""
    for name in [server_name, *clients]:
        if not NAME.match(name):
            raise UserError(f"certificate names are letters, digits, '.' and '-', got {name!r}")
    if len(set(clients)) != len(clients) or {"ca", "server"} & set(clients):
        raise UserError(f"--clients must be distinct and not 'ca' or 'server', got {clients}")
    if days < 1:
        raise UserError(f"--days must be at least 1, got {days}")
    stems = ["ca", "server", *clients]
    files = [os.path.join(directory, f"{stem}.{ext}") for stem in stems for ext in ("pem", "key")]
    existing = [path for path in files if os.path.lexists(path)]
    if existing:
        raise UserError(f"{existing[0]} exists; give another --dir (nothing was overwritten)")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --dir {directory}: {error.strerror}") from None
    make_ca(directory, days)
    make_leaf(directory, server_name, "server", "serverAuth", days)
    for client in clients:
        make_leaf(directory, client, client, "clientAuth", days)
    return files


def main() -> None:
    if not FLAGS.dir:
        raise UserError("--dir is required")
    os.umask(0o077)  # no key is readable by others, even for the moment before its chmod
    files = make_certificates(FLAGS.dir, FLAGS.server_name, FLAGS.clients, FLAGS.days)
    print(f"wrote {', '.join(os.path.basename(path) for path in files)} in {FLAGS.dir}")
    print("ca.key signs certificates only: keep it here; give each host ca.pem and its own pair")


def run() -> None:
    entrypoint.run("tls_certs", main)


if __name__ == "__main__":
    run()
