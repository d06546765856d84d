"""Throughput of distributed_sac against this machine's limits and the tutorial's loop.

    .venv/bin/python -m benchmarks.throughput [--cluster_seconds 300] [--num_collectors 1,2]
                                              [--output throughput.json] [--quick] [--tls]

Each part runs in a fresh process, so none inherits another's threads or memory:
  env limit          raw environment steps/s (random actions, no policy, no Reverb) and the
                     process CPU seconds per env step
  learner limit      SAC train steps/s on one in-memory batch, many steps per tf.function call,
                     and the process CPU seconds per train step
  baseline           the tutorial's synchronous loop (benchmarks/tutorial_loop.py), iterations/s
  collectors alone   N collector processes feeding a replay server, no learner
  learner alone      the learner on what they wrote, through the real data path (feed table ->
                     its replay of --alone_replay_capacity pairs -> batches), and its peak RSS
  cluster            replay server + learner + N collectors at update-to-data ratio 1
  with --tls         collectors alone and the cluster again behind a mutual-TLS tunnel (both
                     ends on this machine, as from another host), and the ratios to the plain runs
machine_limit_utd1 = cores / (CPU s per env step + CPU s per train step): the most train steps/s
any design could reach here at one train step per env step. Prints a table; --output: JSON.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from benchmarks import harness
from benchmarks.harness import SMOKE_GIN, fail
from distributed_sac.runtime.processes import module_command, run_bounded
from distributed_sac.runtime.rates import per_second
from distributed_sac.runtime.waits import poll_until

PROGRAM = "throughput"
# Alone-phases run free (no ratio limiter) and start acting with the policy early.
FREE_RUNNING = ("RunConfig.updates_per_env_step = None", "RunConfig.initial_collect_steps = 1000")
QUICK = {
    "gin_file": SMOKE_GIN,
    "gin_bindings": ["RunConfig.num_iterations = 100000", "RunConfig.updates_per_env_step = 1.0"],
    **dict.fromkeys(("cluster_seconds", "alone_seconds", "limit_seconds", "baseline_seconds"), 4),
    "alone_replay_capacity": 100_000,
}
# The best cluster run's figures the JSON repeats as cluster_<name>.
CLUSTER_HEADLINES = (
    "num_collectors",
    "learner_steps_per_s",
    "env_steps_per_s",
    "inserts_per_s",
    "drained_per_s",
    "mean_policy_lag_steps",
)


# ---------------------------------------------------------------- in-process measurements


def measure_env_limit(gin_file: str, bindings, seconds: float) -> dict:
    import numpy as np

    from distributed_sac.builder import Builder

    env = Builder(harness.load_config(PROGRAM, gin_file, bindings)).make_env(seed=0)
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    env.reset()
    rate, cpu_s = harness.steps_per_s(
        lambda: env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype)),
        seconds,
    )
    return {"env_limit": rate, "cpu_s_per_env_step": cpu_s}


def _random_batch(builder, batch_size: int):
    """A batch of real (t, t+1) pairs from random play, as the learner would sample it."""
    import numpy as np
    import tensorflow as tf
    from tf_agents.policies import random_py_policy

    from distributed_sac.acting.actor import Actor

    env, steps = builder.make_env(seed=0), []
    policy = random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), seed=0)
    actor = Actor(env, [steps.append])
    while len(steps) < batch_size + 1:
        actor.step(policy)
    pairs = [
        tf.nest.map_structure(lambda a, b: np.stack([a, b]), s, n) for s, n in zip(steps, steps[1:])
    ]
    return tf.nest.map_structure(lambda *fields: tf.constant(np.stack(fields)), *pairs[:batch_size])


def measure_learner_limit(gin_file: str, bindings, seconds: float) -> dict:
    import tensorflow as tf
    from tf_agents.train.utils import train_utils

    from distributed_sac.builder import Builder
    from distributed_sac.runtime import cli

    builder = Builder(harness.load_config(PROGRAM, gin_file, bindings))
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
    rate, cpu_s = harness.steps_per_s(lambda: train(tf.constant(50)), seconds, per_call=50)
    return {"learner_limit": rate, "cpu_s_per_train_step": cpu_s}


def measure_baseline(gin_file: str, bindings, seconds: float, root_dir: str) -> dict:
    """The tutorial's loop as its notebook writes it, with this run's hyperparameters."""
    from benchmarks.tutorial_loop import TutorialLoop

    loop = TutorialLoop(harness.load_config(PROGRAM, gin_file, bindings), root_dir, seed=0)
    loop.collect_initial()
    loop.iterate(20)  # warm up: tracing and the first policy save
    rate, _ = harness.steps_per_s(lambda: loop.iterate(10), seconds, per_call=10)
    loop.close()
    return {"baseline_it_per_s": rate}


# ---------------------------------------------------------------- the roles as processes


def _collector_rates(
    cluster: harness.BenchCluster, tasks, since: float
) -> tuple[list[float], float | None]:
    """Each collector's env steps/s from its progress reports, and the mean policy lag."""
    rates, lags = [], []
    for task in tasks:
        reports = cluster.reports(f"collector-{task}", "collector_progress", since)
        if len(reports) < 2:
            raise RuntimeError(f"collector {task} logged under 2 progress reports in the window")
        first, last = ((r["unix_time"], r["env_steps"]) for r in (reports[0], reports[-1]))
        rates.append(per_second(first, last))
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
    poll_until(cluster.roles.check_alive, seconds, interval_s=2.0)
    return begin, {**cluster.counters(), "cpu": _role_cpu_seconds(cluster)}, start_wall


