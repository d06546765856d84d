"""Plays a saved greedy policy in the environment and records a video, headless.

    python -m distributed_sac.tools.play --root_dir runs/x --episodes 3 --output minitaur.mp4

With --root_dir it plays the run's best policy, policies/best_greedy_policy (the evaluator keeps
the greedy policy of the best evaluation there, see best_policy.py), or the newest export,
policies/greedy_policy, before the first evaluation; --policy_dir plays any policy directory.

The policy is a TF-Agents SavedModel written by the learner (policy_export.PolicyExporter); the
environment comes from the gin config (--gin_file, default gin/minitaur.gin, and --gin_bindings),
built the way every role builds it. Frames are rendered with pybullet's software renderer
(TinyRenderer), so no display or GPU is needed, and piped to the ffmpeg binary that ships in the
imageio-ffmpeg wheel: H.264 for .mp4, a GIF with its own palette for .gif.

Frames: one of each episode's first observation, then one after every step, so the video has
sum(length + 1) frames over the episodes played (the lengths are printed).
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags

from distributed_sac import best_policy, cli, entrypoint
from distributed_sac.config import BUNDLED_GIN_DIR, SEED_LIMIT, load_gin
from distributed_sac.errors import UserError, first_line
from distributed_sac.layout import RunDir

# Gym's classic-control tasks draw with pygame, which wants a display and a sound card; its
# dummy drivers render off-screen (pybullet tasks do not need them).
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

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

OUTPUT_EXTENSIONS = (".mp4", ".gif")
DEFAULT_GIN_FILE = os.path.join(BUNDLED_GIN_DIR, "minitaur.gin")


class Camera:
    """Renders RGB frames of a TF-Agents py environment without a display.

    pybullet's Minitaur tasks: pybullet's TinyRenderer, a camera following the robot's base (the
    environment's own distance, yaw and pitch) at the requested size. Its own render() asks for
    the OpenGL renderer at a fixed 960x720, which costs ~10 times more per frame. Any other task:
    its render(mode="rgb_array") at its own size.
    """

    def __init__(self, py_env, width: int, height: int):
        self._py_env = py_env
        self._width, self._height = width, height
        gym_env = getattr(py_env, "gym", None)
        self._gym = gym_env.unwrapped if gym_env is not None else None
        robot = getattr(self._gym, "minitaur", None)
        self._client = getattr(self._gym, "_pybullet_client", None)
        self._follows_robot = self._client is not None and hasattr(robot, "GetBasePosition")

    def frame(self) -> np.ndarray:
        """The current frame, uint8 [height, width, 3]."""
        if self._follows_robot:
            return self._minitaur_frame()
        try:
            frame = self._py_env.render(mode="rgb_array")
        except Exception as error:
            raise UserError(
                f"cannot render this environment headless: {first_line(error)}"
            ) from None
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] < 3 or frame.size == 0:
            raise UserError(f"the environment's render() gave no RGB image (shape {frame.shape})")
        return np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)

    def _minitaur_frame(self) -> np.ndarray:
        import pybullet

        client, gym_env = self._client, self._gym
        view = client.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=gym_env.minitaur.GetBasePosition(),
            distance=getattr(gym_env, "_cam_dist", 1.0),
            yaw=getattr(gym_env, "_cam_yaw", 0.0),
            pitch=getattr(gym_env, "_cam_pitch", -30.0),
            roll=0,
            upAxisIndex=2,
        )
        projection = client.computeProjectionMatrixFOV(
            fov=60, aspect=self._width / self._height, nearVal=0.1, farVal=100.0
        )
        _, _, pixels, _, _ = client.getCameraImage(
            width=self._width,
            height=self._height,
            viewMatrix=view,
            projectionMatrix=projection,
            renderer=pybullet.ER_TINY_RENDERER,
        )
        rgba = np.asarray(pixels, dtype=np.uint8).reshape(self._height, self._width, 4)
        return np.ascontiguousarray(rgba[:, :, :3])


class VideoWriter:
    """Streams RGB frames to ffmpeg (imageio-ffmpeg's binary): .mp4 as H.264, .gif paletted.

    Every frame sent is one frame of the file: ffmpeg's GIF encoder keeps identical consecutive
    frames, where Pillow's would merge them.
    """

    def __init__(self, path: str, fps: float):
        self._path, self._fps = path, fps
        self._gif = path.lower().endswith(".gif")
        self._pipe = None
        self.frames = 0
        self.size = None  # (width, height), once the first frame came

    def append(self, frame: np.ndarray) -> None:
        if self._pipe is None:
            self._open(frame.shape[1], frame.shape[0])
        try:
            self._pipe.send(frame)
        except OSError as error:  # ffmpeg died: disk full, output removed, ...
            raise UserError(f"ffmpeg could not write {self._path}: {first_line(error)}") from None
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        if self._gif:
            options = dict(
                codec="gif",
                pix_fmt_out="pal8",
                macro_block_size=1,
                output_params=[
                    "-filter_complex",
                    "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse",
                    "-loop",
                    "0",
                ],
            )
        else:
            if width % 2 or height % 2:
                raise UserError(f"an .mp4 needs an even frame size, got {width}x{height}")
            options = dict(codec="libx264", pix_fmt_out="yuv420p", macro_block_size=2)
        self.size = (width, height)
        self._pipe = imageio_ffmpeg.write_frames(
            self._path, (width, height), fps=self._fps, ffmpeg_log_level="error", **options
        )
        self._pipe.send(None)  # starts ffmpeg

    def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.close()
            except OSError as error:
                raise UserError(
                    f"ffmpeg could not write {self._path}: {first_line(error)}"
                ) from None


def check_policy_dir(policy_dir: str) -> None:
    """UserError unless `policy_dir` holds a SavedModel (cheap: no TensorFlow yet)."""
    if not os.path.exists(policy_dir):
        raise UserError(f"policy_dir not found: {policy_dir}")
    if not os.path.isdir(policy_dir):
        raise UserError(f"policy_dir is not a directory: {policy_dir}")
    if not any(
        os.path.isfile(os.path.join(policy_dir, name))
        for name in ("saved_model.pb", "saved_model.pbtxt")
    ):
        hint = ""
        if os.path.isdir(RunDir(policy_dir).policies):
            hint = f"; this looks like a root_dir: try --root_dir {policy_dir}"
        raise UserError(f"{policy_dir} is not a SavedModel policy (no saved_model.pb){hint}")


def run_policy_dir(root_dir: str | None) -> str:
    """The policy played for a run: its best one, or its newest before any was kept."""
    if not root_dir:
        raise UserError("play needs --policy_dir or --root_dir (to play the run's best policy)")
    run = RunDir(root_dir)
    return run.best_greedy_policy if os.path.isdir(run.best_greedy_policy) else run.greedy_policy


def load_policy(policy_dir: str):
    """The TF-Agents policy SavedModel in `policy_dir`; UserError when it is not one."""
    check_policy_dir(policy_dir)
    import tensorflow as tf

    try:
        # Resolved once: TF opens the SavedModel's files one by one, and a policy published
        # meanwhile switches the name to another version. The resolved one is kept until the
        # next replacement (policy_export.publish_dir).
        policy = tf.saved_model.load(os.path.realpath(policy_dir))
    except Exception as error:  # a damaged SavedModel raises anything from OSError to TF's own
        raise UserError(f"cannot load the policy in {policy_dir}: {first_line(error)}") from None
    if not all(hasattr(policy, name) for name in ("action", "get_initial_state")):
        raise UserError(f"{policy_dir} is a SavedModel but not a TF-Agents policy (no action())")
    return policy


def batched(time_step):
    """A py environment's TimeStep as the SavedModel's input: tensors with a batch dim of 1."""
    import tensorflow as tf
    from tf_agents.trajectories import time_step as ts

    return ts.TimeStep(
        step_type=tf.constant([time_step.step_type], tf.int32),
        reward=tf.constant([time_step.reward], tf.float32),
        discount=tf.constant([time_step.discount], tf.float32),
        observation=tf.nest.map_structure(
            lambda x: tf.constant(np.asarray(x)[None], tf.float32), time_step.observation
        ),
    )


def walked(env) -> str:
    """For Minitaur, the metres its base moved forward (x) in the episode, the reward's main
    term (the rest is an energy penalty), from the environment's own log of its reward terms
    (get_objectives, cleared at reset); "" for other tasks."""
    gym_env = getattr(getattr(env, "gym", None), "unwrapped", None)
    if not hasattr(gym_env, "get_objectives") or not gym_env.get_objectives():
        return ""
    forward = sum(terms[0] for terms in gym_env.get_objectives())
    return f" (walked {forward:.3f} m)"


def play_episode(env, policy, policy_dir, camera: Camera, video: VideoWriter, max_steps):
    """Plays one episode, a frame per observation into `video`; returns (return, length, render
    seconds)."""
    import tensorflow as tf

    time_step = env.reset()
    state = policy.get_initial_state(batch_size=1)
    started = time.perf_counter()
    video.append(camera.frame())
    render_s = time.perf_counter() - started
    total, length = 0.0, 0
    while not time_step.is_last() and (max_steps is None or length < max_steps):
        try:
            step = policy.action(batched(time_step), state)
        except Exception as error:  # a policy for another environment rejects the observation
            shapes = tf.nest.map_structure(lambda x: np.shape(x), time_step.observation)
            raise UserError(
                f"the policy in {policy_dir} does not accept this environment's observations "
                f"(shape {shapes}; is the gin config the one it was trained with?): "
                f"{first_line(error)}"
            ) from None
        state = step.state
        time_step = env.step(step.action.numpy()[0])
        total += float(time_step.reward)
        length += 1
        started = time.perf_counter()
        video.append(camera.frame())
        render_s += time.perf_counter() - started
    return total, length, render_s


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
    output = entrypoint.check_output_path(FLAGS.output, OUTPUT_EXTENSIONS)
    if output.lower().endswith(".mp4") and (FLAGS.width % 2 or FLAGS.height % 2):
        raise UserError(
            f"an .mp4 needs an even --width and --height, got {FLAGS.width}x{FLAGS.height}"
        )
    policy_dir = FLAGS.policy_dir or run_policy_dir(FLAGS.root_dir)
    check_policy_dir(policy_dir)
    record = best_policy.read_record(policy_dir)
    saved = f" ({best_policy.describe(record)} in training)" if record else ""
    print(f"playing {policy_dir}{saved}", flush=True)
    config = load_gin(FLAGS.gin_file or [DEFAULT_GIN_FILE], FLAGS.gin_bindings)
    cli.set_tf_threads(config.actor_tf_threads)
    policy = load_policy(policy_dir)

    from distributed_sac.envs import load_env

    env = load_env(config, seed=FLAGS.seed)
    camera = Camera(env, FLAGS.width, FLAGS.height)
    video = VideoWriter(output, FLAGS.fps)
    render_s = 0.0
    try:
        for episode in range(1, FLAGS.episodes + 1):
            total, length, seconds = play_episode(
                env, policy, policy_dir, camera, video, FLAGS.max_steps_per_episode
            )
            render_s += seconds
            print(
                f"episode {episode}: return {total:.6g}, length {length}{walked(env)}", flush=True
            )
        video.close()
    except BaseException:
        video.close()
        if os.path.exists(output):
            os.remove(output)  # no half-written video left behind
        raise
    finally:
        env.close()
    print(
        f"wrote {output}: {video.frames} frames of {video.size[0]}x{video.size[1]} at "
        f"{FLAGS.fps:g} fps (one per episode start "
        f"plus one per step); rendering took {1000 * render_s / video.frames:.1f} ms per frame"
    )


def run() -> None:
    cli.run_role("play", main)


if __name__ == "__main__":
    run()
