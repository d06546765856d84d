"""Throughput of distributed_sac against this machine's limits and the tutorial's loop.

    .venv/bin/python benchmarks/throughput.py [--cluster_seconds 300] [--num_collectors 1,2]
                                              [--output throughput.json] [--quick]

Measures in one run, each part in a fresh process so none inherits another's threads or memory:
  env limit          raw environment steps/s, random actions, no policy, no Reverb; and the
                     process CPU seconds per env step
  learner limit      SAC train steps/s on one in-memory batch, many steps per tf.function call;
                     and the process CPU seconds per train step
  baseline           the tutorial's synchronous loop (collect 1 step, Learner.run(iterations=1),
                     in-process Reverb), iterations/s
  collectors alone   N collector processes feeding a replay server, no learner
  learner alone      the learner process on what the collectors wrote, through the real data path
                     (feed table -> its replay of --alone_replay_capacity pairs -> batches); its
                     peak RSS
  cluster            replay server + learner + N collectors at update-to-data ratio 1
  with --tls         collectors alone and the cluster again, the collectors reaching the server
                     through a mutual-TLS tunnel (distributed_sac.tools.tunnel, both ends on this
                     machine), as from another host; the ratios to the plain runs are its cost
machine_limit_utd1 = cores / (CPU s per env step + CPU s per train step): the most train steps/s
any design could reach here at one train step per env step.
Prints a table and writes the figures as JSON (--output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import tempfile
import time

import harness
from harness import SMOKE_GIN, fail, load_config

from distributed_sac.runtime.processes import module_command, run_bounded
from distributed_sac.runtime.rates import per_second

PROGRAM = "throughput"
# Alone-phases run free (no ratio limiter) and start acting with the policy early.
FREE_RUNNING = ("RunConfig.updates_per_env_step = None", "RunConfig.initial_collect_steps = 1000")


# ---------------------------------------------------------------- in-process measurements


def measure_env_limit(gin_file: str, bindings, seconds: float) -> dict:
    import numpy as np

    from distributed_sac.builder import Builder

    env = Builder(load_config(gin_file, bindings)).make_env(seed=0)
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    env.reset()
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype))
        steps += 1
    return {
        "env_limit": steps / (time.perf_counter() - start),
        "cpu_s_per_env_step": (time.process_time() - cpu_start) / steps,
    }


def _random_batch(builder, batch_size: int):
    """A batch of real (t, t+1) pairs from random play, as the learner would sample it."""
    import numpy as np
    import tensorflow as tf
    from tf_agents.policies import random_py_policy
    from tf_agents.trajectories import trajectory

    env = builder.make_env(seed=0)
    policy = random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), seed=0)
    time_step, steps = env.reset(), []
    while len(steps) < batch_size + 1:
        action_step = policy.action(time_step)
        next_time_step = env.step(action_step.action)
        steps.append(trajectory.from_transition(time_step, action_step, next_time_step))
        time_step = next_time_step
    pairs = [
        tf.nest.map_structure(lambda a, b: np.stack([a, b]), s, n) for s, n in zip(steps, steps[1:])
    ]
    return tf.nest.map_structure(lambda *fields: tf.constant(np.stack(fields)), *pairs[:batch_size])


def measure_learner_limit(gin_file: str, bindings, seconds: float) -> dict:
    import tensorflow as tf
    from tf_agents.train.utils import train_utils

    from distributed_sac.builder import Builder
    from distributed_sac.runtime import cli

    builder = Builder(load_config(gin_file, bindings))
    cli.set_tf_threads(builder.config.learner_tf_threads)  # as the learner role does
    agent = builder.make_agent(train_utils.create_train_step())
    batch = _random_batch(builder, builder.config.batch_size)

    @tf.function
    def train(iterations):
        loss = tf.constant(0.0)
        for _ in tf.range(iterations):
            loss = agent.train(batch).loss
        return loss

    train(tf.constant(10))  # trace and warm up
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        train(tf.constant(50))
        steps += 50
    return {
        "learner_limit": steps / (time.perf_counter() - start),
        # Every thread of the process: TensorFlow's intra- and inter-op pools included.
        "cpu_s_per_train_step": (time.process_time() - cpu_start) / steps,
    }


def measure_baseline(gin_file: str, bindings, seconds: float, root_dir: str) -> dict:
    """The tutorial's loop as its notebook writes it, with this run's hyperparameters."""
    from tutorial_loop import TutorialLoop

    loop = TutorialLoop(load_config(gin_file, bindings), root_dir, seed=0)
    loop.collect_initial()
    loop.iterate(20)  # warm up: tracing and the first policy save
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loop.iterate(10)
        iterations += 10
    elapsed = time.perf_counter() - start
    loop.close()
    return {"baseline_it_per_s": iterations / elapsed}


# ---------------------------------------------------------------- the roles as processes


def _collector_rates(
    cluster: harness.BenchCluster, tasks, since: float
) -> tuple[list[float], float | None]:
    """Each collector's env steps/s from its progress reports, and the mean policy lag."""
    rates, lags = [], []
    for task in tasks:
        reports = cluster.collector_reports(task, since)
        if len(reports) < 2:
            raise RuntimeError(f"collector {task} logged under 2 progress reports in the window")
        first, last = reports[0], reports[-1]
        rates.append(
            per_second(
                (first["unix_time"], first["env_steps"]), (last["unix_time"], last["env_steps"])
            )
        )
        lags += [r["policy_lag"] for r in reports[1:] if r.get("policy_lag") is not None]
    return rates, (sum(lags) / len(lags) if lags else None)


