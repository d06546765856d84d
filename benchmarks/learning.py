"""Learning per env step and per hour: the tutorial's synchronous loop against the cluster.

    .venv/bin/python -m benchmarks.learning [--env_steps 50000] [--eval_every 5000]
        [--eval_episodes 10] [--seeds 0,1] [--output_dir learning-results] [--quick]

Per seed, one after another: the tutorial's loop (benchmarks/tutorial_loop.py, one process) and
the cluster (the launcher: replay server, learner, one collector, evaluator, at one train step
per env step); then the cluster again with the first seed, to show how close two runs with one
seed come. Both spend the same env-step budget and score the greedy policy with the same code
(distributed_sac.acting.evaluation) after the random initial collection and every --eval_every
env steps.
Env steps are experience items stored, counted alike in both (as TF-Agents' Actor counts them: a
reset step between episodes is not). Wall time runs from the start of a run's first process; the
loop's clock stops while it evaluates, and each cluster point is timed when the evaluator pulled
the weights it scores. Writes to --output_dir (new or empty) each run's directory, learning.json
(every curve and the summary) and learning.png (AverageReturn against env steps and wall time).
"""

from __future__ import annotations

import json
import os
import sys
import time

from benchmarks import harness
from benchmarks.harness import SMOKE_GIN, fail
from distributed_sac.acting import evaluation
from distributed_sac.layout import METRICS, RunDir

PROGRAM = "learning"


# ---------------------------------------------------------------- the two kinds of run


def run_loop(gin_file, bindings, seed, env_steps, eval_every, eval_episodes, run_dir, started_at):
    """The tutorial's loop for `env_steps`, evaluated every `eval_every` env steps (a part: runs
    in its own process, started at unix time `started_at`)."""
    from benchmarks.tutorial_loop import TutorialLoop
    from distributed_sac.builder import Builder
    from distributed_sac.sac.numpy_policy import NumpyActorPolicy

    config = harness.load_config(PROGRAM, gin_file, [*bindings, f"RunConfig.seed = {seed}"])
    # Seeding an environment seeds the process's global generators (Minitaur's randomizer draws
    # from them): the collect environment, made second, sets them as a collector does.
    eval_env = evaluation.make_eval_env(Builder(config))
    loop = TutorialLoop(config, run_dir, seed=seed)
    greedy = NumpyActorPolicy(loop.agent.collect_policy, greedy=True)
    evaluating_s = 0.0
    points = []

    def evaluate():
        nonlocal evaluating_s
        began = time.time()
        greedy.sync()
        point = {
            "train_step": int(loop.train_step.numpy()),
            "env_steps": loop.items_inserted(),
            **evaluation.run_episodes(eval_env, greedy, eval_episodes),
            "wall_s": began - started_at - evaluating_s,
        }
        points.append(point)
        evaluation.append_evaluation(os.path.join(run_dir, METRICS), point)
        print(f"loop seed {seed}: {json.dumps(point)}", file=sys.stderr, flush=True)
        evaluating_s += time.time() - began

    loop.collect_initial()
    evaluate()
    remaining = env_steps - config.initial_collect_steps
    while remaining > 0:
        chunk = min(eval_every, remaining)
        loop.iterate(chunk)
        remaining -= chunk
        evaluate()
    loop.close()
    return {"points": points, "seconds": points[-1]["wall_s"]}


def run_cluster(gin_file, bindings, seed, env_steps, eval_every, eval_episodes, run_dir, timeout_s):
    """The local cluster (the launcher behind launch/local.sh) with one collector for the same
    budget; its evaluator's points."""
    config = harness.load_config(PROGRAM, gin_file, bindings)
    cluster_bindings = [
        *bindings,
        f"RunConfig.seed = {seed}",
        f"RunConfig.num_iterations = {env_steps - config.initial_collect_steps}",
        f"RunConfig.eval_interval = {eval_every}",
        f"RunConfig.num_eval_episodes = {eval_episodes}",
    ]
    log_path = f"{run_dir}.log"
    with harness.LauncherRun(PROGRAM, run_dir, gin_file, cluster_bindings, 1, log_path) as run:
        run.finish_cleanly(timeout_s, f"cluster run {run_dir}")
    evaluations, _ = evaluation.read_evaluations(RunDir(run_dir).metrics)
    if not evaluations:
        fail(PROGRAM, f"cluster run {run_dir} wrote no evaluation; see {log_path}")
    keys = ("train_step", "env_steps", "AverageReturn", "AverageEpisodeLength")
    points = [
        {**{key: e[key] for key in keys}, "wall_s": e["weights_time"] - run.started_at}
        for e in evaluations
    ]
    return {"points": points, "seconds": points[-1]["wall_s"]}


