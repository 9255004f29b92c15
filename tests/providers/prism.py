"""Stoplight Prism mock servers built from the providers' official OpenAPI specs.

Prism validates every request against the spec; started with ``--errors``
it answers a violating request with an error, and it logs each violation as
a line containing ``Violation``. Tests read that log after sending.

Where things are looked for:
- the Prism binary: ``$CAREFLOW_PRISM``, else ``.ci/node/node_modules/.bin/prism``
  (installed by ``.ci/install-tools.sh``, which ``make test`` runs);
- the specs: ``$CAREFLOW_PROVIDER_SPECS``, else ``shared/provider-specs``
  beside the repository (``/work/shared/provider-specs`` on our machines).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TWILIO_SPEC = "twilio_api_v2010.json"
SENDGRID_SPEC = "tsg_mail_v3.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def prism_binary() -> Path | None:
    """The Prism CLI to run, or None when it is not installed."""
    configured = os.environ.get("CAREFLOW_PRISM")
    candidates = [configured] if configured else []
    candidates.append(str(REPO / ".ci" / "node" / "node_modules" / ".bin" / "prism"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and shutil.which("node"):
            return Path(candidate)
    return None


def specs_dir() -> Path | None:
    """The folder holding the provider specs, or None."""
    configured = os.environ.get("CAREFLOW_PROVIDER_SPECS")
    candidates = [Path(configured)] if configured else []
    candidates += [REPO.parent / "shared" / "provider-specs", Path("/work/shared/provider-specs")]
    for folder in candidates:
        if (folder / TWILIO_SPEC).is_file() and (folder / SENDGRID_SPEC).is_file():
            return folder
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrismServer:
    """One ``prism mock --errors`` process on a free loopback port, logging to a file."""

    def __init__(self, binary: Path, spec: Path, log_path: Path):
        self.binary, self.spec, self.log_path = binary, spec, log_path
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> PrismServer:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [str(self.binary), "mock", "-h", "127.0.0.1", "-p", str(self.port), "--errors",
             str(self.spec)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prism exited early; see {self.log_path}:\n{self.log_text()}")
            if "Prism is listening" in self.log_text():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prism did not start within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return _ANSI.sub("", self.log_path.read_text("utf-8", errors="replace"))
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Position in the log; pass to :meth:`violations` to see only later lines."""
        return len(self.log_text())

    def violations(self, since: int = 0) -> list[str]:
        """Log lines reporting a spec violation (request or response)."""
        return [line.strip() for line in self.log_text()[since:].splitlines() if "Violation" in line]

    def requests_seen(self, since: int = 0) -> int:
        return self.log_text()[since:].count("Request received")
