"""Many collectors: C collectors against one replay server until the learner's final step.

    .venv/bin/python -m benchmarks.many_collectors --num_collectors 16 --train_steps 12000 \\
        --output docs/many_collectors.json [--root_dir /var/tmp/runs/many]
    .venv/bin/python -m benchmarks.many_collectors --quick   # gin/smoke.gin, 8 collectors

The launcher runs to --train_steps (the config at UTD 1), the server's counters sampled every
--interval_s seconds, each role's reports read from its log at the end. Targets: the effective
update-to-data ratio (train steps per inserted pair between the first and last sample of the
training: a window of minutes, since the train step the server sees moves in pushes) within 2%
of updates_per_env_step; every collector inserted; the learner and every collector stopped by
themselves at the final step, no restart, no traceback, the launcher exited 0 with "all roles
exited cleanly", each of its lines one timestamped line. A missed target is reported, not an
error.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time

from benchmarks import harness
from benchmarks.harness import SMOKE_GIN, fail
from distributed_sac.layout import RunDir
from distributed_sac.replay import tables
from distributed_sac.reports import fields_of

PROGRAM = "many_collectors"
UTD_TOLERANCE = 0.02
LAUNCHER_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S")


def window_ratio(samples: list[dict], final_step: int) -> dict | None:
    """Train steps per inserted pair while training: the least-squares slope of the train step on
    the pairs inserted over every sample taken then. Two samples alone misread a short window:
    the train step moves in weight pushes and the collectors hold pairs in flight, so either end
    can be a push or a few pairs off (docs/endurance.md)."""
    training = [s for s in samples if s["train_step"] and s["train_step"] < final_step]
    if len(training) < 3 or training[-1]["inserts"] <= training[0]["inserts"]:
        return None
    first, last = training[0], training[-1]
    slope = statistics.linear_regression(
        [s["inserts"] for s in training], [s["train_step"] for s in training]
    ).slope
    return {
        "minutes": [round(first["t_s"] / 60, 2), round(last["t_s"] / 60, 2)],
        "samples": len(training),
        "train_steps": last["train_step"] - first["train_step"],
        "inserts": last["inserts"] - first["inserts"],
        "feed_sizes": [s["table_sizes"][tables.FEED_TABLE] for s in (first, last)],
        "updates_per_insert": round(slope, 4),
    }


def collector_figures(run_dir, num_collectors: int) -> dict:
    """{collector name: pairs it inserted and whether it stopped by itself}, from its log."""
    figures = {}
    for task in range(num_collectors):
        name = f"collector-{task}"
        done = fields_of(run_dir.log(name), "collector_done")
        figures[name] = {
            "items_created": done[-1]["items_created"] if done else None,
            "all_items_sent": bool(done) and done[-1]["all_items_sent"],
            "stopped_at_final_step": bool(done),
        }
    return figures


def tracebacks(run_dir) -> dict:
    """{role log: tracebacks in it} for the logs that hold any."""
    found = {}
    for log in sorted(os.listdir(run_dir.logs)):
        with open(os.path.join(run_dir.logs, log), errors="replace") as f:
            count = f.read().count("Traceback (most recent call last)")
        if count:
            found[log] = count
    return found


def analyse(args, config, samples, run_dir, output: str, exit_code: int, restarts) -> dict:
    configured = config.updates_per_env_step
    window = window_ratio(samples, args.train_steps)
    deviation = window and window["updates_per_insert"] / configured - 1
    collectors = collector_figures(run_dir, args.num_collectors)
    inserted = [c["items_created"] or 0 for c in collectors.values()]
    learner_done = fields_of(run_dir.log("learner"), "learner_done")
    lines = output.splitlines()
    unreadable = [line for line in lines if not LAUNCHER_LINE.match(line)]
    errors = tracebacks(run_dir)
    targets = {
        "updates_per_insert_within_2_percent": deviation is not None
        and abs(deviation) <= UTD_TOLERANCE,
        "every_collector_inserted": all(count > 0 for count in inserted),
        "all_stopped_at_final_step": bool(learner_done)
        and learner_done[-1]["train_step"] == args.train_steps
        and all(c["stopped_at_final_step"] for c in collectors.values()),
        "clean_exit": exit_code == 0
        and not restarts
        and not errors
        and any(line.endswith("all roles exited cleanly") for line in lines),
        "launcher_output_readable": not unreadable,
    }
    return {
        "configured_updates_per_insert": configured,
        "window": window,
        "deviation": deviation and round(deviation, 4),
        "collectors": collectors,
        "inserted_per_collector": {
            "min": min(inserted),
            "median": statistics.median(inserted),
            "max": max(inserted),
        },
        "launcher_exit_code": exit_code,
        "launcher_lines": len(lines),
        "launcher_unreadable_lines": unreadable[:10],
        "restarts": restarts,
        "tracebacks": errors,
        "targets": targets,
    }


def print_table(result: dict) -> None:
    window = result["window"] or {}
    print(
        f"\neffective updates_per_insert {window.get('updates_per_insert')} (the slope over "
        f"{window.get('samples')} samples, minutes {window.get('minutes')}: "
        f"{window.get('train_steps')} train steps / {window.get('inserts')} inserts, "
        f"feed {window.get('feed_sizes')}); configured "
        f"{result['configured_updates_per_insert']}, deviation {result['deviation']}"
    )
    per = result["inserted_per_collector"]
    print(
        f"pairs inserted per collector: min {per['min']}, median {per['median']:g}, "
        f"max {per['max']} ({len(result['collectors'])} collectors)"
    )
    print(
        f"launcher: exit {result['launcher_exit_code']}, {result['launcher_lines']} lines, "
        f"restarts {result['restarts'] or 'none'}, tracebacks {result['tracebacks'] or 'none'}"
    )
    for name, met in result["targets"].items():
        print(f"target {name}: {'met' if met else 'NOT MET'}")


def run(args) -> dict:
    config = args.config
    if config.updates_per_env_step is None:
        fail(PROGRAM, "the config leaves the update-to-data ratio free; set updates_per_env_step")
    root_dir = os.path.abspath(args.root_dir or tempfile.mkdtemp(prefix="many-collectors-"))
    bindings = [f"RunConfig.num_iterations = {args.train_steps}", *args.gin_bindings]
    print(f"{PROGRAM}: {args.num_collectors} collectors to step {args.train_steps}, {root_dir}")
    samples = []
    with harness.LauncherRun(
        PROGRAM, root_dir, args.gin_file, bindings, args.num_collectors
    ) as launcher:
        for sample in launcher.samples(args.interval_s, timeout_s=args.timeout_s):
            if sample["inserts"] is not None:  # None: the server did not answer
                samples.append(sample)
                print(
                    f"[{sample['t_s'] / 60:5.1f} min] train_step {sample['train_step']}  "
                    f"inserts {sample['inserts']}  tables {sample['table_sizes']}",
                    flush=True,
                )
        minutes = (time.monotonic() - launcher.sampled_from) / 60
        exit_code = launcher.finish(timeout_s=60)
    output, restarts = launcher.process.output(), launcher.restarts()
    result = analyse(args, config, samples, RunDir(root_dir), output, exit_code, restarts)
    return {
        **result,
        **harness.provenance(args.gin_file, args.gin_bindings),
        "num_collectors": args.num_collectors,
        "train_steps": args.train_steps,
        "run_minutes": round(minutes, 2),
        "interval_s": args.interval_s,
        "samples": samples,
    }


def main() -> None:
    quick = {"gin_file": SMOKE_GIN, "num_collectors": 8, "train_steps": 3000, "interval_s": 2}
    parser = harness.Parser(PROGRAM, __doc__, quick, root_dir=True)
    parser.add_argument("--num_collectors", type=int, default=16)
    parser.add_argument("--train_steps", type=int, default=12_000)
    parser.add_argument("--interval_s", type=float, default=10)
    parser.add_argument("--timeout_s", type=float, default=3600)
    args = parser.parse()
    if args.num_collectors < 1:
        fail(PROGRAM, "--num_collectors must be at least 1")
    if args.train_steps < 1 or args.interval_s <= 0 or args.timeout_s <= 0:
        fail(PROGRAM, "--train_steps, --interval_s and --timeout_s must be positive")
    result = run(args)
    print_table(result)
    harness.write_figures(args.output, result)


if __name__ == "__main__":
    main()