def _role_cpu_seconds(cluster: harness.BenchCluster) -> dict[str, float | None]:
    processes = {**cluster.roles.roles, **cluster.tunnels}  # a tunnel's stunnel counts too
    return {name: process.cpu_seconds() for name, process in processes.items()}


def _window(cluster: harness.BenchCluster, seconds: float) -> tuple[dict, dict, float]:
    """Server counters (and each role's CPU seconds, under "cpu") at both ends of a window."""
    start_wall = time.time()
    begin = {**cluster.counters(), "cpu": _role_cpu_seconds(cluster)}
    # The window's length, checking every 2 s that no role exited (check_alive raises).
    harness.poll_until(cluster.roles.check_alive, seconds, interval_s=2.0)
    return begin, {**cluster.counters(), "cpu": _role_cpu_seconds(cluster)}, start_wall


def _cpu_per_step(begin: dict, end: dict, roles, steps: float) -> float | None:
    """The roles' CPU seconds in the window per step (env step or train step)."""
    used = [
        end["cpu"].get(role) - begin["cpu"].get(role)
        for role in roles
        if end["cpu"].get(role) is not None and begin["cpu"].get(role) is not None
    ]
    return sum(used) / steps if used and steps > 0 else None


def measure_alone(
    gin_file: str,
    bindings,
    num_collectors: int,
    seconds: float,
    work_dir: str,
    with_learner: bool,
    replay_capacity: int,
    tls_dir: str | None = None,
) -> dict:
    """Collectors feeding a server with no learner, then the learner alone on what they wrote,
    both with a replay of `replay_capacity` pairs."""
    import tensorflow as tf

    from distributed_sac.builder import Builder
    from distributed_sac.tools import monitor

    capacity = f"RunConfig.replay_capacity = {replay_capacity}"
    cluster = harness.BenchCluster(
        gin_file, (*bindings, *FREE_RUNNING, capacity), work_dir, tls_dir
    )
    try:
        cluster.start_server()
        # Collectors act with the policy once weights exist: push initial ones as a learner would.
        builder = Builder(cluster.config)
        policy = builder.make_acting_policy()
        train_step = tf.Variable(0, dtype=tf.int64)
        builder.make_weight_client(cluster.address, policy.tf_variables, train_step).push()
        for task in range(num_collectors):
            cluster.start_collector(task)
        initial = cluster.config.initial_collect_steps
        cluster.wait_until(
            lambda: cluster.table_size() >= initial + 200 * num_collectors,
            600,
            "the collectors to finish their random steps",
        )
        begin, end, since = _window(cluster, seconds)
        rates, _ = _collector_rates(cluster, range(num_collectors), since)
        result = {
            "num_collectors": num_collectors,
            "env_steps_per_s_per_collector": rates,
            "env_steps_per_s": sum(rates),
            "inserts_per_s": monitor.rates(begin, end)["inserts_per_s"],
            "tls": bool(tls_dir),
        }
        cluster.roles.stop([f"collector-{task}" for task in range(num_collectors)], grace_s=10)
        if not with_learner:
            return result
        # The table is full of this run's experience: now the learner, with nothing competing.
        learner = cluster.start_learner()
        cluster.wait_until(
            lambda: (cluster.counters()["train_step"] or 0) >= 200, 600, "the learner to train"
        )
        begin, end, _ = _window(cluster, seconds)
        result["learner_alone_steps_per_s"] = monitor.rates(begin, end)["train_steps_per_s"]
        result["learner_alone_replay_capacity"] = replay_capacity
        result["learner_alone_peak_rss_mb"] = learner.peak_rss_mb()
        return result
    finally:
        cluster.stop_all()


