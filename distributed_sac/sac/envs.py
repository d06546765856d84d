"""Environment loading: pybullet and gym tasks as TF-Agents Python environments; a headless
camera and Minitaur's distance walked, for tools that show an episode."""

from __future__ import annotations

import ctypes
import functools
import os
import random
import sys
import time
import warnings

import numpy as np
import tree

from distributed_sac.config import RunConfig
from distributed_sac.errors import UserError, first_line


def load_env(config: RunConfig, seed: int | None = None):
    """Returns the configured environment as a PyEnvironment, seeded when `seed` is given.

    RunConfig.action_repeat and observation_scale wrap it, for every role and tool alike.
    Seeding also seeds Python's and numpy's global generators: Minitaur's randomizer draws each
    episode's masses, friction and motor damping from them, not from the environment's own
    generator. So call it once per process, for the environment that process steps.
    """
    # Imported here, not at the top: gym, pybullet's tasks and TF-Agents' environments cost
    # 2.7 s of CPU, which the launcher (it imports this module) refusing a bad flag does not
    # need. pybullet_envs registers the pybullet tasks (MinitaurBulletEnv-v0, ...) with gym.
    import gym
    import pybullet_envs  # noqa: F401
    from tf_agents.environments import suite_gym, wrappers

    if config.env_name not in gym.envs.registry.env_specs:
        raise UserError(f"unknown environment '{config.env_name}' (RunConfig.env_name)")
    env_wrappers = []
    if config.action_smoothing > 0:  # inside the repeat: each environment step is smoothed
        env_wrappers.append(functools.partial(smooth_actions, weight=config.action_smoothing))
    if config.action_repeat > 1:  # outside the time limit, which so counts environment steps
        env_wrappers.append(functools.partial(wrappers.ActionRepeat, times=config.action_repeat))
    env = suite_gym.load(
        config.env_name, max_episode_steps=config.max_episode_steps, env_wrappers=env_wrappers
    )
    discrete = [spec for spec in tree.flatten(env.action_spec()) if spec.dtype.kind != "f"]
    if discrete:
        env.close()
        raise UserError(
            f"RunConfig.env_name '{config.env_name}' has discrete actions "
            f"({discrete[0].dtype.name}); SAC needs continuous actions (a gym Box action space)"
        )
    if config.observation_scale is not None:
        env = scale_observations(env, config.observation_scale)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        env.seed(seed)
    return env


def check_env(config: RunConfig) -> None:
    """UserError unless RunConfig.env_name is a task SAC can learn: known, continuous actions,
    observation_scale fitting it. Loads the environment once (under a second for Minitaur),
    quietly: pybullet and gym print start-up lines (some from C) that a role's log keeps but the
    launcher's console need not show."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_env(config).close()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        libc.fflush(None)  # C's buffered lines go to /dev/null too, not after the restore
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)


def smooth_actions(env, weight: float):
    """`env` applying weight * (the action it applied last) + (1 - weight) * action: a
    first-order low-pass filter, as pybullet's own Minitaur controllers use; reset at each
    episode's start."""
    from tf_agents.environments import wrappers  # here, as in load_env (its only caller)

    class SmoothedActions(wrappers.PyEnvironmentBaseWrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self._applied = None

        def _reset(self):
            self._applied = None
            return self._env.reset()

        def _step(self, action):
            action = np.asarray(action)
            if self._applied is not None:
                action = (weight * self._applied + (1.0 - weight) * action).astype(action.dtype)
            self._applied = action
            return self._env.step(action)

    return SmoothedActions(env)


def scale_observations(env, scale):
    """`env` with each observation multiplied by `scale` (one factor per dimension)."""
    # Here, as in load_env (its only caller).
    from tf_agents.environments import wrappers
    from tf_agents.specs import array_spec

    spec = env.observation_spec()
    if not isinstance(spec, array_spec.ArraySpec) or len(spec.shape) != 1:
        raise UserError("RunConfig.observation_scale needs a flat vector observation")
    if len(scale) != spec.shape[0]:
        raise UserError(
            f"RunConfig.observation_scale has {len(scale)} factors; "
            f"{env.gym.spec.id if hasattr(env, 'gym') else 'the environment'} observes "
            f"{spec.shape[0]} numbers"
        )
    factors = np.asarray(scale, spec.dtype)

    class ScaledObservations(wrappers.PyEnvironmentBaseWrapper):
        def observation_spec(self):
            if isinstance(spec, array_spec.BoundedArraySpec):
                return array_spec.BoundedArraySpec(
                    spec.shape,
                    spec.dtype,
                    spec.minimum * factors,
                    spec.maximum * factors,
                    spec.name,
                )
            return spec

        def _reset(self):
            return scaled(self._env.reset())

        def _step(self, action):
            return scaled(self._env.step(action))

    def scaled(time_step):
        return time_step._replace(observation=(time_step.observation * factors).astype(spec.dtype))

    return ScaledObservations(env)


class Camera:
    """Renders RGB frames of a TF-Agents py environment without a display.

    pybullet's Minitaur tasks: pybullet's TinyRenderer, a camera following the robot's base (the
    environment's own distance, yaw and pitch) at the requested size. Its own render() asks for
    the OpenGL renderer at a fixed 960x720, which costs several times more per frame
    (docs/performance.md). Any other task: its render(mode="rgb_array") at its own size.
    `seconds` adds up the time spent rendering.
    """

    def __init__(self, py_env, width: int, height: int):
        # Gym's classic-control tasks draw with pygame, which wants a display and a sound card;
        # its dummy drivers render off-screen (read when pygame starts, at the first render).
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        self._py_env = py_env
        self._width, self._height = width, height
        gym_env = getattr(py_env, "gym", None)
        self._gym = gym_env.unwrapped if gym_env is not None else None
        robot = getattr(self._gym, "minitaur", None)
        self._client = getattr(self._gym, "_pybullet_client", None)
        self._follows_robot = self._client is not None and hasattr(robot, "GetBasePosition")
        self.seconds = 0.0

    def frame(self) -> np.ndarray:
        """The current frame, uint8 [height, width, 3]."""
        started = time.perf_counter()
        frame = self._minitaur_frame() if self._follows_robot else self._rendered_frame()
        self.seconds += time.perf_counter() - started
        return frame

    def _rendered_frame(self) -> np.ndarray:
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
        # Imported here, as in load_env: pybullet prints its build time on stderr when imported
        # (at no CPU cost to speak of), which would come before a tool's one-line error.
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


def walked_metres(env) -> float | None:
    """For Minitaur, the metres its base moved forward (x) in the episode so far, the reward's
    main term (the rest is an energy penalty), from the environment's own log of its reward terms
    (get_objectives, cleared at reset); None for other tasks or before a step."""
    gym_env = getattr(getattr(env, "gym", None), "unwrapped", None)
    if not hasattr(gym_env, "get_objectives") or not gym_env.get_objectives():
        return None
    return sum(terms[0] for terms in gym_env.get_objectives())
