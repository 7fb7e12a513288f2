"""Model versions for lifecycle tests: copies of the shipped model with another version and decision rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from finpulse.models.manifest import DEFAULT_MODEL_DIR


def make_version(models_dir: Path, version: str, sentiment_bias: list[float] | None = None) -> Path:
    """``models_dir/version``: the shipped files under a new version; ``sentiment_bias`` changes its labels."""
    dst = models_dir / version
    dst.mkdir(parents=True)
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    for entry in manifest["files"].values():
        shutil.copy2(DEFAULT_MODEL_DIR / entry["path"], dst / entry["path"])
    manifest["version"] = version
    if sentiment_bias is not None:
        manifest["decision"] = {**manifest.get("decision", {}), "sentiment_bias": sentiment_bias}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst
