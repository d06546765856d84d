"""One config over several seeds on the local cluster, and a table of their evaluations.

    .venv/bin/python benchmarks/seeds.py --gin_file gin/pendulum.gin --seeds 0,1,2,3,4 \\
        --output_dir /var/tmp/runs/pendulum [--compare_dir /var/tmp/runs/pendulum-before]

Each seed is one `launch/local.sh` run (the launcher, 1 collector) in <output_dir>/s<seed>, one
after another. Then, or with --summarize alone, it prints AverageReturn at every evaluated train
step for each seed, their mean and the mean of the last two evaluations, for <output_dir> and
(if given) <compare_dir>, a run of the same seeds made the same way on another tree; and writes
the figures to <output_dir>/seeds.json. Curves: distributed-sac-plot --root_dir <output_dir>/s0 ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import harness
from harness import fail

PROGRAM = "seeds"


def run_seed(gin_file: str, bindings, seed: int, run_dir: str, timeout_s: float) -> None:
    from distributed_sac import processes

    args = ["--root_dir", run_dir, "--port", str(harness.free_port())]
    args += harness.gin_args(gin_file, [*bindings, f"RunConfig.seed = {seed}"])
    launcher = processes.Process.module("tools.launcher", args, f"{run_dir}.log")
    try:
        code = launcher.wait(timeout=timeout_s)
    except Exception:  # timed out or interrupted: the launcher stops its roles
        code = None
    finally:
        processes.stop([launcher], grace_s=30)
    if code != 0:
        fail(PROGRAM, f"seed {seed} ended with {code}; see {run_dir}.log")


def curves(base_dir: str, seeds, eval_interval: int) -> dict[int, dict[int, float]]:
    """{seed: {train_step: AverageReturn}} read from each seed's metrics.jsonl, each point at the
    eval_interval boundary it was due at (the evaluator scores the first weights past it)."""
    from distributed_sac import evaluation
    from distributed_sac.layout import RunDir

    found = {}
    for seed in seeds:
        metrics = RunDir(os.path.join(base_dir, f"s{seed}")).metrics
        if not os.path.isfile(metrics):
            fail(PROGRAM, f"no evaluations at {metrics}")
        points, _ = evaluation.read_evaluations(metrics)
        found[seed] = {
            p["train_step"] // eval_interval * eval_interval: p["AverageReturn"] for p in points
        }
    return found


def summarize(label: str, found: dict[int, dict[int, float]]) -> dict:
    """Prints and returns each seed's points, the mean over the seeds evaluated at each step (an
    evaluator that falls behind skips steps), and each seed's mean of its last two points."""
    steps = sorted(set.union(*(set(curve) for curve in found.values())))
    mean = {
        step: statistics.fmean(curve[step] for curve in found.values() if step in curve)
        for step in steps
    }
    last_two = [statistics.fmean(curve[s] for s in sorted(curve)[-2:]) for curve in found.values()]
    print(f"\n{label}: AverageReturn by train step (at or just past it; '-': not evaluated)")
    print("train_step " + " ".join(f"{f's{seed}':>8}" for seed in found) + "     mean")
    for step in steps:
        row = " ".join(
            f"{found[seed][step]:8.1f}" if step in found[seed] else f"{'-':>8}" for seed in found
        )
        print(f"{step:>10} {row} {mean[step]:8.1f}")
    print(f"mean of each seed's last two evaluations: {[round(v, 1) for v in last_two]}")
    print(f"  over the seeds: {statistics.fmean(last_two):.1f}")
    return {"curves": found, "mean": mean, "last_two_per_seed": last_two}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_gin_arguments(parser)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--compare_dir", help="the same seeds run on another tree")
    parser.add_argument("--summarize", action="store_true", help="only read finished runs")
    parser.add_argument("--timeout_s", type=float, default=1800, help="per seed")
    args = parser.parse_args()
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        fail(PROGRAM, f"--seeds must be like 0,1,2; got {args.seeds!r}")
    harness.check_config(PROGRAM, args.gin_file, args.gin_bindings)
    if not args.summarize:
        os.makedirs(args.output_dir, exist_ok=True)
        for seed in seeds:
            print(f"... seed {seed}", flush=True)
            run_dir = os.path.join(args.output_dir, f"s{seed}")
            run_seed(args.gin_file, args.gin_bindings, seed, run_dir, args.timeout_s)
    interval = harness.load_config(args.gin_file, args.gin_bindings).eval_interval
    figures = {"this": summarize(args.output_dir, curves(args.output_dir, seeds, interval))}
    if args.compare_dir:
        found = curves(args.compare_dir, seeds, interval)
        figures["compare"] = summarize(args.compare_dir, found)
    with open(os.path.join(args.output_dir, "seeds.json"), "w") as out:
        json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
