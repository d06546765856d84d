"""A big experience table: the replay server's memory when full, and what its checkpoint costs.

    .venv/bin/python -m benchmarks.big_table --capacity 1000000 --output docs/big_table.json \\
        [--root_dir /var/tmp/runs/big_table]
    .venv/bin/python -m benchmarks.big_table --quick    # 20 000 items: the plumbing

The replay server role with a run directory and RunConfig.replay_capacity = --capacity, filled
with pairs of the config's shape (random values, which compress no better than real ones: the
memory is an upper bound). Measured: its RSS empty and full and the fill rate; a checkpoint
written while one client inserts and another samples, one item per call (its seconds, its size
on disk, the longest insert and sample before, during and after it); SIGTERM to exit, with the
last checkpoint; a restart on that checkpoint (start to ready, items restored, RSS).
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import threading
import time

from benchmarks import harness
from benchmarks.harness import fail
from distributed_sac.runtime import processes
from distributed_sac.runtime.processes import Process, free_port, gin_flags
from distributed_sac.runtime.waits import poll_until

PROGRAM = "big_table"
FILL_CHUNK = 1000  # distinct random pairs, written over and over
FLUSH_EVERY = 50
TRAFFIC_S = 5.0  # seconds of inserts and samples before and after the checkpoint


def disk_mb(path: str) -> float:
    total = 0
    for parent, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(parent, name)) for name in files)
    return total / 2**20


class Server:
    """The replay server role with a run directory, and a client on it."""

    def __init__(self, args, root_dir: str, log_name: str, timeout_s: float = 1800):
        import reverb

        port = free_port()
        role_args = gin_flags([args.gin_file], args.bindings)
        role_args += ["--port", str(port), "--root_dir", root_dir]
        self.log = os.path.join(root_dir, f"{log_name}.log")
        started = time.monotonic()
        self.process = Process.module("roles.replay_server", role_args, self.log)

        def ready() -> list:
            found = self.process.new_reports("replay_server_ready")
            if not found and self.process.poll() is not None:
                fail(PROGRAM, f"replay server exited: {self.process.failure() or self.log}")
            return found

        if not poll_until(ready, timeout_s, interval_s=0.1):
            fail(PROGRAM, f"replay server not ready after {timeout_s:.0f} s ({self.log})")
        self.ready_s = time.monotonic() - started
        self.client = reverb.Client(f"localhost:{port}")

    def usage(self) -> dict:
        return processes.usage(self.process.pid)

    def size(self) -> int:
        from distributed_sac.replay import tables

        return tables.table_sizes(self.client)[tables.EXPERIENCE_TABLE]

    def stop(self) -> float:
        """SIGTERM; seconds until it exited (after its last checkpoint)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=1800)
        if code != 0:
            fail(PROGRAM, f"replay server exited with {code} on SIGTERM ({self.log})")
        return time.monotonic() - started


def random_pairs(shape) -> list:
    import numpy as np

    generator = np.random.default_rng(0)
    return [generator.standard_normal(shape).astype(np.float32) for _ in range(FILL_CHUNK)]


def fill(server: Server, shape, count: int) -> float:
    """Writes `count` pairs into the experience table; pairs per second."""
    from distributed_sac.replay import tables
    from distributed_sac.replay.transitions import PAIR_COLUMN

    pairs = random_pairs(shape)
    started = time.monotonic()
    with server.client.trajectory_writer(num_keep_alive_refs=1) as writer:
        for index in range(count):
            writer.append({PAIR_COLUMN: pairs[index % FILL_CHUNK]})
            item = {PAIR_COLUMN: writer.history[PAIR_COLUMN][-1]}
            writer.create_item(tables.EXPERIENCE_TABLE, priority=1.0, trajectory=item)
            if index % FLUSH_EVERY == FLUSH_EVERY - 1:
                # Reverb warns of more than ~100 unconfirmed items as a likely leak.
                writer.flush(FLUSH_EVERY)
        writer.flush()
    return count / (time.monotonic() - started)


