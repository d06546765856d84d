"""Report lines and what the launcher says about a dead process (no processes needed)."""

from __future__ import annotations

import signal

from distributed_sac.reports import ReportTail, failure_line, parse_reports
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
