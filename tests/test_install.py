"""Installs come from the lock: uv.lock is made from pyproject.toml, and the
requirements files pip installs from (make demo, make test, CI, workers) are
uv.lock exported. A change to pyproject.toml or uv.lock without `make lock`
fails here, without the network (uv runs offline on an empty cache)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest
import yaml
from uv import find_uv_bin

from careflow.settings import PROJECT_ROOT

REQUIREMENTS = ["requirements/prod.txt", "requirements/dev.txt"]


def _uv(args, cwd, cache):
    env = {
        **os.environ, "UV_OFFLINE": "1", "UV_CACHE_DIR": str(cache),
        "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1",
    }
    return subprocess.run(
        [find_uv_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _lock_is_current(project, cache):
    return _uv(["lock", "--check"], project, cache)


def test_lock_is_made_from_pyproject(tmp_path):
    done = _lock_is_current(PROJECT_ROOT, tmp_path)
    assert done.returncode == 0, (
        "uv.lock does not match pyproject.toml: run `make lock`\n" + done.stderr
    )


def test_a_changed_range_makes_the_lock_stale(tmp_path):
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    changed = re.sub(r'"fastapi>=([^"]+)"', r'"fastapi>=\1,!=0.140.0"', text)
    assert changed != text
    pyproject.write_text(changed, encoding="utf-8")
    assert _lock_is_current(tmp_path, tmp_path / "cache").returncode != 0


def _pins(text):
    """The requirement lines of a requirements file, without uv's comments."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", REQUIREMENTS)
def test_requirements_are_the_lock_exported(tmp_path, name):
    text = (PROJECT_ROOT / name).read_text(encoding="utf-8")
    # uv writes the command that made the file on its second line
    command = shlex.split(text.splitlines()[1].lstrip("#").strip())
    assert command[:2] == ["uv", "export"] and "--frozen" in command, command
    out = command.index("-o") + 1
    command[out] = str(tmp_path / "exported.txt")
    done = _uv(command[1:], PROJECT_ROOT, tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    exported = (tmp_path / "exported.txt").read_text(encoding="utf-8")
    assert _pins(text) == _pins(exported), f"{name} is not uv.lock exported: run `make lock`"


def test_prefect_yaml_names_the_locked_prefect():
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text(encoding="utf-8"))
    locked = {p["name"]: p["version"] for p in lock["package"]}
    project = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    assert project["prefect-version"] == locked["prefect"], (
        f"prefect.yaml says prefect-version {project['prefect-version']}, "
        f"uv.lock installs {locked['prefect']}: set it to that"
    )