def _cpu_used(begin: dict, end: dict) -> dict[str, float]:
    """Each role's CPU seconds in the window (of the roles that ran at both its ends)."""
    return {
        role: end["cpu"][role] - begin["cpu"][role]
        for role in end["cpu"]
        if end["cpu"][role] is not None and begin["cpu"].get(role) is not None
    }


def _cpu_per_step(used: dict[str, float], roles, steps: float) -> float | None:
    """The roles' CPU seconds in the window per step (env step or train step)."""
    spent = [used[role] for role in roles if role in used]
    return sum(spent) / steps if spent and steps > 0 else None


def measure_alone(
    gin_file,
    bindings,
    num_collectors,
    seconds,
    work_dir,
    with_learner,
    replay_capacity,
    tls_dir=None,
) -> dict:
    """Collectors feeding a server with no learner, then the learner alone on what they wrote,
    both with a replay of `replay_capacity` pairs."""
    import tensorflow as tf

    from distributed_sac.builder import Builder
    from distributed_sac.tools import monitor

    capacity = f"RunConfig.replay_capacity = {replay_capacity}"
    bindings = (*bindings, *FREE_RUNNING, capacity)
    cluster = harness.BenchCluster(PROGRAM, gin_file, bindings, work_dir, tls_dir)
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


def measure_cluster(gin_file, bindings, num_collectors, seconds, work_dir, tls_dir=None) -> dict:
    """Server, learner and collectors at the config's update-to-data ratio (the collectors
    through a mutual-TLS tunnel, with `tls_dir`)."""
    from distributed_sac.tools import monitor

    cluster = harness.BenchCluster(PROGRAM, gin_file, bindings, work_dir, tls_dir)
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
        env_steps, pairs = sum(rates) * elapsed, end["inserts"] - begin["inserts"]
        server, used = monitor.rates(begin, end), _cpu_used(begin, end)
        collectors = [f"collector-{task}" for task in range(num_collectors)]
        return {
            "num_collectors": num_collectors,
            "learner_steps_per_s": server["train_steps_per_s"],
            # Each role's CPU per step in the cluster: the env's cost under the learning
            # policy's actions differs from its cost under random ones (the env limit).
            "cluster_cpu_s_per_train_step": _cpu_per_step(used, ["learner"], train_steps),
            "cluster_cpu_s_per_env_step": _cpu_per_step(used, collectors, env_steps),
            "server_cpu_s_per_pair": _cpu_per_step(used, ["replay_server"], pairs),
            "cpu_busy_fraction": sum(used.values()) / elapsed / os.cpu_count(),
            "env_steps_per_s_per_collector": rates,
            "env_steps_per_s": sum(rates),
            "inserts_per_s": server["inserts_per_s"],
            "drained_per_s": server["drained_per_s"],
            "mean_policy_lag_steps": lag,
            "tls": bool(tls_dir),
            # Both ends of the tunnel (on separate hosts, each host pays its own end).
            "tunnel_cpu_s_per_pair": _cpu_per_step(used, cluster.tunnels, pairs),
        }
    finally:
        cluster.stop_all()


# ---------------------------------------------------------------- orchestration


def _run_part(part: str, log_dir: str, **kwargs) -> dict:
    label = f"{part}{kwargs.get('num_collectors', '')}{'-tls' if kwargs.get('tls_dir') else ''}"
    print(f"... {label}", flush=True)
    return harness.run_part(PROGRAM, part, os.path.join(log_dir, f"{label}.log"), **kwargs)


