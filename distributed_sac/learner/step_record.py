"""The learner's train step as a consumer of pushed weights may believe it.

Any client of the replay server can push weights under any train step (Reverb has no
authentication), so the number in the `variables` table proves nothing. What only the learner
writes is its run directory: `learner_step.json` (the train step it has reached, rewritten after
each chunk of training and at each start, before the weights of that step are pushed) and its
checkpoints (ckpt-<train_step>). A collector or evaluator whose --root_dir is the learner's uses
these: it takes pulled weights only under a train step the learner has reached, and training is
finished once the learner's checkpoint of the final step exists. A role on another host, without
that record, has only the pushed number: it takes none above the final step, and ends when one
reaches it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

from absl import logging

from distributed_sac.errors import is_disk_full
from distributed_sac.layout import RunDir

_CHECKPOINT_NUMBER = re.compile(r"ckpt-(\d+)$")
# How long a collector that found the final checkpoint waits for the final weights, which the
# learner pushes right after it (or, killed in between, at its restart): a client overwriting
# them must not keep the collector, and so the run, from ending.
FINAL_WEIGHTS_WAIT_S = 60.0


def write_reached(run_dir: RunDir, train_step: int) -> None:
    """Records that the learner has reached `train_step` (one rename: readers see the old record
    or the new one). On a full disk the old record stays, with a warning: consumers then keep
    the weights of that step, and the learner's next checkpoint or export names the full disk."""
    temporary = f"{run_dir.learner_step}.tmp"
    try:
        with open(temporary, "w") as f:
            json.dump({"train_step": int(train_step)}, f)
        os.replace(temporary, run_dir.learner_step)
    except OSError as error:
        if not is_disk_full(error):
            raise
        with contextlib.suppress(OSError):
            os.remove(temporary)
        logging.warning(
            "no space left on device recording train step %d in %s; the record before stays",
            train_step,
            run_dir.learner_step,
        )


def read_reached(run_dir: RunDir) -> int | None:
    """The train step of the learner's record; None when the run directory holds none."""
    try:
        with open(run_dir.learner_step) as f:
            return int(json.load(f)["train_step"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        # Written by rename only, so never half-written; anything else is not the learner's.
        logging.log_every_n_seconds(
            logging.WARNING, "unreadable %s: %s", 60, run_dir.learner_step, error
        )
        return 0


def newest_checkpoint_step(run_dir: RunDir) -> int | None:
    """The train step of the learner's newest checkpoint (its index file names it); None
    without one."""
    try:
        with open(os.path.join(run_dir.checkpoints, "checkpoint")) as f:
            index = f.read()
    except FileNotFoundError:
        return None
    # CheckpointState as text: model_checkpoint_path: "ckpt-300" (relative or absolute).
    match = re.search(r'^model_checkpoint_path:\s*"([^"]*)"', index, re.MULTILINE)
    number = match and _CHECKPOINT_NUMBER.search(match.group(1))
    return int(number.group(1)) if number else None


class LearnerStep:
    """A collector's or evaluator's check of the train step that comes with pulled weights.

    With `run_dir` holding the learner's record: a step is acceptable up to the step the learner
    recorded, and training is finished once the learner's newest checkpoint is at the final step
    (and the final weights were taken, or FINAL_WEIGHTS_WAIT_S passed since that checkpoint was
    found). Without it: a step is acceptable up to the final step, and training is finished when
    the newest pushed step reaches it.
    """

    def __init__(self, run_dir: RunDir | None, final_step: int):
        self._run_dir, self._final = run_dir, final_step
        self._final_checkpoint_found_at: float | None = None

    def reached(self) -> int | None:
        """What the learner recorded having reached; None without its record."""
        return None if self._run_dir is None else read_reached(self._run_dir)

    def acceptable(self, train_step: int) -> bool:
        reached = self.reached()
        bound = self._final if reached is None else reached
        if train_step <= bound:
            return True
        logging.log_every_n_seconds(
            logging.WARNING,
            "ignored weights pushed under train step %d: the learner %s %d",
            10,
            train_step,
            "ends at" if reached is None else "has reached",
            bound,
        )
        return False

    def finished(self, newest_pushed: int | None, taken: int | None) -> bool:
        """Whether training is over; `newest_pushed` is the train step last seen on the server,
        `taken` that of the weights last taken."""
        if self.reached() is None:
            return newest_pushed is not None and newest_pushed >= self._final
        checkpointed = newest_checkpoint_step(self._run_dir)
        if checkpointed is None or checkpointed < self._final:
            return False
        if taken is not None and taken >= self._final:
            return True
        if self._final_checkpoint_found_at is None:
            self._final_checkpoint_found_at = time.monotonic()
        return time.monotonic() - self._final_checkpoint_found_at > FINAL_WEIGHTS_WAIT_S
