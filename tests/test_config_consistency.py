"""The README stays consistent with the settings object (docker-compose.yml: tests/test_compose.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpulse.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _fields() -> set[str]:
    return set(Settings.model_fields)


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = []
    for field in _fields():
        words = field.upper().split("_")
        env = f"FINPULSE_{field.upper()}"
        # grouped rows such as `FINPULSE_TOPIC_RAW` / `_SCORED` / `_ALERTS_DLQ` document siblings
        grouped = any(f"FINPULSE_{'_'.join(words[:k])}_" in readme and f"`_{'_'.join(words[k:])}`" in readme
                      for k in range(1, len(words)))
        if env not in readme and not grouped:
            missing.append(env)
    assert not missing, f"README settings table lacks {missing}"


def test_env_var_and_toml_file(monkeypatch, tmp_path):
    cfg = tmp_path / "finpulse.toml"
    cfg.write_text('namespace = "bt-x"\nbatch_max = 16\npartitions = 2\n')
    monkeypatch.setenv("FINPULSE_CONFIG", str(cfg))
    monkeypatch.setenv("FINPULSE_BATCH_MAX", "8")
    s = Settings()
    assert (s.namespace, s.batch_max, s.partitions) == ("bt-x", 8, 2)  # env wins over the file
    assert s.topic("news.raw") == "news.raw.bt-x" and s.group_id == "finpulse.bt-x"
    assert s.redis_prefix == "finpulse:bt-x"


def test_bad_settings_are_refused(monkeypatch):
    monkeypatch.setenv("FINPULSE_NAMESPACE", "bad namespace!")
    with pytest.raises(ValueError):
        Settings()
