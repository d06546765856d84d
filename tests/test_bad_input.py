"""Bad input gives a one-line error naming the problem and a non-zero exit, never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from distributed_sac.tools.cluster import ROLE_MODULES
from tests.conftest import (
    PENDULUM_GIN,
    REPO_ROOT,
    SMOKE_GIN,
    free_port,
    last_line,
    start_server,
)

LOCAL_SH = os.path.join(REPO_ROOT, "launch", "local.sh")
TEST_SH = os.path.join(REPO_ROOT, "launch", "test.sh")


def run_role(role, args, timeout_s=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", f"distributed_sac.{ROLE_MODULES[role]}", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=REPO_ROOT,
    )


def run_local_sh(args, timeout_s=120, env=None):
    return subprocess.run(
        [LOCAL_SH, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        env=dict(os.environ, **(env or {})),
    )


@pytest.mark.parametrize("module", ["replay_server", "learner", "collector", "evaluator"])
def test_unknown_gin_configurable_stops_every_role(module, tmp_path):
    result = run_role(
        module,
        ["--gin_file", SMOKE_GIN, "--gin_bindings", "Bogus.value = 1", "--root_dir", str(tmp_path)],
    )
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"{module}: error: bad gin config: No configurable matching 'Bogus'. | "
        "In bindings string line 1 | Bogus.value = 1"
    )


def test_unknown_gin_parameter_in_a_file_names_file_and_line(tmp_path):
    bad = tmp_path / "typo.gin"
    bad.write_text(f"include '{SMOKE_GIN}'\nRunConfig.batch_sise = 8\n")
    result = run_role("collector", ["--gin_file", str(bad)])
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert "batch_sise" in line and "typo.gin" in line and "line 2" in line


def test_missing_gin_file(tmp_path):
    result = run_role(
        "learner", ["--gin_file", str(tmp_path / "missing.gin"), "--root_dir", str(tmp_path)]
    )
    assert result.returncode == 2
    assert last_line(result.stderr) == f"learner: error: gin file not found: {tmp_path}/missing.gin"


@pytest.mark.parametrize("flag", ["--gin_bindings", "--gin_binding"])  # the old spelling too
def test_launcher_rejects_bad_gin_before_starting_any_role(tmp_path, flag):
    root = tmp_path / "run"
    result = run_local_sh(
        [
            "--gin_file",
            SMOKE_GIN,
            flag,
            "RunConfig.nope = 1",
            "--root_dir",
            str(root),
            "--port",
            str(free_port()),
        ]
    )
    assert result.returncode == 2
    assert "RunConfig" in last_line(result.stderr) and "nope" in last_line(result.stderr)
    assert not root.exists()  # no role was started, nothing was written


def test_launcher_missing_gin_file(tmp_path):
    result = run_local_sh(["--gin_file", str(tmp_path / "absent.gin"), "--port", str(free_port())])
    assert result.returncode == 2
    assert last_line(result.stderr).endswith(f"gin file not found: {tmp_path}/absent.gin")


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_server_port_in_use(busy_port):
    result = run_role("replay_server", ["--gin_file", SMOKE_GIN, "--port", str(busy_port)])
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"replay_server: error: cannot listen on port {busy_port}: Address already in use"
    )


def test_launcher_names_the_port_in_use(busy_port, tmp_path):
    result = run_local_sh(
        ["--gin_file", SMOKE_GIN, "--root_dir", str(tmp_path), "--port", str(busy_port)],
        timeout_s=180,
    )
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert "replay_server exited with code 2" in line
    assert f"cannot listen on port {busy_port}" in line


@pytest.mark.parametrize("module", ["learner", "collector", "evaluator"])
def test_unreachable_server_retries_then_fails(module, tmp_path):
    port = free_port()  # nothing listens there
    result = run_role(
        module,
        [
            "--gin_file",
            SMOKE_GIN,
            "--gin_bindings",
            "RunConfig.connect_timeout_s = 8",
            "--replay_server_address",
            f"localhost:{port}",
            "--root_dir",
            str(tmp_path),
        ],
    )
    assert result.returncode == 2
    assert "not reachable (attempt 1" in result.stderr  # each retry is logged
    assert "(attempt 2" in result.stderr
    assert last_line(result.stderr).startswith(
        f"{module}: error: replay server at localhost:{port} unreachable after 8s"
    )


def test_collector_for_another_env_names_the_mismatch(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path, gin_file=PENDULUM_GIN)
    result = run_role("collector", ["--gin_file", SMOKE_GIN, "--replay_server_address", address])
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith("collector: error: spec mismatch in table 'uniform_table'")
    # Pendulum packs 8 values per step, Minitaur 40; the line says what this config's hold.
    assert "server has float32[2, 8]" in line and "this config has float32[2, 40]" in line
    assert "observation 28 + action 8" in line


@pytest.mark.parametrize("script", [LOCAL_SH, TEST_SH])
def test_launch_scripts_reject_unsupported_python(script, tmp_path):
    # An interpreter that says it is Python 3.12 (dm-reverb 0.14 has no wheels for it); no real
    # 3.12 is needed on the machine.
    python312 = tmp_path / "python3.12"
    python312.write_text("#!/bin/sh\necho 3.12\n")
    python312.chmod(0o755)
    venv = tmp_path / "venv"
    result = subprocess.run(
        [script],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHON=str(python312), DISTRIBUTED_SAC_VENV=str(venv)),
    )
    assert result.returncode != 0
    assert last_line(result.stderr) == (
        f"error: $PYTHON={python312} is Python 3.12; distributed_sac needs CPython 3.9, 3.10 or "
        "3.11 (dm-reverb 0.14 ships wheels only for these)"
    )
    assert not venv.exists()


def test_roles_needing_root_dir_say_so():
    result = run_role("learner", ["--gin_file", SMOKE_GIN])
    assert result.returncode == 2
    assert last_line(result.stderr) == "learner: error: learner needs --root_dir"


def test_unknown_environment_is_named(tmp_path):
    result = run_role(
        "replay_server",
        [
            "--gin_file",
            SMOKE_GIN,
            "--port",
            str(free_port()),
            "--gin_bindings",
            "RunConfig.env_name = 'NoSuchEnv-v0'",
        ],
    )
    assert result.returncode == 2
    assert "unknown environment 'NoSuchEnv-v0'" in last_line(result.stderr)


@pytest.mark.parametrize("task", ["-3", "one"])
def test_collector_rejects_a_bad_task_id(task):
    result = run_role("collector", ["--gin_file", SMOKE_GIN, "--task", task])
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"collector: error: --task must be a non-negative integer or 'auto', got '{task}'"
    )


def test_evaluator_rejects_a_negative_nice(tmp_path):
    args = ["--gin_file", SMOKE_GIN, "--root_dir", str(tmp_path), "--nice", "-1"]
    result = run_role("evaluator", args)
    assert result.returncode == 2
    assert last_line(result.stderr) == "evaluator: error: --nice must not be negative, got -1"
