"""`python -m distributed_sac.tools.status`: one screen on a running cluster.

Reads the replay server (table sizes, insert and drain rates, the learner's train step from the
pushed weights, the effective update-to-data ratio: with --root_dir over the whole run, from
the learner's checkpointed counters) and, with --root_dir, the roles' logs (the learner's
counters, each collector's policy step and lag) and the last evaluation. --watch redraws it
until Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
import time

import reverb
from absl import flags, logging

from distributed_sac import reports
from distributed_sac.acting import best_policy, evaluation
from distributed_sac.errors import CallAbandoned, UserError
from distributed_sac.layout import RunDir
from distributed_sac.replay.connection import BoundedCall, Reconnecting, abandon_calls, connect
from distributed_sac.replay.tables import EXPERIENCE_TABLE
from distributed_sac.runtime import cli
from distributed_sac.runtime.addresses import check_address
from distributed_sac.runtime.stopping import StopRequest
from distributed_sac.tools import monitor

flags.DEFINE_bool("watch", False, "Redraw every --interval_s seconds until Ctrl-C.")
flags.DEFINE_float("interval_s", 2.0, "Seconds over which rates are measured, and between redraws.")
flags.DEFINE_float("timeout_s", 10.0, "How long to try reaching the replay server.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class ServerParts:
    """What `status` reads the server through: a client, and a bound on each call."""

    client: reverb.Client
    bounded: BoundedCall


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ago(unix_time: float) -> str:
    return f"{max(0.0, time.time() - unix_time):.0f}s ago"


def collectors_lines(root_dir: str) -> list[str]:
    """One line per collector log under <root_dir>/logs: its latest progress report."""
    lines = []
    for path in sorted(glob.glob(os.path.join(RunDir(root_dir).logs, "collector-*.log"))):
        found = reports.read_reports(path, "collector_progress", "collector_done")
        name = os.path.basename(path)[: -len(".log")]
        if not found:
            lines.append(f"  {name}: no progress yet")
            continue
        event, last = found[-1]
        state = "done" if event == "collector_done" else _ago(last["unix_time"])
        policy_train_step = last.get("policy_train_step", last.get("last_policy_train_step"))
        lines.append(
            f"  {name}: env_steps {last['env_steps']:,}  policy train step {policy_train_step}  "
            f"lag {_fmt(last.get('policy_lag'))}  "
            f"{_fmt(last.get('env_steps_per_s'))} env steps/s  ({state})"
        )
    return lines


# The learner's reports that carry its replay's counters (LearnerReplay.figures).
_LEARNER_COUNTER_REPORTS = (
    "learner_start",
    "learner_progress",
    "learner_checkpoint",
    "learner_done",
)


def learner_counters(root_dir: str) -> dict | None:
    """The learner's newest train step and replay counters, from its log: they go into its
    checkpoints, so they hold across restarts of the learner and the server (the server's own
    counters go back to its checkpoint's, or to 0 without one, while the train step does not).
    None before its first report."""
    found = reports.read_reports(RunDir(root_dir).log("learner"), *_LEARNER_COUNTER_REPORTS)
    found = [fields for _, fields in found if "pairs_drained" in fields]
    return found[-1] if found else None


def pairs_line(learner: dict) -> str:
    """What reached the learner's replay, and what never did (see pair_ledger)."""
    return (
        f"  pairs in the learner's replay: {learner['pairs_drained']:,} taken, "
        f"{learner.get('pairs_lost', 0):,} never reached it, "
        f"{learner.get('pairs_duplicate', 0):,} handed out again and skipped"
    )


def replay_checkpoint_line(root_dir: str) -> str:
    """The replay server's newest checkpoint: when, how long it took, and the cadence (inserts
    and samples stall for part of it: docs/endurance.md)."""
    run_dir = RunDir(root_dir)
    interval = monitor.operative_value(run_dir.operative_config, "replay_checkpoint_interval_s")
    cadence = "only at exit" if interval == 0 else f"every {_fmt(interval, 0)} s and at exit"
    events = reports.read_reports(
        run_dir.log("replay_server"), "replay_checkpoint", "replay_checkpoint_failed"
    )
    saved = [fields for event, fields in events if event == "replay_checkpoint"]
    # The failures since the newest checkpoint written (a full disk: the server serves on).
    failed = []
    for event, fields in events:
        failed = failed + [fields] if event == "replay_checkpoint_failed" else []
    failures = f"; {len(failed)} failed since, the last: {failed[-1]['error']}" if failed else ""
    if not saved:
        return f"replay checkpoint: none yet ({cadence}){failures}"
    last = saved[-1]
    items = last["table_sizes"].get(EXPERIENCE_TABLE, 0)
    return (
        f"replay checkpoint: {items:,} items in {last['seconds']:.1f} s, "
        f"{_ago(last['unix_time'])} ({cadence}){failures}"
    )


def dropped_pairs_line(root_dir: str) -> str:
    """The pairs the learner refused for holding NaN or inf, over every learner of the run (each
    refusal is a report in its log; a restarted learner counts from 0 again)."""
    dropped = reports.read_reports(RunDir(root_dir).log("learner"), "learner_dropped_pairs")
    total = sum(fields["count"] for _, fields in dropped)
    last = f" (last {_ago(dropped[-1][1]['unix_time'])})" if dropped else ""
    return f"learner: {total:,} pairs dropped for NaN or inf{last}"


def render(address: str, before: dict, after: dict, root_dir: str | None) -> str:
    rates = monitor.rates(before, after)
    sizes, capacities = after["table_sizes"], after["table_capacities"]
    tables = ", ".join(f"{name} {sizes[name]:,}/{capacities[name]:,}" for name in sorted(sizes))
    train_step = after["train_step"]
    initial = None
    if root_dir is not None:
        initial = monitor.operative_value(
            RunDir(root_dir).operative_config, "initial_collect_steps"
        )
    learner = learner_counters(root_dir) if root_dir is not None else None
    run_ratio = None
    if learner is not None and initial is not None and learner["pairs_drained"] > initial:
        run_ratio = learner["train_step"] / (learner["pairs_drained"] - initial)
    if run_ratio is not None:
        utd = (
            f"{run_ratio:.3f} train steps per inserted item over the run (the learner's "
            f"counters at train step {learner['train_step']})"
        )
    else:
        utd = (
            f"{_fmt(rates['updates_per_insert'], 2)} train steps per inserted item over "
            f"{after['time'] - before['time']:.1f}s (coarse: the train step moves in pushes"
            + ("; --root_dir gives the run's figure)" if root_dir is None else ")")
        )
    lines = [
        f"replay server {address} (rates over {after['time'] - before['time']:.1f}s)",
        f"  tables: {tables}",
        f"  inserts/s {_fmt(rates['inserts_per_s'])}   drained by the learner/s "
        f"{_fmt(rates['drained_per_s'])}",
        f"learner: train_step {'- (no weights pushed yet)' if train_step is None else train_step}"
        f"   steps/s {_fmt(rates['train_steps_per_s'])}   effective UTD {utd}",
    ]
    if learner is not None:
        lines.append(pairs_line(learner))
    if root_dir is not None:
        lines.append(dropped_pairs_line(root_dir))
        lines.append(f"collectors (from {RunDir(root_dir).logs}):")
        lines += collectors_lines(root_dir) or ["  no collector logs"]
        evaluations, _ = evaluation.read_evaluations(RunDir(root_dir).metrics)
        if evaluations:
            last = evaluations[-1]
            lines.append(
                f"last evaluation: train_step {last['train_step']}  AverageReturn "
                f"{last['AverageReturn']:.3f}  AverageEpisodeLength "
                f"{last['AverageEpisodeLength']:.1f}  ({_ago(last['wall_time'])})"
            )
        else:
            lines.append("last evaluation: none yet")
        lines.append(replay_checkpoint_line(root_dir))
        best = best_policy.read_record(RunDir(root_dir).best_greedy_policy)
        if best is not None:
            lines.append(
                f"best policy: {best_policy.describe(best)} ({RunDir(root_dir).best_greedy_policy})"
            )
    return "\n".join(lines)


def main() -> None:
    root_dir = FLAGS.root_dir
    if root_dir is not None and not os.path.isdir(root_dir):
        raise UserError(f"--root_dir {root_dir} is not a directory")
    if FLAGS.interval_s <= 0:
        raise UserError("--interval_s must be positive")
    run_dir = None if root_dir is None else RunDir(root_dir)
    logging.set_verbosity(logging.ERROR)  # connect()'s retry warnings; the error says it all
    address = check_address(FLAGS.replay_server_address, "--replay_server_address")
    # Ctrl-C (or SIGTERM, SIGHUP) sets a flag that the loop reads, instead of raising
    # KeyboardInterrupt wherever the main thread happens to be (in a lock, a hand-off to a call's
    # thread, a print): `status --watch` was once seen still alive 30 s after its SIGINT. A call
    # or connect waiting on the server gives up after a second.
    stop = StopRequest(on_request=abandon_calls)

    def counters(parts: ServerParts):
        timeout_s = max(1, int(FLAGS.timeout_s))
        return parts.bounded(monitor.server_counters, parts.client, timeout_s, run_dir)

    try:
        # A server that goes away or stops answering is waited for up to --timeout_s, then a
        # one-line error.
        server = Reconnecting(
            "status",
            lambda: ServerParts(
                client=connect(address, FLAGS.timeout_s),
                bounded=BoundedCall("status", FLAGS.timeout_s),
            ),
        )
        before = server.call(counters)
        while not stop.wait(FLAGS.interval_s):
            after = server.call(counters)
            screen = render(address, before, after, root_dir)
            if not FLAGS.watch:
                print(screen, flush=True)
                return
            clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
            print(f"{clear}{time.strftime('%H:%M:%S')}  {screen}\n", flush=True)
            before = after
    except CallAbandoned:  # Ctrl-C while the server did not answer
        return


def run() -> None:
    cli.run_role("status", main)


if __name__ == "__main__":
    run()
