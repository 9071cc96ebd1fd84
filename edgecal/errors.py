"""The exceptions edgecal raises.

Every error carries a one-line message that says what was found and what was
expected. They derive from builtin exceptions so callers can catch them either by
their edgecal name or by the builtin they refine.
"""

from __future__ import annotations


class EdgecalError(Exception):
    """Base class of every error edgecal raises on purpose."""


class InputError(EdgecalError, ValueError):
    """An array, file or argument that edgecal cannot use as given."""


class StateError(EdgecalError, ValueError):
    """A state or table file that is corrupt, truncated or of an unknown schema."""


class UnknownNameError(EdgecalError, ValueError):
    """A method, format or other registered name that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known)}")
