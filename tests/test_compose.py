"""docker/compose.yaml run for real with podman-compose on the podman setup of
docker/build_local.sh: a smoke job (gin/smoke.gin, 2 collector replicas) on compose's internal
network reaches its final step, the evaluator's metrics land in the run volume, and `down` leaves
no container or network (the volumes, a user's data, stay until `down -v`). Needs root (CI is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from distributed_sac.processes import alive
from distributed_sac.reports import parse_reports
from tests.conftest import REPO_ROOT, SMOKE_GIN

COMPOSE_FILE = os.path.join(REPO_ROOT, "docker", "compose.yaml")
PODMAN_COMPOSE = os.path.join(os.path.dirname(sys.executable), "podman-compose")
PROJECT_PREFIX = "dsac-compose-"
PROJECT = f"{PROJECT_PREFIX}{os.getpid()}"
LABEL = "io.podman.compose.project"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="podman here needs root (CI is root)")


def podman(env, *args, timeout=120) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, (args, result.stderr[-2000:])
    return result.stdout


def compose(env, project, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PODMAN_COMPOSE, "-p", project, "-f", COMPOSE_FILE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def containers(env, project) -> dict:
    """{container name: (state, exit code)} of a compose project."""
    listed = json.loads(
        podman(env, "ps", "-a", "--filter", f"label={LABEL}={project}", "--format", "json")
    )
    return {entry["Names"][0]: (entry["State"], entry["ExitCode"]) for entry in listed}


def networks(env, project) -> list[str]:
    return [
        n for n in podman(env, "network", "ls", "--format", "{{.Name}}").split() if project in n
    ]


def volumes(env, project) -> list[str]:
    names = podman(env, "volume", "ls", "--format", "{{.Name}}").split()
    return [name for name in names if name.startswith(f"{project}_")]


def remove_stale_projects(env) -> None:
    """Projects left by a test run that was killed (named after a pytest pid now gone)."""
    labels = podman(env, "ps", "-a", "--format", f'{{{{index .Labels "{LABEL}"}}}}').split()
    names = podman(env, "network", "ls", "--format", "{{.Name}}").split()
    names += podman(env, "volume", "ls", "--format", "{{.Name}}").split()
    for project in set(labels) | {name.split("_")[0] for name in names}:
        pid = project[len(PROJECT_PREFIX) :]
        if project.startswith(PROJECT_PREFIX) and pid.isdigit() and not alive(int(pid)):
            compose(env, project, "down", "-v", "-t", "5")


def logs(env, name: str) -> str:
    """A container's output (the roles log to stderr)."""
    result = subprocess.run(
        ["podman", "logs", name], capture_output=True, text=True, timeout=60, env=env
    )
    return result.stdout + result.stderr


def service_logs(env, project) -> str:
    return "".join(f"--- {name}\n{logs(env, name)[-2500:]}" for name in containers(env, project))


def test_compose_smoke_job_reaches_its_final_step_and_down_leaves_nothing(podman_env, tmp_path):
    env = dict(os.environ, **podman_env, DSAC_GIN_FILE=SMOKE_GIN)
    remove_stale_projects(env)
    started = time.monotonic()
    try:
        up = compose(env, PROJECT, "up", "-d", timeout=600)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        names = containers(env, PROJECT)
        services = sorted(name.split("_")[1] for name in names)
        assert services == ["collector", "collector", "evaluator", "learner", "replay-server"]
        learner = next(name for name in names if "_learner_" in name)
        collectors = [name for name in names if "_collector_" in name]
        evaluator = next(name for name in names if "_evaluator_" in name)

        # The learner, the collectors and the evaluator end by themselves at the final step.
        deadline = time.monotonic() + 600
        while True:
            states = containers(env, PROJECT)
            done = [states[name] for name in (learner, evaluator, *collectors)]
            if all(state != "running" for state, _ in done):
                break
            assert time.monotonic() < deadline, (states, service_logs(env, PROJECT))
            time.sleep(2)
        finished_s = time.monotonic() - started
        states = containers(env, PROJECT)
        assert all(states[name] == ("exited", 0) for name in (learner, evaluator, *collectors)), (
            states,
            service_logs(env, PROJECT),
        )
        server = next(name for name in states if "_replay-server_" in name)
        assert states[server][0] == "running"
        learner_log = logs(env, learner)
        done = [fields["train_step"] for _, fields in parse_reports(learner_log, "learner_done")]
        assert done == [300], learner_log[-3000:]
        for name in collectors:
            ((_, collector_done),) = parse_reports(logs(env, name), "collector_done")
            assert collector_done["items_created"] > 0, collector_done

        # The evaluator's metrics, in the run volume.
        (run_volume,) = [v for v in volumes(env, PROJECT) if v.endswith("_run-data")]
        mountpoint = podman(env, "volume", "inspect", "--format", "{{.Mountpoint}}", run_volume)
        with open(os.path.join(mountpoint.strip(), "eval", "metrics.jsonl")) as f:
            evaluations = [json.loads(line) for line in f]
        assert evaluations and evaluations[-1]["train_step"] == 300, evaluations
        print(
            f"compose smoke job: {len(collectors)} collectors, final step 300 and "
            f"{len(evaluations)} evaluations after {finished_s:.0f}s from `up`"
        )

        down = compose(env, PROJECT, "down", "-t", "30")
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-3000:]
        assert containers(env, PROJECT) == {}
        assert networks(env, PROJECT) == []
        # A user's data stays: the replay server's checkpoint (SIGTERM'd by down) and the run.
        assert sorted(v.split("_", 1)[1] for v in volumes(env, PROJECT)) == [
            "replay-data",
            "run-data",
        ]
    finally:
        compose(env, PROJECT, "down", "-v", "-t", "5")
    assert containers(env, PROJECT) == {} and networks(env, PROJECT) == []
    assert volumes(env, PROJECT) == []
