"""Model versions side by side: the shipped model (read-only package data) and a model directory.

A *model directory* (``Settings.models_dir``, ``FINPULSE_MODELS_DIR``; default
``$XDG_DATA_HOME/finpulse/models``, else ``~/.local/share/finpulse/models``) holds one sub-folder per
version, each a complete exported model (``manifest.json`` and the files it lists with their
sha256), e.g. written by ``finpulse export --out-dir <models dir>/<version>`` or copied in by
``finpulse model add``. The shipped model (``models/artifacts`` in the package, or
``Settings.model_dir``) is always available as the *base* version: it is what scores when nothing
was promoted, and it is never written to. Other versions shipped in the package (``models/bundled``,
e.g. the news-first release) are listed and promotable as they are, read-only like the base.

Which version scores is not decided here: see :mod:`finpulse.models.lifecycle`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ManifestError, ModelVersionError
from .manifest import BUNDLED_DIR, DEFAULT_MODEL_DIR, load_manifest


def default_models_dir() -> Path:
    """The model directory when ``Settings.models_dir`` is empty (read at each call, not created)."""
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "finpulse" / "models"


@dataclass(frozen=True)
class ModelVersion:
    """One model version found by :class:`ModelRegistry`.

    :param version: the manifest's ``version``.
    :param path: its directory.
    :param base: whether it is the base (shipped or ``model_dir``) model.
    :param manifest: the manifest (files not re-hashed when listing).
    :param bundled: shipped in the package beside the base (read-only, promotable as it is).
    """

    version: str
    path: Path
    base: bool
    manifest: dict[str, Any]
    bundled: bool = False

    def summary(self) -> dict[str, Any]:
        """Version, path, whether it is the base or a bundled model, its int8 metrics and purpose (for listings)."""
        metrics = self.manifest.get("metrics", {})
        return {"version": self.version, "path": str(self.path), "base": self.base, "bundled": self.bundled,
                "purpose": self.manifest.get("purpose", ""), "metrics": metrics.get("int8", {}),
                "news_dev": metrics.get("news_dev", {}), "decision": self.manifest.get("decision", {})}


class ModelRegistry:
    """The model versions an operator can promote.

    :param models_dir: the model directory; ``None`` or empty = :func:`default_models_dir`.
    :param base_dir: the base model's directory; ``None`` or empty = the shipped model.
    :param bundled_dir: the folder of bundled versions; ``None`` = the package's ``models/bundled``.
    """

    def __init__(self, models_dir: str | Path | None = None, base_dir: str | Path | None = None,
                 bundled_dir: str | Path | None = None):
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.base_dir = Path(base_dir).expanduser() if base_dir else DEFAULT_MODEL_DIR
        self.bundled_dir = Path(bundled_dir).expanduser() if bundled_dir else BUNDLED_DIR

    @classmethod
    def from_settings(cls, settings: Any) -> ModelRegistry:
        """The registry of ``settings`` (``models_dir``, ``model_dir``)."""
        return cls(settings.models_dir or None, settings.model_dir or None)

    def base(self) -> ModelVersion:
        """The base model (checked: every file's sha256)."""
        m = load_manifest(self.base_dir)
        return ModelVersion(str(m["version"]), Path(m["_dir"]), True, m)

    def base_version(self) -> str:
        """The base model's version, read from its manifest without hashing its files (what the
        shared setting falls back to; loading the model itself still checks every sha256)."""
        return str(load_manifest(self.base_dir, verify=False)["version"])

    def versions(self) -> list[ModelVersion]:
        """The base model first, then the bundled versions, then the model directory's, each group by
        folder name (unreadable folders skipped; a version already listed is not listed again)."""
        base = load_manifest(self.base_dir, verify=False)
        out = [ModelVersion(str(base["version"]), Path(base["_dir"]), True, base)]
        seen = {out[0].version}
        for folder, bundled in ((self.bundled_dir, True), (self.models_dir, False)):
            if not folder.is_dir():
                continue
            for sub in sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()):
                try:
                    m = load_manifest(sub, verify=False)
                except ManifestError:
                    continue
                if str(m["version"]) not in seen:
                    seen.add(str(m["version"]))
                    out.append(ModelVersion(str(m["version"]), Path(m["_dir"]), False, m, bundled))
        return out

    def get(self, version: str) -> ModelVersion:
        """The model ``version``, its files checked against the manifest's sha256.

        :raises ModelVersionError: no such version.
        :raises ManifestError: the version's files do not match its manifest.
        """
        for v in self.versions():
            if v.version == version:
                m = load_manifest(v.path)  # verify now: never promote or load a corrupt model
                return ModelVersion(v.version, v.path, v.base, m, v.bundled)
        known = ", ".join(v.version for v in self.versions())
        raise ModelVersionError(f"no model version {version!r} (known: {known}; model directory {self.models_dir})")

    def add(self, src: str | Path) -> ModelVersion:
        """Copy the exported model in ``src`` into the model directory as ``<models dir>/<version>``.

        The base model's own version, or a bundled one, may be added (keep the one in force for a
        rollback before an upgrade changes or drops it); it is listed once, from the package, while
        the package has it, and from the model directory after that.

        :returns: the copy in the model directory.
        :raises ManifestError: ``src`` is not a complete, intact model.
        :raises ModelVersionError: that version exists already in the model directory (versions are
            immutable), or the package ships other files under the same version.
        """
        m = load_manifest(src)
        version = str(m["version"])
        dst = self.models_dir / version
        if dst.exists():
            raise ModelVersionError(f"model version {version!r} exists already in {self.models_dir}; versions "
                                    "are immutable, export under a new version")
        listed = next((v for v in self.versions() if v.version == version), None)
        if listed is not None and (listed.base or listed.bundled) and _hashes(listed.manifest) != _hashes(m):
            raise ModelVersionError(f"model version {version!r} ships in the package with other files; "
                                    "versions are immutable, export under a new version")
        tmp = self.models_dir / f".{version}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for entry in m["files"].values():
            shutil.copy2(Path(m["_dir"]) / entry["path"], tmp / entry["path"])
        (tmp / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if k != "_dir"}, indent=2) + "\n")
        tmp.rename(dst)
        copy = load_manifest(dst)
        return ModelVersion(version, Path(copy["_dir"]), listed is not None and listed.base, copy)


def _hashes(manifest: dict[str, Any]) -> dict[str, str]:
    """Each file role's sha256 in ``manifest``."""
    return {role: entry["sha256"] for role, entry in manifest["files"].items()}