PARTS = {"loop": run_loop}


# ---------------------------------------------------------------- the comparison


def return_at(run: dict, env_steps: float) -> float:
    """A run's AverageReturn at `env_steps` of training: linear between its evaluations of
    trained weights (clamped at their ends). A cluster's evaluator scores the newest weights
    when it is free, so its points fall at other env steps than the loop's."""
    import numpy as np

    trained = sorted(
        (p for p in run["points"] if p["train_step"] > 0), key=lambda p: p["env_steps"]
    )
    x = [p["env_steps"] for p in trained]
    return float(np.interp(env_steps, x, [p["AverageReturn"] for p in trained]))


def mean(values):
    return sum(values) / len(values) if values else None


def summarize(runs: list[dict]) -> dict:
    """The issue's figures: the cluster against the loop's seed-to-seed spread at equal env
    steps, time to the loop's final return, and how close two cluster runs with one seed are.

    The grid is the loop's evaluations: the untrained weights (train step 0, compared with the
    cluster's train-step-0 evaluation), then one every --eval_every env steps of training."""
    loops = [run for run in runs if run["kind"] == "loop"]
    clusters = [run for run in runs if run["kind"] == "cluster"]
    seeded = [run for run in clusters if not run["repeat"]]
    grid = [
        mean([run["points"][k]["env_steps"] for run in loops])
        for k in range(min(len(run["points"]) for run in loops))
    ]

    def curve(run) -> list[float]:
        """`run`'s AverageReturn at each grid point."""
        if run["kind"] == "loop":
            return [p["AverageReturn"] for p in run["points"][: len(grid)]]
        return [run["points"][0]["AverageReturn"]] + [return_at(run, x) for x in grid[1:]]

    curves = {run["name"]: curve(run) for run in runs}
    at_equal_env_steps = []
    for k, env_steps in enumerate(grid):
        loop_returns = [curves[run["name"]][k] for run in loops]
        cluster_returns = [curves[run["name"]][k] for run in seeded]
        cluster_mean = mean(cluster_returns)
        at_equal_env_steps.append(
            {
                "env_steps": round(env_steps),
                "loop_returns": loop_returns,
                "loop_spread": max(loop_returns) - min(loop_returns),
                "cluster_returns": cluster_returns,
                "cluster_spread": max(cluster_returns) - min(cluster_returns),
                "cluster_mean": cluster_mean,
                "within_or_above": cluster_mean >= min(loop_returns),
            }
        )

    loop_final = mean([run["points"][-1]["AverageReturn"] for run in loops])
    loop_seconds = mean([run["seconds"] for run in loops])
    reach = []
    for run in clusters:
        trained = [p for p in run["points"] if p["train_step"] > 0]
        first = next((p for p in trained if p["AverageReturn"] >= loop_final), None)
        reach.append(
            {
                "run": run["name"],
                "wall_s": first and first["wall_s"],
                "env_steps": first and first["env_steps"],
                "ratio_to_loop_time": first and first["wall_s"] / loop_seconds,
            }
        )

    # Single evaluations of Minitaur this early are noisy: the mean over the budget's second half
    # says more about where a run got to than its last point.
    late = [k for k, x in enumerate(grid) if x - grid[0] >= (grid[-1] - grid[0]) / 2]
    late_means = {name: mean([curve[k] for k in late]) for name, curve in curves.items()}

    def gap(a, b) -> float:
        """Mean |difference| of two runs' AverageReturn over the grid."""
        return mean([abs(x - y) for x, y in zip(curves[a["name"]], curves[b["name"]])])

    repeat = next((run for run in clusters if run["repeat"]), None)
    same_seed = None
    if repeat is not None:
        original = next(run for run in seeded if run["seed"] == repeat["seed"])
        others = [run for run in seeded if run["seed"] != repeat["seed"]]
        same_seed = {
            "seed": repeat["seed"],
            "mean_abs_gap": gap(original, repeat),
            "mean_abs_gap_other_seeds": mean([gap(original, other) for other in others]),
            "first_evaluation": [original["points"][0], repeat["points"][0]],
        }
    return {
        "curves_at_grid": {"env_steps": [round(x) for x in grid], **curves},
        "at_equal_env_steps": at_equal_env_steps,
        "points_within_or_above": sum(row["within_or_above"] for row in at_equal_env_steps),
        "loop_mean_spread": mean([row["loop_spread"] for row in at_equal_env_steps]),
        "cluster_mean_spread": mean([row["cluster_spread"] for row in at_equal_env_steps]),
        "late_env_steps": [round(grid[k]) for k in late],
        "late_means": late_means,
        "loop_final_return": loop_final,
        "loop_seconds": loop_seconds,
        "cluster_seconds": mean([run["seconds"] for run in clusters]),
        "budget_time_ratio": mean([run["seconds"] for run in clusters]) / loop_seconds,
        "reach_loop_final": reach,
        "same_seed": same_seed,
    }


