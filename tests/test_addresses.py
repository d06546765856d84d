"""Ports and host:port flags checked without TensorFlow: the string checks, and the light
commands that use them, which import neither TensorFlow nor Reverb."""

from __future__ import annotations

import pytest

from distributed_sac.errors import UserError
from distributed_sac.runtime.addresses import check_address, check_port
from tests.conftest import run_python


@pytest.mark.parametrize("address", ["localhost:8008", "10.0.0.7:1", "[::1]:65535"])
def test_good_addresses_pass(address):
    assert check_address(address, "--replay_server_address") == address


@pytest.mark.parametrize("address", ["localhost", "localhost:", ":8008", "h:0", "h:65536", "h:x"])
def test_bad_addresses_are_named(address):
    with pytest.raises(UserError, match=f"got {address!r}$"):
        check_address(address, "--replay_server_address")


def test_ports_out_of_range():
    assert check_port(1, "--port") == 1 and check_port(65535, "--port") == 65535
    for port in (-1, 0, 65536):
        with pytest.raises(UserError, match=f"--port must be a port from 1 to 65535, got {port}"):
            check_port(port, "--port")


# Each in a process of its own: the launcher and plot define flags of the same names.
@pytest.mark.parametrize(
    "module", ["runtime.addresses", "config", "sac.envs", "tools.launcher", "tools.plot"]
)
def test_light_modules_import_no_tensorflow(module):
    """What the imports kept inside functions save (docs/performance.md): the launcher names a
    bad flag, and plot draws, without loading TensorFlow, Reverb or TF-Agents."""
    heavy = "{'tensorflow', 'reverb', 'tf_agents'}"
    code = f"import sys, distributed_sac.{module}; print(sorted({heavy} & set(sys.modules)))"
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
