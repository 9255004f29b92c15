"""Progress bars on long commands: drawn in a terminal, absent from piped output."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from careflow.cli.main import main
from careflow.progress import listening, report

ORDERS = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    + "".join(
        f"5{i:05d},SKU{i % 7},Thing,{1 + i % 3},2026-01-{1 + i % 28:02d} 10:00,1.50,{100 + i % 40},UK\n"
        for i in range(300)
    )
)


def test_reports_reach_the_listener_only_while_listening():
    seen = []
    report("nobody listens", 1, 2)
    with listening(lambda *args: seen.append(args)):
        report("batches", 1, 4)
        report("rows read", 500)
    report("after", 1, 1)
    assert seen == [("batches", 1, 4), ("rows read", 500, None)]


@pytest.mark.parametrize("terminal", [False, True])
def test_import_draws_bars_in_a_terminal_only(engine, tmp_path, monkeypatch, terminal):
    import rich.console

    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: terminal))
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS)
    out = CliRunner().invoke(main, ["import", "orders", str(path)])
    assert out.exit_code == 0, out.output
    assert "rows read                  300" in out.stdout  # the summary, unchanged
    if terminal:
        assert "orders loaded" in out.stderr and "order lines loaded" in out.stderr
    else:
        assert out.stderr == ""
