"""Where a run's files live under its root_dir, named once for every role, tool and test.

run.lock               held by the launcher and its roles while a run is live (run_lock)
operative_config.gin   the config the learner actually used
learner_step.json      the train step the learner has reached (learner_step)
logs/<role>.log        each role's output, captured by the launcher
checkpoints/           learner checkpoints (strict restore)
train/                 learner TensorBoard summaries (TF-Agents' Learner writes them there)
policies/              SavedModels: greedy_policy/, collect_policy/ (the learner's newest),
                       best_greedy_policy/ (the evaluator's best, its evaluation.json inside)
collect/<task>/        collector summaries
eval/                  evaluator summaries and metrics.jsonl (one JSON object per evaluation)
reverb/                replay server checkpoints (Reverb's own directory: nothing else goes in it)
reverb_signatures.json the tables those checkpoints hold
replay/                replay summaries (the launcher's monitor)
"""

from __future__ import annotations

import os
import tempfile

from distributed_sac.errors import UserError

RUN_LOCK = "run.lock"
OPERATIVE_CONFIG = "operative_config.gin"
LEARNER_STEP = "learner_step.json"
LOGS = "logs"
CHECKPOINTS = "checkpoints"
TRAIN = "train"  # tf_agents.train.learner.TRAIN_DIR
POLICIES = "policies"  # tf_agents.train.learner.POLICY_SAVED_MODEL_DIR
GREEDY_POLICY = "greedy_policy"
COLLECT_POLICY = "collect_policy"
BEST_GREEDY_POLICY = "best_greedy_policy"
COLLECT = "collect"
EVAL = "eval"
METRICS = "metrics.jsonl"
REVERB = "reverb"
REVERB_SIGNATURES = "reverb_signatures.json"
REPLAY = "replay"


class RunDir:
    """The paths of one run directory."""

    def __init__(self, root: str):
        self.root = root

    def _join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def create(self) -> RunDir:
        """Makes the root directory if missing; UserError when it is a file or not writable."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise UserError(f"--root_dir {self.root} exists and is not a directory")
        try:
            os.makedirs(self.root, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):  # access() says yes to root regardless
                pass
        except OSError as error:
            raise UserError(f"--root_dir {self.root} is not writable: {error.strerror}") from None
        return self

    @property
    def run_lock(self) -> str:
        return self._join(RUN_LOCK)

    @property
    def operative_config(self) -> str:
        return self._join(OPERATIVE_CONFIG)

    @property
    def learner_step(self) -> str:
        return self._join(LEARNER_STEP)

    @property
    def logs(self) -> str:
        return self._join(LOGS)

    def log(self, role: str) -> str:
        return self._join(LOGS, f"{role}.log")

    @property
    def checkpoints(self) -> str:
        return self._join(CHECKPOINTS)

    @property
    def train(self) -> str:
        return self._join(TRAIN)

    @property
    def policies(self) -> str:
        return self._join(POLICIES)

    @property
    def greedy_policy(self) -> str:
        return self._join(POLICIES, GREEDY_POLICY)

    @property
    def collect_policy(self) -> str:
        return self._join(POLICIES, COLLECT_POLICY)

    @property
    def best_greedy_policy(self) -> str:
        return self._join(POLICIES, BEST_GREEDY_POLICY)

    def collect(self, task: int) -> str:
        return self._join(COLLECT, str(task))

    @property
    def eval(self) -> str:
        return self._join(EVAL)

    @property
    def metrics(self) -> str:
        return self._join(EVAL, METRICS)

    @property
    def reverb(self) -> str:
        return self._join(REVERB)

    @property
    def reverb_signatures(self) -> str:
        return self._join(REVERB_SIGNATURES)

    @property
    def replay(self) -> str:
        return self._join(REPLAY)
