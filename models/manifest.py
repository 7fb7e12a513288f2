"""Loading and checking ``manifest.json``: every file's sha256 must match before a model loads."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .exceptions import ManifestError
from .labels import SENTIMENT_LABELS, TOPIC_LABELS

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "artifacts"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
"""Other complete model versions shipped as read-only package data, one folder each (e.g. the news-first
release): promotable without ``finpulse model add`` (:class:`~finpulse.models.registry.ModelRegistry`)."""
REQUIRED_KEYS = ("version", "files", "labels", "max_length", "inputs", "outputs")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_dir: str | Path | None = None, verify: bool = True) -> dict[str, Any]:
    """Read and check ``<model_dir>/manifest.json``.

    :param model_dir: the artifact directory; ``None`` means ``$FINPULSE_MODEL_DIR`` if set, else
        the shipped default model (``models/artifacts``).
    :param verify: recompute each file's sha256 and compare it with the manifest.
    :returns: the manifest, with ``_dir`` set to the directory's absolute path.
    :raises ManifestError: missing or malformed manifest, a missing file, a sha256 mismatch, or
        label maps that differ from :mod:`finpulse.models.labels`.
    """
    d = Path(model_dir or os.environ.get("FINPULSE_MODEL_DIR") or DEFAULT_MODEL_DIR)
    path = d / "manifest.json"
    if not path.is_file():
        raise ManifestError(f"no manifest.json in {d}: train and export a model (finpulse train; finpulse export)")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{path} lacks {', '.join(missing)}")
    if list(manifest["labels"].get("topic", [])) != list(TOPIC_LABELS) or \
            list(manifest["labels"].get("sentiment", [])) != list(SENTIMENT_LABELS):
        raise ManifestError(f"{path}: label maps differ from models.labels; the model and code disagree")
    for role, entry in manifest["files"].items():
        f = d / entry["path"]
        if not f.is_file():
            raise ManifestError(f"{path}: file for {role!r} is missing: {f}")
        if verify:
            actual = sha256_file(f)
            if actual != entry["sha256"]:
                raise ManifestError(
                    f"sha256 mismatch for {f.name} ({role}): manifest says {entry['sha256'][:16]}..., "
                    f"file has {actual[:16]}...; the file is corrupt or was replaced, refusing to load it"
                )
    manifest["_dir"] = str(d.resolve())
    return manifest
