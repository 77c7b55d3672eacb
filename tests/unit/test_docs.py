"""The docs stay true: the README's commands exist, CI runs the test command, every setting is documented,
and every link between the docs leads to a file that exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

from config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", CONFIGURATION, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_the_configuration_tables_defaults_match_config():
    for name, field in Settings.model_fields.items():
        row = re.search(rf"^\| `{name.upper()}` \| `([^`]*)` \|", CONFIGURATION, flags=re.MULTILINE)
        assert row is not None and row.group(1) == str(field.default), name


def test_the_two_readme_commands_exist_and_are_executable():
    for command in ("run.sh", "test.sh"):
        assert f"./{command}" in README
        assert os.access(ROOT / command, os.X_OK), command


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == "exec ./test.sh"


def test_the_readme_is_a_front_door_and_every_link_of_the_docs_leads_somewhere():
    assert len(README.splitlines()) <= 150
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
