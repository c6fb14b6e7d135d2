from pathlib import Path

import pytest

from app.config import SETTINGS, load_config

pytestmark = pytest.mark.unit
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme():
    missing = [s.env for s in SETTINGS if f"| `{s.env}` |" not in README]
    assert missing == [], "run bin/config-table"


def test_every_documented_setting_is_read_by_load_config(monkeypatch):
    config = load_config()
    for setting in SETTINGS:
        assert setting.env in config, f"{setting.env} is documented but never read"


def test_quick_start_has_exactly_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quick_start.splitlines() if line.startswith("    ")]
    assert commands == ["bin/dev", "bin/test"]
