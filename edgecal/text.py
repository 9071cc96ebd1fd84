"""`printable`: text that came from a device or a socket, made safe for a terminal or a log.

Firmware ids, tensor names, LOG and ERROR lines arrive from outside; printed raw they
could move the cursor, clear the screen or start a line that looks like edgecal's own
``edgecal: error:``. Every such text goes through `printable` before it is shown,
logged or stored.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped and backslashes doubled (so it is reversible).

    >>> printable("ok")
    'ok'
    >>> print(printable("fw\\x1b[2J\\nedgecal: error: x\\u202e\\\\"))
    fw\\x1b[2J\\nedgecal: error: x\\u202e\\\\
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
