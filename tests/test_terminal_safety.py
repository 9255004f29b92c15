"""What the CLI prints from customers and providers cannot drive the operator's terminal.

A reply, a name or a provider's message may carry ESC sequences (colours, cursor
moves, OSC 8 hyperlinks, window titles), C1 controls, carriage returns and bidi
overrides. Every command shows them written out (``\\u001b``), never raw; JSON
output stays JSON that reads back to the stored text.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from careflow.cli.main import main
from careflow.db.models import ContactEvent
from careflow.report import text_table
from careflow.safe_text import for_terminal
from tests.factories import add_contact, add_customer, add_orders

AS_OF = date(2026, 11, 22)
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
NAME = "Eve\x1b[2J\x1b[31m Red\u202eexe.txt\u2066\x9b1A\x07"
REPLY = f"thanks {OSC8}\r\nerror: all customers deleted\x1b[1A\u2028\x85"
#: what must never reach a terminal: C0 controls but the line feed, DEL, C1, bidi controls
ACTIVE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                    "\u2028\u2029]")


def _shop(engine):
    add_customer(engine, 1, full_name=NAME, given_name=NAME, owner=f"Owner\x1b[8m{NAME}",
                 grade="A", external_ref="ref\x1b]0;title\x07")
    add_orders(engine, 1, [AS_OF - timedelta(days=d) for d in (5, 50)])
    add_customer(engine, 2, full_name=NAME, owner=f"Owner\x1b[8m{NAME}", grade="A")  # overdue
    add_contact(engine, 1, datetime(2026, 11, 20, 9), campaign="care")
    with engine.begin() as conn:
        conn.execute(insert(ContactEvent.__table__).values(
            customer_id=1, kind="replied", occurred_at=datetime(2026, 11, 21, 9),
            provider="twilio", event_id="SM1", detail=REPLY, channel="sms"))  # fmt: skip


def _run(*args) -> str:
    out = CliRunner().invoke(main, list(args))
    assert out.exit_code == 0, out.output
    assert not ACTIVE.search(out.output), repr(out.output)
    return out.output


@pytest.mark.parametrize(
    "args",
    [
        ["report", "replies"],
        ["history", "1"],
        ["segment", "list", "dormant", "--param", "days=1", "--as-of", AS_OF.isoformat()],
        ["report", "overdue", "--as-of", AS_OF.isoformat()],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_customer_and_provider_text_is_written_out(engine, args):
    _shop(engine)
    out = _run(*args)
    assert "\\u001b" in out  # shown, so the operator sees something was there


def test_history_and_replies_show_the_reply_legibly(engine):
    _shop(engine)
    history = _run("history", "1")
    assert "error: all customers deleted" in history
    # the reply's second line stays indented under it, not a line of its own
    assert "\n    error: all customers deleted" in history.replace("\\u000d", "")
    replies = _run("report", "replies")
    assert "Eve\\u001b[2J" in replies and "\\u202eexe.txt" in replies


@pytest.mark.parametrize("args", [["report", "replies", "--json"], ["history", "1", "--json"]])
def test_json_output_reads_back_to_the_stored_text(engine, args):
    _shop(engine)
    data = json.loads(_run(*args))
    assert REPLY in _strings(data)


def _strings(data) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return [data] if isinstance(data, str) else []


def test_table_cells_are_one_line_each():
    table = text_table(["name", "n"], [[NAME + "\nsecond line", "1"]])
    assert len(table.splitlines()) == 3 and not ACTIVE.search(table)
    assert for_terminal("a\nb", lines=True) == "a\nb" and for_terminal("a\nb") == "a\\u000ab"
