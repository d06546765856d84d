"""How long a learner takes to stop on SIGTERM, against the grace period the launcher gives it.

    .venv/bin/python benchmarks/learner_stop.py [--stops 4] [--output docs/learner_stop.json]
    .venv/bin/python benchmarks/learner_stop.py --quick     # gin/smoke.gin, 2 stops

On the config (default gin/minitaur_tutorial.gin: 100-step chunks, a policy export every 5 000
steps, a checkpoint every 10 000) it runs a replay server, one collector and the learner, and sends
the learner SIGTERM --stops times, restarting it after each: the 1st, 3rd, ... aimed at the chunk
that ends with a policy export (the slowest stop: the chunk, the export, then the stop's
checkpoint; the aim drifts with the rate, so each result says whether it got one), the others at
random moments. For each stop: seconds from the signal to the process's exit and to its checkpoint
written (the learner's `learner_stopped` report). From all reports of the run: the seconds a policy
export and a checkpoint take, and a chunk's seconds at the measured rate. The worst case is a chunk
+ an export + two checkpoints (one due with the export, the stop's own); it is set against the
launcher's share for the learner (LEARNER_GRACE_FRACTION of --shutdown_grace_s). Prints a table and
writes the figures as JSON (--output).
"""

from __future__ import annotations

import math
import random
import signal
import statistics
import tempfile
import time

import harness
from harness import fail

PROGRAM = "learner_stop"
TRAINING_TIMEOUT_S = 900
AIM_AHEAD_S = 4.0


def learner_reports(cluster, event: str) -> list[dict]:
    from distributed_sac.reports import fields_of

    return fields_of(cluster.run_dir.log("learner"), event)


def wait_for_training(cluster, since: float) -> dict:
    """The second learner_progress report after `since`: the learner trains at its pace (the
    first one's rate counts its warm-up and its wait for the initial pairs)."""

    def progress() -> list[dict]:
        reports = learner_reports(cluster, "learner_progress")
        return [r for r in reports if r["unix_time"] > since]

    cluster.wait_until(lambda: len(progress()) >= 2, TRAINING_TIMEOUT_S, "the learner's progress")
    return progress()[1]


def moment_before_export(cluster, config) -> float:
    """Seconds to wait from now so that the signal lands in the chunk that ends with the next
    policy export, extrapolated from the newest progress report and its rate; it waits until
    that is at most AIM_AHEAD_S away, so the rate's drift moves the aim by a chunk or so (the
    result says whether the stop included an export)."""
    interval, chunk = config.policy_save_interval, config.weight_push_interval
    while True:
        newest = learner_reports(cluster, "learner_progress")[-1]
        rate = max(newest["steps_per_s"], 1.0)
        step_now = newest["train_step"] + rate * (time.time() - newest["unix_time"])
        export_step = math.ceil((step_now + chunk) / interval) * interval
        delay = (export_step - chunk / 2 - step_now) / rate
        if delay <= AIM_AHEAD_S:
            return max(0.0, delay)
        time.sleep(delay - AIM_AHEAD_S / 2)


def stop_once(cluster, delay_s: float) -> dict:
    time.sleep(delay_s)
    learner = cluster.roles.roles["learner"]
    signalled = time.time()
    learner.send_signal(signal.SIGTERM)
    code = learner.wait(timeout=600)
    exit_s = time.time() - signalled
    stopped = [r for r in learner_reports(cluster, "learner_stopped") if r["unix_time"] > signalled]
    if code != 128 + signal.SIGTERM or not stopped:
        fail(PROGRAM, f"the learner exited with {code} on SIGTERM without its checkpoint")
    exports = [r for r in learner_reports(cluster, "policy_export") if r["unix_time"] > signalled]
    return {
        "exit_s": round(exit_s, 2),
        "checkpoint_written_s": stopped[-1]["seconds_since_signal"],
        "stop_checkpoint_s": stopped[-1]["checkpoint_seconds"],
        "exported_on_the_way": bool(exports),
        "train_step": stopped[-1]["train_step"],
    }


