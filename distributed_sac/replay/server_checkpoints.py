"""Which tables the replay server's checkpoints hold, so a server never loads another config's.

Reverb writes each checkpoint to <root_dir>/reverb/<time>/ (its DONE file last, so a kill
mid-write leaves the previous one the newest complete one) and deletes the older ones after a
save. It loads the newest into whatever tables the server has without comparing signatures: a
server of another config would take in items of the wrong shape and, at its next save, delete
the user's checkpoint. The server therefore records its table signatures next to that directory
(<root_dir>/reverb_signatures.json), and refuses, with one line and touching nothing, a directory
recorded for others. Not inside it: with a signatures.json in it, Reverb deleted the checkpoint
it had just written and kept the file (its clean-up keeps the newest entry by name, it seems).
"""

from __future__ import annotations

import json
import os

import tree

from distributed_sac.errors import UserError


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
        if os.path.isfile(os.path.join(directory, name, "DONE"))
    )


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
