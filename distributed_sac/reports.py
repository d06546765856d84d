"""Report lines: how roles tell the launcher, `status`, benchmarks and tests what happened.

A report is one log line `... <event> {json}`; these functions write them and read them back.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, TypeVar

from absl import logging

R = TypeVar("R")


def report(event: str, **fields) -> None:
    """Writes one machine-readable line to the role's log."""
    fields.setdefault("unix_time", round(time.time(), 3))
    logging.info("%s %s", event, json.dumps(fields, sort_keys=True))


def timed(function: Callable[..., R], *args) -> tuple[R, float]:
    """(function(*args), the seconds it took, as reports give them)."""
    started = time.monotonic()
    result = function(*args)
    return result, seconds_since(started)


def seconds_since(started: float) -> float:
    """Seconds since the time.monotonic() `started`, as reports give them (0.01 s)."""
    return round(time.monotonic() - started, 2)


def parse_reports(text: str, *events: str) -> list[tuple[str, dict]]:
    """(event, fields) of each report line of the given events in `text`, in order."""
    found = []
    for line in text.splitlines():
        for event in events:
            marker = f" {event} {{"
            if marker in line:
                found.append((event, json.loads(line[line.index(marker) + len(marker) - 1 :])))
    return found


def read_reports(path: str, *events: str) -> list[tuple[str, dict]]:
    """The reports of `events` in the file at `path`; [] while it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return parse_reports(f.read(), *events)


def fields_of(path: str, event: str) -> list[dict]:
    """The fields of every `event` report in the file at `path`."""
    return [fields for _, fields in read_reports(path, event)]


class ReportTail:
    """Reads a growing log from an offset: each call returns the reports written since the last
    (complete lines only, so a line being written is read whole next time)."""

    def __init__(self, path: str, offset: int = 0):
        self.path = path
        self._offset = offset

    def new_reports(self, *events: str) -> list[tuple[str, dict]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return parse_reports(complete.decode(errors="replace"), *events)


def failure_line(text: str, program: str) -> str | None:
    """What a dead process's output says went wrong: its one-line error (`<program>: error: ...`)
    if it wrote one, else the last line of its last traceback; None when it says neither (a
    process killed by a signal writes nothing; its last INFO line would only mislead)."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{program}: error: ")]
    if errors:
        return errors[-1]
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback ")]
    if tracebacks:
        # The exception line is the first unindented line after the traceback's frames.
        for line in lines[tracebacks[-1] + 1 :]:
            if not line.startswith((" ", "\t")):
                return line
    return None
