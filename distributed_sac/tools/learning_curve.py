"""A run's learning curve: its evaluations against environment steps and training time, also
across relaunches.

metrics.jsonl's `env_steps` is the replay server's insert count, which starts from 0 again when
a relaunched server restores its checkpoint, and its `wall_time` includes the hours a stopped
run waited before its relaunch. Long runs are resumed, so the curve takes both from the
learner's reports instead (logs/learner.log, appended across restarts):

- env steps: the pairs of experience the learner had taken in (`pairs_drained`, restored with
  its checkpoint) at the evaluated train step, interpolated between its reports, times
  RunConfig.action_repeat (from learner_start; a pair that ends an episode may hold fewer
  environment steps, so with a repeat this is an upper bound). With an update-to-data ratio
  the pairs are initial_collect_steps + train_step / ratio, trailing the pairs written by at
  most the feed's rate_limiter_slack_steps.
- training minutes: wall time with every gap of more than MAX_GAP_S between two learner reports
  left out (the run was stopped); the learner reports every log_interval train steps.
"""

from __future__ import annotations

import bisect
import os
import shutil

from distributed_sac import reports
from distributed_sac.acting import evaluation
from distributed_sac.layout import RunDir

MAX_GAP_S = 300.0
LEARNER_EVENTS = (
    "learner_start",
    "learner_progress",
    "learner_checkpoint",
    "learner_stopped",
    "learner_done",
)


class TrainingClock:
    """Seconds of training up to a unix time, from the times of a learner's reports."""

    def __init__(self, report_times: list[float]):
        self._times = sorted(report_times)
        self._elapsed = [0.0]
        for before, after in zip(self._times, self._times[1:]):
            gap = after - before
            self._elapsed.append(self._elapsed[-1] + (gap if gap <= MAX_GAP_S else 0.0))

    def seconds_at(self, unix_time: float) -> float:
        if not self._times or unix_time <= self._times[0]:
            return 0.0
        index = bisect.bisect_right(self._times, unix_time) - 1
        gap = unix_time - self._times[index]
        return self._elapsed[index] + (gap if gap <= MAX_GAP_S else 0.0)


def drained_at(progress: list[tuple[int, int]], train_step: int) -> float | None:
    """Pairs drained at `train_step`, linear between the learner's (train_step, pairs_drained)
    reports; None outside them."""
    steps = [step for step, _ in progress]
    index = bisect.bisect_left(steps, train_step)
    if index < len(steps) and steps[index] == train_step:
        return float(progress[index][1])
    if index == 0 or index == len(steps):
        return None
    (step0, pairs0), (step1, pairs1) = progress[index - 1], progress[index]
    return pairs0 + (pairs1 - pairs0) * (train_step - step0) / (step1 - step0)


def read_curve(root_dir: str) -> list[dict]:
    """The run's evaluations, each with `env_steps` and `training_minutes` as described above
    (metrics.jsonl's own figures where the learner's log is missing)."""
    run = RunDir(root_dir)
    evaluations, _ = evaluation.read_evaluations(run.metrics)
    found = reports.read_reports(run.log("learner"), *LEARNER_EVENTS)
    if not found or not evaluations:
        start = evaluations[0]["wall_time"] if evaluations else 0.0
        return [
            dict(
                e,
                server_env_steps=e.get("env_steps"),
                env_steps=e.get("env_steps"),
                training_minutes=(e["wall_time"] - start) / 60.0,
            )
            for e in evaluations
        ]
    clock = TrainingClock([fields["unix_time"] for _, fields in found])
    starts = [fields for event, fields in found if event == "learner_start"]
    repeat = starts[-1].get("action_repeat", 1) if starts else 1
    progress = {}
    for _, fields in found:
        if "pairs_drained" in fields:  # a restarted learner reports the same steps again
            progress[fields["train_step"]] = fields["pairs_drained"]
    ordered = sorted(progress.items())
    curve = []
    for e in evaluations:
        drained = drained_at(ordered, e["train_step"])
        curve.append(
            dict(
                e,
                server_env_steps=e.get("env_steps"),
                env_steps=round(drained * repeat) if drained is not None else e.get("env_steps"),
                training_minutes=clock.seconds_at(e["wall_time"]) / 60.0,
            )
        )
    return curve


def export_record(root_dir: str, target_dir: str) -> None:
    """Copies what `read_curve` reads, and nothing else, into `target_dir` in the same layout:
    metrics.jsonl and the learner log's report lines (a 1M-step run's are ~60 KB, small enough
    to commit), so that read_curve(target_dir) gives the run's curve."""
    source, target = RunDir(root_dir), RunDir(target_dir)
    os.makedirs(target.eval, exist_ok=True)
    os.makedirs(target.logs, exist_ok=True)
    shutil.copyfile(source.metrics, target.metrics)
    with open(source.log("learner"), errors="replace") as log:
        lines = [line for line in log if any(f" {event} {{" in line for event in LEARNER_EVENTS)]
    with open(target.log("learner"), "w") as out:
        out.writelines(lines)
