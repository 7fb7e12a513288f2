"""Reading headline files for ``finpulse classify --input``: JSONL, CSV or plain text."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from finpulse.core.jsonl import iter_jsonl


@dataclass
class InputRow:
    """One line of an input file: ``error`` is set when the line is malformed."""

    line: int
    id: object = None
    text: object = None
    error: str | None = None


def detect_format(path: str | Path) -> str:
    """``jsonl`` (``.jsonl``/``.ndjson``/``.json``), ``csv`` (``.csv``) or ``text`` (anything else)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "text"


def read_rows(path: str | Path, fmt: str | None = None) -> Iterator[InputRow]:
    """Yield the rows of an input file with 1-based line numbers.

    * JSONL: an object per line with ``text`` (required) and ``id`` (default: the line number);
    * CSV: a header row with a ``text`` column and optionally ``id``;
    * text: one headline per line, ``id`` = line number; blank lines are skipped.

    A malformed line (not JSON, no ``text``) is yielded with ``error`` set, never dropped.
    """
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        for n, obj in iter_jsonl(path):
            if isinstance(obj, str):
                yield InputRow(n, error=obj)
            elif "text" not in obj:
                yield InputRow(n, id=obj.get("id"), error="expected an object with a 'text' field")
            else:
                yield InputRow(n, id=obj.get("id", n), text=obj["text"])
        return
    with open(path, encoding="utf-8", errors="strict", newline="") as fh:
        if fmt == "csv":
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise ValueError(f"{path}: CSV needs a 'text' column, has {reader.fieldnames}")
            for row in reader:
                n = reader.line_num
                if None in row:
                    yield InputRow(n, id=row.get("id"), error="more fields than the header")
                    continue
                yield InputRow(n, id=row.get("id") or n, text=row["text"])
        else:
            for n, line in enumerate(fh, 1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield InputRow(n, id=n, text=text)
