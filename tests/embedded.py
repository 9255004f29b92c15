"""`careflow` in a process of its own on the embedded default, as a user runs it:
SQLite in a fresh home, the local Prefect server it starts itself, none of the
test session's CAREFLOW_ or PREFECT_ settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from careflow import db


def fresh_home(tmp_path: Path) -> tuple[Path, str]:
    """(home, database URL): a home with a migrated, empty careflow database."""
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    url = f"sqlite:///{home / 'careflow.db'}"
    db.upgrade(url)
    return home, url


def run_careflow(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit code, output) of ``careflow *args`` with ``home``; ``env`` adds settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAREFLOW_", "PREFECT_"))}
    clean |= {
        "CAREFLOW_HOME": str(home),
        "CAREFLOW_DATABASE_URL": f"sqlite:///{home / 'careflow.db'}",
        "PREFECT_HOME": str(home / "prefect"),
        **(env or {}),
    }
    log = home / "careflow.log"
    with log.open("w") as out:  # a file, not a pipe: a server left running would hold a pipe
        done = subprocess.run(
            [Path(sys.executable).parent / "careflow", *args],
            env=clean, stdout=out, stderr=subprocess.STDOUT, timeout=600,
        )  # fmt: skip
    return done.returncode, log.read_text()
