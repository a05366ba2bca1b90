"""The one exception type a person using the product can meet."""
from __future__ import annotations


class ReVersionError(Exception):
    """A problem with the user's input or environment, stated in one clear sentence.

    The app shows the message as is and the CLI prints it and exits with status 2; neither shows a traceback.
    """