PARTS = {
    "env_limit": measure_env_limit,
    "learner_limit": measure_learner_limit,
    "baseline": measure_baseline,
    "alone": measure_alone,
    "cluster": measure_cluster,
}


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
        n = run["num_collectors"]
        rows.append((f"  {n} collector(s) alone: env steps/s total", run["env_steps_per_s"]))
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
        n, tunnel_s = cost["num_collectors"], cost["tunnel_cpu_s_per_pair"]
        rows += [
            (
                f"TLS tunnel, {n} collector(s) alone: env steps/s total (vs plain)",
                [cost["alone_env_steps_per_s"], cost["alone_vs_plain"]],
            ),
            (
                f"TLS tunnel, cluster UTD 1, {n} collector(s): learner steps/s (vs plain)",
                [cost["cluster_learner_steps_per_s"], cost["cluster_vs_plain"]],
            ),
            ("  tunnel CPU ms per pair (both ends)", tunnel_s and 1000 * tunnel_s),
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
    machine = figures["machine"]
    title = f"throughput on {machine['cores']} cores, {machine['cpu_model']}, {figures['date']}"
    harness.print_table(rows, title=title)


def _parse_args():
    parser = harness.Parser(PROGRAM, __doc__, QUICK, parts=PARTS)
    parser.add_argument("--cluster_seconds", type=float, default=300, help="cluster window")
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
    args = parser.parse()
    sweep = sorted(set(harness.numbers(PROGRAM, "num_collectors", args.num_collectors, "1,2")))
    if sweep[0] < 1:
        fail(PROGRAM, "--num_collectors needs counts of at least 1")
    missing = [tool for tool in ("stunnel4", "openssl") if args.tls and not shutil.which(tool)]
    if missing:
        fail(
            PROGRAM,
            f"--tls needs {' and '.join(missing)}: apt-get install stunnel4 openssl "
            "(or source launch/common.sh && ensure_system_packages test)",
        )
    return args, sweep


def measure(args, sweep: list[int], work: str) -> dict:
    """Every part, each in its own process, one after another; their figures."""
    common = {"gin_file": args.gin_file, "bindings": args.gin_bindings}
    figures = harness.provenance(args.gin_file, args.gin_bindings)
    for part, seconds, extra in (
        ("env_limit", args.limit_seconds, {}),
        ("learner_limit", args.limit_seconds, {}),
        ("baseline", args.baseline_seconds, {"root_dir": os.path.join(work, "baseline")}),
    ):
        figures.update(_run_part(part, work, **common, seconds=seconds, **extra))
    tls_dirs = [None]
    if args.tls:
        tls_dirs.append(os.path.join(work, "certs"))
        made = run_bounded(module_command("tools.tls_certs", ["--dir", tls_dirs[1]]), 120)
        if made.returncode != 0:
            fail(PROGRAM, f"making the tunnels' certificates failed: {made.stderr.strip()}")
    phases = (
        ("alone", args.alone_seconds, "collectors_alone"),
        ("cluster", args.cluster_seconds, "cluster_runs"),
    )
    for kind, seconds, key in phases:
        # Each tunnelled phase right after its plain one: the two see the same machine.
        for tls_dir in tls_dirs:
            runs = figures[key + ("_tls" if tls_dir else "")] = []
            for n in sweep:
                part_dir = os.path.join(work, f"{kind}{n}{'-tls' if tls_dir else ''}")
                os.makedirs(part_dir)
                extra = {"num_collectors": n, "seconds": seconds, "work_dir": part_dir}
                if tls_dir:
                    extra["tls_dir"] = tls_dir
                if kind == "alone":
                    extra["with_learner"] = n == sweep[0] and not tls_dir
                    extra["replay_capacity"] = args.alone_replay_capacity
                runs.append(_run_part(kind, work, **common, **extra))
    return figures


def add_ratios(figures: dict) -> None:
    """The headline figures and their ratios to the limits and the tutorial's loop."""
    first = figures["collectors_alone"][0]
    best = max(figures["cluster_runs"], key=lambda run: run["learner_steps_per_s"])
    cores, best_rate = figures["machine"]["cores"], best["learner_steps_per_s"]
    cpu_s_per_pair = figures["cpu_s_per_env_step"] + figures["cpu_s_per_train_step"]
    figures.update(
        collector_alone_steps_per_s=first["env_steps_per_s"] / first["num_collectors"],
        **{key: first[key] for key in first if key.startswith("learner_alone_")},
        **{f"cluster_{key}": best[key] for key in CLUSTER_HEADLINES},
        machine_limit_utd1=cores / cpu_s_per_pair,
    )
    figures.update(
        collector_vs_env_limit=figures["collector_alone_steps_per_s"] / figures["env_limit"],
        learner_vs_limit=figures["learner_alone_steps_per_s"] / figures["learner_limit"],
        cluster_vs_baseline=best_rate / figures["baseline_it_per_s"],
        cluster_vs_learner_limit=best_rate / figures["learner_limit"],
        cluster_vs_machine_limit=best_rate / figures["machine_limit_utd1"],
    )
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
    args, sweep = _parse_args()
    work = tempfile.mkdtemp(prefix="throughput-")
    figures = measure(args, sweep, work)
    add_ratios(figures)
    print_table(figures)
    harness.write_figures(args.output, figures)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
