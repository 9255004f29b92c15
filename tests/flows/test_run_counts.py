"""Every count a person reads about a run adds up, and every output says the same.

A run's counts are read in four places: the table `careflow run` prints (with its
"already done" line), the batch log lines, the summary artifact in the Prefect UI and
`careflow report runs`. They were computed in each place: the log line left out the
held-out customers, and "already done 2882" stood beside "1883 already got this
occasion's message". This runs a campaign twice on the demo's data, with a holdout
and several batches, and reads each output as a person would.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest
from click.testing import CliRunner

from careflow.demo.data import seed_demo

pytestmark = [pytest.mark.prefect, pytest.mark.xdist_group("prefect")]

AS_OF = date(2026, 11, 22)
BUCKETS = ["sent", "held out", "already done", "skipped", "deferred", "failed"]
LOG_LINE = re.compile(
    r"(\d+)/(\d+) batches done: selected (\d+): sent (\d+), held out (\d+), "
    r"already done (\d+), skipped (\d+), deferred (\d+), failed (\d+)$"
)


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a text table (careflow/tables.py), cut at the rule's columns."""
    lines = text.splitlines()
    # the rule under the header: dashes and spaces only (a "--- Logging error ---" line a
    # handler left on CliRunner's closed stream by an earlier invocation is not one)
    at = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+( +-+)*", line))
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[at])]
    cut = lambda line: [line[a : b + 2].strip() for a, b in spans]
    header = cut(lines[at - 1].ljust(len(lines[at])))
    rows = []
    for line in lines[at + 1 :]:
        if not line.strip():
            break
        rows.append(dict(zip(header, cut(line), strict=True)))
    return rows


def number(cell: str) -> int:
    return int(cell.split(":")[0].strip("()").split()[0])


def artifact_counts(markdown: str) -> dict[str, int]:
    counts = {}
    for line in markdown.splitlines():
        m = re.match(r"\| ([^|]+?) \| (\d+) \|", line)
        if m:
            counts[m.group(1).split(" (")[0].replace(" by an earlier run", "")] = int(m.group(2))
    return counts


@pytest.fixture
def demo_shop(engine, monkeypatch, real_clock):
    monkeypatch.setenv("CAREFLOW_BATCH_SIZE", "150")  # several batches
    monkeypatch.setenv("CAREFLOW_HOLDOUT", "0.2")
    real_clock.set(datetime(2026, 11, 22, 4, tzinfo=UTC))  # noon in Shanghai: few deferred
    seed_demo(engine, as_of=AS_OF, customers=600)
    return engine


def test_every_output_of_a_run_counts_the_same_and_adds_up(prefect_api, demo_shop, capfd,
                                                           caplog, monkeypatch):
    import careflow.flows.campaign as campaign_module
    from careflow.cli.main import main

    artifacts: list[str] = []
    real_artifact = campaign_module.create_markdown_artifact

    def keep(markdown, **kw):
        if kw["key"].endswith("-summary"):  # winback's experiment has an artifact of its own
            artifacts.append(markdown)
        return real_artifact(markdown=markdown, **kw)

    monkeypatch.setattr(campaign_module, "create_markdown_artifact", keep)
    runner = CliRunner()
    args = ["run", "winback", "--as-of", AS_OF.isoformat(), "--allow-past"]
    outputs = []
    for attempt in range(2):  # the second run finds everything already done
        capfd.readouterr()
        caplog.clear()
        out = runner.invoke(main, args)
        # the run's log lines: Prefect's console handler or, once pytest's logging
        # capture holds the logger, its records
        log = capfd.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
        assert out.exit_code == 0, out.output
        outputs.append(out.output)
        row = table_rows(out.output)[0]  # the holdout's split is said below the table
        assert row["campaign"] == "winback", out.output
        selected = int(row["selected"])
        printed = {b: number(row[b]) for b in BUCKETS}
        assert selected > 0 and sum(printed.values()) == selected, out.output

        logged = [m for m in map(LOG_LINE.search, log.splitlines()) if m]
        assert len(logged) >= 2, log
        last = [int(g) for g in logged[-1].groups()]
        assert last[0] == last[1]  # all batches done
        assert last[2] == selected and dict(zip(BUCKETS, last[3:], strict=True)) == printed

        assert artifact_counts(artifacts[-1]) == {"selected": selected, **printed}

        already = re.search(r"^(\d+) already done by an earlier run, not taken again: (.*)\.$",
                            out.output, re.M)  # fmt: skip
        if attempt == 0:
            assert printed["held out"] > 0 and printed["sent"] > 0
            assert already is None and printed["already done"] == 0
        else:
            assert printed["sent"] == printed["held out"] == 0
            assert already, out.output
            parts = [int(p.split()[0]) for p in already.group(2).split(", ")]
            assert int(already.group(1)) == sum(parts) == printed["already done"] > 0
            assert "were held out of it" in already.group(2)

    runs = runner.invoke(main, ["report", "runs"])
    assert runs.exit_code == 0, runs.output
    listed = table_rows(runs.output)
    assert len(listed) == 2
    for row in listed:
        assert sum(number(row[b]) for b in BUCKETS) == int(row["selected"]), runs.output
