"""Bad input gives a one-line error naming the problem and a non-zero exit, never a hang."""

from __future__ import annotations

import os
import socket
import time

import pytest

from distributed_sac.tools.cluster import ROLE_MODULES
from tests.conftest import (
    PENDULUM_GIN,
    REPO_ROOT,
    SHIPPED_POLICY,
    SMOKE_GIN,
    free_port,
    last_line,
    one_error_line,
    run_python,
    run_to_end,
    run_tool,
    start_server,
    unwritable_dir,
)

LOCAL_SH = os.path.join(REPO_ROOT, "launch", "local.sh")
TEST_SH = os.path.join(REPO_ROOT, "launch", "test.sh")


def run_role(role, args, timeout_s=120, prefix=()):
    return run_tool(ROLE_MODULES[role], args, timeout_s, prefix)


def run_local_sh(args, timeout_s=120, env=None, prefix=()):
    return run_to_end([*prefix, LOCAL_SH, *args], timeout_s, env=dict(os.environ, **(env or {})))


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


@pytest.mark.parametrize(
    "module",
    # One role in the quick tier: each waits connect_timeout_s (8 s) on purpose.
    [
        "learner",
        pytest.param("collector", marks=pytest.mark.slow),
        pytest.param("evaluator", marks=pytest.mark.slow),
    ],
)
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
    # Not a configuration error (2): 3, which the launcher restarts like a crash.
    assert result.returncode == 3
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
    # A Pendulum pair row holds 12 values, a Minitaur one 44 (each with the pair's number 4); the
    # line says what this config's hold.
    assert "server has float32[2, 12]" in line and "this config has float32[2, 44]" in line
    assert "observation 28 + action 8" in line


@pytest.mark.parametrize("script", [LOCAL_SH, TEST_SH])
def test_launch_scripts_reject_unsupported_python(script, tmp_path):
    # An interpreter that says it is Python 3.12 (dm-reverb 0.14 has no wheels for it); no real
    # 3.12 is needed on the machine.
    python312 = tmp_path / "python3.12"
    python312.write_text("#!/bin/sh\necho 3.12\n")
    python312.chmod(0o755)
    venv = tmp_path / "venv"
    env = dict(os.environ, PYTHON=str(python312), DISTRIBUTED_SAC_VENV=str(venv))
    result = run_to_end([script], 60, env=env)
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


@pytest.mark.parametrize("task", ["-3", "one", "4294967296"])
def test_collector_rejects_a_bad_task_id(task):
    result = run_role("collector", ["--gin_file", SMOKE_GIN, "--task", task])
    assert one_error_line(result, "collector") == (
        f"collector: error: --task must be 'auto' or an integer from 0 to 4294967295, got '{task}'"
    )


def test_evaluator_rejects_a_negative_nice(tmp_path):
    args = ["--gin_file", SMOKE_GIN, "--root_dir", str(tmp_path), "--nice", "-1"]
    result = run_role("evaluator", args)
    assert result.returncode == 2
    assert last_line(result.stderr) == "evaluator: error: --nice must not be negative, got -1"


@pytest.mark.parametrize("port", ["-1", "0", "65536", "70000"])
def test_port_out_of_range_is_named_by_the_server_and_the_launcher(port, tmp_path):
    result = run_role("replay_server", ["--gin_file", SMOKE_GIN, "--port", port])
    assert one_error_line(result, "replay_server") == (
        f"replay_server: error: --port must be a port from 1 to 65535, got {port}"
    )
    root = tmp_path / "run"
    result = run_local_sh(["--gin_file", SMOKE_GIN, "--root_dir", str(root), "--port", port])
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"local.sh: error: --port must be a port from 1 to 65535, got {port}"
    )
    assert not root.exists()


@pytest.mark.parametrize("address", ["localhost:70000", "localhost:-5", "localhost", ":8008"])
def test_malformed_server_address_is_named_at_once(address):
    args = ["--gin_file", SMOKE_GIN, "--replay_server_address", address]
    started = time.monotonic()
    result = run_role("collector", args)
    assert one_error_line(result, "collector") == (
        "collector: error: --replay_server_address must be host:port with a port from 1 to "
        f"65535, got {address!r}"
    )
    assert time.monotonic() - started < 60  # not connect_timeout_s of retries