def measure_cluster(
    gin_file: str,
    bindings,
    num_collectors: int,
    seconds: float,
    work_dir: str,
    tls_dir: str | None = None,
) -> dict:
    """Server, learner and collectors at the config's update-to-data ratio (the collectors
    through a mutual-TLS tunnel, with `tls_dir`)."""
    from distributed_sac.tools import monitor

    cluster = harness.BenchCluster(gin_file, bindings, work_dir, tls_dir)
    if cluster.config.updates_per_env_step != 1:
        raise RuntimeError("the cluster is measured at RunConfig.updates_per_env_step = 1")
    try:
        cluster.start_server()
        cluster.start_learner()
        for task in range(num_collectors):
            cluster.start_collector(task)
        warm_up = 500  # train steps past the random phase before the window opens
        cluster.wait_until(
            lambda: (cluster.counters()["train_step"] or 0) >= warm_up, 900, "the learner to train"
        )
        begin, end, since = _window(cluster, seconds)
        elapsed = end["time"] - begin["time"]
        rates, lag = _collector_rates(cluster, range(num_collectors), since)
        train_steps = end["train_step"] - begin["train_step"]
        env_steps = sum(rates) * elapsed
        server = monitor.rates(begin, end)
        collectors = [f"collector-{task}" for task in range(num_collectors)]
        return {
            "num_collectors": num_collectors,
            "learner_steps_per_s": server["train_steps_per_s"],
            # Each role's CPU per step in the cluster: the env's cost under the learning
            # policy's actions differs from its cost under random ones (the env limit).
            "cluster_cpu_s_per_train_step": _cpu_per_step(begin, end, ["learner"], train_steps),
            "cluster_cpu_s_per_env_step": _cpu_per_step(begin, end, collectors, env_steps),
            "server_cpu_s_per_pair": _cpu_per_step(
                begin, end, ["replay_server"], end["inserts"] - begin["inserts"]
            ),
            "cpu_busy_fraction": sum(
                _cpu_per_step(begin, end, [role], elapsed) or 0.0 for role in end["cpu"]
            )
            / os.cpu_count(),
            "env_steps_per_s_per_collector": rates,
            "env_steps_per_s": sum(rates),
            "inserts_per_s": server["inserts_per_s"],
            "drained_per_s": server["drained_per_s"],
            "mean_policy_lag_steps": lag,
            "tls": bool(tls_dir),
            # Both ends of the tunnel (on separate hosts, each host pays its own end).
            "tunnel_cpu_s_per_pair": _cpu_per_step(
                begin, end, list(cluster.tunnels), end["inserts"] - begin["inserts"]
            ),
        }
    finally:
        cluster.stop_all()


# ---------------------------------------------------------------- orchestration