class Traffic:
    """One thread inserting and one sampling, one item per call, each call's latency recorded
    with the time it ended."""

    def __init__(self, server: Server, shape):
        self._server, self._pairs = server, random_pairs(shape)[:10]
        self._stop = threading.Event()
        self.inserts: list[tuple[float, float]] = []  # (end time, seconds)
        self.samples: list[tuple[float, float]] = []
        self._threads = [
            threading.Thread(target=self._insert, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)

    def _insert(self) -> None:
        from distributed_sac.replay import tables
        from distributed_sac.replay.transitions import PAIR_COLUMN

        with self._server.client.trajectory_writer(num_keep_alive_refs=1) as writer:
            index = 0
            while not self._stop.is_set():
                started = time.monotonic()
                writer.append({PAIR_COLUMN: self._pairs[index % len(self._pairs)]})
                item = {PAIR_COLUMN: writer.history[PAIR_COLUMN][-1]}
                writer.create_item(tables.EXPERIENCE_TABLE, priority=1.0, trajectory=item)
                writer.flush()
                now = time.monotonic()
                self.inserts.append((now, now - started))
                index += 1

    def _sample(self) -> None:
        from distributed_sac.replay import tables

        while not self._stop.is_set():
            started = time.monotonic()
            next(iter(self._server.client.sample(tables.EXPERIENCE_TABLE, num_samples=1)))
            now = time.monotonic()
            self.samples.append((now, now - started))


def latencies(calls: list[tuple[float, float]], begin: float, end: float) -> dict:
    """Calls that were under way in [begin, end]: how many, the median and longest, ms."""
    within = sorted(s for t, s in calls if t >= begin and t - s <= end)
    if not within:
        return {"calls": 0, "median_ms": None, "max_ms": None}
    return {
        "calls": len(within),
        "median_ms": round(statistics.median(within) * 1000, 2),
        "max_ms": round(within[-1] * 1000, 1),
    }


def run(args) -> dict:
    from distributed_sac.builder import Builder
    from distributed_sac.replay import tables
    from distributed_sac.replay.transitions import PAIR_COLUMN

    config = harness.load_config(PROGRAM, args.gin_file, args.bindings)
    shape = Builder(config).signatures()[tables.EXPERIENCE_TABLE][PAIR_COLUMN].shape.as_list()
    root_dir = args.root_dir
    os.makedirs(root_dir, exist_ok=True)
    result = {"capacity": args.capacity, "pair_shape": list(shape)}

    server = Server(args, root_dir, "replay_server")
    try:
        result["empty_start_s"] = round(server.ready_s, 2)
        result["rss_mb_empty"] = round(server.usage()["rss_mb"], 1)
        print(f"{PROGRAM}: filling {args.capacity:,} pairs of shape {list(shape)}", flush=True)
        result["fill_pairs_per_s"] = round(fill(server, shape, args.capacity))
        result["items_full"] = server.size()
        result["rss_mb_full"] = round(server.usage()["rss_mb"], 1)
        print(f"{PROGRAM}: full, RSS {result['rss_mb_full']:.0f} MiB; checkpointing", flush=True)
        with Traffic(server, shape) as traffic:
            time.sleep(TRAFFIC_S)
            begin = time.monotonic()
            server.client.checkpoint()
            end = time.monotonic()
            time.sleep(TRAFFIC_S)
        result["checkpoint_s"] = round(end - begin, 2)
        result["checkpoint_mb_on_disk"] = round(disk_mb(os.path.join(root_dir, "reverb")), 1)
        windows = {"before": (begin - TRAFFIC_S, begin), "during": (begin, end)}
        windows["after"] = (end, end + TRAFFIC_S)
        for kind in ("inserts", "samples"):
            calls = getattr(traffic, kind)
            result[kind] = {phase: latencies(calls, *window) for phase, window in windows.items()}
        result["rss_mb_after_checkpoint"] = round(server.usage()["rss_mb"], 1)
        print(f"{PROGRAM}: checkpoint took {result['checkpoint_s']} s; stopping", flush=True)
        result["sigterm_to_exit_s"] = round(server.stop(), 2)
    finally:
        server.process.send_signal(signal.SIGKILL)
    restarted = Server(args, root_dir, "replay_server_restored")
    try:
        result["restored_start_s"] = round(restarted.ready_s, 2)
        result["items_restored"] = restarted.size()
        result["rss_mb_restored"] = round(restarted.usage()["rss_mb"], 1)
    finally:
        restarted.process.send_signal(signal.SIGKILL)
        restarted.process.wait(timeout=60)
    return result


def print_table(result: dict) -> None:
    rows = [
        ("server RSS empty / full (MiB)", f"{result['rss_mb_empty']} / {result['rss_mb_full']}"),
        ("fill rate (pairs/s, one writer)", f"{result['fill_pairs_per_s']:,}"),
        (
            "checkpoint write (s), size on disk (MiB)",
            f"{result['checkpoint_s']}, {result['checkpoint_mb_on_disk']}",
        ),
    ]
    for kind in ("inserts", "samples"):
        phases = result[kind]
        rows.append(
            (
                f"longest {kind[:-1]} before / during / after (ms)",
                " / ".join(str(phases[p]["max_ms"]) for p in ("before", "during", "after"))
                + f"  (median before {phases['before']['median_ms']} ms)",
            )
        )
    rows.append(("SIGTERM to exit, with its last checkpoint (s)", result["sigterm_to_exit_s"]))
    title = f"experience table of {result['capacity']:,} pairs {result['pair_shape']}"
    harness.print_table(rows, title=title)
    print(
        f"start to ready: empty {result['empty_start_s']} s, restoring "
        f"{result['items_restored']:,} items {result['restored_start_s']} s, RSS "
        f"{result['rss_mb_restored']} MiB"
    )


def main() -> None:
    parser = harness.Parser(PROGRAM, __doc__, {"capacity": 20_000}, root_dir=True)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    args = parser.parse()
    if args.capacity < FILL_CHUNK:
        fail(PROGRAM, f"--capacity must be at least {FILL_CHUNK}")
    args.bindings = [
        *args.gin_bindings,
        f"RunConfig.replay_capacity = {args.capacity}",
        "RunConfig.replay_checkpoint_interval_s = 0",  # only the checkpoints measured here
    ]
    args.root_dir = os.path.abspath(args.root_dir or tempfile.mkdtemp(prefix="big-table-"))
    # An empty run of its own: a checkpoint left from before would be restored.
    if os.path.exists(args.root_dir) and os.listdir(args.root_dir):
        fail(PROGRAM, f"--root_dir {args.root_dir} is not empty")
    harness.load_config(PROGRAM, args.gin_file, args.bindings)
    result = run(args)
    result.update(harness.provenance(args.gin_file, args.gin_bindings))
    print_table(result)
    harness.write_figures(args.output, result)


if __name__ == "__main__":
    main()
