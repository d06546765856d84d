"""The best greedy policy of a run: <root_dir>/policies/best_greedy_policy/.

The evaluator saves the greedy SavedModel of the weights it just scored whenever their
AverageReturn beats every earlier evaluation of the run, with the evaluation's record
(train_step, env_steps, AverageReturn, ...) in `evaluation.json` inside the same directory, so
the record and the weights are published together (policy_export.publish_dir). A restarted
evaluator reads the record back and only a better evaluation replaces it.
"""

from __future__ import annotations

import json
import math
import os
import time

import tensorflow as tf
from absl import logging
from tf_agents.policies import greedy_policy, policy_saver

from distributed_sac.learner.policy_export import publish_dir
from distributed_sac.runtime.faults import FaultInjection

RECORD = "evaluation.json"


def read_record(policy_dir: str) -> dict | None:
    """The evaluation record saved with a best policy; None when there is none or it is
    unreadable (a policy written before records existed)."""
    try:
        with open(os.path.join(policy_dir, RECORD)) as f:
            record = json.load(f)
        float(record["AverageReturn"])
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe(record: dict) -> str:
    """One line for people: the return and where in training it was reached."""
    env_steps = record.get("env_steps")
    steps = f", env steps {env_steps}" if env_steps is not None else ""
    return (
        f"AverageReturn {float(record['AverageReturn']):.3f} at train step "
        f"{record.get('train_step')}{steps}"
    )


class BestPolicyKeeper:
    """Keeps `policy_dir` holding the greedy policy of the best evaluation so far.

    `tf_policy` is the TF actor policy whose variables hold the evaluated weights (the
    evaluator's; see numpy_policy.NumpyActorPolicy.tf_policy).
    """

    def __init__(self, policy_dir: str, tf_policy):
        self.policy_dir = policy_dir
        self._tf_policy = tf_policy
        self._saver = None  # built at the first save: tracing the policy takes seconds
        self._train_step = None
        self.best = read_record(policy_dir) if os.path.isdir(policy_dir) else None

    def is_better(self, result: dict) -> bool:
        value = float(result["AverageReturn"])
        if not math.isfinite(value):
            return False
        return self.best is None or value > float(self.best["AverageReturn"])

    def offer(self, result: dict) -> bool:
        """Saves the policy with `result` as its record if `result` beats the best; True if
        it did."""
        if not self.is_better(result):
            return False
        saver = self._make_saver()
        self._train_step.assign(int(result["train_step"]))

        hold_s = FaultInjection().best_policy_save_hold_s

        def write(directory: str) -> None:
            saver.save(directory)
            if hold_s:
                logging.warning("FaultInjection: holding the best policy save for %.0fs", hold_s)
                time.sleep(hold_s)
            with open(os.path.join(directory, RECORD), "w") as f:
                json.dump(result, f, indent=1)

        publish_dir(self.policy_dir, write)
        self.best = dict(result)
        return True

    def _make_saver(self):
        if self._saver is None:
            self._train_step = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._saver = policy_saver.PolicySaver(
                greedy_policy.GreedyPolicy(self._tf_policy), train_step=self._train_step
            )
        return self._saver
