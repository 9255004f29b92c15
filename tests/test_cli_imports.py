"""The commands a marketer types to look (a report, a preview, a customer's history, a
segment's size) answer without loading Prefect: importing it costs seconds on a busy
machine (bench/first_result.py), and only a run needs it. Issue 25, "speed a person feels"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.factories import add_customer

LOOKING = [
    ["--help"],
    ["report", "last"],
    ["report", "pyramid"],
    ["history", "1"],
    ["segment", "count", "dormant"],
    ["preview", "birthday", "--customer", "1"],
]

#: what the command imported of the heavy packages, printed as one JSON line
PROBE = """
import json, sys
from click.testing import CliRunner
from careflow.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
print(json.dumps({"exit": result.exit_code, "output": result.output,
                  "prefect": sorted(m for m in sys.modules if m.split(".")[0] == "prefect")}))
"""


@pytest.mark.parametrize("args", LOOKING, ids=" ".join)
def test_looking_commands_do_not_load_prefect(args, engine, db_url):
    add_customer(engine, 1)
    found = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert found.returncode == 0, found.stderr
    seen = json.loads(found.stdout.strip().splitlines()[-1])
    assert seen["exit"] in (0, 2), seen["output"]  # 2: a one-line refusal, still an answer
    assert seen["prefect"] == [], f"careflow {' '.join(args)} imported {seen['prefect'][:5]}"


def test_the_probe_sees_prefect_when_a_command_loads_it(engine, db_url):
    # `careflow campaigns` reads each deployment's schedule through Prefect
    found = subprocess.run([sys.executable, "-c", PROBE, "campaigns"], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert json.loads(found.stdout.strip().splitlines()[-1])["prefect"]
