"""How long a learner takes to stop on SIGTERM, against the grace period the launcher gives it.

    .venv/bin/python -m benchmarks.learner_stop [--stops 4] [--output docs/learner_stop.json]
    .venv/bin/python -m benchmarks.learner_stop --quick     # gin/smoke.gin, 2 stops

A replay server, one collector and the learner; --stops SIGTERMs to the learner, each followed by
a restart: the 1st, 3rd, ... aimed at the chunk that ends with a policy export (the slowest stop;
the aim drifts with the rate, so each result says whether it got one), the others at random
moments. Per stop: seconds from the signal to the exit and to the stop's checkpoint
(`learner_stopped`). The worst case, a chunk + an export + two checkpoints (one due with the
export, the stop's own) at the run's measured seconds, is set against the launcher's share for
the learner (LEARNER_GRACE_FRACTION of SHUTDOWN_GRACE_S).
"""

from __future__ import annotations

import math
import random
import signal
import statistics
import tempfile
import time

from benchmarks import harness
from benchmarks.harness import SMOKE_GIN, fail
from distributed_sac.tools import cluster as cluster_lib

PROGRAM = "learner_stop"
TRAINING_TIMEOUT_S = 900
AIM_AHEAD_S = 4.0


def wait_for_training(cluster, since: float) -> dict:
    """The second learner_progress report after `since`: the learner trains at its pace (the
    first one's rate counts its warm-up and its wait for the initial pairs)."""

    def progress() -> list[dict]:
        return cluster.reports("learner", "learner_progress", since)

    cluster.wait_until(lambda: len(progress()) >= 2, TRAINING_TIMEOUT_S, "the learner's progress")
    return progress()[1]


def moment_before_export(cluster, config) -> float:
    """Seconds to wait from now so that the signal lands in the chunk that ends with the next
    policy export, extrapolated from the newest progress report and its rate; it waits until
    that is at most AIM_AHEAD_S away, so the rate's drift moves the aim by a chunk or so (the
    result says whether the stop included an export)."""
    interval, chunk = config.policy_save_interval, config.weight_push_interval
    while True:
        newest = cluster.reports("learner", "learner_progress")[-1]
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
    stopped = cluster.reports("learner", "learner_stopped", signalled)
    if code != 128 + signal.SIGTERM or not stopped:
        fail(PROGRAM, f"the learner exited with {code} on SIGTERM without its checkpoint")
    exports = cluster.reports("learner", "policy_export", signalled)
    return {
        "exit_s": round(exit_s, 2),
        "checkpoint_written_s": stopped[-1]["seconds_since_signal"],
        "stop_checkpoint_s": stopped[-1]["checkpoint_seconds"],
        "exported_on_the_way": bool(exports),
        "train_step": stopped[-1]["train_step"],
    }


def run(args) -> dict:
    work_dir = tempfile.mkdtemp(prefix="learner-stop-")
    cluster = harness.BenchCluster(PROGRAM, args.gin_file, args.gin_bindings, work_dir)
    config = cluster.config
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
    progress = cluster.reports("learner", "learner_progress")
    rate = statistics.median(r["steps_per_s"] for r in progress if r["steps_per_s"] > 0)
    exports = [r["seconds"] for r in cluster.reports("learner", "policy_export")]
    checkpoints = [r["seconds"] for r in cluster.reports("learner", "learner_checkpoint")]
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
    rows = [
        (f"stop {index}:", stop["exit_s"], stop["checkpoint_written_s"])
        + ("yes" if stop["exported_on_the_way"] else "no", stop["train_step"])
        for index, stop in enumerate(result["stops"], 1)
    ]
    header = ("", "exit (s after SIGTERM)", "checkpoint written (s)", "policy export", "train step")
    harness.print_table(rows, header, f"{len(rows)} SIGTERMs to a training learner")
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
    # A final step the learner does not reach meanwhile.
    quick = {
        "gin_file": SMOKE_GIN,
        "stops": 2,
        "gin_bindings": ["RunConfig.num_iterations = 100000"],
    }
    parser = harness.Parser(PROGRAM, __doc__, quick)
    parser.add_argument("--stops", type=int, default=4)
    args = parser.parse()
    if args.stops < 1:
        fail(PROGRAM, "--stops must be at least 1")
    result = run(args)
    result.update(harness.provenance(args.gin_file, args.gin_bindings))
    print_table(result)
    harness.write_figures(args.output, result)


if __name__ == "__main__":
    main()
