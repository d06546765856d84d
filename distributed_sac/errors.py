"""The one kind of error a user sees as one line, and folding library messages onto one line."""

from __future__ import annotations

import re


class UserError(Exception):
    """A problem with the user's input or setup, reported as one line and a non-zero exit."""


def one_line(error: BaseException) -> str:
    """An error message folded onto one line."""
    return re.sub(r"\s*\n\s*", " | ", str(error).strip())


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (Reverb and TF append long stacks and JSON)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
