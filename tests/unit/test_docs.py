"""The README stays true: its commands exist, CI runs the test command, every setting is documented."""

from __future__ import annotations

import os
import re
from pathlib import Path

from config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_readme_defaults_match_config():
    for name, field in Settings.model_fields.items():
        row = re.search(rf"^\| `{name.upper()}` \| `([^`]*)` \|", README, flags=re.MULTILINE)
        assert row is not None and row.group(1) == str(field.default), name


def test_the_two_readme_commands_exist_and_are_executable():
    for command in ("run.sh", "test.sh"):
        assert f"./{command}" in README
        assert os.access(ROOT / command, os.X_OK), command


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == "exec ./test.sh"
