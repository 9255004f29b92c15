"""README shell blocks run as a newcomer runs them: in a checkout, from a fresh shell.

Used by tests/test_readme_production.py and tests/test_readme_own_data.py. A block
runs in ``bash -e -o pipefail`` (the first failing command fails the test) in a
folder laid out as a checkout (the package, templates, prefect.yaml, docs with its
samples, and this test run's venv as ``.venv``), with nothing careflow or Prefect
set in the environment, no venv on PATH and a HOME of its own. The shell gets a
process group of its own, so whatever it leaves running in the background ends
with :meth:`Shell.close`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from careflow.settings import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
VENV = Path(sys.executable).parent.parent
#: what a checkout holds that the blocks read (the venv is linked in as .venv)
CHECKOUT = ["careflow", "templates", "prefect.yaml", "docs", "requirements", "pyproject.toml"]


class Shell:
    """A checkout-like folder and a fresh environment (plus ``extra`` variables)."""

    def __init__(self, root: Path, **extra: str):
        self.work, self.home = root / "checkout", root / "home"
        self.work.mkdir()
        self.home.mkdir()
        for name in CHECKOUT:
            (self.work / name).symlink_to(PROJECT_ROOT / name)
        (self.work / ".venv").symlink_to(VENV)
        path = os.pathsep.join(
            p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and Path(p).resolve() != (VENV / "bin").resolve()
        )
        self.env = {
            "PATH": path or "/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **{k.upper(): v for k, v in extra.items()},
        }
        self.proc: subprocess.Popen | None = None

    def run(self, script: str, timeout: int) -> subprocess.CompletedProcess:
        self.proc = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script], cwd=self.work, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # its own process group: what it leaves behind ends with it
        )
        out, _ = self.proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, None)

    def close(self, grace: float = 30.0) -> None:
        """End what the block left running (a server, a worker started with ``&``):
        SIGTERM to its process group, then SIGKILL to whatever still runs after
        ``grace`` seconds (a Prefect worker whose server has gone keeps retrying)."""
        if self.proc is None:
            return
        group = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
