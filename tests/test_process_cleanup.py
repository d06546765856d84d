"""Every process a test starts dies with the test run, also when pytest itself is killed."""

from __future__ import annotations

import signal
import sys

import pytest

from distributed_sac.runtime.processes import alive
from distributed_sac.runtime.waits import poll_until
from tests.conftest import Processes, wait_until

INNER_TEST = """
import time

from tests.conftest import start_server


def test_holds_a_server(processes, tmp_path):
    _, server, _ = start_server(processes, tmp_path)
    with open({pid_file!r}, "w") as f:
        f.write(str(server.pid))
    time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_pytest_leaves_no_process(tmp_path, signum):
    pid_file = tmp_path / "server.pid"
    inner = tmp_path / "test_inner.py"
    inner.write_text(INNER_TEST.format(pid_file=str(pid_file)))
    runner = Processes()
    try:
        # -p tests.conftest: the inner run has this suite's fixtures and hooks.
        pytest_run = runner.start(
            [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", str(inner)],
            tmp_path / "inner.out",
        )
        wait_until(
            lambda: pid_file.exists() and pid_file.read_text(),
            "the inner test to start its server",
            pytest_run,
            180,
            log=tmp_path / "inner.out",
        )
        server_pid = int(pid_file.read_text())
        assert alive(server_pid)
        pytest_run.send_signal(signum)
        pytest_run.wait(timeout=60)
        poll_until(lambda: not alive(server_pid), 15)
        assert not alive(server_pid), f"replay server outlived a {signum.name}'d pytest"
    finally:
        runner.stop_all()
