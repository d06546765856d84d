"""docker/compose.yaml run for real with podman-compose on the podman setup of
docker/build_local.sh: a smoke job (gin/smoke.gin, 2 collector replicas) on compose's internal
network reaches its final step, the evaluator's metrics land in the run volume, and `down` leaves
no container or network (the volumes, a user's data, stay until `down -v`). docker/compose.tls.yaml
likewise, through its mutual-TLS tunnels, refusing a container without a certificate. Needs root
(CI is)."""

from __future__ import annotations

import json
import os
import time

import pytest

from distributed_sac.reports import parse_reports
from distributed_sac.runtime.processes import alive, run_bounded
from distributed_sac.runtime.waits import poll_until
from tests.conftest import REPO_ROOT, SMOKE_GIN, run_tool
from tests.podman import (
    COMPOSE_LABEL,
    IMAGE,
    compose,
    compose_containers,
    compose_up,
    needs_root,
    podman,
    states,
)

PROJECT_PREFIX = "dsac-compose-"
PROJECT = f"{PROJECT_PREFIX}{os.getpid()}"

pytestmark = [needs_root, pytest.mark.slow]


def containers(env, project) -> dict:
    """{container name: (state, exit code)} of a compose project."""
    found = states(env, list(compose_containers(env, project).values()))
    return {name: (state, code) for name, (state, code, _) in found.items()}


def networks(env, project) -> list[str]:
    return [
        n for n in podman(env, "network", "ls", "--format", "{{.Name}}").split() if project in n
    ]


def volumes(env, project) -> list[str]:
    names = podman(env, "volume", "ls", "--format", "{{.Name}}").split()
    return [name for name in names if name.startswith(f"{project}_")]


def remove_stale_projects(env) -> None:
    """Projects left by a test run that was killed (named after a pytest pid now gone)."""
    labels = podman(env, "ps", "-a", "--format", f'{{{{index .Labels "{COMPOSE_LABEL}"}}}}')
    names = podman(env, "network", "ls", "--format", "{{.Name}}").split()
    names += podman(env, "volume", "ls", "--format", "{{.Name}}").split()
    for project in set(labels.split()) | {name.split("_")[0] for name in names}:
        pid = project[len(PROJECT_PREFIX) :]
        if project.startswith(PROJECT_PREFIX) and pid.isdigit() and not alive(int(pid)):
            compose(env, project, "down", "-v", "-t", "5")


def logs(env, name: str) -> str:
    """A container's output (the roles log to stderr)."""
    result = run_bounded(["podman", "logs", name], timeout_s=60, env=env)
    return result.stdout + result.stderr


def none_running(env, project, names) -> bool:
    """True once none of the containers `names` of `project` is running."""
    found = containers(env, project)
    return all(found[name][0] != "running" for name in names)


def service_logs(env, project) -> str:
    return "".join(f"--- {name}\n{logs(env, name)[-2500:]}" for name in containers(env, project))


def test_compose_smoke_job_reaches_its_final_step_and_down_leaves_nothing(podman_env, tmp_path):
    env = dict(os.environ, **podman_env, DSAC_GIN_FILE=SMOKE_GIN)
    remove_stale_projects(env)
    started = time.monotonic()
    try:
        compose_up(env, PROJECT, tmp_path / "compose-up.log")
        names = containers(env, PROJECT)
        services = sorted(name.split("_")[1] for name in names)
        assert services == ["collector", "collector", "evaluator", "learner", "replay-server"]
        learner = next(name for name in names if "_learner_" in name)
        collectors = [name for name in names if "_collector_" in name]
        evaluator = next(name for name in names if "_evaluator_" in name)

        # The learner, the collectors and the evaluator end by themselves at the final step.
        ended = poll_until(
            lambda: none_running(env, PROJECT, [learner, evaluator, *collectors]), 600, 2
        )
        assert ended, (containers(env, PROJECT), service_logs(env, PROJECT))
        finished_s = time.monotonic() - started
        found = containers(env, PROJECT)
        assert all(found[name] == ("exited", 0) for name in (learner, evaluator, *collectors)), (
            found,
            service_logs(env, PROJECT),
        )
        server = next(name for name in found if "_replay-server_" in name)
        assert found[server][0] == "running"
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


# Each makes podman-compose 1.6's `up` wait forever for `dependency` (tried: still waiting
# after 120 s): an entrypoint the runtime cannot start, or a command that exits at once.
BROKEN_COMPOSE = """\
services:
  dependency:
    image: distributed-sac:latest
    {how}
  waiter:
    image: distributed-sac:latest
    command: ["sleep", "600"]
    depends_on: [dependency]
"""


