"""Podman for the container tests: the image built once per session by docker/build_local.sh,
every podman and podman-compose call bounded (its whole process group killed past the bound), and
a container that does not start named at once with the engine's own error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from distributed_sac.runtime.processes import REPO_ROOT, Process, alive, run_bounded, stop
from distributed_sac.runtime.waits import poll_until

BUILD_IMAGE = os.path.join(REPO_ROOT, "docker", "build_local.sh")
COMPOSE_FILE = os.path.join(REPO_ROOT, "docker", "compose.yaml")
PODMAN_COMPOSE = os.path.join(os.path.dirname(sys.executable), "podman-compose")
IMAGE = "distributed-sac:latest"
COMPOSE_LABEL = "io.podman.compose.project"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="podman here needs root (CI is root)")


def build_image() -> dict:
    """Builds the image (docker/build_local.sh, which also starts one container of it on a bridge
    network); the environment that points podman at its storage."""
    started = time.monotonic()
    result = run_bounded([BUILD_IMAGE], timeout_s=2700)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    print(f"{result.stdout.strip()} (test saw {time.monotonic() - started:.0f}s)")
    exports = run_bounded([BUILD_IMAGE, "--print-env"], timeout_s=60).stdout.split()[1:]
    env = dict(os.environ, **dict(item.split("=", 1) for item in exports))
    remove_stale_containers(env)
    return env


def podman(env, *args, timeout_s=120) -> str:
    """`podman args` to its end within `timeout_s`; its stdout (the test fails on an error)."""
    result = run_bounded(["podman", *args], timeout_s=timeout_s, env=env)
    assert result.returncode == 0, (args, result.stderr[-2000:])
    return result.stdout


def compose(env, project, *args, timeout_s=300, file=COMPOSE_FILE) -> subprocess.CompletedProcess:
    return run_bounded([PODMAN_COMPOSE, "-p", project, "-f", file, *args], timeout_s, env=env)


def compose_containers(env, project) -> dict[str, str]:
    """{container id: name} of a compose project's containers."""
    label = f"label={COMPOSE_LABEL}={project}"
    listed = podman(
        env, "ps", "-a", "--no-trunc", "--filter", label, "--format", "{{.ID}} {{.Names}}"
    )
    return dict(line.split() for line in listed.splitlines() if line.strip())


def states(env, names) -> dict[str, tuple[str, int, str]]:
    """{name: (state, exit code, the engine's error from its last start, or '')}."""
    if not names:
        return {}
    listed = json.loads(podman(env, "inspect", "--type", "container", *names))
    return {
        entry["Name"]: (
            entry["State"]["Status"],
            entry["State"]["ExitCode"],
            entry["State"].get("Error") or "",
        )
        for entry in listed
    }


# How podman reports a start that failed (podman-compose prints it and waits on).
START_ERROR = re.compile(r'^Error: unable to start container "([0-9a-f]+)": (.*)$', re.M)


def start_failures(env, project, output: str) -> dict[str, str]:
    """{name: why} of a project's containers that did not start (the engine's error, as podman
    printed it into `output` or recorded it) or that exited already: podman-compose's `up`
    waits for either forever."""
    names = compose_containers(env, project)
    failed = {
        names[i]: f"did not start: {error}"
        for i, error in START_ERROR.findall(output)
        if i in names
    }
    for name, (state, code, error) in states(env, list(names.values())).items():
        if name in failed:
            continue
        if error and state != "running":
            failed[name] = f"did not start: {error}"
        elif state == "exited":
            failed[name] = f"exited with code {code} during `up`: {last_output_line(env, name)}"
    return failed


def last_output_line(env, name: str, wait_s: float = 20.0) -> str:
    """The last line an exited container wrote. The whole log is read: `podman logs --tail 5`
    of a container that printed one line and exited returned nothing for 20 s in 2 of 9 runs of
    the test alone (the whole log: 18 of 18 read). Podman can also report it exited before its
    log holds that line (beside two CPU hogs), so an empty log is read again for up to
    `wait_s`."""

    def output_lines() -> list[str]:
        result = run_bounded(["podman", "logs", name], timeout_s=60, env=env)
        return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]

    lines = poll_until(output_lines, wait_s)
    return lines[-1] if lines else "(no output)"


def compose_up(env, project, log_path, timeout_s=600, file=COMPOSE_FILE) -> None:
    """`podman-compose up -d`, watched: podman-compose 1.6 waits forever for a dependency that did
    not start or exited at once, so the containers' states are read while it runs, and the first
    such one fails the test within seconds, naming the service and quoting podman's error (or
    the container's last line)."""
    up = Process([PODMAN_COMPOSE, "-p", project, "-f", file, "up", "-d"], str(log_path), env=env)

    def ended() -> bool:
        if up.poll() is not None:
            return True
        fail_on_start_failures(env, project, up.output())
        return False

    try:
        if not poll_until(ended, timeout_s, interval_s=1):
            pytest.fail(f"podman-compose up did not end in {timeout_s}s:\n{up.output()[-3000:]}")
    finally:
        stop([up], grace_s=5, group=True)
    # A dependency that exited before podman-compose looked at it does not hold `up`: it ended 0
    # so once in a full run, and the broken service went unnamed. So: once more after `up`.
    fail_on_start_failures(env, project, up.output())
    assert up.returncode == 0, up.output()[-3000:]


def fail_on_start_failures(env, project, output: str) -> None:
    """Fails the test naming each service that did not start or exited, with podman's reason."""
    failed = start_failures(env, project, output)
    if failed:
        named = (f"{name.split('_')[1]} {why}" for name, why in sorted(failed.items()))
        pytest.fail("; ".join(named))


def remove_stale_containers(env) -> None:
    """Containers left by a test run that was killed (named after a pytest pid now gone)."""
    names = podman(env, "ps", "-a", "--format", "{{.Names}}").split()
    stale = [
        name
        for name in names
        if name.startswith("dsac-test-") and not alive(int(name.split("-")[2]))
    ]
    if stale:
        podman(env, "rm", "-f", *stale)
