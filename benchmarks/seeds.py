"""One config over several seeds on the local cluster, and a table of their evaluations.

    .venv/bin/python benchmarks/seeds.py --gin_file gin/pendulum.gin --seeds 0,1,2,3,4 \\
        --output_dir /var/tmp/runs/pendulum [--compare_dir /var/tmp/runs/pendulum-before]
    .venv/bin/python benchmarks/seeds.py --gin_file gin/minitaur.gin --seeds 0,1,2 \\
        --output_dir /var/tmp/runs/walk --env_steps_marks 250000,500000,750000,1000000 \\
        --thresholds 10,15

With --env_steps_marks it also prints, per seed and their median, AverageReturn at each mark
(the last evaluation at or before it, and the median of the last three, which evens out the
evaluations' swing), the best evaluation up to the last mark, and the env steps and minutes of
training at which AverageReturn first reached each of --thresholds (e.g. 10,15); env steps and
minutes come from learning_curve.read_curve, so they count on across relaunches. Run again
with the same arguments, it resumes each seed where it stopped (a finished seed returns at once).

With --export_dir it copies each seed's curve (metrics.jsonl and the learner's report lines, in
the run-dir layout) and seeds.json there: seeds run in different sessions can be committed one by
one and summarized together with --summarize --output_dir <export_dir>.

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
    from distributed_sac.runtime import processes

    args = ["--root_dir", run_dir, "--port", str(harness.free_port())]
    args += harness.gin_flags([gin_file], [*bindings, f"RunConfig.seed = {seed}"])
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
    from distributed_sac.acting import evaluation
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


def milestones(base_dir: str, seeds, marks: list[int], thresholds: list[float]) -> dict:
    """Prints and returns each seed's AverageReturn at the env-step marks (the last evaluation
    and the median of the last three), its best up to the last mark, and when it first reached
    each threshold; with the median over the seeds."""
    from distributed_sac.tools import learning_curve

    rows = {}
    for seed in seeds:
        curve = learning_curve.read_curve(os.path.join(base_dir, f"s{seed}"))
        if any(e["env_steps"] is None for e in curve):
            fail(PROGRAM, f"seed {seed}'s evaluations have no env_steps")
        row = {"at": {}, "last3": {}, "best": None, "reached": {}}
        for mark in marks:
            before = [e["AverageReturn"] for e in curve if e["env_steps"] <= mark]
            reached_mark = curve[-1]["env_steps"] >= mark
            row["at"][mark] = before[-1] if before and reached_mark else None
            row["last3"][mark] = statistics.median(before[-3:]) if before and reached_mark else None
        within = [e for e in curve if e["env_steps"] <= marks[-1]]
        if within:
            best = max(within, key=lambda e: e["AverageReturn"])
            row["best"] = {k: best[k] for k in ("AverageReturn", "env_steps", "train_step")}
        for threshold in thresholds:
            first = next((e for e in curve if e["AverageReturn"] >= threshold), None)
            row["reached"][threshold] = first and {
                "env_steps": first["env_steps"],
                "training_minutes": round(first["training_minutes"], 1),
            }
        row["last_env_steps"] = curve[-1]["env_steps"]
        row["training_minutes"] = round(curve[-1]["training_minutes"], 1)
        rows[seed] = row

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if len(values) == len(rows) else None

    def cell(value, spec=".2f"):
        return f"{value:{spec}}" if value is not None else "-"

    def at_text(last, last3):
        return f"{cell(last)} ({cell(last3)})"

    def reached_text(reached):
        return f"{reached['env_steps']} ({reached['training_minutes']} min)" if reached else "-"

    print(
        f"\n{base_dir}: AverageReturn at env steps, the last evaluation at or before each mark "
        "(the median of the last three); the best up to the last mark; when first at or above "
        "each threshold: env steps (minutes of training)"
    )
    head = " ".join(f"{str(m // 1000) + 'k':>15}" for m in marks)
    firsts = " ".join(f"{'first >= ' + format(t, 'g'):>22}" for t in thresholds)
    print(f"seed {head}   {'best <= ' + str(marks[-1] // 1000) + 'k':>22}   {firsts}")
    for seed, row in rows.items():
        best = row["best"]
        best_text = f"{best['AverageReturn']:.2f} ({best['env_steps']})" if best else "-"
        at = " ".join(f"{at_text(row['at'][m], row['last3'][m]):>15}" for m in marks)
        reached = " ".join(f"{reached_text(row['reached'][t]):>22}" for t in thresholds)
        print(f"s{seed:<3} {at}   {best_text:>22}   {reached}")
    medians = {m: median(row["at"][m] for row in rows.values()) for m in marks}
    last3_medians = {m: median(row["last3"][m] for row in rows.values()) for m in marks}
    best_median = median(
        row["best"]["AverageReturn"] if row["best"] else None for row in rows.values()
    )
    minutes_medians = {
        t: median(
            row["reached"][t]["training_minutes"] if row["reached"][t] else None
            for row in rows.values()
        )
        for t in thresholds
    }
    at = " ".join(f"{at_text(medians[m], last3_medians[m]):>15}" for m in marks)
    reached = " ".join(
        f"{f'{minutes_medians[t]:.1f} min' if minutes_medians[t] is not None else '-':>22}"
        for t in thresholds
    )
    print(f"med  {at}   {cell(best_median):>22}   {reached}")
    return {
        "marks": marks,
        "thresholds": thresholds,
        "seeds": rows,
        "median_at": medians,
        "median_last3_at": last3_medians,
        "median_best": best_median,
        "median_minutes_to": minutes_medians,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_gin_arguments(parser)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--compare_dir", help="the same seeds run on another tree")
    parser.add_argument("--summarize", action="store_true", help="only read finished runs")
    parser.add_argument("--timeout_s", type=float, default=1800, help="per seed")
    parser.add_argument("--env_steps_marks", help="e.g. 250000,500000,750000,1000000")
    parser.add_argument("--thresholds", help="AverageReturns to time, e.g. 10,15")
    parser.add_argument(
        "--export_dir",
        help="copy each seed's evaluations and learner reports here (small enough to commit); "
        "--summarize --output_dir <it> reads them back",
    )
    args = parser.parse_args()
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        fail(PROGRAM, f"--seeds must be like 0,1,2; got {args.seeds!r}")
    try:
        thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else []
    except ValueError:
        fail(PROGRAM, f"--thresholds must be like 10,15; got {args.thresholds!r}")
    marks = []
    if args.env_steps_marks:
        try:
            marks = sorted(int(mark) for mark in args.env_steps_marks.split(","))
        except ValueError:
            fail(
                PROGRAM,
                f"--env_steps_marks must be like 250000,500000; got {args.env_steps_marks!r}",
            )
        if marks[0] < 1:
            fail(PROGRAM, "--env_steps_marks must be positive")
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
    if marks:
        figures["milestones"] = milestones(args.output_dir, seeds, marks, thresholds)
    with open(os.path.join(args.output_dir, "seeds.json"), "w") as out:
        json.dump(figures, out, indent=2)
    if args.export_dir:
        from distributed_sac.tools import learning_curve

        for seed in seeds:
            learning_curve.export_record(
                os.path.join(args.output_dir, f"s{seed}"), os.path.join(args.export_dir, f"s{seed}")
            )
        with open(os.path.join(args.export_dir, "seeds.json"), "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