def print_tables(result: dict) -> None:
    runs, summary, setup = result["runs"], result["summary"], result["setup"]
    print(
        f"\nlearning on {result['machine']['cores']} cores, {result['machine']['cpu_model']}, "
        f"{result['date']}: {setup['gin_file']}, {setup['env_steps']} env steps, evaluation "
        f"every {setup['eval_every']} env steps with {setup['eval_episodes']} episodes"
    )
    rows = []
    for k in range(max(len(run["points"]) for run in runs)):
        points = [run["points"][k] if k < len(run["points"]) else None for run in runs]
        step = next(p["train_step"] for p in points if p)
        rows.append(
            [step] + [p and f"{p['AverageReturn']:.3f} ({p['env_steps']:>6})" for p in points]
        )
    rows.append(["minutes", *(f"{run['seconds'] / 60:.1f}" for run in runs)])
    harness.print_table(
        rows,
        ["train_step", *(run["name"] for run in runs)],
        "AverageReturn at each evaluation (env steps in brackets), wall minutes at the end",
    )
    harness.print_table(
        [
            (
                row["env_steps"],
                f"{min(row['loop_returns']):.3f}..{max(row['loop_returns']):.3f}",
                f"{row['cluster_mean']:.3f}",
                "yes" if row["within_or_above"] else "no",
            )
            for row in summary["at_equal_env_steps"]
        ],
        ("env steps", "loop min..max", "cluster mean", "within or above"),
        "At the loop's evaluation env steps (cluster runs interpolated between evaluations)",
    )
    count = len(summary["at_equal_env_steps"])
    print(
        f"\ncluster within the loop's seed range or above at {summary['points_within_or_above']}"
        f"/{count} points; mean seed-to-seed spread: loop {summary['loop_mean_spread']:.3f}, "
        f"cluster {summary['cluster_mean_spread']:.3f}"
    )
    lows, highs = summary["late_env_steps"][0], summary["late_env_steps"][-1]
    late = ", ".join(f"{name} {value:.3f}" for name, value in summary["late_means"].items())
    print(f"mean AverageReturn over env steps {lows}..{highs}: {late}")
    print(
        f"wall time for the budget: loop {summary['loop_seconds'] / 60:.1f} min, cluster "
        f"{summary['cluster_seconds'] / 60:.1f} min (ratio {summary['budget_time_ratio']:.2f})"
    )
    print(f"loop's final AverageReturn (mean over seeds): {summary['loop_final_return']:.3f}")
    for reach in summary["reach_loop_final"]:
        if reach["wall_s"] is None:
            print(f"  {reach['run']}: never reached it")
        else:
            print(
                f"  {reach['run']}: first reached at {reach['wall_s'] / 60:.1f} min "
                f"({reach['env_steps']} env steps), {reach['ratio_to_loop_time']:.2f} of the "
                "loop's time (target <= 0.4)"
            )
    same = summary["same_seed"]
    if same:
        first = [p["AverageReturn"] for p in same["first_evaluation"]]
        gaps = [harness.cell(same[key]) for key in ("mean_abs_gap", "mean_abs_gap_other_seeds")]
        print(
            f"same seed {same['seed']} twice: mean |gap| {gaps[0]} (other seeds: {gaps[1]}); "
            f"first evaluations {first[0]:.6f} and {first[1]:.6f}"
        )


