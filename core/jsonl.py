"""Reading JSON Lines files: one reader for history files, classifier input and samples."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield ``(line_no, object)`` for each JSON object of a JSONL file (``.gz`` read compressed).

    Blank lines are skipped; a line that is not UTF-8, not JSON or not an object is yielded as
    ``(line_no, reason)`` instead, never dropped. A UTF-8 byte-order mark on the first line is allowed.

    :param path: the file.
    """
    p = Path(path)
    fh = cast(IO[bytes], gzip.open(p, "rb")) if p.suffix == ".gz" else open(p, "rb")
    with fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield n, f"not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                yield n, f"not JSON ({exc})"
                continue
            if not isinstance(obj, dict):
                yield n, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield n, obj
