"""Multi-host on one machine: each role in its own network namespace ("host"), joined by veth
pairs to a bridge in a switch namespace, on a private subnet the test owns. Needs root (CI is).
The mutual-TLS test also needs stunnel4, openssl and iptables (launch/system-packages.txt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from distributed_sac.layout import RunDir
from distributed_sac.runtime.processes import alive, module_command, run_bounded
from distributed_sac.tools.cluster import ROLE_MODULES
from tests.conftest import SMOKE_GIN, free_port, read, reports, run_to_end, run_tool, wait_for_line

SUBNET = "10.213.77"  # inside the namespaces only: the host's own routes never see it

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="network namespaces need root (CI runs as root)"
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Hosts:
    """Network namespaces on one bridge; `remove()` deletes them all (and their veths)."""

    def __init__(self, tag: str):
        self.tag = tag
        self.switch = f"dsac-sw-{tag}"
        self.namespaces = [self.switch]
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        self.addresses: dict[str, str] = {}
        self.interfaces: dict[str, str] = {}

    def add(self, name: str) -> str:
        """A new host with its own address; returns the namespace name."""
        index = len(self.addresses) + 2
        namespace = f"dsac-{name}-{self.tag}"
        here, there = f"h{index}{self.tag}", f"s{index}{self.tag}"  # interface names ≤ 15 chars
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", here, "netns", namespace)
        ip("link", "set", there, "netns", self.switch)
        ip("-n", self.switch, "link", "set", there, "master", "br0", "up")
        address = f"{SUBNET}.{index}"
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", here)
        ip("-n", namespace, "link", "set", here, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        self.addresses[name] = address
        self.interfaces[name] = here
        return namespace

    def link_local_v6(self, name: str, namespace: str) -> str:
        """The IPv6 link-local address the kernel gave a host's interface (every host has one,
        without being asked: a second way in besides the IPv4 subnet)."""
        shown = subprocess.run(
            ["ip", "-n", namespace, "-6", "-o", "addr", "show", "dev", self.interfaces[name]],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return shown.split("inet6 ", 1)[1].split("/", 1)[0]

    def pids(self) -> list[str]:
        found = []
        for namespace in self.namespaces:
            result = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30
            )
            found += result.stdout.split()
        return found

    def remove(self) -> None:
        for namespace in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


def remove_stale_namespaces() -> None:
    """Namespaces left by a test run that was killed (their tag is a pytest pid now gone)."""
    listed = run_to_end(["ip", "netns", "list"], 30).stdout
    for name in {word for word in listed.split() if word.startswith("dsac-")}:
        tag = name.rsplit("-", 1)[-1]
        if tag.isdigit() and not alive(int(tag)):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def hosts(processes):
    remove_stale_namespaces()
    made = Hosts(str(os.getpid()))
    try:
        yield made
    finally:
        processes.stop_all()  # nothing may run inside a namespace we delete
        leftover = made.pids()
        made.remove()
        listed = run_to_end(["ip", "netns", "list"], 30).stdout
        assert not leftover, f"processes left in the test's namespaces: {leftover}"
        assert not [word for word in listed.split() if word.endswith(f"-{made.tag}")], listed


@pytest.mark.slow
def test_roles_on_separate_hosts_complete_a_run(processes, tmp_path, hosts):
    names = ["server", "learner", "collector0", "collector1", "evaluator"]
    namespaces = {name: hosts.add(name) for name in names}
    port = free_port()
    server_address = f"{hosts.addresses['server']}:{port}"
    root = tmp_path / "run"

    def role(name, module, *args):
        command = ["ip", "netns", "exec", namespaces[name]]
        command += module_command(ROLE_MODULES[module], ["--gin_file", SMOKE_GIN, *args])
        return processes.start(command, tmp_path / f"{name}.log")

    server = role("server", "replay_server", "--port", str(port), "--root_dir", str(root))
    wait_for_line(tmp_path / "server.log", "replay_server_ready", server, timeout_s=180)
    client = ["--replay_server_address", server_address]
    started = time.monotonic()
    learner = role("learner", "learner", *client, "--root_dir", str(root))
    collectors = [
        role(f"collector{task}", "collector", *client, "--task", str(task)) for task in (0, 1)
    ]
    evaluator = role("evaluator", "evaluator", *client, "--root_dir", str(root))
    for name, proc in [("learner", learner), ("evaluator", evaluator)] + [
        (f"collector{task}", proc) for task, proc in enumerate(collectors)
    ]:
        assert proc.wait(timeout=600) == 0, read(tmp_path / f"{name}.log")[-3000:]
    elapsed = time.monotonic() - started

    assert [r["train_step"] for r in reports(tmp_path / "learner.log", "learner_done")] == [300]
    items = []
    for task in (0, 1):
        (done,) = reports(tmp_path / f"collector{task}.log", "collector_done")
        assert done["items_created"] > 50 and done["last_policy_train_step"] == 300
        items.append(done["items_created"])
    evaluations = [json.loads(line) for line in read(RunDir(str(root)).metrics).splitlines()]
    assert evaluations[-1]["train_step"] == 300
    # Every client reached the server at its namespace's address: no loopback between hosts.
    print(
        f"server {server_address}, learner {hosts.addresses['learner']}, collectors "
        f"{hosts.addresses['collector0']} / {hosts.addresses['collector1']}, evaluator "
        f"{hosts.addresses['evaluator']}: 300 train steps in {elapsed:.0f}s, items {items}, "
        f"{len(evaluations)} evaluations"
    )


# Runs inside the intruder's namespace: every way in to the replay server that it has. One JSON
# line: what each attempt got.
INTRUDER = r"""
import json, socket, sys
import reverb