def draw(result: dict, output: str) -> None:
    from distributed_sac.tools.plot import draw as draw_figure

    lines = []
    for index, run in enumerate(result["runs"]):
        style = {
            "color": "tab:blue" if run["kind"] == "loop" else "tab:orange",
            "linestyle": ":" if run["repeat"] else ("-", "--", "-.")[index // 2 % 3],
            "marker": "o" if run["kind"] == "loop" else "s",
        }
        points = [dict(p, minutes=p["wall_s"] / 60) for p in run["points"]]
        lines.append((run["name"], points, style))
    title = (
        f"{os.path.basename(result['setup']['gin_file'])}: tutorial loop vs cluster "
        f"(1 collector, UTD 1), {result['machine']['cores']} cores"
    )
    panels = (
        ("env_steps", "environment steps (experience items stored)"),
        ("minutes", "minutes since the run started"),
    )
    draw_figure(lines, output, title, 1300, 500, 100, panels=panels)


# ---------------------------------------------------------------- orchestration


def _parse_args():
    quick = {"gin_file": SMOKE_GIN, "env_steps": 400, "eval_every": 100, "eval_episodes": 2}
    quick["cluster_timeout_s"] = 600
    parser = harness.Parser(PROGRAM, __doc__, quick, output=False, parts=PARTS)
    parser.add_argument("--env_steps", type=int, default=50_000, help="env-step budget per run")
    parser.add_argument("--eval_every", type=int, default=5_000, help="env steps")
    parser.add_argument("--eval_episodes", type=int, default=10)
    parser.add_argument("--seeds", default="0,1", help="comma-separated, at least two")
    parser.add_argument(
        "--no_repeat", action="store_true", help="skip the second cluster run of the first seed"
    )
    parser.add_argument("--output_dir", default="learning-results")
    parser.add_argument("--cluster_timeout_s", type=float, default=4 * 3600)
    parser.add_argument(
        "--summarize",
        metavar="DIR",
        help="run nothing: recompute the summary, tables and plot of DIR/learning.json",
    )
    return parser.parse()


def _check(args):
    """Bad arguments stop the benchmark in one line before any run starts."""
    seeds = harness.numbers(PROGRAM, "seeds", args.seeds, "0,1")
    if len(set(seeds)) < 2 or min(seeds) < 0:
        fail(PROGRAM, f"--seeds needs at least two distinct non-negative seeds; got {args.seeds!r}")
    for name in ("eval_every", "eval_episodes"):
        if getattr(args, name) < 1:
            fail(PROGRAM, f"--{name} must be at least 1, got {getattr(args, name)}")
    initial = args.config.initial_collect_steps
    if args.env_steps <= initial:
        fail(
            PROGRAM,
            f"--env_steps ({args.env_steps}) must exceed RunConfig.initial_collect_steps "
            f"({initial}), the random steps both runs take first",
        )
    output_dir = os.path.abspath(args.output_dir)
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        fail(PROGRAM, f"--output_dir {args.output_dir} exists and is not an empty directory")
    parent = os.path.dirname(output_dir)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        fail(PROGRAM, f"cannot create --output_dir {args.output_dir}")
    return list(dict.fromkeys(seeds)), output_dir


def main() -> None:
    args = _parse_args()
    if args.summarize:
        resummarize(args.summarize)
        return
    seeds, output_dir = _check(args)
    os.makedirs(output_dir, exist_ok=True)
    common = {
        "gin_file": args.gin_file,
        "bindings": list(args.gin_bindings),
        "env_steps": args.env_steps,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
    }
    plan = [(kind, seed, False) for seed in seeds for kind in ("loop", "cluster")]
    if not args.no_repeat:
        plan.append(("cluster", seeds[0], True))
    runs = []
    for kind, seed, repeat in plan:
        name = f"{kind}-seed{seed}" + ("-repeat" if repeat else "")
        run_dir = os.path.join(output_dir, name)
        print(f"... {name}", flush=True)
        run_args = {**common, "seed": seed, "run_dir": run_dir}
        if kind == "loop":
            os.makedirs(run_dir)
            run = harness.run_part(
                PROGRAM, "loop", f"{run_dir}.log", **run_args, started_at=time.time()
            )
        else:
            run = run_cluster(**run_args, timeout_s=args.cluster_timeout_s)
        runs.append({"name": name, "kind": kind, "seed": seed, "repeat": repeat, **run})
        print(
            f"    {run['seconds'] / 60:.1f} min, final AverageReturn "
            f"{run['points'][-1]['AverageReturn']:.3f}",
            flush=True,
        )
    provenance = harness.provenance(args.gin_file, args.gin_bindings)
    result = {**provenance, "setup": {**common, "seeds": seeds}, "runs": runs}
    report(result, output_dir)


def report(result: dict, output_dir: str) -> None:
    """Summarizes the runs into learning.json and learning.png in `output_dir`; prints it."""
    result["summary"] = summarize(result["runs"])
    harness.write_figures(os.path.join(output_dir, "learning.json"), result)
    draw(result, os.path.join(output_dir, "learning.png"))
    print_tables(result)


def resummarize(output_dir: str) -> None:
    path = os.path.join(output_dir, "learning.json")
    report(harness.read_figures(PROGRAM, path, ("runs", "setup", "machine")), output_dir)


if __name__ == "__main__":
    main()
