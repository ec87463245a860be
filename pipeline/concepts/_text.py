"""Small text helpers shared by the concept generators."""

from __future__ import annotations

import re

_ALT = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")


def alt(template: str, side: int) -> str:
    """Pick one side of every ``[first|second]`` alternation (side 0 or 1).

    >>> alt("I [loved|hated] it", 1)
    'I hated it'
    """
    return _ALT.sub(lambda m: m.group(side + 1), template)


def cap(s: str) -> str:
    """Upper-case the first character only (``str.capitalize`` would lower the rest)."""
    return s[:1].upper() + s[1:]


def a_an(noun: str) -> str:
    """English indefinite article for ``noun`` (by spelling; good enough for our vocabulary)."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun
