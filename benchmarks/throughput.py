"""Throughput of distributed_sac against this machine's limits and the tutorial's loop.

    .venv/bin/python benchmarks/throughput.py [--cluster_seconds 300] [--num_collectors 1,2]
                                              [--output throughput.json] [--quick]

Measures in one run, each part in a fresh process so none inherits another's threads or memory:
  env limit          raw environment steps/s, random actions, no policy, no Reverb
  learner limit      SAC train steps/s on one in-memory batch, many steps per tf.function call
  baseline           the tutorial's synchronous loop (collect 1 step, Learner.run(iterations=1),
                     in-process Reverb), iterations/s
  collectors alone   N collector processes feeding a replay server, no learner
  learner alone      the learner process on a table the collectors filled
  cluster            replay server + learner + N collectors at update-to-data ratio 1
Prints a table and writes the figures as JSON (--output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MINITAUR_GIN = os.path.join(REPO, "gin", "minitaur.gin")
SMOKE_GIN = os.path.join(REPO, "gin", "smoke.gin")
# Alone-phases run free (no ratio limiter) and start acting with the policy early.
FREE_RUNNING = ("RunConfig.updates_per_env_step = None", "RunConfig.initial_collect_steps = 1000")


def _gin_args(gin_file: str, bindings) -> list[str]:
    args = ["--gin_file", gin_file]
    for binding in bindings:
        args += ["--gin_bindings", binding]
    return args


def _load(gin_file: str, bindings=()):
    from distributed_sac.config import load_gin

    return load_gin([gin_file], list(bindings))


# ---------------------------------------------------------------- in-process measurements


def measure_env_limit(gin_file: str, bindings, seconds: float) -> dict:
    import numpy as np

    from distributed_sac.builder import Builder

    env = Builder(_load(gin_file, bindings)).make_env(seed=0)
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    env.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype))
        steps += 1
    return {"env_limit": steps / (time.perf_counter() - start)}


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

    builder = Builder(_load(gin_file, bindings))
    agent = builder.make_agent(train_utils.create_train_step())
    batch = _random_batch(builder, builder.config.batch_size)

    @tf.function
    def train(iterations):
        loss = tf.constant(0.0)
        for _ in tf.range(iterations):
            loss = agent.train(batch).loss
        return loss

    train(tf.constant(10))  # trace and warm up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        train(tf.constant(50))
        steps += 50
    return {"learner_limit": steps / (time.perf_counter() - start)}


def measure_baseline(gin_file: str, bindings, seconds: float, root_dir: str) -> dict:
    """The tutorial's loop as its notebook writes it, with this run's hyperparameters."""
    import reverb
    from tf_agents.metrics import py_metrics
    from tf_agents.policies import py_tf_eager_policy, random_py_policy
    from tf_agents.replay_buffers import reverb_replay_buffer, reverb_utils
    from tf_agents.train import actor, learner, triggers
    from tf_agents.train.utils import train_utils

    from distributed_sac.builder import Builder

    config = _load(gin_file, bindings)
    builder = Builder(config)
    collect_env = builder.make_env(seed=0)
    train_step = train_utils.create_train_step()
    tf_agent = builder.make_agent(train_step)

    table = reverb.Table(
        "uniform_table",
        max_size=config.replay_capacity,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    reverb_server = reverb.Server([table])
    reverb_replay = reverb_replay_buffer.ReverbReplayBuffer(
        tf_agent.collect_data_spec,
        sequence_length=2,
        table_name="uniform_table",
        local_server=reverb_server,
    )
    dataset = reverb_replay.as_dataset(sample_batch_size=config.batch_size, num_steps=2).prefetch(
        50
    )
    collect_policy = py_tf_eager_policy.PyTFEagerPolicy(
        tf_agent.collect_policy, use_tf_function=True
    )
    random_policy = random_py_policy.RandomPyPolicy(
        collect_env.time_step_spec(), collect_env.action_spec()
    )
    rb_observer = reverb_utils.ReverbAddTrajectoryObserver(
        reverb_replay.py_client, "uniform_table", sequence_length=2, stride_length=1
    )
    actor.Actor(
        collect_env,
        random_policy,
        train_step,
        steps_per_run=config.initial_collect_steps,
        observers=[rb_observer],
    ).run()
    env_step_metric = py_metrics.EnvironmentSteps()
    collect_actor = actor.Actor(
        collect_env,
        collect_policy,
        train_step,
        steps_per_run=1,
        metrics=actor.collect_metrics(10),
        summary_dir=os.path.join(root_dir, learner.TRAIN_DIR),
        observers=[rb_observer, env_step_metric],
    )
    agent_learner = learner.Learner(
        root_dir,
        train_step,
        tf_agent,
        lambda: dataset,
        triggers=[
            triggers.PolicySavedModelTrigger(
                os.path.join(root_dir, learner.POLICY_SAVED_MODEL_DIR),
                tf_agent,
                train_step,
                interval=config.policy_save_interval,
            ),
            triggers.StepPerSecondLogTrigger(train_step, interval=1000),
        ],
    )

    def iterate(count: int) -> None:
        for _ in range(count):
            collect_actor.run()
            agent_learner.run(iterations=1)

    iterate(20)  # warm up: tracing and the first policy save
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        iterate(10)
        iterations += 10
    elapsed = time.perf_counter() - start
    rb_observer.close()
    reverb_server.stop()
    return {"baseline_it_per_s": iterations / elapsed}


# ---------------------------------------------------------------- the roles as processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """Role processes on 127.0.0.1 with logs in a folder; stops them all on exit."""

    def __init__(self, gin_file: str, bindings, work_dir: str):
        self.gin_args = _gin_args(gin_file, bindings)
        self.config = _load(gin_file, bindings)
        self.work_dir = work_dir
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self._client = None

    def start(self, name: str, module: str, *args: str) -> None:
        log = open(os.path.join(self.work_dir, f"{name}.log"), "wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"distributed_sac.{module}", *self.gin_args, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    def start_server(self) -> None:
        self.start("replay_server", "replay_server", "--port", str(self.port))
        from distributed_sac import replay

        self._client = replay.connect(self.address, timeout_s=120)

    def start_collector(self, task: int) -> None:
        self.start(
            f"collector{task}",
            "collector",
            "--replay_server_address",
            self.address,
            "--task",
            str(task),
        )

    def start_learner(self) -> None:
        root_dir = os.path.join(self.work_dir, "learner_root")
        self.start(
            "learner", "learner", "--replay_server_address", self.address, "--root_dir", root_dir
        )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = os.path.join(self.work_dir, f"{name}.log")
                raise RuntimeError(f"{name} exited with code {process.returncode}; see {log}")

    def table(self, name: str = "uniform_table"):
        return self._client.server_info(timeout=30)[name]

    def counters(self) -> dict:
        """Items inserted and sampled so far, and the train step of the newest pushed weights."""
        from distributed_sac import monitor

        return monitor.server_counters(self._client)

    def wait_until(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(0.5)

    def collector_reports(self, task: int, since: float) -> list[dict]:
        from distributed_sac import monitor

        path = os.path.join(self.work_dir, f"collector{task}.log")
        reports = monitor.read_reports(path, "collector_progress")
        return [report for _, report in reports if report["unix_time"] >= since]


def _collector_rates(cluster: Cluster, tasks, since: float) -> tuple[list[float], float | None]:
    """Each collector's env steps/s from its progress reports, and the mean policy lag."""
    rates, lags = [], []
    for task in tasks:
        reports = cluster.collector_reports(task, since)
        if len(reports) < 2:
            raise RuntimeError(f"collector {task} logged under 2 progress reports in the window")
        first, last = reports[0], reports[-1]
        rates.append(
            (last["env_steps"] - first["env_steps"]) / (last["unix_time"] - first["unix_time"])
        )
        lags += [r["policy_lag"] for r in reports[1:] if r.get("policy_lag") is not None]
    return rates, (sum(lags) / len(lags) if lags else None)


def _window(cluster: Cluster, seconds: float) -> tuple[dict, dict, float]:
    start_wall = time.time()
    begin = cluster.counters()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        cluster.check_alive()
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return begin, cluster.counters(), start_wall


def measure_alone(
    gin_file: str, bindings, num_collectors: int, seconds: float, work_dir: str, with_learner: bool
) -> dict:
    """Collectors feeding a server with no learner, then the learner alone on that table."""
    import tensorflow as tf

    from distributed_sac import replay
    from distributed_sac.builder import Builder

    cluster = Cluster(gin_file, (*bindings, *FREE_RUNNING), work_dir)
    try:
        cluster.start_server()
        # Collectors act with the policy once weights exist: push initial ones as a learner would.
        policy = Builder(cluster.config).make_policy()
        replay.WeightClient(
            cluster._client, policy.variables(), tf.Variable(0, dtype=tf.int64)
        ).push()
        for task in range(num_collectors):
            cluster.start_collector(task)
        initial = cluster.config.initial_collect_steps
        cluster.wait_until(
            lambda: cluster.table().current_size >= initial + 200 * num_collectors,
            600,
            "the collectors to finish their random steps",
        )
        begin, end, since = _window(cluster, seconds)
        rates, _ = _collector_rates(cluster, range(num_collectors), since)
        result = {
            "num_collectors": num_collectors,
            "env_steps_per_s_per_collector": rates,
            "env_steps_per_s": sum(rates),
            "inserts_per_s": (end["inserts"] - begin["inserts"]) / (end["time"] - begin["time"]),
        }
        for task in range(num_collectors):
            cluster.stop(f"collector{task}")
        if not with_learner:
            return result
        # The table is full of this run's experience: now the learner, with nothing competing.
        cluster.start_learner()
        cluster.wait_until(
            lambda: (cluster.counters()["train_step"] or 0) >= 200, 600, "the learner to train"
        )
        begin, end, _ = _window(cluster, seconds)
        result["learner_alone_steps_per_s"] = (end["train_step"] - begin["train_step"]) / (
            end["time"] - begin["time"]
        )
        result["learner_alone_samples_per_s"] = (end["samples"] - begin["samples"]) / (
            end["time"] - begin["time"]
        )
        return result
    finally:
        cluster.stop_all()


def measure_cluster(
    gin_file: str, bindings, num_collectors: int, seconds: float, work_dir: str
) -> dict:
    """Server, learner and collectors at the config's update-to-data ratio."""
    cluster = Cluster(gin_file, bindings, work_dir)
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
        return {
            "num_collectors": num_collectors,
            "learner_steps_per_s": (end["train_step"] - begin["train_step"]) / elapsed,
            "env_steps_per_s_per_collector": rates,
            "env_steps_per_s": sum(rates),
            "inserts_per_s": (end["inserts"] - begin["inserts"]) / elapsed,
            "samples_per_s": (end["samples"] - begin["samples"]) / elapsed,
            "mean_policy_lag_steps": lag,
        }
    finally:
        cluster.stop_all()


# ---------------------------------------------------------------- orchestration


def _run_part(part: str, **kwargs) -> dict:
    """Runs one measurement in a fresh Python process and returns its figures."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--part",
        part,
        "--part_args",
        json.dumps(kwargs),
    ]
    print(f"... {part} {kwargs.get('num_collectors', '')}".rstrip(), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise SystemExit(
            f"throughput: error: part {part} failed (exit {result.returncode}):\n{tail}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


PARTS = {
    "env_limit": measure_env_limit,
    "learner_limit": measure_learner_limit,
    "baseline": measure_baseline,
    "alone": measure_alone,
    "cluster": measure_cluster,
}


def _machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


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
        ("collector alone (env steps/s)", figures["collector_alone_steps_per_s"]),
        ("learner alone (train steps/s)", figures["learner_alone_steps_per_s"]),
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
            ("  inserts/s, samples/s (server)", [run["inserts_per_s"], run["samples_per_s"]]),
            ("  mean policy lag (train steps)", run["mean_policy_lag_steps"]),
        ]
    rows += [
        ("collector_vs_env_limit (target >= 0.85)", figures["collector_vs_env_limit"]),
        ("learner_vs_limit (target >= 0.85)", figures["learner_vs_limit"]),
        ("cluster_vs_baseline (target >= 2.5)", figures["cluster_vs_baseline"]),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", default=MINITAUR_GIN)
    parser.add_argument("--gin_binding", action="append", default=[])
    parser.add_argument(
        "--cluster_seconds", type=float, default=300, help="cluster window, seconds"
    )
    parser.add_argument("--alone_seconds", type=float, default=60, help="alone-phase window")
    parser.add_argument("--limit_seconds", type=float, default=30, help="env/learner limit window")
    parser.add_argument("--baseline_seconds", type=float, default=120)
    parser.add_argument("--num_collectors", default="1,2", help="comma-separated sweep")
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny run on gin/smoke.gin (tests)")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--part_args", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:  # a child process measuring one part
        print("RESULT " + json.dumps(PARTS[args.part](**json.loads(args.part_args))), flush=True)
        return

    try:
        sweep = sorted({int(n) for n in args.num_collectors.split(",")})
    except ValueError:
        raise SystemExit(
            f"throughput: error: --num_collectors must be like 1,2; got {args.num_collectors!r}"
        ) from None
    if not sweep or sweep[0] < 1:
        raise SystemExit("throughput: error: --num_collectors needs counts of at least 1")
    if args.output and not os.access(os.path.dirname(os.path.abspath(args.output)), os.W_OK):
        raise SystemExit(f"throughput: error: cannot write --output {args.output}")
    gin_file, bindings = args.gin_file, list(args.gin_binding)
    if args.quick:
        gin_file = SMOKE_GIN
        bindings += ["RunConfig.num_iterations = 100000", "RunConfig.updates_per_env_step = 1.0"]
        args.cluster_seconds = args.alone_seconds = args.limit_seconds = 4
        args.baseline_seconds = 4
    if not os.path.isfile(gin_file):
        raise SystemExit(f"throughput: error: gin file not found: {gin_file}")
    # Bad bindings fail here, in one line, before anything starts.
    from distributed_sac.config import UserError

    try:
        _load(gin_file, bindings)
    except UserError as error:
        raise SystemExit(f"throughput: error: {error}") from None

    work = tempfile.mkdtemp(prefix="throughput-")
    figures = {"machine": _machine(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    common = {"gin_file": gin_file, "bindings": bindings}
    figures.update(_run_part("env_limit", **common, seconds=args.limit_seconds))
    figures.update(_run_part("learner_limit", **common, seconds=args.limit_seconds))
    baseline_dir = os.path.join(work, "baseline")
    figures.update(
        _run_part("baseline", **common, seconds=args.baseline_seconds, root_dir=baseline_dir)
    )
    figures["collectors_alone"], figures["cluster_runs"] = [], []
    for n in sweep:
        part_dir = os.path.join(work, f"alone{n}")
        os.makedirs(part_dir)
        run = _run_part(
            "alone",
            **common,
            num_collectors=n,
            seconds=args.alone_seconds,
            work_dir=part_dir,
            with_learner=n == sweep[0],
        )
        figures["collectors_alone"].append(run)
    for n in sweep:
        part_dir = os.path.join(work, f"cluster{n}")
        os.makedirs(part_dir)
        run = _run_part(
            "cluster", **common, num_collectors=n, seconds=args.cluster_seconds, work_dir=part_dir
        )
        figures["cluster_runs"].append(run)

    first_alone = figures["collectors_alone"][0]
    best = max(figures["cluster_runs"], key=lambda run: run["learner_steps_per_s"])
    figures.update(
        collector_alone_steps_per_s=first_alone["env_steps_per_s"] / first_alone["num_collectors"],
        learner_alone_steps_per_s=first_alone["learner_alone_steps_per_s"],
        cluster_num_collectors=best["num_collectors"],
        cluster_learner_steps_per_s=best["learner_steps_per_s"],
        cluster_env_steps_per_s=best["env_steps_per_s"],
        cluster_inserts_per_s=best["inserts_per_s"],
        cluster_samples_per_s=best["samples_per_s"],
        cluster_mean_policy_lag_steps=best["mean_policy_lag_steps"],
    )
    figures["collector_vs_env_limit"] = (
        figures["collector_alone_steps_per_s"] / figures["env_limit"]
    )
    figures["learner_vs_limit"] = figures["learner_alone_steps_per_s"] / figures["learner_limit"]
    figures["cluster_vs_baseline"] = best["learner_steps_per_s"] / figures["baseline_it_per_s"]
    cores = figures["machine"]["cores"]
    figures["collection_scaling"] = [
        {
            "num_collectors": run["num_collectors"],
            "cores": min(run["num_collectors"], cores),
            "ratio": run["env_steps_per_s"]
            / (figures["env_limit"] * min(run["num_collectors"], cores)),
        }
        for run in figures["collectors_alone"]
    ]
    print_table(figures)
    if args.output:
        with open(args.output, "w") as out:
            json.dump(figures, out, indent=2)
        print(f"figures written to {args.output}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