def test_root_dir_that_is_a_file(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    expected = f"--root_dir {not_a_dir} exists and is not a directory"
    result = run_role("learner", ["--gin_file", SMOKE_GIN, "--root_dir", str(not_a_dir)])
    assert one_error_line(result, "learner") == f"learner: error: {expected}"
    result = run_local_sh(
        ["--gin_file", SMOKE_GIN, "--root_dir", str(not_a_dir), "--port", str(free_port())]
    )
    assert result.returncode == 2
    assert last_line(result.stderr) == f"local.sh: error: {expected}"
    assert not_a_dir.read_text() == "x"


def test_unwritable_root_dir(tmp_path):
    locked, prefix = unwritable_dir(tmp_path / "locked")
    root = locked / "run"
    expected = f"--root_dir {root} is not writable: Permission denied"
    args = ["--gin_file", SMOKE_GIN, "--root_dir", str(root)]
    result = run_role("evaluator", args, prefix=prefix)
    assert one_error_line(result, "evaluator") == f"evaluator: error: {expected}"
    result = run_local_sh([*args, "--port", str(free_port())], prefix=prefix)
    assert result.returncode == 2
    assert last_line(result.stderr) == f"local.sh: error: {expected}"


def test_gin_file_that_is_a_directory(tmp_path):
    result = run_role("collector", ["--gin_file", str(tmp_path)])
    assert one_error_line(result, "collector") == (
        f"collector: error: gin file is a directory: {tmp_path}"
    )
    result = run_local_sh(["--gin_file", str(tmp_path), "--port", str(free_port())])
    assert result.returncode == 2
    assert last_line(result.stderr) == f"local.sh: error: gin file is a directory: {tmp_path}"


def test_gin_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "latin1.gin"
    bad.write_bytes(f"include '{SMOKE_GIN}'\n# r\xe9sum\xe9\n".encode("latin-1"))
    byte = bad.read_bytes().index(b"\xe9")
    result = run_role("learner", ["--gin_file", str(bad), "--root_dir", str(tmp_path / "r")])
    assert one_error_line(result, "learner") == (
        f"learner: error: gin file {bad} is not UTF-8 text (byte {byte})"
    )
    result = run_local_sh(["--gin_file", str(bad), "--port", str(free_port())])
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"local.sh: error: gin file {bad} is not UTF-8 text (byte {byte})"
    )


# (binding, the launcher's line after "local.sh: error: "): each named before any role starts.
LAUNCHER_BAD_CONFIGS = [
    (
        "RunConfig.env_name = 'NoSuchEnv-v0'",
        "unknown environment 'NoSuchEnv-v0' (RunConfig.env_name)",
    ),
    (
        "RunConfig.env_name = 'CartPole-v1'",
        "RunConfig.env_name 'CartPole-v1' has discrete actions (int64); SAC needs continuous "
        "actions (a gym Box action space)",
    ),
    (
        "RunConfig.seed = 4294967296",
        "RunConfig.seed must be an integer from 0 to 4294967295, got 4294967296",
    ),
    (
        "RunConfig.replay_capacity = 1e4",
        "RunConfig.replay_capacity must be an integer of at least 1, got 10000.0 (a float)",
    ),
    (
        "RunConfig.checkpoint_interval = -1",
        "RunConfig.checkpoint_interval must be an integer of at least 0, got -1",
    ),
]


@pytest.mark.parametrize(
    "binding, expected",
    [
        LAUNCHER_BAD_CONFIGS[0],
        LAUNCHER_BAD_CONFIGS[1],
        LAUNCHER_BAD_CONFIGS[2],
        # Each launcher start imports TensorFlow to check the config (docs/performance.md has
        # its cost): the rest in the full tier.
        *[pytest.param(*case, marks=pytest.mark.slow) for case in LAUNCHER_BAD_CONFIGS[3:]],
    ],
)
def test_launcher_names_a_bad_config_before_starting_any_role(binding, expected, tmp_path):
    root = tmp_path / "run"
    args = ["--gin_file", SMOKE_GIN, "--gin_bindings", binding, "--root_dir", str(root)]
    result = run_local_sh([*args, "--port", str(free_port())], timeout_s=180)
    # Code 2: a configuration error, no role restarted (before: every role restarted three
    # times for the seed, and the float capacity was blamed on a Reverb checkpoint).
    assert result.returncode == 2, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"local.sh: error: {expected}"
    ]
    assert not root.exists()  # nothing was started, nothing written


