"""Outcomes of delivered messages, kept on local disk while the database is away.

A provider that accepted a message has done something that cannot be
undone; losing that fact to a database outage would leave the row in
``sending`` and make it ``failed: interrupted`` (in doubt) although it was
delivered. So when the ledger cannot record a chunk's outcomes after its own
retries, the route (careflow/flows/route.py ``record_delivered``) keeps them here,
one JSON line per outcome in a file of its own under
``CAREFLOW_HOME/journal/``, written whole (temporary name, fsync, rename),
warns, and waits for the database. Once the write succeeds the file goes. A
run that dies or is stopped while it waits leaves the file behind; the next
run on this home writes it before it claims anything (:func:`replay`).

Writing a kept outcome again is harmless: the ledger's write finds the row
by id and this run's id, so a row another run has since taken is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections import defaultdict
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from careflow.messages import Outcome, State

SUFFIX = ".jsonl"


def folder_of(home: Path) -> Path:
    return Path(home) / "journal"


def keep(home: Path, run_id: str, outcomes: list[Outcome], details: dict) -> Path:
    """Write ``outcomes`` (and the row details the ledger keeps with them) to a new
    journal file, durably; returns its path."""
    folder = folder_of(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.{uuid.uuid4().hex[:12]}{SUFFIX}"
    temp = path.with_suffix(".partial")
    lines = []
    for o in outcomes:
        entry = {k: v for k, v in asdict(o).items() if v is not None}
        if o.not_before is not None:
            entry["not_before"] = o.not_before.isoformat()
        lines.append(
            json.dumps(
                {"run_id": run_id, "outcome": entry, "details": details.get(o.contact_id)},
                ensure_ascii=False,
            )
        )
    with open(temp, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    return path


def read(path: Path) -> dict[str, tuple[list[Outcome], dict]]:
    """run id -> (outcomes, details) kept in one journal file."""
    found: dict[str, tuple[list[Outcome], dict]] = defaultdict(lambda: ([], {}))
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        o = dict(entry["outcome"])
        o["state"] = State(o["state"])
        if "not_before" in o:
            o["not_before"] = datetime.fromisoformat(o["not_before"])
        outcomes, details = found[entry["run_id"]]
        outcomes.append(Outcome(**o))
        if entry.get("details"):
            details[o["contact_id"]] = entry["details"]
    return dict(found)


def replay(home: Path, ledger) -> int:
    """Write every outcome kept under ``home`` to ``ledger``; returns how many. A file
    goes once written; a database error leaves it (and the rest) for the next time."""
    folder = folder_of(home)
    if not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        for run_id, (outcomes, details) in read(path).items():
            ledger.record(outcomes, run_id, details)
            written += len(outcomes)
        forget(path)
    return written


def forget(path: Path) -> None:
    """The kept outcomes are in the ledger: the file goes (a replay may have beaten us)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