def _run_part(part: str, log_dir: str, **kwargs) -> dict:
    label = f"{part}{kwargs.get('num_collectors', '')}{'-tls' if kwargs.get('tls_dir') else ''}"
    print(f"... {label}", flush=True)
    log_path = os.path.join(log_dir, f"{label}.log")
    return harness.run_part(PROGRAM, os.path.abspath(__file__), part, log_path, **kwargs)


PARTS = {
    "env_limit": measure_env_limit,
    "learner_limit": measure_learner_limit,
    "baseline": measure_baseline,
    "alone": measure_alone,
    "cluster": measure_cluster,
}


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(_format(v) for v in value)
    return str(value)


def print_table(figures: dict) -> None:
    rows = [
        ("env limit (raw env steps/s)", figures["env_limit"]),
        ("learner limit (train steps/s, in-memory batch)", figures["learner_limit"]),
        ("baseline: tutorial loop (iterations/s)", figures["baseline_it_per_s"]),
        (
            "CPU s per env step / per train step",
            [figures["cpu_s_per_env_step"], figures["cpu_s_per_train_step"]],
        ),
        ("machine limit at UTD 1 (train steps/s)", figures["machine_limit_utd1"]),
        ("collector alone (env steps/s)", figures["collector_alone_steps_per_s"]),
        ("learner alone (train steps/s)", figures["learner_alone_steps_per_s"]),
        (
            f"learner peak RSS, replay of {figures['learner_alone_replay_capacity']:,} (MiB)",
            figures["learner_alone_peak_rss_mb"],
        ),
    ]
    for run in figures["collectors_alone"]:
        rows.append(
            (
                f"  {run['num_collectors']} collector(s) alone: env steps/s total",
                run["env_steps_per_s"],
            )
        )
    for run in figures["cluster_runs"]:
        n = run["num_collectors"]
        rows += [
            (f"cluster UTD 1, {n} collector(s): learner steps/s", run["learner_steps_per_s"]),
            ("  env steps/s per collector", run["env_steps_per_s_per_collector"]),
            ("  env steps/s total", run["env_steps_per_s"]),
            ("  inserts/s, drained/s (server)", [run["inserts_per_s"], run["drained_per_s"]]),
            ("  mean policy lag (train steps)", run["mean_policy_lag_steps"]),
        ]
    for cost in figures.get("tls_cost", []):
        n = cost["num_collectors"]
        rows += [
            (
                f"TLS tunnel, {n} collector(s) alone: env steps/s total (vs plain)",
                [cost["alone_env_steps_per_s"], cost["alone_vs_plain"]],
            ),
            (
                f"TLS tunnel, cluster UTD 1, {n} collector(s): learner steps/s (vs plain)",
                [cost["cluster_learner_steps_per_s"], cost["cluster_vs_plain"]],
            ),
            (
                "  tunnel CPU ms per pair (both ends)",
                None
                if cost["tunnel_cpu_s_per_pair"] is None
                else 1000 * cost["tunnel_cpu_s_per_pair"],
            ),
        ]
    rows += [
        ("collector_vs_env_limit (target >= 0.9)", figures["collector_vs_env_limit"]),
        ("learner_vs_limit (target >= 0.9)", figures["learner_vs_limit"]),
        ("cluster_vs_learner_limit (target >= 0.75)", figures["cluster_vs_learner_limit"]),
        ("cluster_vs_machine_limit (aim >= 0.75)", figures["cluster_vs_machine_limit"]),
        ("cluster_vs_baseline (target >= 3.5)", figures["cluster_vs_baseline"]),
    ]
    for run in figures["collection_scaling"]:
        label = f"{run['num_collectors']} collector(s) alone / (env limit x {run['cores']} cores)"
        rows.append((f"{label} (target >= 0.85)", run["ratio"]))
    width = max(len(label) for label, _ in rows)
    print(
        f"\nthroughput on {figures['machine']['cores']} cores, {figures['machine']['cpu_model']}, "
        f"{figures['date']}"
    )
    for label, value in rows:
        print(f"{label:<{width}}  {_format(value)}")


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_gin_arguments(parser)
    parser.add_argument(
        "--cluster_seconds", type=float, default=300, help="cluster window, seconds"
    )
    parser.add_argument("--alone_seconds", type=float, default=60, help="alone-phase window")
    parser.add_argument("--limit_seconds", type=float, default=30, help="env/learner limit window")
    parser.add_argument("--baseline_seconds", type=float, default=120)
    parser.add_argument("--num_collectors", default="1,2", help="comma-separated sweep")
    parser.add_argument(
        "--alone_replay_capacity",
        type=int,
        default=1_000_000,
        help="replay capacity (pairs) in the alone phases: the learner's peak RSS is reported",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="also measure collectors alone and the cluster with the collectors behind a "
        "mutual-TLS tunnel (stunnel4 and openssl needed), and the ratios to the plain runs",
    )
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny run on gin/smoke.gin (tests)")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--part_args", help=argparse.SUPPRESS)
    return parser.parse_args()


