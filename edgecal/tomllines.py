"""`key_lines`: the line each key of a TOML document is defined on.

``tomllib`` returns values without positions, so config errors would not be able to
name a line. This scanner walks the same text the way a TOML parser does: it skips
comments, strings of every kind (multi-line ``\"\"\"`` and ``'''`` included) and
arrays or inline tables that span lines, and records a key only where TOML starts
one. It is run after ``tomllib`` accepted the text, so it never judges validity.

>>> text = '[output]\\nnote = \"\"\"\\nbins = 3\\n\"\"\"\\nbins = 4\\n[[source]]\\nkind = \"spool\"\\n'
>>> lines = key_lines(text)
>>> lines[("output", 0, "bins")], lines[("source", 0, "kind")]
(5, 7)
"""

from __future__ import annotations

__all__ = ["key_lines"]

Lines = dict[tuple[str, int, str], int]


def _string_end(text: str, pos: int) -> int:
    """Index just past the string that starts at ``pos`` (any of TOML's four kinds)."""
    quote = text[pos]
    if text.startswith(quote * 3, pos):
        end = pos + 3
        while True:
            end = _find_unescaped(text, quote * 3, end, escapes=quote == '"')
            if end < 0:
                return len(text)
            end += 3
            for _ in range(2):  # up to two more quotes belong to the content: """a""""" is 'a""'
                if end < len(text) and text[end] == quote:
                    end += 1
            return end
    end = _find_unescaped(text, quote, pos + 1, escapes=quote == '"')
    return len(text) if end < 0 else end + 1


def _find_unescaped(text: str, needle: str, pos: int, escapes: bool) -> int:
    while pos < len(text):
        if escapes and text[pos] == "\\":
            pos += 2
            continue
        if text.startswith(needle, pos):
            return pos
        pos += 1
    return -1


def _value_end(text: str, pos: int) -> int:
    """Index of the newline that ends the value starting at ``pos`` (or the end of the text)."""
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch in "\"'":
            pos = _string_end(text, pos)
            continue
        if ch == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "\n" and depth <= 0:
            return pos
        pos += 1
    return pos


def _key_parts(text: str, pos: int, stop: str) -> tuple[list[str], int]:
    """The dotted key starting at ``pos`` up to the first unquoted ``stop`` character."""
    parts, current = [], ""
    while pos < len(text) and text[pos] not in stop and text[pos] != "\n":
        ch = text[pos]
        if ch in "\"'":
            end = _string_end(text, pos)
            current += text[pos + 1 : end - 1]
            pos = end
            continue
        if ch == ".":
            parts.append(current)
            current = ""
        elif not ch.isspace():
            current += ch
        pos += 1
    parts.append(current)
    return parts, pos


def key_lines(text: str) -> Lines:
    """(table, index within an array of tables, key) -> 1-based line of the key's definition.

    A table header is recorded under its own name with key ``""``; the first part of a
    dotted key is what is recorded (``a.b = 1`` records ``a``).
    """
    lines: Lines = {}
    table, index = "", 0
    seen: dict[str, int] = {}
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch in " \t\r\n":
            pos += 1
            continue
        if ch == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        line = text.count("\n", 0, pos) + 1
        if ch == "[":
            double = text.startswith("[[", pos)
            parts, pos = _key_parts(text, pos + (2 if double else 1), "]")
            table = ".".join(parts)
            index = seen[table] = seen.get(table, -1) + 1 if double else 0
            lines.setdefault((table, index, ""), line)
        else:
            parts, pos = _key_parts(text, pos, "=")
            lines.setdefault((table, index, parts[0]), line)
            pos += 1
        pos = _value_end(text, pos) + 1
    return lines