# (role, binding, the role's one line after "<role>: error: "): a role started by hand, as in a
# container, names its bad config itself before it connects anywhere.
ROLE_BAD_CONFIGS = [
    # The case: on a new root_dir this was "cannot load the Reverb checkpoint …".
    (
        "replay_server",
        "RunConfig.replay_capacity = 1e4",
        "RunConfig.replay_capacity must be an integer of at least 1, got 10000.0 (a float)",
    ),
    # Before: "trajectory field action is int64; experience is stored as float32 …".
    (
        "replay_server",
        "RunConfig.env_name = 'CartPole-v1'",
        "RunConfig.env_name 'CartPole-v1' has discrete actions (int64); SAC needs continuous "
        "actions (a gym Box action space)",
    ),
    # Before: a 26-line traceback ending in numpy's "Seed must be between 0 and 2**32 - 1".
    (
        "learner",
        "RunConfig.seed = 4294967296",
        "RunConfig.seed must be an integer from 0 to 4294967295, got 4294967296",
    ),
    # Before: accepted (the server too ran with it); the role went on to connect.
    (
        "collector",
        "RunConfig.batch_size = 2.5",
        "RunConfig.batch_size must be an integer of at least 1, got 2.5 (a float)",
    ),
    # Before: accepted; the role went on to connect.
    (
        "evaluator",
        "RunConfig.server_call_timeout_s = 0",
        "RunConfig.server_call_timeout_s must be a number above 0 and at most 86400, got 0",
    ),
]


@pytest.mark.parametrize("role, binding, expected", ROLE_BAD_CONFIGS)
def test_role_started_by_hand_names_a_bad_config(role, binding, expected, tmp_path):
    port = free_port()  # nothing listens there: a role that got past its config would wait
    args = ["--gin_file", SMOKE_GIN, "--gin_bindings", binding, "--root_dir", str(tmp_path)]
    if role == "replay_server":
        args += ["--port", str(port)]
    else:
        args += ["--replay_server_address", f"localhost:{port}"]
    started = time.monotonic()
    result = run_role(role, args)
    assert one_error_line(result, role) == f"{role}: error: {expected}"
    assert time.monotonic() - started < 100  # not connect_timeout_s (60 s) of retries
    assert not (tmp_path / "reverb").exists()  # the server left no checkpoint directory


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_play_names_a_seed_out_of_range(seed, tmp_path):
    args = ["--policy_dir", SHIPPED_POLICY, "--output", str(tmp_path / "v.mp4"), "--seed", seed]
    result = run_tool("tools.play", args, 120)
    assert one_error_line(result, "play") == (
        f"play: error: --seed must be an integer from 0 to 4294967295, got {seed}"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "module, args, line",
    [
        ("tools.status", ["--interval_s", "0"], "status: error: --interval_s must be positive"),
        ("tools.play", ["--episodes", "0"], "play: error: --episodes must be at least 1, got 0"),
        (
            ROLE_MODULES["collector"],
            ["--gin_file", SMOKE_GIN, "--replay_server_address", "localhost"],
            "collector: error: --replay_server_address must be host:port with a port from 1 to "
            "65535, got 'localhost'",
        ),
    ],
)
def test_a_bad_flag_is_the_only_line_without_tf_cpp_min_log_level(module, args, line):
    """Each of these imports TensorFlow before it reads its flags. Started from a shell that does
    not set TF_CPP_MIN_LOG_LEVEL, its stderr is still its one error line: the package sets the
    variable before TensorFlow loads, so none of TensorFlow's C++ start-up lines come first."""
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    result = run_tool(module, args, 120, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines() == [line]


# A command whose helper thread writes to fd 2 without pause (as Reverb's C++ client threads
# log while a learner gives up on a lost server) and whose main then fails.
NOISY_FAILURE = """
import os, threading
from distributed_sac.runtime import entrypoint
from distributed_sac.errors import UserError

def noise():
    while True:
        os.write(2, b"[c++ thread] still logging\\n")

def main():
    threading.Thread(target=noise, daemon=True).start()
    raise UserError("the replay server is gone")

entrypoint.run("noisy", main)
"""


def test_the_error_line_stays_last_while_other_threads_log():
    """Nothing a process's other threads write after its one-line error follows it. (Before it
    was so, about one run in 15 ended with the noise.)"""
    for _ in range(30):
        result = run_python(NOISY_FAILURE)
        assert result.returncode == 2, result.stderr[-2000:]
        assert last_line(result.stderr) == "noisy: error: the replay server is gone"
