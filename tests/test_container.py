"""The image built for real with podman (docker/build_local.sh): two collectors running in it
against a replay server and a learner on the host, and a whole run of containers restricted as
the Kubernetes pods are. Needs root (CI is); podman and what it runs on come from
launch/system-packages.txt (launch/test.sh and build_local.sh install them)."""

from __future__ import annotations

import json
import os
import time

import pytest

from distributed_sac.layout import RunDir
from distributed_sac.runtime.processes import children, peak_rss_mb, run_bounded
from tests.conftest import SMOKE_GIN, read, reports, start_server, wait_for_line
from tests.podman import IMAGE, needs_root, podman
from tests.test_k8s import parse_quantity, pod_specs, render

pytestmark = [needs_root, pytest.mark.slow]


def test_two_containerised_collectors_feed_a_learner_on_the_host(processes, tmp_path, podman_env):
    size = podman(podman_env, "image", "inspect", "--format", "{{.Size}}", IMAGE)
    address, _, _ = start_server(processes, tmp_path)
    common = ["--gin_file", SMOKE_GIN, "--replay_server_address", address]
    learner_log = tmp_path / "learner.log"
    learner = processes.role("learner", [*common, "--root_dir", str(tmp_path / "run")], learner_log)

    names = [f"dsac-test-{os.getpid()}-{task}" for task in (0, 1)]
    started = time.monotonic()
    try:
        collectors = [
            processes.start(
                [
                    "podman",
                    "run",
                    "--rm",
                    "--network=host",  # the image's entrypoint is tini: no --init needed
                    "--name",
                    name,
                    IMAGE,
                    "python",
                    "-m",
                    "distributed_sac.roles.collector",
                    "--gin_file=/app/gin/smoke.gin",
                    f"--replay_server_address={address}",
                    f"--task={task}",
                ],
                tmp_path / f"{name}.log",
                env=podman_env,
            )
            for task, name in enumerate(names)
        ]
        first_progress = None
        deadline = time.monotonic() + 600
        while learner.poll() is None and time.monotonic() < deadline:
            for collector, name in zip(collectors, names):
                code = collector.poll()
                assert code in (None, 0), read(tmp_path / f"{name}.log")[-3000:]
            progress = reports(tmp_path / f"{names[0]}.log", "collector_progress")
            if first_progress is None and progress:
                first_progress = time.monotonic() - started
            time.sleep(0.5)
        assert learner.wait(timeout=10) == 0, read(learner_log)[-3000:]
        for collector, name in zip(collectors, names):
            assert collector.wait(timeout=120) == 0, read(tmp_path / f"{name}.log")[-3000:]
    finally:
        podman(podman_env, "rm", "-f", "--ignore", *names)
    leftover = podman(podman_env, "ps", "-a", "--format", "{{.Names}}").split()
    assert not set(names) & set(leftover)

    assert [r["train_step"] for r in reports(learner_log, "learner_done")] == [300]
    assert first_progress is not None, "no progress report from the first container"
    items = []
    for task, name in enumerate(names):
        (done,) = reports(tmp_path / f"{name}.log", "collector_done")
        assert done["task"] == task and done["items_created"] > 50
        assert done["last_policy_train_step"] == 300
        items.append(done["items_created"])
    print(
        f"image {int(size) / 1e6:.0f} MB; containerised collectors inserted {items} items; "
        f"first progress report ({SMOKE_GIN.rsplit('/', 1)[1]}: 50 env steps) "
        f"{first_progress:.1f}s after podman run"
    )


def pod_restrictions(spec: dict) -> list[str]:
    """`podman run` flags that restrict a container as Kubernetes would this pod spec: its user
    and group, a read-only root with a tmpfs where the pod mounts an emptyDir, no capabilities,
    no privilege escalation, its memory (and CPU) limit. The runtime's default seccomp profile
    is podman's default too. A field this does not translate fails the test."""
    pod, (box,) = spec["securityContext"], spec["containers"]
    restricted = box["securityContext"]
    assert pod["runAsNonRoot"] and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert restricted == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    flags = [
        f"--user={pod['runAsUser']}:{pod['runAsGroup']}",
        "--read-only",
        "--read-only-tmpfs=false",  # podman's own writable /tmp, /var/tmp, /run: not in a pod
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        f"--memory={int(parse_quantity(box['resources']['limits']['memory']))}",
    ]
    if "cpu" in box["resources"]["limits"]:
        flags.append(f"--cpus={parse_quantity(box['resources']['limits']['cpu'])}")
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in box["volumeMounts"]:
        empty_dir = volumes[mount["name"]].get("emptyDir")
        if empty_dir is not None:
            size = int(parse_quantity(empty_dir["sizeLimit"]))
            flags.append(f"--tmpfs={mount['mountPath']}:rw,size={size},mode=1777")
    return flags


