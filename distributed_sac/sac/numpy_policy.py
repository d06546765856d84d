"""The actor's policy evaluated with numpy, for collectors and the evaluator.

A TF policy call from Python (graph dispatch for a 1x28 input) costs a sizeable share of a
Minitaur step; the same MLP in numpy costs a small fraction of that, so a collector runs close to
the environment's own speed (docs/performance.md has the figures).
tests/test_numpy_policy.py checks it against TF-Agents' ActorPolicy on the same weights.
"""

from __future__ import annotations

import numpy as np
from tf_agents.trajectories import policy_step


class NumpyActorPolicy:
    """SAC's actor (ReLU MLP, then a tanh-squashed diagonal Normal scaled to the action spec).

    Holds a copy of the TF policy's weights: call `sync()` after new weights were assigned.
    `greedy` acts with the distribution's mode, as TF-Agents' GreedyPolicy does.
    """

    def __init__(self, tf_policy, greedy: bool = False, seed: int | None = None):
        self.tf_policy = tf_policy
        self._variables = list(tf_policy.variables())
        action_spec = tf_policy.action_spec
        observation_spec = tf_policy.time_step_spec.observation
        shapes = [tuple(v.shape) for v in self._variables]
        kernels, biases = shapes[0::2], shapes[1::2]
        chained = len(shapes) % 2 == 0 and all(
            len(k) == 2 and b == (k[1],) for k, b in zip(kernels, biases)
        )
        chained = chained and all(a[1] == b[0] for a, b in zip(kernels, kernels[1:]))
        if (
            not chained
            or kernels[0][0] != observation_spec.shape.num_elements()
            or kernels[-1][1] != 2 * action_spec.shape.num_elements()
        ):
            raise ValueError(f"not the project's MLP actor: variable shapes {shapes}")
        self._action_shape = tuple(action_spec.shape)
        self._action_dtype = action_spec.dtype.as_numpy_dtype
        low = np.broadcast_to(action_spec.minimum, self._action_shape).reshape(-1)
        high = np.broadcast_to(action_spec.maximum, self._action_shape).reshape(-1)
        self._low, self._high = low, high
        self._center, self._magnitude = (high + low) / 2.0, (high - low) / 2.0
        self._greedy = greedy
        self._rng = np.random.default_rng(seed)
        self.sync()

    @property
    def tf_variables(self) -> list:
        """The TF policy's variables this policy copies from (a weight client pulls into them)."""
        return self._variables

    def sync(self) -> None:
        """Copies the TF policy's current weights."""
        values = [v.numpy() for v in self._variables]
        self._layers = list(zip(values[0::2], values[1::2]))

    def distribution_parameters(self, observation) -> tuple[np.ndarray, np.ndarray]:
        """(loc, scale) of the Normal before the tanh squash, flattened."""
        x = np.asarray(observation, np.float32).reshape(-1)
        for kernel, bias in self._layers[:-1]:
            x = np.maximum(x @ kernel + bias, 0.0)
        kernel, bias = self._layers[-1]
        loc, log_scale = np.split(x @ kernel + bias, 2)
        return loc, np.exp(log_scale)

    def action(self, time_step) -> policy_step.PolicyStep:
        loc, scale = self.distribution_parameters(time_step.observation)
        if not self._greedy:
            loc = loc + scale * self._rng.standard_normal(loc.shape, dtype=np.float32)
        action = np.clip(self._magnitude * np.tanh(loc) + self._center, self._low, self._high)
        action = action.astype(self._action_dtype).reshape(self._action_shape)
        return policy_step.PolicyStep(action=action, state=(), info=())
