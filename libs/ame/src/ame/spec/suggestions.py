"""'Did you mean …?' hints for misspelt names.

Kept separate so every part of the spec (unknown fields, tags, task references, resource
keys) phrases suggestions the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """Return the candidate that looks most like ``word``, or ``None`` if none is close.

    Matching ignores case first, because ``!Poetry`` or ``InjectAs`` are common slips that
    difflib would otherwise rank below unrelated words of the same shape.
    """
    options = list(dict.fromkeys(candidates))
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[matches[0]] if matches else None


def did_you_mean(word: str, candidates: Iterable[str], *, prefix: str = "") -> str:
    """Return ``"; did you mean 'x'?"`` when a close candidate exists, else ``""``.

    ``prefix`` is written before the suggestion, e.g. ``"!"`` for YAML tags.
    """
    match = closest(word, candidates)
    if match is None or match == word:
        return ""
    return f"; did you mean '{prefix}{match}'?"
