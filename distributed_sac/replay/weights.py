"""Policy weights through the `variables` table, keyed as TF-Agents' ReverbVariableContainer.

The table holds one item, {"policy_variables": [the actor's variables], "train_step": int64}:
a TF-Agents actor with a ReverbVariableContainer on this table follows this project's learner.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import reverb
import tensorflow as tf
import tree
from absl import logging

from distributed_sac.replay.connection import BoundedCall

# tf_agents.experimental.distributed.reverb_variable_container's names.
VARIABLES_TABLE = "variables"
POLICY_KEY = "policy_variables"
TRAIN_STEP_KEY = "train_step"


def weights_nest(policy_variables, train_step) -> dict:
    """What travels through the `variables` table: the policy's weights and its train step."""
    return {POLICY_KEY: list(policy_variables), TRAIN_STEP_KEY: train_step}


def weights_signature(policy_variables) -> dict:
    return tf.nest.map_structure(
        lambda v: tf.TensorSpec(v.shape, v.dtype),
        weights_nest(policy_variables, tf.TensorSpec((), tf.int64)),
    )


def _sample_newest(client: reverb.Client, signature) -> dict:
    """The table's one item, unflattened to `signature`'s nest."""
    sample = next(client.sample(VARIABLES_TABLE, num_samples=1, emit_timesteps=False))
    flat = [np.asarray(column[0]) for column in sample.data]  # items hold one timestep
    return tree.unflatten_as(signature, flat)


def _read_newest(client: reverb.Client, signature) -> dict | None:
    """The newest pushed item as `signature`'s nest; None before the first push, or when the
    item does not have the nest's structure."""
    if not client.server_info(timeout=30)[VARIABLES_TABLE].current_size:
        return None
    try:
        return _sample_newest(client, signature)
    except ValueError:  # another number of tensors than this policy's
        logging.warning("ignored weights on the server that do not fit this policy")
        return None


def newest_train_step(client: reverb.Client, timeout_s: int = 30) -> int | None:
    """The train step of the newest pushed weights; None before the first push. Its sample
    waits for a lost server for good: call it through a BoundedCall."""
    info = client.server_info(timeout_s)[VARIABLES_TABLE]
    if not info.current_size:
        return None
    return int(_sample_newest(client, info.signature)[TRAIN_STEP_KEY])


class WeightClient:
    """Pushes (learner) or pulls (actors) policy weights and their train step.

    With an `update_period`, `update()` pulls only on every period-th call, as Acme's variable
    client does: an actor calls it every env step and fetches every `update_period` steps.
    Pushes and pulls are bounded calls: a server that stopped answering raises ServerCallTimeout.
    Any client can push, so an actor passes `accept` (LearnerStep.acceptable): weights pushed
    under a train step it refuses are not assigned.
    """

    def __init__(
        self,
        client: reverb.Client,
        policy_variables,
        train_step: tf.Variable | None = None,
        update_period: int = 1,
        call_timeout_s: float = 30.0,
        accept: Callable[[int], bool] | None = None,
    ):
        self._client = client
        self._variables = list(policy_variables)
        self._train_step = train_step
        self._update_period = update_period
        self._calls = 0
        self._bounded = BoundedCall("weights", call_timeout_s)
        self._accept = accept
        self.train_step: int | None = None  # of the weights pulled last
        self.newest_train_step: int | None = None  # seen on the server last, accepted or not

    def push(self) -> None:
        values = weights_nest([v.numpy() for v in self._variables], self._train_step.numpy())
        self._bounded(self._client.insert, tree.flatten(values), {VARIABLES_TABLE: 1.0})

    def pull(self) -> int | None:
        """Assigns the newest pushed weights; returns their train step, or None before any push
        (and when the item there does not fit these variables, or `accept` refuses its train
        step: it is left alone, with a warning, until the learner's next push replaces it)."""
        values = self._bounded(_read_newest, self._client, weights_nest(self._variables, 0))
        if values is None:
            return None
        arrays = [np.asarray(value) for value in values[POLICY_KEY]]
        if len(arrays) != len(self._variables) or any(
            array.shape != tuple(variable.shape) or array.dtype != variable.dtype.as_numpy_dtype
            for array, variable in zip(arrays, self._variables)
        ):
            logging.warning("ignored weights on the server that do not fit this policy")
            return None
        self.newest_train_step = int(values[TRAIN_STEP_KEY])
        if self._accept is not None and not self._accept(self.newest_train_step):
            return None
        for variable, array in zip(self._variables, arrays):
            variable.assign(array)
        self.train_step = self.newest_train_step
        return self.train_step

    def update(self) -> bool:
        """Pulls on every `update_period`-th call (the first included); True when it pulled."""
        due = self._calls % self._update_period == 0
        self._calls += 1
        if due:
            self.pull()
        return due
