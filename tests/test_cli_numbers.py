"""Ids and counts on the command line: out of range or not numbers, one line and exit code 2.

A customer id past what the database holds (a 64-bit integer) used to reach the
driver and end in a traceback; a negative --limit was "all rows" on SQLite and
an error on PostgreSQL.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from careflow.cli.main import main

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "args",
    [
        ["history", HUGE],
        ["history", "--", "-5"],
        ["history", "0"],
        ["history", "abc"],
        ["history", "1", "--limit", "-1"],
        ["history", "1", "--limit", HUGE],
        ["preview", "birthday", "--customer", HUGE],
        ["test-send", "birthday", "--to", "a@example.com", "--customer", HUGE],
        ["retry", "birthday", "--reason", "interrupted", "--customer", "-3"],
        ["segment", "list", "vip", "--limit", HUGE],
        ["segment", "list", "vip", "--limit", "-1"],
        ["report", "runs", "--limit", HUGE],
        ["report", "runs", "--limit", "-3"],
        ["report", "overdue", "--limit", "1.5"],
        ["report", "clv", "--customers", HUGE],
        ["serve", "--port", "99999"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_bad_id_or_count_is_one_line(engine, args):
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and isinstance(out.exception, SystemExit)
    [line] = out.output.strip().splitlines()
    assert line.startswith("error: ") and "--help" in line
