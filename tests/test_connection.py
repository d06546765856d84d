"""Reaching the replay server: calls bounded against a server that hangs, and a lost server
told from a configuration error (the address checks: test_addresses.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import tensorflow as tf

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.errors import ServerCallTimeout, ServerUnreachable, UserError
from distributed_sac.replay.connection import Reconnecting, is_connection_error
from tests.conftest import SMOKE_GIN, start_server


def test_calls_to_a_hung_server_time_out_and_count_as_a_lost_server(processes, tmp_path):
    """A server that stops answering (SIGSTOP: its socket stays open, so gRPC sees no error and
    Reverb's sample and insert would wait for good) costs a weight client its call timeout; the
    role's Reconnecting then waits for the server and goes on with new parts."""
    address, server, _ = start_server(processes, tmp_path)
    builder = Builder(load_gin([SMOKE_GIN], ["RunConfig.server_call_timeout_s = 3"]))
    policy = builder.make_policy()
    train_step = tf.Variable(7, dtype=tf.int64)
    builder.make_weight_client(address, policy.variables(), train_step).push()
    puller = Reconnecting(
        "test", lambda: builder.make_weight_client(address, builder.make_policy().variables())
    )
    assert puller.parts.pull() == 7
    first_client = puller.parts
    os.kill(server.pid, signal.SIGSTOP)
    resume = threading.Timer(6.0, os.kill, (server.pid, signal.SIGCONT))
    try:
        started = time.monotonic()
        with pytest.raises(ServerCallTimeout, match="no answer from the replay server in 3s"):
            puller.parts.pull()
        waited = time.monotonic() - started
        assert 2.5 < waited < 6, waited
        # Its thread still waits inside Reverb: the next call fails at once, adding no thread.
        started = time.monotonic()
        with pytest.raises(ServerCallTimeout, match="an earlier call is still waiting"):
            puller.parts.pull()
        assert time.monotonic() - started < 1
        threads = threading.active_count()
        # The server answers again 6 s after it hung: the reconnect waits for it, then pulls.
        resume.start()
        assert puller.call(lambda weights: weights.pull()) == 7
        assert puller.parts is not first_client
        assert threading.active_count() <= threads
    finally:
        resume.cancel()
        os.kill(server.pid, signal.SIGCONT)


def test_a_lost_server_is_restartable_not_a_config_error():
    error = ServerCallTimeout("weights: no answer from the replay server in 30s")
    assert is_connection_error(error) and isinstance(error, ServerUnreachable)
    assert ServerUnreachable.exit_code == 3 and UserError.exit_code == 2
