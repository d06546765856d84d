"""Saving the learner's policies as standalone SavedModels under <root_dir>/policies/."""

from __future__ import annotations

import os
import shutil

from tf_agents.policies import greedy_policy, policy_saver

from distributed_sac.layout import COLLECT_POLICY, GREEDY_POLICY


class PolicyExporter:
    """Writes greedy and collect policies with their current weights, replacing older exports."""

    def __init__(self, policies_dir: str, collect_policy, train_step):
        self._policies_dir = policies_dir
        self._savers = {
            GREEDY_POLICY: policy_saver.PolicySaver(
                greedy_policy.GreedyPolicy(collect_policy), train_step=train_step
            ),
            COLLECT_POLICY: policy_saver.PolicySaver(collect_policy, train_step=train_step),
        }

    def export(self) -> None:
        os.makedirs(self._policies_dir, exist_ok=True)
        for name, saver in self._savers.items():
            final = os.path.join(self._policies_dir, name)
            staging = final + ".tmp"
            shutil.rmtree(staging, ignore_errors=True)
            saver.save(staging)
            # Readers never see a half-written SavedModel: swap in the complete one.
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
