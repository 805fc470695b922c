"""Errors that speak to the user.

Every mistake a user can make (a bad config value, a missing file, a graph that
cannot be built) raises :class:`UserError` or a subclass, with a one-line message
naming the field, the value given and what is allowed.  The CLI prints that line
and exits with status 2; anything else is a bug and exits with status 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A mistake in the user's input: the message is shown as is, without traceback.

    Messages are kept to one line even when they quote user text with line breaks.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


class ConfigError(UserError):
    """A config key or value that is not allowed."""


class DivergenceError(UserError):
    """A run whose losses or parameters became non-finite (NaN or infinite)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(field: str, value: object, allowed: Iterable[str]) -> ConfigError:
    allowed = sorted(allowed)
    return ConfigError(
        f"{field}: unknown {value!r}; allowed: {', '.join(allowed)}{did_you_mean(value, allowed)}"
    )
