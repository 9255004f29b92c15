"""Every setting an operator can set is documented, and described in the code.

The documented form is a row of a settings table in README.md or docs/*.md
whose first cell names the variable: | `CAREFLOW_<FIELD>` | default | meaning |
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from careflow.settings import PROJECT_ROOT, Settings

DOC_FILES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
TABLE_ROW = re.compile(r"^\|\s*`(CAREFLOW_[A-Z0-9_]+)`\s*\|", re.MULTILINE)


def _env_names(name: str) -> list[str]:
    """The variables pydantic-settings reads a field from (its alias, else prefix + name)."""
    field = Settings.model_fields[name]
    alias = field.validation_alias or field.alias
    if alias is None:
        return [f"{Settings.model_config['env_prefix']}{name}".upper()]
    choices = getattr(alias, "choices", [alias])
    return [str(choice).upper() for choice in choices]


def _documented() -> dict[str, Path]:
    rows: dict[str, Path] = {}
    for path in DOC_FILES:
        for variable in TABLE_ROW.findall(path.read_text(encoding="utf-8")):
            rows.setdefault(variable, path)
    return rows


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    documented = _documented()
    names = _env_names(name)
    assert any(n in documented for n in names), (
        f"{' / '.join(names)} has no row in a settings table of README.md or docs/*.md"
    )


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_description(name: str) -> None:
    assert (Settings.model_fields[name].description or "").strip(), (
        f"careflow/settings.py: {name} has no Field(description=...)"
    )


def test_the_documented_variables_exist() -> None:
    """A table row naming a variable careflow does not read is a stale doc."""
    known = {n for name in Settings.model_fields for n in _env_names(name)}
    stale = {
        v: str(p.relative_to(PROJECT_ROOT)) for v, p in _documented().items() if v not in known
    }
    assert not stale
