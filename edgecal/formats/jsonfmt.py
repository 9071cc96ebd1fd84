"""Canonical JSON tables: human-readable, diffable, and exact on round trip.

Keys are sorted, floats are written with ``repr`` precision (so they read back
bit-for-bit), and a ``crc32`` field holds the CRC-32 of the compact canonical form of
every other field, so a damaged or hand-edited file is noticed rather than trusted.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ..errors import InputError, StateError
from ..safe_json import load_json
from ..table import CalibrationTable, TensorCalibration
from .registry import Format, register_format

KIND = "edgecal-table"


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def table_to_doc(table: CalibrationTable) -> dict[str, Any]:
    """The JSON document of ``table`` without its checksum."""
    return {"format": KIND, **table.meta(), "tensors": [e.to_dict() for e in table.values()]}


def write_json(table: CalibrationTable) -> bytes:
    doc = table_to_doc(table)
    try:
        doc["crc32"] = f"{zlib.crc32(_canonical(doc)):08x}"
    except (TypeError, ValueError) as err:
        raise InputError(f"table cannot be written as JSON: {err}") from err
    return (json.dumps(doc, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


def doc_to_table(doc: Any) -> CalibrationTable:
    """Rebuild a table from its JSON document (checksum already removed)."""
    if not isinstance(doc, dict) or doc.get("format") != KIND:
        raise StateError(f"not an edgecal table: expected a JSON object with format {KIND!r}")
    if doc.get("schema") != CalibrationTable.SCHEMA:
        raise StateError(f"table schema {doc.get('schema')!r} is not supported; expected {CalibrationTable.SCHEMA}")
    try:
        entries = [TensorCalibration.from_dict(d) for d in doc["tensors"]]
        return CalibrationTable(
            entries, model_hash=doc["model_hash"], created=doc["created"], edgecal_version=doc["edgecal_version"],
            provenance=doc.get("provenance"),
        )
    except (KeyError, TypeError, InputError) as err:
        raise StateError(f"table JSON is malformed: {err}") from err


def read_json(data: bytes) -> CalibrationTable:
    doc = load_json(bytes(data), "table")
    if not isinstance(doc, dict) or "crc32" not in doc:
        raise StateError("table JSON has no crc32 field; expected an edgecal table")
    stored = doc.pop("crc32")
    if stored != f"{zlib.crc32(_canonical(doc)):08x}":
        raise StateError("table JSON checksum mismatch: the file is corrupt or was edited")
    return doc_to_table(doc)


register_format(
    Format(
        name="json",
        suffixes=(".json",),
        write=write_json,
        read=read_json,
        sniff=lambda head: head.lstrip()[:1] == b"{",
        description="canonical JSON, every field, exact round trip",
    )
)
