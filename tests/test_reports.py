"""Report lines and what the launcher says about a dead process (no processes needed)."""

from __future__ import annotations

import signal
import time

from distributed_sac.reports import ReportTail, failure_line, parse_reports, seconds_since, timed
from distributed_sac.runtime import rates
from distributed_sac.runtime.processes import describe_exit

TRACEBACK = """I1125 10:00:00.000 learner.py:10] learner_start {"train_step": 0}
Traceback (most recent call last):
  File "/x/learner.py", line 3, in main
    raise RuntimeError("boom")
RuntimeError: Socket closed
I1125 10:00:01.000 signature_serialization.py:156] Function contains input name(s) x
"""


def test_failure_line_prefers_the_one_line_error_then_the_traceback():
    text = "I1125 starting\nlearner: error: checkpoint x does not match this config\n"
    assert failure_line(text, "learner") == (
        "learner: error: checkpoint x does not match this config"
    )
    # Not the INFO line logged after it: the exception line of the last traceback.
    assert failure_line(TRACEBACK, "learner") == "RuntimeError: Socket closed"
    # A process killed by a signal wrote no error: nothing to quote (its INFO lines are not one).
    assert failure_line("I1125 one\nI1125 two\n", "learner") is None
    assert failure_line("", "learner") is None


def test_exit_codes_and_signals_are_described():
    assert describe_exit(1) == "code 1"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "signal SIGTERM"


def test_report_tail_reads_complete_lines_once(tmp_path):
    log = tmp_path / "role.log"
    log.write_text('I1 learner_progress {"train_step": 1}\nI2 learner_progress {"train')
    tail = ReportTail(str(log))
    assert tail.new_reports("learner_progress") == [("learner_progress", {"train_step": 1})]
    with open(log, "a") as f:
        f.write('_step": 2}\n')
    assert tail.new_reports("learner_progress") == [("learner_progress", {"train_step": 2})]
    assert tail.new_reports("learner_progress") == []
    assert parse_reports(log.read_text(), "learner_done") == []


def test_timed_gives_the_result_and_the_seconds_it_took():
    result, seconds = timed(lambda x: time.sleep(0.05) or 2 * x, 21)
    assert result == 42
    assert 0.05 <= seconds < 5 and seconds == round(seconds, 2)
    assert 0 <= seconds_since(time.monotonic()) < 1


def test_a_progress_report_carries_the_rate_since_the_one_before(monkeypatch):
    written = []
    monkeypatch.setattr(rates, "report", lambda event, **fields: written.append((event, fields)))
    progress = rates.ProgressReport("learner_progress", "steps_per_s", 2, count=100)
    started = time.monotonic()
    time.sleep(0.2)
    first = progress(200, train_step=200, loss=1.5)
    assert 100 / (time.monotonic() - started) <= first <= 100 / 0.2
    assert written == [
        ("learner_progress", {"train_step": 200, "loss": 1.5, "steps_per_s": round(first, 2)})
    ]
    time.sleep(0.2)
    second = progress(220, train_step=220, loss=1.0)  # since the report before only
    assert second <= 20 / 0.2
    assert written[-1][1]["steps_per_s"] == round(second, 2)
