"""Soak: the local cluster for --minutes, every role's memory, file descriptors and threads.

    .venv/bin/python -m benchmarks.soak --minutes 60 --num_collectors 4 \\
        --output docs/soak.json [--root_dir /var/tmp/runs/soak]
    .venv/bin/python -m benchmarks.soak --quick     # the plumbing, on gin/smoke.gin
    .venv/bin/python -m benchmarks.soak --analyse docs/soak.json [--output F]  # table again

The launcher (with its restarts) runs toward a final step it will not reach; from the learner's
first pushed weights, each role's memory, descriptors and threads (/proc) and the server's
counters are sampled every --interval_s seconds; after --minutes the launcher is stopped as by
Ctrl-C.
Targets, scaled to the run's length (for 60 minutes: minute 15 against the end): RSS at the end
within 10% of the reference minute's; descriptors and threads flat (median over the last sixth
at most max(2, 5%) above the median over the sixth around the reference minute); no restart; the
learner's train steps/s in the last sixth >= 0.9 x in 1/12..1/4. A missed target is reported,
not an error; a failed launcher or a role that outlives it is (exit code 1).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile

from benchmarks import harness
from benchmarks.harness import SMOKE_GIN, fail
from distributed_sac.runtime.rates import per_second

PROGRAM = "soak"
UNREACHED_FINAL_STEP = 1_000_000_000


def nearest(samples: list[dict], t_s: float) -> dict:
    return min(samples, key=lambda s: abs(s["t_s"] - t_s))


def learner_rate(samples: list[dict], begin_s: float, end_s: float) -> float | None:
    """Train steps per second between the samples nearest `begin_s` and `end_s`."""
    first, last = nearest(samples, begin_s), nearest(samples, end_s)
    if last["t_s"] <= first["t_s"]:
        return None
    return per_second((first["t_s"], first["train_step"]), (last["t_s"], last["train_step"]))


def flat(reference: float, end: float) -> bool:
    return end <= reference + max(2, 0.05 * reference)


def usages(samples: list[dict], name: str, begin_s: float = 0.0, end_s: float = math.inf) -> list:
    """One role's usage in each sample in [begin_s, end_s] that has it."""
    return [
        s["roles"][name] for s in samples if begin_s <= s["t_s"] <= end_s and name in s["roles"]
    ]


def window_median(samples: list[dict], name: str, key: str, begin_s: float, end_s: float):
    """The median of one role's `key` over the samples in [begin_s, end_s]."""
    values = [usage[key] for usage in usages(samples, name, begin_s, end_s)]
    return statistics.median(values) if values else None


def analyse(samples: list[dict], minutes: float, restarts: list[str]) -> dict:
    """Per-role figures at the reference minute and the end, the learner's rates, the targets."""
    run_s = minutes * 60
    reference_s = run_s / 4
    reference, end = nearest(samples, reference_s), samples[-1]
    # Descriptors and threads are compared as medians over a window (minutes 10-20 and 50-60 of
    # 60): a sample that lands in a checkpoint or a feed take sees its transient threads and
    # files (docs/endurance.md), which is not growth.
    reference_window = (reference_s - run_s / 12, reference_s + run_s / 12)
    end_window = (run_s * 5 / 6, end["t_s"])
    roles = {}
    for name in sorted(end["roles"]):
        if name not in reference["roles"]:
            continue
        ref, last = reference["roles"][name], end["roles"][name]
        after = usages(samples, name, reference["t_s"])
        figures = {
            "rss_mb_reference": round(ref["rss_mb"], 1),
            "rss_mb_end": round(last["rss_mb"], 1),
            "rss_end_over_reference": round(last["rss_mb"] / ref["rss_mb"], 3),
            "rss_mb_max": round(max(u["rss_mb"] for u in after), 1),
        }
        for key in ("fds", "threads"):
            values = [u[key] for u in after]
            figures[f"{key}_reference"], figures[f"{key}_end"] = ref[key], last[key]
            figures[f"{key}_range_after_reference"] = [min(values), max(values)]
            figures[f"{key}_median"] = [
                window_median(samples, name, key, *window)
                for window in (reference_window, end_window)
            ]
        pids = {usage["pid"] for usage in usages(samples, name)}
        roles[name] = {**figures, "pid_changed": len(pids) > 1}
    early = learner_rate(samples, run_s / 12, reference_s)
    late = learner_rate(samples, run_s * 5 / 6, end["t_s"])
    ratio = late / early if early and late is not None else None
    targets = {
        "rss_within_10_percent": bool(roles)
        and all(abs(r["rss_end_over_reference"] - 1) <= 0.10 for r in roles.values()),
        "fds_flat": bool(roles) and all(flat(*r["fds_median"]) for r in roles.values()),
        "threads_flat": bool(roles) and all(flat(*r["threads_median"]) for r in roles.values()),
        "no_restart": not restarts and not any(r["pid_changed"] for r in roles.values()),
        "learner_rate_held": ratio is not None and ratio >= 0.9,
    }
    return {
        "reference_minute": round(reference["t_s"] / 60, 2),
        "end_minute": round(end["t_s"] / 60, 2),
        "roles": roles,
        "learner_steps_per_s": {
            "minutes": [round(run_s / 12 / 60, 2), round(reference_s / 60, 2)],
            "early": early and round(early, 2),
            "late_minutes": [round(run_s * 5 / 6 / 60, 2), round(end["t_s"] / 60, 2)],
            "late": late and round(late, 2),
            "late_over_early": ratio and round(ratio, 3),
        },
        "restarts": restarts,
        "targets": targets,
    }


