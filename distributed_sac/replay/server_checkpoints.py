"""Which tables the replay server's checkpoints hold, so a server never loads another config's.

Reverb writes each checkpoint to <root_dir>/reverb/<time>/ (its DONE file last, so a kill
mid-write leaves the previous one the newest complete one) and deletes the older ones after a
save. It loads the newest into whatever tables the server has without comparing signatures: a
server of another config would take in items of the wrong shape and, at its next save, delete
the user's checkpoint. The server therefore records its table signatures next to that directory
(<root_dir>/reverb_signatures.json), and refuses, with one line and touching nothing, a directory
recorded for others. Not inside it: with a signatures.json in it, Reverb deleted the checkpoint
it had just written and kept the file (its clean-up keeps the newest entry by name).

Reverb names each checkpoint by the local time with its UTC offset, restores the newest complete
one by name and, after a save, deletes every entry but the newest by name, complete or not. So
the server runs in UTC (`pin_utc`), and before Reverb reads the directory `order_by_time` gives
checkpoints written under another offset (by older versions, or a host in another zone) their
name in UTC, and moves unfinished ones behind the complete ones: otherwise a checkpoint named
under UTC+5 would outrank, and at the next save delete, the fresh one written after it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import time

import tree
from absl import logging

from distributed_sac.errors import UserError

# How Reverb names a checkpoint: local time to the nanosecond (trailing zeros dropped), offset.
_CHECKPOINT_NAME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?([+-]\d\d:\d\d)")
# An unfinished checkpoint moved behind every complete one (see order_by_time): Reverb deletes
# it at its next save, as it does any older entry.
UNFINISHED_PREFIX = "0-unfinished-"


def pin_utc() -> None:
    """Makes this process's local time UTC, so that Reverb names checkpoints in one order
    whatever the host's zone or a daylight-saving change."""
    os.environ["TZ"] = "UTC"
    time.tzset()


def utc_name(name: str) -> str | None:
    """The name Reverb gives a checkpoint written at the same instant under TZ=UTC; None for
    a name that is not one of Reverb's."""
    match = _CHECKPOINT_NAME.fullmatch(name)
    if match is None:
        return None
    seconds, fraction, offset = match.groups()
    written = datetime.datetime.fromisoformat(seconds + offset)
    utc = written.astimezone(datetime.timezone.utc)
    return f"{utc:%Y-%m-%dT%H:%M:%S}{fraction or ''}+00:00"


def describe(signatures: dict) -> dict[str, list[str]]:
    """{table: ["path dtype[shape]", ...]}: what a checkpoint's tables hold, as JSON."""
    return {
        table: [
            f"{'/'.join(str(p) for p in path)} {spec.dtype.name}{list(spec.shape)}"
            for path, spec in tree.flatten_with_path(signature)
        ]
        for table, signature in sorted(signatures.items())
    }


def complete_checkpoints(directory: str) -> list[str]:
    """Checkpoint directories Reverb finished writing (with DONE), oldest first."""
    if not os.path.isdir(directory):
        return []
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if _is_complete(os.path.join(directory, name))
    )


def _is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "DONE"))


def order_by_time(directory: str) -> None:
    """Renames the entries of a Reverb checkpoint directory so that the newest complete
    checkpoint by time is also the newest entry by name (what Reverb restores, and keeps at its
    next save): a complete one named under another UTC offset gets its UTC name; an unfinished
    one (a kill or a full disk mid-write) named after the newest complete one is moved behind
    it. Nothing is deleted or rewritten; each rename is logged."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        renamed = utc_name(name)
        if renamed and renamed != name and _is_complete(os.path.join(directory, name)):
            _rename(directory, name, renamed, "written under another UTC offset")
    complete = [os.path.basename(path) for path in complete_checkpoints(directory)]
    for name in os.listdir(directory):
        if name.startswith(UNFINISHED_PREFIX) or _is_complete(os.path.join(directory, name)):
            continue
        if not complete or name > complete[-1]:
            _rename(directory, name, UNFINISHED_PREFIX + name, "unfinished")


def _rename(directory: str, name: str, new_name: str, why: str) -> None:
    if os.path.exists(os.path.join(directory, new_name)):
        logging.warning("replay checkpoint %s (%s) left as it is: %s exists", name, why, new_name)
        return
    os.rename(os.path.join(directory, name), os.path.join(directory, new_name))
    logging.warning("replay checkpoint %s (%s) renamed %s", name, why, new_name)


# Free space a checkpoint needs beyond the size of the last one. Reverb 0.14 ignores a failure to
# close a file: a checkpoint small enough to sit in the write buffers, on a full disk, came out
# with every file empty, a DONE file, and the previous one deleted. Larger ones raise.
SPACE_MARGIN_BYTES = 1 << 20


def size_of(path: str) -> int:
    """Bytes of the files in a checkpoint directory."""
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def lack_of_space(directory: str) -> str | None:
    """Why a checkpoint into `directory` would not fit (free space below the size of the newest
    complete one plus SPACE_MARGIN_BYTES); None when it fits."""
    complete = complete_checkpoints(directory)
    needed = (size_of(complete[-1]) if complete else 0) + SPACE_MARGIN_BYTES
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if free >= needed:
        return None
    return f"{free / 2**20:.1f} MiB free, {needed / 2**20:.1f} MiB needed"


def written_empty(path: str) -> bool:
    """True for a checkpoint Reverb marked DONE whose table file is empty (see
    SPACE_MARGIN_BYTES): it holds nothing a restart could load."""
    return os.path.getsize(os.path.join(path, "tables.tfrecord")) == 0


def remove_unfinished(directory: str, before: set[str]) -> list[str]:
    """Removes the entries of `directory` that are not in `before` and have no DONE file (what a
    failed checkpoint left); their names."""
    removed = []
    for name in sorted(set(os.listdir(directory)) - before):
        path = os.path.join(directory, name)
        if not _is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def check_and_record(directory: str, record_path: str, signatures: dict) -> None:
    """UserError when `directory` holds checkpoints recorded for other tables; otherwise records
    these tables (before the server can write a checkpoint of its own)."""
    ours = describe(signatures)
    if complete_checkpoints(directory) and os.path.exists(record_path):
        try:
            with open(record_path) as f:
                theirs = json.load(f)
        except (OSError, ValueError) as error:
            raise UserError(
                f"cannot read {record_path} ({error}); the Reverb checkpoint beside it is left "
                "as it is"
            ) from None
        if theirs != ours:
            table = next(t for t in sorted(set(ours) | set(theirs)) if ours.get(t) != theirs.get(t))
            raise UserError(
                f"the Reverb checkpoint in {directory} holds other tables than this config's "
                f"(table '{table}': {theirs.get(table)} there, {ours.get(table)} here); use the "
                "gin config it was written with, or another --root_dir (it is left as it is)"
            )
    temporary = f"{record_path}.tmp"
    with open(temporary, "w") as f:
        json.dump(ours, f, indent=1)
    os.replace(temporary, record_path)
