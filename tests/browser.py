"""Debian's chromium, headless, driven over the DevTools protocol (no test tool downloads one).

``chromium --screenshot --window-size=390,...`` lays a page out at least 500
pixels wide whatever the window, so a phone is emulated the way DevTools
does it: ``Emulation.setDeviceMetricsOverride`` on a page reached through
the remote-debugging WebSocket (the ``websockets`` package Prefect brings).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Self

import pytest
from websockets.sync.client import connect

#: how long chromium may take to start on a busy machine
START_TIMEOUT = 60.0


#: playwright-core as .ci/install-tools.sh installs it, for the tests that drive chromium
#: from node (tests/ui/*.mjs)
PLAYWRIGHT = Path(__file__).resolve().parents[1] / ".ci" / "node" / "node_modules" / (
    "playwright-core/package.json"
)


def playwright_tools() -> tuple[str, str]:
    """Chromium and node for tests/ui/*.mjs; a missing one fails the test: `make test`
    installs them (.ci/install-tools.sh)."""
    import os

    chromium = os.environ.get("CAREFLOW_CHROMIUM", "/usr/bin/chromium")
    node = shutil.which("node")
    missing = [what for what, ok in (
        (chromium, Path(chromium).is_file()),
        ("node", node is not None),
        ("playwright-core in .ci/node", PLAYWRIGHT.is_file()),
    ) if not ok]  # fmt: skip
    if missing:
        pytest.fail(f"missing {', '.join(missing)} (`make test` installs them: .ci/install-tools.sh)")
    return chromium, node


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page; ``open`` a file at a given viewport."""

    def __init__(self, binary: str):
        self.profile = Path(tempfile.mkdtemp(prefix="careflow-chromium-"))
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port = self._port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self._id = 0
        self.call("Page.enable")

    def _port(self) -> int:
        """The port chromium chose, from the file it writes once it listens."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while not marker.is_file() or not marker.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        return int(marker.read_text().split()[0])

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _wait_for(self, event: str) -> None:
        while json.loads(self.ws.recv(timeout=60)).get("method") != event:
            pass

    def open(self, path: Path, width: int, height: int, *, mobile: bool, dark: bool = False):
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width, height=height, deviceScaleFactor=2 if mobile else 1, mobile=mobile,
        )  # fmt: skip
        scheme = "dark" if dark else "light"
        self.call(
            "Emulation.setEmulatedMedia",
            features=[{"name": "prefers-color-scheme", "value": scheme}],
        )
        self.call("Page.navigate", url=path.resolve().as_uri())
        self._wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The whole page, as tall as its content (or the viewport, when that is taller)."""
        height = self.evaluate("Math.ceil(document.body.getBoundingClientRect().height)")
        width = self.evaluate("document.documentElement.clientWidth")
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