@pytest.mark.parametrize(
    "how, expected",
    [
        ('entrypoint: ["/no/such/binary"]', "dependency did not start: runc: runc create failed"),
        (
            'command: ["python", "-c", "raise SystemExit(\'bad config\')"]',
            "dependency exited with code 1 during `up`: bad config",
        ),
    ],
)
def test_a_service_that_does_not_start_is_named_at_once(podman_env, tmp_path, how, expected):
    """The watched `up` fails within seconds instead of waiting, naming the service and quoting
    podman's own error (or the container's last line)."""
    env = dict(os.environ, **podman_env)
    file = tmp_path / "compose.yaml"
    file.write_text(BROKEN_COMPOSE.format(how=how))
    project = f"{PROJECT}-broken"
    started = time.monotonic()
    try:
        with pytest.raises(pytest.fail.Exception) as failure:
            compose_up(env, project, tmp_path / "up.log", timeout_s=120, file=str(file))
        took = time.monotonic() - started
    finally:
        compose(env, project, "down", "-v", "-t", "1", file=str(file))
    message = str(failure.value)
    print(f"named after {took:.1f}s: {message}")
    assert message.startswith(expected), message
    assert took < 60, took
    assert containers(env, project) == {}


COMPOSE_TLS_FILE = os.path.join(REPO_ROOT, "docker", "compose.tls.yaml")

# Runs in a container on the tunnels' network, without a certificate: every way it has to the
# server. One JSON line: what each attempt got.
INTRUDER = r"""
import json, socket, sys
import reverb

server_ip = sys.argv[1]


def reverb_call(address):
    try:
        reverb.Client(address).server_info(timeout=5)
        return "answered"
    except Exception as error:
        return type(error).__name__


def tcp_connect(host, port):
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect((host, port))
            return "connected"
        except OSError as error:
            return type(error).__name__


print(json.dumps({
    "plain gRPC to the TLS port": reverb_call("replay-tls:8443"),
    "plain gRPC to the server's name": reverb_call("replay-server:8008"),
    "TCP to the server's address": tcp_connect(server_ip, 8008),
    "TCP to the TLS port": tcp_connect("replay-tls", 8443),
}))
"""


def test_compose_tls_job_trains_through_its_tunnels_and_refuses_a_client_without_one(
    podman_env, tmp_path
):
    certs = tmp_path / "tls"
    made = run_tool("tools.tls_certs", ["--dir", str(certs)])
    assert made.returncode == 0, made.stderr
    for path in [certs, *certs.iterdir()]:
        os.chown(path, 1000, 1000)  # the image's user reads the keys (docs/deployment.md)
    env = dict(os.environ, **podman_env, DSAC_GIN_FILE=SMOKE_GIN, DSAC_TLS_DIR=str(certs))
    project = f"{PROJECT}-tls"
    started = time.monotonic()
    try:
        compose_up(env, project, tmp_path / "compose-up.log", file=COMPOSE_TLS_FILE)
        names = containers(env, project)
        services = sorted(name.split("_")[1] for name in names)
        assert services == [
            "collector",
            "collector",
            "evaluator",
            "learner",
            "replay-server",
            "replay-tls",
            "tls-client",
        ]
        roles = [
            name for name in names if name.split("_")[1] in ("learner", "evaluator", "collector")
        ]
        server = next(name for name in names if "_replay-server_" in name)
        server_ip = podman(
            env, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            server,
        ).strip()  # fmt: skip
        intruder = run_bounded(
            ["podman", "run", "--rm", "--network", f"{project}_tls", IMAGE, "python", "-c",
             INTRUDER, server_ip],
            180, env=env,
        )  # fmt: skip
        assert intruder.returncode == 0, intruder.stderr[-3000:]
        got = json.loads(intruder.stdout.strip().splitlines()[-1])
        assert got["plain gRPC to the TLS port"] != "answered", got
        assert got["plain gRPC to the server's name"] != "answered", got
        assert got["TCP to the server's address"] != "connected", got
        assert got["TCP to the TLS port"] == "connected", got  # the intruder reaches the tunnel

        ended = poll_until(lambda: none_running(env, project, roles), 600, 2)
        assert ended, (containers(env, project), service_logs(env, project))
        finished_s = time.monotonic() - started
        found = containers(env, project)
        assert all(found[name] == ("exited", 0) for name in roles), (
            found,
            service_logs(env, project),
        )
        learner = next(name for name in roles if "_learner_" in name)
        learner_log = logs(env, learner)
        done = [fields["train_step"] for _, fields in parse_reports(learner_log, "learner_done")]
        assert done == [300], learner_log[-3000:]
        tunnel_log = logs(env, next(name for name in names if "_replay-tls_" in name))
        assert "Certificate accepted at depth=0: CN=client" in tunnel_log
        assert "wrong version number" in tunnel_log  # the intruder's plain gRPC, refused
        print(
            f"compose TLS job: final step 300 after {finished_s:.0f}s from `up`; "
            f"intruder on the tunnels' network: {got}"
        )
    finally:
        compose(env, project, "down", "-v", "-t", "5", file=COMPOSE_TLS_FILE)
    assert containers(env, project) == {} and networks(env, project) == []
    assert volumes(env, project) == []