def run(args) -> dict:
    from distributed_sac.tools import cluster as cluster_lib

    config = harness.load_config(args.gin_file, args.gin_bindings)
    work_dir = tempfile.mkdtemp(prefix="learner-stop-")
    cluster = harness.BenchCluster(args.gin_file, args.gin_bindings, work_dir)
    stops = []
    try:
        cluster.start_server()
        cluster.start_collector(0)
        cluster.start_learner()
        since = time.time()
        for index in range(args.stops):
            progress = wait_for_training(cluster, since)
            rate = max(progress["steps_per_s"], 1.0)
            if index % 2 == 0:
                delay = moment_before_export(cluster, config)
            else:
                delay = random.uniform(0, config.policy_save_interval / rate)
            stops.append(stop_once(cluster, delay))
            print(f"{PROGRAM}: stop {index + 1}: {stops[-1]}", flush=True)
            since = time.time()
            cluster.start_learner()
    finally:
        cluster.stop_all()
    progress = learner_reports(cluster, "learner_progress")
    rate = statistics.median(r["steps_per_s"] for r in progress if r["steps_per_s"] > 0)
    exports = [r["seconds"] for r in learner_reports(cluster, "policy_export")]
    checkpoints = [r["seconds"] for r in learner_reports(cluster, "learner_checkpoint")]
    checkpoints += [s["stop_checkpoint_s"] for s in stops]
    chunk_s = config.weight_push_interval / rate
    worst = chunk_s + max(exports, default=0.0) + 2 * max(checkpoints)
    grace = cluster_lib.LEARNER_GRACE_FRACTION * cluster_lib.SHUTDOWN_GRACE_S
    return {
        "stops": stops,
        "train_steps_per_s": round(rate, 1),
        "chunk_s": round(chunk_s, 2),
        "policy_export_s": exports,
        "checkpoint_s": checkpoints,
        "worst_case_s": round(worst, 2),
        "longest_stop_s": max(s["exit_s"] for s in stops),
        "launcher_learner_grace_s": round(grace, 2),
        "worst_case_within_grace": worst <= grace,
    }


def print_table(result: dict) -> None:
    print()
    for index, stop in enumerate(result["stops"], 1):
        how = "with a policy export" if stop["exported_on_the_way"] else "no export"
        print(
            f"stop {index}: exit {stop['exit_s']} s after SIGTERM, checkpoint written at "
            f"{stop['checkpoint_written_s']} s ({how}, train step {stop['train_step']})"
        )
    exports, checkpoints = result["policy_export_s"], result["checkpoint_s"]
    print(
        f"policy export: {len(exports)}, longest {max(exports, default=None)} s; checkpoint: "
        f"{len(checkpoints)}, longest {max(checkpoints)} s; chunk {result['chunk_s']} s at "
        f"{result['train_steps_per_s']} train steps/s"
    )
    print(
        f"worst case (chunk + export + 2 checkpoints) {result['worst_case_s']} s against the "
        f"launcher's {result['launcher_learner_grace_s']} s for the learner: "
        f"{'within' if result['worst_case_within_grace'] else 'NOT within'}"
    )


def main() -> None:
    parser = harness.parser(PROGRAM, __doc__, "gin/smoke.gin, 2 stops", root_dir=False)
    parser.add_argument("--stops", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.gin_file, args.stops = harness.SMOKE_GIN, 2
        args.gin_bindings.append("RunConfig.num_iterations = 100000")  # never done meanwhile
    if args.stops < 1:
        fail(PROGRAM, "--stops must be at least 1")
    harness.check_config(PROGRAM, args.gin_file, args.gin_bindings)
    result = run(args)
    result.update(harness.provenance(args.gin_file, args.gin_bindings))
    print_table(result)
    harness.write_figures(args.output, result)


if __name__ == "__main__":
    main()
