"""Plays a saved greedy policy in the environment and records a video, headless.

    python -m distributed_sac.tools.play --root_dir runs/x --episodes 3 --output minitaur.mp4

--root_dir plays the run's best policy, policies/best_greedy_policy (or its newest export,
policies/greedy_policy, before the first evaluation); --policy_dir any policy SavedModel. The
environment is the gin config's, built as every role builds it, the episodes the evaluation's;
the video holds one frame of each episode's first observation plus one per step.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import tensorflow as tf
from absl import flags

from distributed_sac.acting import best_policy
from distributed_sac.acting.evaluation import run_episodes
from distributed_sac.config import DEFAULT_GIN, SEED_LIMIT, load_gin
from distributed_sac.errors import UserError, first_line
from distributed_sac.layout import RunDir
from distributed_sac.learner.policy_export import check_policy_dir, load_policy
from distributed_sac.runtime import cli, entrypoint
from distributed_sac.sac.envs import Camera, load_env, walked_metres
from distributed_sac.tools.video import EXTENSIONS, VideoWriter

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "policy_dir",
    None,
    "The greedy policy SavedModel to play, e.g. <root_dir>/policies/greedy_policy; default: "
    "--root_dir's best policy, policies/best_greedy_policy (or policies/greedy_policy if no "
    "evaluation has been saved yet).",
)
flags.DEFINE_integer("episodes", 3, "Episodes to play (at least 1).")
flags.DEFINE_string(
    "output",
    "minitaur.mp4",
    "Video to write: .mp4 (H.264) or .gif. It holds one frame of each episode's first "
    "observation plus one per step: sum(episode length + 1) frames.",
)
flags.DEFINE_float("fps", 30.0, "Frames per second of the video (a GIF rounds to 1/100 s).")
flags.DEFINE_integer("width", 320, "Frame width in pixels (even, for .mp4).")
flags.DEFINE_integer("height", 240, "Frame height in pixels (even, for .mp4).")
flags.DEFINE_integer(
    "max_steps_per_episode",
    None,
    "Stop an episode after this many steps; default: the environment's own limit "
    "(RunConfig.max_episode_steps, or 1000 for Minitaur).",
)
flags.DEFINE_integer(
    "seed",
    0,
    "Seeds the environment and Python's and numpy's global generators (Minitaur draws its "
    "masses, friction and battery voltage from these at every reset).",
)


def run_policy_dir(root_dir: str | None) -> str:
    """The policy played for a run: its best one, or its newest before any was kept."""
    if not root_dir:
        raise UserError("play needs --policy_dir or --root_dir (to play the run's best policy)")
    run = RunDir(root_dir)
    return run.best_greedy_policy if os.path.isdir(run.best_greedy_policy) else run.greedy_policy


class CheckedPolicy:
    """`policy` whose rejection of an observation is a UserError naming the likely cause."""

    def __init__(self, policy, policy_dir: str):
        self._policy, self._policy_dir = policy, policy_dir

    def action(self, time_step):
        try:
            return self._policy.action(time_step)
        except Exception as error:  # a policy for another environment rejects the observation
            shapes = tf.nest.map_structure(np.shape, time_step.observation)
            raise UserError(
                f"the policy in {self._policy_dir} does not accept this environment's "
                f"observations (shape {shapes}; is the gin config the one it was trained with?): "
                f"{first_line(error)}"
            ) from None


def main() -> None:
    if FLAGS.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {FLAGS.episodes}")
    if not FLAGS.fps > 0:
        raise UserError(f"--fps must be positive, got {FLAGS.fps}")
    if FLAGS.width < 16 or FLAGS.height < 16:
        raise UserError(
            f"--width and --height must be at least 16, got {FLAGS.width}x{FLAGS.height}"
        )
    if FLAGS.max_steps_per_episode is not None and FLAGS.max_steps_per_episode < 1:
        raise UserError(
            f"--max_steps_per_episode must be at least 1, got {FLAGS.max_steps_per_episode}"
        )
    if not 0 <= FLAGS.seed < SEED_LIMIT:  # numpy's global generator takes no other seed
        raise UserError(f"--seed must be an integer from 0 to {SEED_LIMIT - 1}, got {FLAGS.seed}")
    output = entrypoint.check_output_path(FLAGS.output, EXTENSIONS)
    if output.lower().endswith(".mp4") and (FLAGS.width % 2 or FLAGS.height % 2):
        raise UserError(
            f"an .mp4 needs an even --width and --height, got {FLAGS.width}x{FLAGS.height}"
        )
    policy_dir = FLAGS.policy_dir or run_policy_dir(FLAGS.root_dir)
    check_policy_dir(policy_dir)  # before the slow work: a typo costs nothing
    record = best_policy.read_record(policy_dir)
    saved = f" ({best_policy.describe(record)} in training)" if record else ""
    print(f"playing {policy_dir}{saved}", flush=True)
    config = load_gin(FLAGS.gin_file or [DEFAULT_GIN], FLAGS.gin_bindings)
    cli.set_tf_threads(config.actor_tf_threads)
    policy = CheckedPolicy(load_policy(policy_dir), policy_dir)
    env = load_env(config, seed=FLAGS.seed)
    camera = Camera(env, FLAGS.width, FLAGS.height)
    numbers = itertools.count(1)

    def print_episode(total: float, length: int) -> None:
        walked = walked_metres(env)
        metres = f" (walked {walked:.3f} m)" if walked is not None else ""
        print(f"episode {next(numbers)}: return {total:.6g}, length {length}{metres}", flush=True)

    try:
        with VideoWriter(output, FLAGS.fps) as video:
            run_episodes(
                env,
                policy,
                FLAGS.episodes,
                max_steps=FLAGS.max_steps_per_episode,
                on_step=lambda time_step: video.append(camera.frame()),
                on_episode_end=print_episode,
            )
    finally:
        env.close()
    print(
        f"wrote {output}: {video.frames} frames of {video.size[0]}x{video.size[1]} at "
        f"{FLAGS.fps:g} fps (one per episode start plus one per step); "
        f"rendering took {1000 * camera.seconds / video.frames:.1f} ms per frame"
    )


def run() -> None:
    cli.run_role("play", main)


if __name__ == "__main__":
    run()
