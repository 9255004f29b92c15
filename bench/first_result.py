"""How long a person waits for each careflow command to show something (issue 25).

Each command runs as a person types it, in a process of its own, on a demo shop
seeded once (``careflow demo --seed-only``): the time to its first line on stdout
(the first thing the person sees) and to its exit. ``careflow --help`` is the
floor every command pays (Python, the CLI's imports); the table gives each
command's first line as a multiple of it, so read the ratios: the machines are
shared and noisy. ``run`` is timed twice: with no Prefect server to talk to
(PREFECT_API_URL unset), as on a fresh checkout, where it starts Prefect's
temporary local API first; and against a running ``prefect server start``.
``demo`` runs on a fresh database of its own and its first result is its first
table (the campaigns' outcomes), not the "seeding" line.

    .venv/bin/python -m bench.first_result [--customers 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

CAREFLOW = str(Path(sys.executable).parent / "careflow")


def timed(args: list[str], env: dict, first: re.Pattern | None = None) -> tuple[float, float]:
    """Seconds to the first stdout line (matching ``first``, if given) and to the exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    seen = None
    for line in proc.stdout:
        if seen is None and line.strip() and (first is None or first.search(line)):
            seen = time.perf_counter() - start
    code = proc.wait()
    total = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(args[1:])} exited {code}")
    return (seen if seen is not None else total), total


def start_server(work: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free loopback port, once it answers; (process, API URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], env={**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run([str(Path(sys.executable).parent / "prefect"), "server", "status", "--wait",
                    "--timeout", "300"], env={**env, "PREFECT_API_URL": api_url}, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return server, api_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median)")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="careflow-first-result-"))
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CAREFLOW_", "PREFECT_API_URL"))}  # fmt: skip
    env = {**base, "CAREFLOW_HOME": str(work / "shop"), "PREFECT_HOME": str(work / "prefect")}
    (work / "prefect").mkdir()
    today = datetime.now(UTC).date().isoformat()
    subprocess.run([CAREFLOW, "demo", "--seed-only", "--customers", str(opts.customers)],
                   env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    listed = subprocess.run(
        [CAREFLOW, "segment", "list", "birthday", "--as-of", today, "--format", "csv",
         "--limit", "1"], env=env, check=True, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    customer = listed[1].split(",")[0]  # someone whose birthday it is today
    commands = {
        "careflow --help (the floor)": ([CAREFLOW, "--help"], env, None),
        "careflow preview birthday --customer ID": (
            [CAREFLOW, "preview", "birthday", "--customer", customer, "--as-of", today], env,
            None),
        "careflow report last": ([CAREFLOW, "report", "last"], env, None),
        "careflow report pyramid": ([CAREFLOW, "report", "pyramid"], env, None),
        "careflow run winback --dry-run (no server)": (
            [CAREFLOW, "run", "winback", "--dry-run"], env, None),
    }
    server, api_url = start_server(work, env)
    commands["careflow run winback --dry-run (a running server)"] = (
        [CAREFLOW, "run", "winback", "--dry-run"], {**env, "PREFECT_API_URL": api_url}, None)
    rows = []
    try:
        for name, (args, e, first) in commands.items():
            runs = [timed(args, e, first) for _ in range(opts.repeat)]
            rows.append((name, statistics.median(r[0] for r in runs),
                         statistics.median(r[1] for r in runs)))  # fmt: skip
    finally:
        server.terminate()
        server.wait(60)
    demo = []
    for i in range(opts.repeat):  # a fresh shop each time, as a first `make demo` meets it
        fresh = {**env, "CAREFLOW_HOME": str(work / f"demo-{i}")}
        demo.append(timed([CAREFLOW, "demo", "--customers", str(opts.customers)], fresh,
                          re.compile(r"^campaign\s+selected")))  # fmt: skip
    rows.append((f"careflow demo --customers {opts.customers} (fresh)",
                 statistics.median(r[0] for r in demo), statistics.median(r[1] for r in demo)))
    shutil.rmtree(work, ignore_errors=True)
    floor = rows[0][1]
    print(f"\n{opts.customers} demo customers, median of {opts.repeat} runs each\n")
    print("| command | first result, s | x the floor | exit, s |")
    print("| --- | ---: | ---: | ---: |")
    for name, first_s, total_s in rows:
        print(f"| `{name}` | {first_s:.1f} | {first_s / floor:.1f} | {total_s:.1f} |")


if __name__ == "__main__":
    main()
