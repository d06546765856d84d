"""What every role binary shares: common flags, gin loading, TF threads, the run directory."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
from absl import flags

from distributed_sac.config import RunConfig, load_gin
from distributed_sac.errors import UserError
from distributed_sac.layout import RunDir
from distributed_sac.runtime import entrypoint
from distributed_sac.runtime.addresses import check_address

FLAGS = flags.FLAGS
flags.DEFINE_string("root_dir", None, "Run directory for checkpoints, summaries, policies, logs.")
flags.DEFINE_multi_string("gin_file", [], "Gin config file; repeatable, later files override.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin binding such as 'RunConfig.seed = 3'.")
flags.DEFINE_string("replay_server_address", "localhost:8008", "host:port of the Reverb server.")
flags.DEFINE_string(
    "variable_container_address",
    None,
    "host:port of the server holding the 'variables' table; default: --replay_server_address.",
)


def load_config() -> RunConfig:
    """The run config from the gin flags, once the server addresses are checked."""
    check_address(FLAGS.replay_server_address, "--replay_server_address")
    if FLAGS.variable_container_address:
        check_address(FLAGS.variable_container_address, "--variable_container_address")
    return load_gin(FLAGS.gin_file, FLAGS.gin_bindings)


def set_tf_threads(threads: int) -> None:
    """Caps TensorFlow's thread pools; call before the role runs its first TF op."""
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def variables_address() -> str:
    return FLAGS.variable_container_address or FLAGS.replay_server_address


def run_dir(role: str, required: bool = True) -> RunDir | None:
    """--root_dir as a RunDir (created if missing); a role that needs one says so."""
    if not FLAGS.root_dir:
        if required:
            raise UserError(f"{role} needs --root_dir")
        return None
    return RunDir(FLAGS.root_dir).create()


def run_role(name: str, main: Callable[[], None]) -> None:
    """Runs a role's main under absl; a UserError becomes one line on stderr and exit code 2."""
    entrypoint.run(name, main)