def _check(args) -> list[int]:
    """Bad arguments stop the benchmark in one line before any part runs; the sweep."""
    try:
        sweep = sorted({int(n) for n in args.num_collectors.split(",")})
    except ValueError:
        fail(PROGRAM, f"--num_collectors must be like 1,2; got {args.num_collectors!r}")
    if not sweep or sweep[0] < 1:
        fail(PROGRAM, "--num_collectors needs counts of at least 1")
    if args.tls:
        missing = [tool for tool in ("stunnel4", "openssl") if shutil.which(tool) is None]
        if missing:
            fail(
                PROGRAM,
                f"--tls needs {' and '.join(missing)}: apt-get install stunnel4 openssl "
                "(or source launch/common.sh && ensure_system_packages test)",
            )
    if args.output and not os.access(os.path.dirname(os.path.abspath(args.output)), os.W_OK):
        fail(PROGRAM, f"cannot write --output {args.output}")
    if args.quick:
        args.gin_file = SMOKE_GIN
        args.gin_bindings += [
            "RunConfig.num_iterations = 100000",
            "RunConfig.updates_per_env_step = 1.0",
        ]
        args.cluster_seconds = args.alone_seconds = args.limit_seconds = 4
        args.baseline_seconds = 4
        args.alone_replay_capacity = 100_000
    harness.check_config(PROGRAM, args.gin_file, args.gin_bindings)
    return sweep