def test_a_run_in_containers_restricted_as_the_kubernetes_pods(processes, tmp_path, podman_env):
    """The smoke config end to end, every role in a container restricted as its pod in
    docker/k8s/base (pod_restrictions), its /data a directory of the pods' user; each role's peak
    RSS (the VmHWM of its Python, sampled every 0.5 s from /proc), printed: docs/deployment.md's
    figures."""
    specs = {name: spec for (_, name), spec in pod_specs(render("base")).items()}
    uid, gid = (specs["learner"]["securityContext"][key] for key in ("runAsUser", "runAsGroup"))
    user = podman(podman_env, "image", "inspect", "--format", "{{.Config.User}}", IMAGE).strip()
    assert user == f"{uid}:{gid}"  # the image's own user is the pods'
    prefix = f"dsac-test-{os.getpid()}"
    network = f"{prefix}-net"
    address = f"{prefix}-replay-server:8008"
    roles = {
        "replay-server": ["--port=8008"],
        "learner": [f"--replay_server_address={address}"],
        "collector": [f"--replay_server_address={address}", "--task=0"],
        "evaluator": [f"--replay_server_address={address}"],
    }
    data = {}
    for name in ("replay-server", "learner", "evaluator"):
        data[name] = tmp_path / f"{name}-data"
        data[name].mkdir(mode=0o700)
        os.chown(data[name], uid, gid)  # what fsGroup makes of a new volume
    containers, logs = {}, {}

    def start(name):
        mounts, root_dir = (
            ([f"--volume={data[name]}:/data"], ["--root_dir=/data"]) if name in data else ([], [])
        )
        logs[name] = tmp_path / f"{name}.log"
        containers[name] = processes.start(
            [
                "podman",
                "run",
                "--rm",
                f"--network={network}",
                f"--name={prefix}-{name}",
                *pod_restrictions(specs[name]),
                *mounts,
                IMAGE,
                "python",
                "-m",
                f"distributed_sac.roles.{name.replace('-', '_')}",
                "--gin_file=/app/gin/smoke.gin",
                *roles[name],
                *root_dir,
            ],
            logs[name],
            env=podman_env,
        )

    peaks = dict.fromkeys(roles, 0.0)
    pythons = {}

    def sample():
        for name in containers:
            if name not in pythons:
                found = run_bounded(
                    ["podman", "inspect", "--format", "{{.State.Pid}}", f"{prefix}-{name}"],
                    timeout_s=60,
                    env=podman_env,
                )
                init = int(found.stdout.strip() or 0) if found.returncode == 0 else 0
                if not init:
                    continue
                # The container's first process is tini (the image's entrypoint); its child is
                # the role.
                python = [
                    pid for pid, line in children(init).items() if line and "python" in line[0]
                ]
                if python:
                    pythons[name] = python[0]
            if name in pythons:
                peaks[name] = max(peaks[name], peak_rss_mb(pythons[name]) or 0.0)

    # A network of their own, as Compose and a cluster give them. With --network=host the
    # learner and collector of such a run died of a segfault in a Reverb call from a worker
    # thread, also without any restriction and with the image before this test (not pursued).
    podman(podman_env, "network", "create", network)
    try:
        start("replay-server")
        wait_for_line(logs["replay-server"], "replay_server_ready", containers["replay-server"])
        for name in ("learner", "collector", "evaluator"):
            start(name)
        deadline = time.monotonic() + 600
        while containers["learner"].poll() is None and time.monotonic() < deadline:
            for name, container in containers.items():
                assert container.poll() in (None, 0), f"{name}: {read(logs[name])[-3000:]}"
            sample()
            time.sleep(0.5)
        assert containers["learner"].wait(timeout=10) == 0, read(logs["learner"])[-3000:]
        for name in ("collector", "evaluator"):
            while containers[name].poll() is None and time.monotonic() < deadline + 180:
                sample()
                time.sleep(0.5)
            assert containers[name].wait(timeout=10) == 0, read(logs[name])[-3000:]
        sample()
        podman(podman_env, "stop", "--time=120", f"{prefix}-replay-server", timeout_s=180)
        server_code = containers["replay-server"].wait(timeout=60)  # after its last checkpoint
        assert server_code == 0, read(logs["replay-server"])[-3000:]
    finally:
        podman(podman_env, "rm", "-f", "--ignore", *[f"{prefix}-{name}" for name in roles])
        podman(podman_env, "network", "rm", "-f", network)

    assert [r["train_step"] for r in reports(logs["learner"], "learner_done")] == [300]
    assert reports(logs["replay-server"], "replay_checkpoint")
    assert os.listdir(RunDir(str(data["replay-server"])).reverb)
    assert os.listdir(RunDir(str(data["learner"])).checkpoints)
    with open(RunDir(str(data["evaluator"])).metrics) as metrics:
        assert json.loads(metrics.readlines()[-1])["train_step"] == 300
    for name, peak in peaks.items():
        limit = parse_quantity(specs[name]["containers"][0]["resources"]["limits"]["memory"])
        assert 0 < peak < limit / 2**20, (name, peak)
    print("peak RSS, MiB: " + ", ".join(f"{name} {peak:.0f}" for name, peak in peaks.items()))
