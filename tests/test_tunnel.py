"""The mutual-TLS tunnels (tools/tls_certs.py, tools/tunnel.py) on loopback: a live replay server
behind a server end, reached through a client end; clients without the run's certificates, and a
server end with a client's certificate, are refused. The same across network namespaces, with the
plain port firewalled and a run trained through it: tests/test_multihost.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import reverb

from distributed_sac.runtime.processes import module_command
from tests.conftest import free_port, one_error_line, read, run_tool, start_server, wait_for_line


def make_certs(directory, *clients):
    result = run_tool("tools.tls_certs", ["--dir", str(directory), "--clients", ",".join(clients)])
    assert result.returncode == 0, result.stderr
    return directory


def openssl_text(path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip


def test_certificates_have_one_purpose_each_and_private_keys(tmp_path):
    certs = make_certs(tmp_path / "certs", "collector", "learner")
    names = sorted(os.listdir(certs))
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("ca", "server", "collector", "learner")
        for ext in ("pem", "key")
    )
    assert stat.S_IMODE(os.stat(certs).st_mode) == 0o700
    for name in names:
        if name.endswith(".key"):
            assert stat.S_IMODE(os.stat(certs / name).st_mode) == 0o600, name
    server = openssl_text(certs / "server.pem")
    assert "TLS Web Server Authentication" in server and "DNS:replay-server" in server
    assert "TLS Web Client Authentication" not in server
    collector = openssl_text(certs / "collector.pem")
    assert "TLS Web Client Authentication" in collector and "DNS:collector" in collector
    assert "TLS Web Server Authentication" not in collector


def test_certificates_are_never_overwritten_and_bad_names_are_one_line(tmp_path):
    certs = make_certs(tmp_path / "certs", "client")
    before = read(certs / "ca.pem")
    again = run_tool("tools.tls_certs", ["--dir", str(certs)])
    assert "ca.pem exists; give another --dir" in one_error_line(again, "tls_certs")
    assert read(certs / "ca.pem") == before
    bad = run_tool("tools.tls_certs", ["--dir", str(tmp_path / "x"), "--clients", "a b"])
    assert "certificate names are letters" in one_error_line(bad, "tls_certs")


def test_tunnel_bad_input_is_one_line(tmp_path):
    certs = make_certs(tmp_path / "certs", "client")
    common = ["--side", "client", "--ca_file", str(certs / "ca.pem")]
    common += ["--cert_file", str(certs / "client.pem")]
    missing = run_tool(
        "tools.tunnel",
        [*common, "--key_file", str(certs / "nope.key"), "--accept", "127.0.0.1:1"]
        + ["--connect", "127.0.0.1:2"],
    )
    assert "--key_file" in one_error_line(missing, "tunnel") and "is not a file" in missing.stderr
    bad_address = run_tool(
        "tools.tunnel",
        [*common, "--key_file", str(certs / "client.key"), "--accept", "8008"]
        + ["--connect", "127.0.0.1:2"],
    )
    assert "--accept must be host:port" in one_error_line(bad_address, "tunnel")


def test_print_config_says_mutual_tls_1_3_and_the_servers_name(tmp_path):
    certs = make_certs(tmp_path / "certs", "client")
    args = ["--ca_file", str(certs / "ca.pem"), "--accept", "127.0.0.1:1"]
    args += ["--connect", "127.0.0.1:2", "--print_config"]
    server = run_tool(
        "tools.tunnel",
        [*args, "--side", "server", "--cert_file", str(certs / "server.pem")]
        + ["--key_file", str(certs / "server.key")],
    )
    client = run_tool(
        "tools.tunnel",
        [*args, "--side", "client", "--cert_file", str(certs / "client.pem")]
        + ["--key_file", str(certs / "client.key")],
    )
    assert server.returncode == client.returncode == 0, server.stderr + client.stderr
    for config in (server.stdout, client.stdout):
        assert "verifyChain = yes" in config and "sslVersionMin = TLSv1.3" in config
    assert "requireCert = yes" in server.stdout and "client = no" in server.stdout
    assert "checkHost = replay-server" in client.stdout and "client = yes" in client.stdout


def answers(address: str) -> str:
    try:
        return str(sorted(reverb.Client(address).server_info(timeout=5)))
    except Exception as error:  # what a refused client gets: the call fails, it never hangs
        return type(error).__name__


def test_only_clients_of_the_runs_ca_reach_the_server_and_only_the_real_server(processes, tmp_path):
    assert shutil.which(
        "stunnel4"
    ), "stunnel4 missing: source launch/common.sh && ensure_system_packages test"
    certs = make_certs(tmp_path / "certs", "collector")
    other = make_certs(tmp_path / "other", "intruder")
    address, _, _ = start_server(processes, tmp_path)
    plain = f"127.0.0.1:{address.rsplit(':', 1)[1]}"

    def tunnel(side, name, connect, directory=certs, ca=certs):
        accept = f"127.0.0.1:{free_port()}"
        args = ["--side", side, "--accept", accept, "--connect", connect]
        args += ["--ca_file", str(ca / "ca.pem"), "--cert_file", str(directory / f"{name}.pem")]
        args += ["--key_file", str(directory / f"{name}.key")]
        log = tmp_path / f"tunnel-{side}-{name}-{os.path.basename(directory)}.log"
        proc = processes.start(module_command("tools.tunnel", args), log)
        wait_for_line(log, "Configuration successful", proc, timeout_s=60)
        return accept, log

    tls, server_log = tunnel("server", "server", plain)
    good, _ = tunnel("client", "collector", tls)
    wrong_ca, _ = tunnel("client", "intruder", tls, directory=other)
    # A stolen client certificate used to pose as the server: the client end checks the name.
    fake_server, _ = tunnel("server", "collector", plain)
    to_fake, to_fake_log = tunnel("client", "collector", fake_server)

    assert answers(good) == answers(plain) != "DeadlineExceededError"
    got = {
        "plain gRPC to the TLS port": answers(tls),
        "another CA's certificate": answers(wrong_ca),
        "a client certificate posing as the server": answers(to_fake),
    }
    assert got == dict.fromkeys(got, "DeadlineExceededError"), got
    server_says = read(server_log)
    assert "wrong version number" in server_says  # no TLS at all
    assert "Rejected by CERT at depth=0: CN=intruder" in server_says
    assert "Certificate accepted at depth=0: CN=collector" in server_says
    assert "Rejected by CERT at depth=0: CN=collector" in read(to_fake_log)
