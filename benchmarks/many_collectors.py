"""Many collectors: C collectors against one replay server until the learner's final step.

    .venv/bin/python benchmarks/many_collectors.py --num_collectors 16 --train_steps 12000 \\
        --output docs/many_collectors.json [--root_dir /var/tmp/runs/many]
    .venv/bin/python benchmarks/many_collectors.py --quick   # gin/smoke.gin, 8 collectors

It runs the launcher (what launch/local.sh runs) on the config (default gin/minitaur_tutorial.gin,
UTD 1) to --train_steps, samples the replay server's cumulative counters every --interval_s
seconds, and reads each role's reports from its log once the run has ended. It prints, and writes
to --output as JSON:
  - the effective update-to-data ratio: train steps per inserted pair between the first and the
    last sample of the training (a window of minutes: the train step the server sees moves in
    pushes of weight_push_interval, and the feed's slack of undrained pairs is full at both
    ends once collectors outpace the learner), against the configured updates_per_env_step;
    target within 2%;
  - each collector's inserted pairs (target: every one inserted, none starved);
  - the end: every collector and the learner stopped by themselves at the final step, no
    restart, no traceback in a role's log, the launcher exited 0 with "all roles exited cleanly";
  - the launcher's output: how many lines, and whether each is one timestamped line.
Exit code 1 if the run failed; a missed target is reported, not an error.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time

import harness
from harness import fail

PROGRAM = "many_collectors"
STARTUP_TIMEOUT_S = 300
UTD_TOLERANCE = 0.02
LAUNCHER_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S")


def sample(run: harness.LauncherRun, start: float) -> dict | None:
    counters = run.counters()
    if counters is None:
        return None
    return {
        "t_s": round(time.monotonic() - start, 1),
        "train_step": counters["train_step"],
        "inserts": counters["inserts"],
        "drained": counters["drained"],
        "table_sizes": counters["table_sizes"],
    }


def window_ratio(samples: list[dict], final_step: int) -> dict | None:
    """Train steps per inserted pair between the first and last sample taken while training."""
    training = [s for s in samples if s["train_step"] and s["train_step"] < final_step]
    if len(training) < 2 or training[-1]["inserts"] <= training[0]["inserts"]:
        return None
    first, last = training[0], training[-1]
    from distributed_sac.replay import tables

    return {
        "minutes": [round(first["t_s"] / 60, 2), round(last["t_s"] / 60, 2)],
        "train_steps": last["train_step"] - first["train_step"],
        "inserts": last["inserts"] - first["inserts"],
        "feed_sizes": [s["table_sizes"][tables.FEED_TABLE] for s in (first, last)],
        "updates_per_insert": round(
            (last["train_step"] - first["train_step"]) / (last["inserts"] - first["inserts"]), 4
        ),
    }


def collector_figures(run_dir, num_collectors: int) -> dict:
    """{collector name: pairs it inserted and whether it stopped by itself}, from its log."""
    from distributed_sac.reports import fields_of

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
    from distributed_sac.reports import fields_of

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
        f"\neffective updates_per_insert {window.get('updates_per_insert')} over minutes "
        f"{window.get('minutes')} ({window.get('train_steps')} train steps / "
        f"{window.get('inserts')} inserts, feed {window.get('feed_sizes')}); configured "
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
    from distributed_sac.layout import RunDir

    config = harness.load_config(args.gin_file, args.gin_bindings)
    if config.updates_per_env_step is None:
        fail(PROGRAM, "the config leaves the update-to-data ratio free; set updates_per_env_step")
    root_dir = os.path.abspath(args.root_dir or tempfile.mkdtemp(prefix="many-collectors-"))
    os.makedirs(root_dir, exist_ok=True)
    bindings = [f"RunConfig.num_iterations = {args.train_steps}", *args.gin_bindings]
    cluster = harness.LauncherRun(
        PROGRAM, root_dir, args.num_collectors, harness.gin_flags([args.gin_file], bindings)
    )
    print(f"{PROGRAM}: {args.num_collectors} collectors to step {args.train_steps}, {root_dir}")
    samples = []
    try:
        cluster.wait_for_server(STARTUP_TIMEOUT_S)
        start = time.monotonic()
        while cluster.process.poll() is None:
            figures = sample(cluster, start)
            if figures is not None:
                samples.append(figures)
                print(
                    f"[{figures['t_s'] / 60:5.1f} min] train_step {figures['train_step']}  "
                    f"inserts {figures['inserts']}  tables {figures['table_sizes']}",
                    flush=True,
                )
            if time.monotonic() - start > args.timeout_s:
                fail(PROGRAM, f"the run did not end in {args.timeout_s:.0f} s")
            time.sleep(args.interval_s)
        minutes = (time.monotonic() - start) / 60
    except BaseException:
        cluster.kill()
        raise
    exit_code = cluster.finish(interrupt=False, timeout_s=60)
    result = analyse(
        args,
        config,
        samples,
        RunDir(root_dir),
        cluster.process.output(),
        exit_code,
        cluster.restarts(),
    )
    result.update(
        {
            **harness.provenance(args.gin_file, args.gin_bindings),
            "num_collectors": args.num_collectors,
            "train_steps": args.train_steps,
            "run_minutes": round(minutes, 2),
            "interval_s": args.interval_s,
            "samples": samples,
        }
    )
    return result


def main() -> None:
    parser = harness.parser(PROGRAM, __doc__, "gin/smoke.gin, 8 collectors, 3000 train steps")
    parser.add_argument("--num_collectors", type=int, default=16)
    parser.add_argument("--train_steps", type=int, default=12_000)
    parser.add_argument("--interval_s", type=float, default=10)
    parser.add_argument("--timeout_s", type=float, default=3600)
    args = parser.parse_args()
    if args.quick:
        args.gin_file, args.num_collectors, args.train_steps, args.interval_s = (
            harness.SMOKE_GIN,
            8,
            3000,
            2,
        )
    if args.num_collectors < 1:
        fail(PROGRAM, "--num_collectors must be at least 1")
    if args.train_steps < 1 or args.interval_s <= 0 or args.timeout_s <= 0:
        fail(PROGRAM, "--train_steps, --interval_s and --timeout_s must be positive")
    harness.check_config(PROGRAM, args.gin_file, args.gin_bindings)
    result = run(args)
    print_table(result)
    harness.write_figures(args.output, result)


if __name__ == "__main__":
    main()
