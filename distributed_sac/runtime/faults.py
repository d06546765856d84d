"""Test-only faults, bound in gin by the fault-tolerance tests; never set in a real run."""

from __future__ import annotations

import dataclasses

import gin


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FaultInjection:
    # After the chunk of train steps that reaches this step, the learner sets its actor's weights
    # to NaN, so the next loss is NaN.
    nan_weights_at_step: int | None = None
    # Seconds the learner waits after a stop request before its final checkpoint: a slow
    # stop (a big replay to write), so a test can hold an orphaned learner alive.
    stop_delay_s: float = 0.0
    # Seconds the replay server waits after SIGTERM before its final checkpoint: a checkpoint
    # as slow as a big table's (docs/endurance.md), without filling one.
    replay_server_stop_delay_s: float = 0.0
    # Seconds the evaluator waits halfway through saving a better policy (its SavedModel
    # written, its evaluation.json not yet), so a test can stop it in that window.
    best_policy_save_hold_s: float = 0.0
    # Seconds each replay checkpoint (periodic or final) waits before Reverb writes it: a
    # checkpoint as slow as a big table's, so a test can stop the server while one is under way.
    replay_checkpoint_delay_s: float = 0.0
    # The learner SIGKILLs itself after its last chunk of training, before its final checkpoint,
    # when it started without a checkpoint (so its restart, from an earlier one, finishes).
    kill_before_final_checkpoint: bool = False
