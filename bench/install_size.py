"""What `make demo` installs against what `make test` needs: requirements/prod.txt
(careflow's runtime) and requirements/dev.txt (the same plus the test tools), each into a
fresh venv with the pip cache as it is, timed and weighed; then dev.txt on top of a prod
venv (what `make test` would add after a prod-only `make demo`).

    .venv/bin/python -m bench.install_size

Prints one markdown table. Installs are as the Makefile makes them (a venv, pip
upgraded, then ``pip install --require-hashes -r FILE``); only the last step is timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("PYTHON", "python3")


def _size_mb(path: Path) -> float:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def _venv(where: Path) -> Path:
    subprocess.run([PYTHON, "-m", "venv", str(where)], check=True)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    return where


def _install(venv: Path, requirements: str) -> float:
    start = time.monotonic()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--require-hashes", "-r", str(ROOT / "requirements" / requirements)],
                   check=True)  # fmt: skip
    return time.monotonic() - start


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="careflow-install-") as tmp:
        for name in ("prod.txt", "dev.txt"):
            venv = _venv(Path(tmp) / name.removesuffix(".txt"))
            empty = _size_mb(venv)
            seconds = _install(venv, name)
            rows.append((f"requirements/{name}, fresh venv", seconds, _size_mb(venv) - empty))
        prod = Path(tmp) / "prod"
        before = _size_mb(prod)
        seconds = _install(prod, "dev.txt")
        rows.append(("requirements/dev.txt on top of prod.txt", seconds, _size_mb(prod) - before))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| install | s | MB added |")
    print("| --- | ---: | ---: |")
    for what, seconds, mb in rows:
        print(f"| {what} | {seconds:.1f} | {mb:.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
