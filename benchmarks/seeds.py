"""One config over several seeds on the local cluster, and a table of their evaluations.

    .venv/bin/python -m benchmarks.seeds --gin_file gin/pendulum.gin --seeds 0,1,2,3,4 \\
        --output_dir /var/tmp/runs/pendulum [--compare_dir /var/tmp/runs/pendulum-before]
    .venv/bin/python -m benchmarks.seeds --gin_file gin/minitaur.gin --seeds 0,1,2 \\
        --output_dir /var/tmp/runs/walk --env_steps_marks 250000,500000,750000,1000000 \\
        --thresholds 10,15

Each seed is one launcher run in <output_dir>/s<seed>, one after another (run again, it resumes
each where it stopped). Then, or with --summarize alone, it prints AverageReturn at every
evaluated train step per seed and their mean, for <output_dir> and <compare_dir> (the same seeds
on another tree), and writes <output_dir>/seeds.json. --env_steps_marks adds, per seed and their
median, AverageReturn at each mark (the last evaluation at or before it, and the median of the
last three), the best up to the last mark, and the env steps and minutes of training at which it
first reached each of --thresholds (learning_curve.read_curve: they count on across relaunches).
--export_dir copies each seed's curve and seeds.json there, small enough to commit; --summarize
--output_dir <export_dir> reads them back. --evaluator_nice is the launcher's (training first).
"""

from __future__ import annotations

import os
import statistics

from benchmarks import harness
from benchmarks.harness import fail
from distributed_sac.acting import evaluation
from distributed_sac.layout import RunDir
from distributed_sac.tools.learning_curve import export_record, read_curve

PROGRAM = "seeds"


def run_seed(args, seed: int, run_dir: str) -> None:
    bindings = [*args.gin_bindings, f"RunConfig.seed = {seed}"]
    log_path = f"{run_dir}.log"
    flags = [] if args.evaluator_nice is None else ["--evaluator_nice", str(args.evaluator_nice)]
    with harness.LauncherRun(
        PROGRAM, run_dir, args.gin_file, bindings, log_path=log_path, launcher_flags=flags
    ) as run:
        run.finish_cleanly(args.timeout_s, f"seed {seed}")


def curves(base_dir: str, seeds, eval_interval: int) -> dict[int, dict[int, float]]:
    """{seed: {train_step: AverageReturn}} read from each seed's metrics.jsonl, each point at the
    eval_interval boundary it was due at (the evaluator scores the first weights past it)."""
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
    harness.print_table(
        [(step, *(found[seed].get(step) for seed in found), mean[step]) for step in steps],
        ("train_step", *(f"s{seed}" for seed in found), "mean"),
        f"{label}: AverageReturn by train step (at or just past it; '-': not evaluated)",
    )
    print(f"mean of each seed's last two evaluations: {[round(v, 1) for v in last_two]}")
    print(f"  over the seeds: {statistics.fmean(last_two):.1f}")
    return {"curves": found, "mean": mean, "last_two_per_seed": last_two}


def milestones(base_dir: str, seeds, marks: list[int], thresholds: list[float]) -> dict:
    """Prints and returns each seed's AverageReturn at the env-step marks (the last evaluation
    and the median of the last three), its best up to the last mark, and when it first reached
    each threshold; with the median over the seeds."""
    rows = {}
    for seed in seeds:
        curve = read_curve(os.path.join(base_dir, f"s{seed}"))
        if any(e["env_steps"] is None for e in curve):
            fail(PROGRAM, f"seed {seed}'s evaluations have no env_steps")
        row = {"at": {}, "last3": {}, "best": None, "reached": {}}
        for mark in marks:
            before = [e["AverageReturn"] for e in curve if e["env_steps"] <= mark]
            reached_mark = before and curve[-1]["env_steps"] >= mark
            row["at"][mark] = before[-1] if reached_mark else None
            row["last3"][mark] = statistics.median(before[-3:]) if reached_mark else None
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

    def two(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    def at(last, last3) -> str:
        return f"{two(last)} ({two(last3)})"

    def reached(found) -> str | None:
        return found and f"{found['env_steps']} ({found['training_minutes']} min)"

    table = []
    for seed, row in rows.items():
        best = row["best"] and f"{row['best']['AverageReturn']:.2f} ({row['best']['env_steps']})"
        table.append(
            (f"s{seed}", *(at(row["at"][m], row["last3"][m]) for m in marks), best)
            + tuple(reached(row["reached"][t]) for t in thresholds)
        )
    medians = {m: median(row["at"][m] for row in rows.values()) for m in marks}
    last3_medians = {m: median(row["last3"][m] for row in rows.values()) for m in marks}
    best_median = median(row["best"] and row["best"]["AverageReturn"] for row in rows.values())
    minutes_medians = {
        t: median(r and r["training_minutes"] for r in (row["reached"][t] for row in rows.values()))
        for t in thresholds
    }
    table.append(
        ("med", *(at(medians[m], last3_medians[m]) for m in marks), two(best_median))
        + tuple(None if v is None else f"{v:.1f} min" for v in minutes_medians.values())
    )
    harness.print_table(
        table,
        ("seed", *(f"{m // 1000}k" for m in marks), f"best <= {marks[-1] // 1000}k")
        + tuple(f"first >= {t:g}" for t in thresholds),
        f"{base_dir}: AverageReturn at env steps, the last evaluation at or before each mark "
        "(the median of the last three); the best up to the last mark; when first at or above "
        "each threshold: env steps (minutes of training)",
    )
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
    parser = harness.Parser(PROGRAM, __doc__, output=False)
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
    parser.add_argument(
        "--evaluator_nice", type=int, help="the launcher's --evaluator_nice (training first)"
    )
    args = parser.parse()
    seeds = harness.numbers(PROGRAM, "seeds", args.seeds, "0,1,2")
    if args.evaluator_nice is not None and not 0 <= args.evaluator_nice <= 19:
        fail(PROGRAM, f"--evaluator_nice must be 0 to 19, got {args.evaluator_nice}")
    thresholds, marks = [], []
    if args.thresholds:
        thresholds = harness.numbers(PROGRAM, "thresholds", args.thresholds, "10,15", float)
    if args.env_steps_marks:
        marks = harness.numbers(PROGRAM, "env_steps_marks", args.env_steps_marks, "250000,500000")
        marks.sort()
        if marks[0] < 1:
            fail(PROGRAM, "--env_steps_marks must be positive")
    if not args.summarize:
        os.makedirs(args.output_dir, exist_ok=True)
        for seed in seeds:
            print(f"... seed {seed}", flush=True)
            run_seed(args, seed, os.path.join(args.output_dir, f"s{seed}"))
    interval = args.config.eval_interval
    figures = {"this": summarize(args.output_dir, curves(args.output_dir, seeds, interval))}
    if args.compare_dir:
        found = curves(args.compare_dir, seeds, interval)
        figures["compare"] = summarize(args.compare_dir, found)
    if marks:
        figures["milestones"] = milestones(args.output_dir, seeds, marks, thresholds)
    harness.write_figures(os.path.join(args.output_dir, "seeds.json"), figures)
    if args.export_dir:
        for seed in seeds:
            export_record(
                os.path.join(args.output_dir, f"s{seed}"), os.path.join(args.export_dir, f"s{seed}")
            )
        harness.write_figures(os.path.join(args.export_dir, "seeds.json"), figures)


if __name__ == "__main__":
    main()