def print_table(result: dict) -> None:
    rows = []
    for name, r in result["roles"].items():
        rss = f"{r['rss_mb_reference']:.0f} -> {r['rss_mb_end']:.0f}"
        fds = "{:g} -> {:g}".format(*r["fds_median"])
        threads = "{:g} -> {:g}".format(*r["threads_median"])
        rows.append(
            (name, rss, f"{r['rss_end_over_reference']:.3f}", round(r["rss_mb_max"]), fds)
            + (r["fds_range_after_reference"][1], threads, r["threads_range_after_reference"][1])
        )
    harness.print_table(
        rows,
        ("role", "RSS MiB", "end/ref", "max", "fds", "max", "threads", "max"),
        f"per role: minute {result['reference_minute']:g} (reference) -> minute "
        f"{result['end_minute']:g} (end)\n(fds, threads: median over the window around the "
        "reference -> over the last sixth)",
    )
    rate = result["learner_steps_per_s"]
    print(
        f"learner train steps/s: {rate['early']} in minutes {rate['minutes'][0]:g}-"
        f"{rate['minutes'][1]:g}, {rate['late']} in minutes {rate['late_minutes'][0]:g}-"
        f"{rate['late_minutes'][1]:g} (ratio {rate['late_over_early']})"
    )
    print(f"restarts: {result['restarts'] or 'none'}")
    for name, met in result["targets"].items():
        print(f"target {name}: {'met' if met else 'NOT MET'}")


def run(args) -> dict:
    root_dir = os.path.abspath(args.root_dir or tempfile.mkdtemp(prefix="soak-"))
    bindings = [f"RunConfig.num_iterations = {UNREACHED_FINAL_STEP}", *args.gin_bindings]
    print(f"soak: {args.minutes:g} min, {args.num_collectors} collectors, {root_dir}", flush=True)
    samples = []
    with harness.LauncherRun(
        PROGRAM, root_dir, args.gin_file, bindings, args.num_collectors
    ) as launcher:
        # The minutes count from the learner's first weights: on a loaded machine starting the
        # roles took most of a quick soak's 36 s (docs/endurance.md).
        soak = launcher.samples(
            args.interval_s, until_s=args.minutes * 60, roles=True, from_training=True
        )
        for sample in soak:
            samples.append(sample)
            print(
                f"[{sample['t_s'] / 60:5.1f} min] train_step {sample['train_step']}  tables "
                f"{sample['table_sizes']}  RSS MiB "
                + " ".join(f"{n}={u['rss_mb']:.0f}" for n, u in sample["roles"].items()),
                flush=True,
            )
        restarts = launcher.restarts()
        stop_code = launcher.finish(timeout_s=90, interrupt=True)
    return {
        **analyse(samples, args.minutes, restarts),
        **harness.provenance(args.gin_file, args.gin_bindings),
        "minutes": args.minutes,
        "num_collectors": args.num_collectors,
        "interval_s": args.interval_s,
        "launcher_stop_exit_code": stop_code,
        "samples": samples,
    }


def reanalyse(path: str, output: str | None) -> dict:
    """An earlier run's figures recomputed from its samples (written to `output` if given)."""
    earlier = harness.read_figures(PROGRAM, path, ("samples", "minutes", "restarts"))
    try:
        figures = analyse(earlier["samples"], earlier["minutes"], earlier["restarts"])
    except (ValueError, KeyError, TypeError) as error:
        fail(PROGRAM, f"cannot analyse the samples in {path}: {error!r}")
    samples = earlier.pop("samples")
    result = {**earlier, **figures, "samples": samples}
    harness.write_figures(output, result)
    return result


def main() -> None:
    # 36 s from the learner's first weights: the roles train; 13 samples.
    quick = {"gin_file": SMOKE_GIN, "minutes": 0.6, "num_collectors": 2, "interval_s": 3}
    parser = harness.Parser(PROGRAM, __doc__, quick, root_dir=True)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--num_collectors", type=int, default=4)
    parser.add_argument("--interval_s", type=float, default=30)
    parser.add_argument(
        "--analyse",
        metavar="JSON",
        help="recompute the table and targets from the samples of an earlier run's JSON",
    )
    args = parser.parse()
    if args.analyse:
        print_table(reanalyse(args.analyse, args.output))
        return
    if args.minutes <= 0 or args.interval_s <= 0:
        fail(PROGRAM, "--minutes and --interval_s must be positive")
    if args.num_collectors < 1:
        fail(PROGRAM, "--num_collectors must be at least 1")
    if args.interval_s * 4 > args.minutes * 60:
        fail(PROGRAM, "--interval_s must allow at least 4 samples in --minutes")
    result = run(args)
    print_table(result)
    harness.write_figures(args.output, result)


if __name__ == "__main__":
    main()
