"""What every role binary shares: common flags, gin loading, one-line errors, logging."""

from __future__ import annotations

import json
import os
import time
from typing import Callable

# TensorFlow's C++ start-up noise (CUDA plugin registration) would bury the roles' own logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from distributed_sac import entrypoint  # noqa: E402
from distributed_sac.config import RunConfig, UserError, load_gin  # noqa: E402

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
    return load_gin(FLAGS.gin_file, FLAGS.gin_bindings)


def set_tf_threads(threads: int) -> None:
    """Caps TensorFlow's thread pools; call before the role runs its first TF op."""
    if threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def variables_address() -> str:
    return FLAGS.variable_container_address or FLAGS.replay_server_address


def require_root_dir(role: str) -> str:
    if not FLAGS.root_dir:
        raise UserError(f"{role} needs --root_dir")
    os.makedirs(FLAGS.root_dir, exist_ok=True)
    return FLAGS.root_dir


def report(event: str, **fields) -> None:
    """One machine-readable line in the role's log (the launcher, tests, benchmarks read these)."""
    fields.setdefault("unix_time", round(time.time(), 3))
    logging.info("%s %s", event, json.dumps(fields, sort_keys=True))


def run_role(name: str, main: Callable[[], None]) -> None:
    """Runs a role's main under absl; a UserError becomes one line on stderr and exit code 2."""
    entrypoint.run(name, main)