server, plain_port, tls_port, wrong_ca_tunnel, server_v6, interface = sys.argv[1:7]


def reverb_call(address):
    try:
        reverb.Client(address).server_info(timeout=5)
        return "answered"
    except Exception as error:
        return type(error).__name__


def tcp_connect(host, port, scope_id=0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    target = (host, int(port), 0, scope_id) if scope_id else (host, int(port))
    with socket.socket(family) as sock:
        sock.settimeout(5)
        try:
            sock.connect(target)
            return "connected"
        except OSError as error:
            return type(error).__name__


scope = socket.if_nametoindex(interface)
print(json.dumps({
    "plain gRPC to the TLS port": reverb_call(f"{server}:{tls_port}"),
    "another CA's certificate": reverb_call(wrong_ca_tunnel),
    "plain gRPC to the plain port": reverb_call(f"{server}:{plain_port}"),
    "TCP to the plain port": tcp_connect(server, plain_port),
    "TCP to the plain port over IPv6": tcp_connect(server_v6, plain_port, scope),
    "TCP to the TLS port": tcp_connect(server, tls_port),
}))
"""


def firewall_plain_port(namespace: str, port: int) -> None:
    """docs/deployment.md's rule: the plain Reverb port answers loopback only (Reverb listens on
    every interface, IPv4 and IPv6, and cannot be told otherwise)."""
    for tool in ("iptables", "ip6tables"):
        rule = ["-A", "INPUT", "-p", "tcp", "--dport", str(port), "!", "-i", "lo"]
        subprocess.run(
            ["ip", "netns", "exec", namespace, tool, *rule, "-j", "REJECT", "--reject-with",
             "tcp-reset"],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip


@pytest.mark.slow
def test_a_collector_on_another_host_trains_through_the_mutual_tls_tunnel_only(
    processes, tmp_path, hosts
):
    missing = [tool for tool in ("stunnel4", "openssl", "iptables") if not shutil.which(tool)]
    assert not missing, f"{missing} missing: source launch/common.sh && ensure_system_packages test"
    namespaces = {name: hosts.add(name) for name in ("server", "collector", "intruder")}
    certs, other_certs = tmp_path / "certs", tmp_path / "other_ca"
    for directory, client in ((certs, "collector"), (other_certs, "intruder")):
        made = run_tool("tools.tls_certs", ["--dir", str(directory), "--clients", client])
        assert made.returncode == 0, made.stderr
    plain_port, tls_port = free_port(), free_port()
    server_host = hosts.addresses["server"]
    firewall_plain_port(namespaces["server"], plain_port)

    def in_namespace(name, module, args, log):
        command = ["ip", "netns", "exec", namespaces[name], *module_command(module, args)]
        return processes.start(command, tmp_path / log)

    def tunnel(host, side, accept, connect, ca_dir, name):
        args = ["--side", side, "--accept", accept, "--connect", connect]
        args += ["--ca_file", str(certs / "ca.pem")]
        args += [
            "--cert_file",
            str(ca_dir / f"{name}.pem"),
            "--key_file",
            str(ca_dir / f"{name}.key"),
        ]
        log = f"tunnel-{host}.log"
        proc = in_namespace(host, "tools.tunnel", args, log)
        wait_for_line(tmp_path / log, "Configuration successful", proc, timeout_s=60)
        return proc

    root = tmp_path / "run"
    server = in_namespace(
        "server", ROLE_MODULES["replay_server"],
        ["--gin_file", SMOKE_GIN, "--port", str(plain_port), "--root_dir", str(root)],
        "server.log",
    )  # fmt: skip
    local_plain = f"127.0.0.1:{plain_port}"
    tunnel("server", "server", f"{server_host}:{tls_port}", local_plain, certs, "server")
    # Each client host's tunnel listens on its own loopback, on the port its roles expect.
    tunnel("collector", "client", local_plain, f"{server_host}:{tls_port}", certs, "collector")
    wrong_ca = f"127.0.0.1:{free_port()}"  # the intruder trusts the run's CA, but its own signed it
    tunnel("intruder", "client", wrong_ca, f"{server_host}:{tls_port}", other_certs, "intruder")
    wait_for_line(tmp_path / "server.log", "replay_server_ready", server, timeout_s=180)

    client = ["--gin_file", SMOKE_GIN, "--replay_server_address", f"localhost:{plain_port}"]
    started = time.monotonic()
    # The learner shares the server's host and reaches it over loopback, as the firewall allows.
    learner = in_namespace(
        "server", ROLE_MODULES["learner"], [*client, "--root_dir", str(root)], "learner.log"
    )
    collector = in_namespace(
        "collector", ROLE_MODULES["collector"], [*client, "--task", "0"], "collector.log"
    )
    server_v6 = hosts.link_local_v6("server", namespaces["server"])
    attempts = run_bounded(
        ["ip", "netns", "exec", namespaces["intruder"], sys.executable, "-c", INTRUDER,
         server_host, str(plain_port), str(tls_port), wrong_ca, server_v6,
         hosts.interfaces["intruder"]],
        180,
    )  # fmt: skip
    assert attempts.returncode == 0, attempts.stderr[-3000:]
    got = json.loads(attempts.stdout.strip().splitlines()[-1])
    refused = (
        "plain gRPC to the TLS port",
        "another CA's certificate",
        "plain gRPC to the plain port",
    )
    assert not [attempt for attempt in refused if got[attempt] == "answered"], got
    assert got["TCP to the plain port"] == "ConnectionRefusedError", got
    assert got["TCP to the plain port over IPv6"] == "ConnectionRefusedError", got
    assert got["TCP to the TLS port"] == "connected", got  # the intruder does reach the host
    # The server's tunnel refused them itself: no TLS at all, and a certificate of another CA.
    server_tunnel = read(tmp_path / "tunnel-server.log")
    assert "wrong version number" in server_tunnel
    assert "Rejected by CERT at depth=0: CN=intruder" in server_tunnel

    for name, proc in (("learner", learner), ("collector", collector)):
        assert proc.wait(timeout=600) == 0, read(tmp_path / f"{name}.log")[-3000:]
    elapsed = time.monotonic() - started
    assert [r["train_step"] for r in reports(tmp_path / "learner.log", "learner_done")] == [300]
    (done,) = reports(tmp_path / "collector.log", "collector_done")
    assert done["items_created"] > 50 and done["last_policy_train_step"] == 300
    assert "Certificate accepted at depth=0: CN=collector" in read(tmp_path / "tunnel-server.log")
    print(
        f"collector {hosts.addresses['collector']} -> TLS {server_host}:{tls_port} -> "
        f"{local_plain}: 300 train steps in {elapsed:.0f}s, {done['items_created']} items; "
        f"intruder {hosts.addresses['intruder']}: {got}"
    )
