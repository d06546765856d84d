"""Multi-host on one machine: each role in its own network namespace ("host"), joined by veth
pairs to a bridge in a switch namespace, on a private subnet the test owns. Needs root (CI is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from distributed_sac.layout import RunDir
from distributed_sac.processes import alive
from distributed_sac.tools.cluster import ROLE_MODULES
from tests.conftest import SMOKE_GIN, free_port, read, reports, wait_for_line

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
        return namespace

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
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
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
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
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
        command = ["ip", "netns", "exec", namespaces[name], sys.executable, "-m"]
        command += [f"distributed_sac.{ROLE_MODULES[module]}", "--gin_file", SMOKE_GIN, *args]
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