def measure(args, sweep: list[int], work: str) -> dict:
    """Every part, each in its own process, one after another; their figures."""
    common = {"gin_file": args.gin_file, "bindings": args.gin_bindings}
    figures = {
        "machine": harness.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    figures.update(_run_part("env_limit", work, **common, seconds=args.limit_seconds))
    figures.update(_run_part("learner_limit", work, **common, seconds=args.limit_seconds))
    baseline_dir = os.path.join(work, "baseline")
    figures.update(
        _run_part("baseline", work, **common, seconds=args.baseline_seconds, root_dir=baseline_dir)
    )
    figures["collectors_alone"], figures["cluster_runs"] = [], []
    phases = [
        ("alone", args.alone_seconds, figures["collectors_alone"], None),
        ("cluster", args.cluster_seconds, figures["cluster_runs"], None),
    ]
    if args.tls:
        tls_dir = os.path.join(work, "certs")
        made = run_bounded(module_command("tools.tls_certs", ["--dir", tls_dir]), 120)
        if made.returncode != 0:
            fail(PROGRAM, f"making the tunnels' certificates failed: {made.stderr.strip()}")
        figures["collectors_alone_tls"], figures["cluster_runs_tls"] = [], []
        # Each tunnelled phase right after its plain one: the two see the same machine.
        phases = [
            phases[0],
            ("alone", args.alone_seconds, figures["collectors_alone_tls"], tls_dir),
            phases[1],
            ("cluster", args.cluster_seconds, figures["cluster_runs_tls"], tls_dir),
        ]
    for kind, seconds, runs, tls_dir in phases:
        for n in sweep:
            part_dir = os.path.join(work, f"{kind}{n}{'-tls' if tls_dir else ''}")
            os.makedirs(part_dir)
            extra = {"tls_dir": tls_dir} if tls_dir else {}
            if kind == "alone":
                extra.update(
                    with_learner=n == sweep[0] and not tls_dir,
                    replay_capacity=args.alone_replay_capacity,
                )
            runs.append(
                _run_part(
                    kind,
                    work,
                    **common,
                    num_collectors=n,
                    seconds=seconds,
                    work_dir=part_dir,
                    **extra,
                )
            )
    return figures


def add_ratios(figures: dict) -> None:
    """The headline figures and their ratios to the limits and the tutorial's loop."""
    first_alone = figures["collectors_alone"][0]
    best = max(figures["cluster_runs"], key=lambda run: run["learner_steps_per_s"])
    figures.update(
        collector_alone_steps_per_s=first_alone["env_steps_per_s"] / first_alone["num_collectors"],
        learner_alone_steps_per_s=first_alone["learner_alone_steps_per_s"],
        cluster_num_collectors=best["num_collectors"],
        cluster_learner_steps_per_s=best["learner_steps_per_s"],
        cluster_env_steps_per_s=best["env_steps_per_s"],
        cluster_inserts_per_s=best["inserts_per_s"],
        cluster_drained_per_s=best["drained_per_s"],
        cluster_mean_policy_lag_steps=best["mean_policy_lag_steps"],
    )
    figures["collector_vs_env_limit"] = (
        figures["collector_alone_steps_per_s"] / figures["env_limit"]
    )
    figures["learner_vs_limit"] = figures["learner_alone_steps_per_s"] / figures["learner_limit"]
    figures["cluster_vs_baseline"] = best["learner_steps_per_s"] / figures["baseline_it_per_s"]
    figures["cluster_vs_learner_limit"] = best["learner_steps_per_s"] / figures["learner_limit"]
    cores = figures["machine"]["cores"]
    figures["machine_limit_utd1"] = cores / (
        figures["cpu_s_per_env_step"] + figures["cpu_s_per_train_step"]
    )
    figures["cluster_vs_machine_limit"] = (
        best["learner_steps_per_s"] / figures["machine_limit_utd1"]
    )
    figures["learner_alone_replay_capacity"] = first_alone["learner_alone_replay_capacity"]
    figures["learner_alone_peak_rss_mb"] = first_alone["learner_alone_peak_rss_mb"]
    if "cluster_runs_tls" in figures:
        figures["tls_cost"] = [
            {
                "num_collectors": alone["num_collectors"],
                "alone_env_steps_per_s": alone["env_steps_per_s"],
                "alone_vs_plain": alone["env_steps_per_s"] / plain_alone["env_steps_per_s"],
                "cluster_learner_steps_per_s": cluster["learner_steps_per_s"],
                "cluster_vs_plain": cluster["learner_steps_per_s"]
                / plain_cluster["learner_steps_per_s"],
                "tunnel_cpu_s_per_pair": cluster["tunnel_cpu_s_per_pair"],
            }
            for alone, cluster, plain_alone, plain_cluster in zip(
                figures["collectors_alone_tls"],
                figures["cluster_runs_tls"],
                figures["collectors_alone"],
                figures["cluster_runs"],
            )
        ]
    figures["collection_scaling"] = [
        {
            "num_collectors": run["num_collectors"],
            "cores": min(run["num_collectors"], cores),
            "ratio": run["env_steps_per_s"]
            / (figures["env_limit"] * min(run["num_collectors"], cores)),
        }
        for run in figures["collectors_alone"]
    ]


def main() -> None:
    args = _parse_args()
    if args.part:  # a child process measuring one part
        harness.serve_part(PARTS, args.part, args.part_args)
        return
    sweep = _check(args)
    work = tempfile.mkdtemp(prefix="throughput-")
    figures = measure(args, sweep, work)
    add_ratios(figures)
    print_table(figures)
    if args.output:
        with open(args.output, "w") as out:
            json.dump(figures, out, indent=2)
        print(f"figures written to {args.output}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
