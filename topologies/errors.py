"""The one exception of the package and helpers that word its messages.

Every user mistake (a bad number of nodes, a parameter out of range, a
disconnected graph, an invalid mixing matrix, an unknown name) raises
:class:`TopologyError`.  Messages are a single line that names what was given
and what is allowed.  Messages about builder parameters start with
``topology.<param>`` because users set them in the ``[topology]`` section of a
config file.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

__all__ = ["TopologyError"]


class TopologyError(ValueError):
    """A topology, a builder parameter or a mixing matrix is not valid.

    Subclasses :class:`ValueError`, so ``except ValueError`` also catches it.
    """


def fmt(value: object) -> str:
    """Format a user-given value for an error message (short, one line)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        text = f"{value:.6g}"
        return text if any(c in text for c in ".e") else text + ".0"  # keep 2.0 a float
    if isinstance(value, str):
        return repr(value)
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.floating):
            return fmt(float(value))
        if isinstance(value, np.integer):
            return str(int(value))
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(given: object, allowed: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest allowed name, or ``""``."""
    if not isinstance(given, str):
        return ""
    close = difflib.get_close_matches(given, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(key: str, given: object, allowed: Iterable[str]) -> TopologyError:
    """Error for an unknown choice, e.g. an unknown builder or mixing rule."""
    allowed = list(allowed)
    return TopologyError(
        f"{key}: unknown {fmt(given)}; allowed: {', '.join(allowed)}{did_you_mean(given, allowed)}"
    )


def unknown_key(key: str, owner: str, allowed: Iterable[str]) -> TopologyError:
    """Error for a keyword that ``owner`` does not take."""
    allowed = list(allowed)
    listed = ", ".join(allowed) if allowed else "(none)"
    return TopologyError(
        f"topology.{key}: unknown key for {owner}; allowed: {listed}{did_you_mean(key, allowed)}"
    )
