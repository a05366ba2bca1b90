"""The one exception type a person using the product can meet, and how its sentences quote what a person typed."""
from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 40  # characters of a typed value a message repeats; the rest is counted, not shown


class ReVersionError(Exception):
    """A problem with the user's input or environment, stated in one clear sentence.

    The app shows the message as is and the CLI prints it and exits with status 2; neither shows a traceback.
    """


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as a message quotes it (its repr), shortened when long: a 10,000-character name is shown as its
    first ``limit`` characters and its length, so the sentence stays one line."""
    text = repr(value)
    if len(text) <= limit + 2:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters written out"
    return f"{text[:limit]}...' ({size})" if isinstance(value, str) else f"{text[:limit]}... ({size})"
