"""`careflow journey simulate`: the days run on a scratch copy predict, number for number,
what advancing the real database at the same instants with the same scenario recorded
then does; and the real database is left exactly as it was. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, text

from careflow import purchase_facts
from careflow.cli.main import main
from careflow.db.models import Base, ContactHistory
from careflow.flows.journey_simulate import instants, on_grid, simulate_journey
from careflow.journey_spec import load_journey
from careflow.journeys.scenario import load_scenario, record_due
from careflow.journeys.simulation import Recorder, marks
from careflow.progress import listening
from careflow.settings import PROJECT_ROOT, load_settings
from tests.journeys.conftest import START, advance, days, dormant, write_journey

SCENARIO = """\
seed: 7
responses:
  - {after: first, event: replied, share: 40%, within: 2 days}
  - {after: second, event: ordered, share: 50%, within: 4 days}
events:
  - {customer: 3, event: opted_out, at: "2026-06-02T08:00:00Z"}
"""

#: zones where noon UTC is in the default quiet hours (21:00-09:00): their sends defer
FAR_EAST, FAR_WEST = "Pacific/Kiritimati", "Pacific/Pago_Pago"


def snapshot(engine) -> dict[str, list]:
    """Every row of every careflow table, in a fixed order."""
    out = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted(tuple(map(repr, r)) for r in rows)
        if conn.dialect.name == "postgresql":  # and no id drawn from the real sequences
            out["sequences"] = conn.execute(text(
                "SELECT sequencename, last_value FROM pg_sequences "
                "WHERE schemaname = current_schema() ORDER BY 1"
            )).all()  # fmt: skip
    return out


@pytest.fixture
def shop(engine, templates, tmp_path, monkeypatch):
    """30 dormant customers, some in zones where noon UTC is night, one capped by another
    campaign's two messages this week; exit on an order as well as an opt-out."""
    monkeypatch.setenv("CAREFLOW_QUIET_HOURS", "21:00-09:00")
    yaml = (templates / "nudge" / "journey.yaml").read_text()
    (templates / "nudge" / "journey.yaml").write_text(
        yaml.replace("exit_on: [opted_out]", "exit_on: [opted_out, ordered]")
    )
    for cid in range(1, 31):
        zone = FAR_EAST if cid % 10 == 0 else FAR_WEST if cid % 10 == 5 else "Europe/London"
        dormant(engine, cid, owner="Grace" if cid % 2 else None, time_zone=zone)
    sent = (START - days(1)).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(ContactHistory.__table__), [{
            "campaign": name, "customer_id": 7, "occasion": "2026-05-31", "channel": "sms",
            "recipient": "+447911100007", "state": "sent", "category": "marketing",
            "sent_at": sent, "created_at": sent, "updated_at": sent,
        } for name in ("winback", "reorder")])  # fmt: skip
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    return path


TICKS = [START + days(d) for d in range(21)]  # noon UTC (the shop's zone), 21 days


def test_simulate_predicts_what_real_advancing_then_does_and_writes_nothing(
    engine, shop, real_clock
):
    settings = load_settings()
    assert instants(date(2026, 6, 1), date(2026, 6, 21), "12:00", "1 day", "UTC") == TICKS
    before = snapshot(engine)
    predicted = simulate_journey("nudge", date(2026, 6, 1), date(2026, 6, 21), events=shop,
                                 at="12:00", settings=settings)  # fmt: skip
    assert snapshot(engine) == before, "simulate wrote to the real database"

    # now for real, at the same instants, the scenario's events recorded as they happen
    spec = load_journey("nudge", settings.templates_dir)
    scenario = load_scenario(shop, spec)
    recorder, last = Recorder(engine, spec, "UTC", marks(engine)), None
    when = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in predicted["advanced_at"]]
    assert set(TICKS) <= set(when) and len(when) > len(TICKS)  # and the deferrals' times
    for t in when:
        recorded = record_due(engine, spec, scenario, t, since=last, shop_zone="UTC",
                              currency="GBP")  # fmt: skip
        advance(real_clock, t)
        recorder.after_advance(t, recorded)
        last = t
    real = recorder.result(TICKS[-1])
    real["advanced_at"] = predicted["advanced_at"]
    assert snapshot(engine) != before
    mermaid = predicted.pop("mermaid")
    assert predicted == real

    # and the numbers are about something: every kind of event happened
    assert predicted["entered"] == 30
    assert predicted["exits"] == {"opted_out": 1, "ordered": predicted["exits"]["ordered"]}
    assert predicted["exits"]["ordered"] > 0
    assert predicted["outcomes"]["answer"]["happened"] > 0
    assert predicted["outcomes"]["answer"]["timed_out"] > 0
    assert predicted["cap_collisions"] == {"first": 1}
    assert predicted["deferrals"]["first"] == {"quiet_hours": 6, "frequency_cap": 1}
    assert predicted["sent_by_local_hour"]["09"] >= 6  # deferred to the end of the night
    assert all(9 <= int(hour) < 21 for hour in predicted["sent_by_local_hour"])
    assert predicted["sends"]["first"]["states"] == {"sent": 30}
    assert sum(predicted["days"][d].get("events", 0) for d in predicted["days"]) > 0
    assert "s_first" in mermaid and "flowchart TD" in mermaid


AGAIN = """\
description: A weekly nudge while they stay dormant
category: marketing
entry:
  segment: dormant
  parameters: {days: 30}
once: every 7 days
steps:
  - {id: hello, type: send, channels: [sms]}
  - {id: bye, type: exit}
"""


def _real_days(engine, real_clock, spec, scenario, predicted) -> dict:
    """Advance the real database at the instants the simulation advanced at, recording the
    same scenario as it goes; what it did, counted as the simulation counts."""
    when = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in predicted["advanced_at"]]
    recorder, last = Recorder(engine, spec, "UTC", marks(engine)), None
    for t in when:
        recorded = record_due(engine, spec, scenario, t, since=last, shop_zone="UTC",
                              currency="GBP")  # fmt: skip
        advance(real_clock, t, spec.name)
        recorder.after_advance(t, recorded)
        last = t
    real = recorder.result(when[-1])
    real["advanced_at"] = predicted["advanced_at"]
    return real


def test_orders_the_scenario_records_keep_customers_from_entering_again(
    engine, shop, templates, real_clock
):
    """Simulated orders reach the segments as real ones do (the purchase facts' triggers,
    in the copy too): who ordered is no longer dormant and does not enter again."""
    write_journey(templates, "again", AGAIN, sends=("hello",))
    shop.write_text("seed: 3\nresponses:\n"
                    "  - {after: hello, event: ordered, share: 50%, within: 1 day}\n")  # fmt: skip
    assert purchase_facts.refresh(engine) == 30  # as an import leaves them: all clean
    settings = load_settings()
    before = snapshot(engine)
    predicted = simulate_journey("again", date(2026, 6, 1), date(2026, 6, 22), events=shop,
                                 at="12:00", settings=settings)  # fmt: skip
    assert snapshot(engine) == before
    predicted.pop("mermaid")
    spec = load_journey("again", settings.templates_dir)
    assert predicted == _real_days(engine, real_clock, spec, load_scenario(shop, spec),
                                   predicted)  # fmt: skip
    days = predicted["days"]
    weekly = [days[d].get("entered", 0) for d in ("2026-06-01", "2026-06-08", "2026-06-15")]
    assert weekly[0] == 30 and weekly[0] > weekly[1] > 0 and weekly[2] <= weekly[1], weekly


def test_the_same_scenario_gives_the_same_numbers_and_another_seed_others(
    engine, shop, real_clock
):
    settings = load_settings()
    heard = []
    with listening(lambda stage, done, total: heard.append((stage, done, total))):
        runs = [simulate_journey("nudge", date(2026, 6, 1), date(2026, 6, 10), events=shop,
                                 at="12:00", settings=settings) for _ in range(2)]  # fmt: skip
    assert runs[0] == runs[1]
    # a terminal sees the days go by (careflow/progress.py): each advance, up to all ten
    first = heard[: len(runs[0]["advanced_at"])]
    assert {stage for stage, *_ in first} == {"simulated days"}
    assert [d for _, d, _ in first] == sorted(d for _, d, _ in first)
    assert first[-1][1:] == (10, 10)
    shop.write_text(SCENARIO.replace("seed: 7", "seed: 8"))
    other = simulate_journey("nudge", date(2026, 6, 1), date(2026, 6, 10), events=shop,
                             at="12:00", settings=settings)  # fmt: skip
    assert other["outcomes"] != runs[0]["outcomes"]


def test_the_simulated_messages_are_built_but_no_file_is_written(
    engine, shop, real_clock, monkeypatch
):
    """Each message goes through the whole route and is built as the outbox would write
    it (so one that cannot be built is predicted as failed), but a simulation writes no
    file: a file per message, written and deleted, was an eighth of a 1M simulation's time."""
    from careflow.channels.outbox import OutboxChannel

    built, written = [], []
    content = OutboxChannel._content
    monkeypatch.setattr(OutboxChannel, "_content", lambda self, m: built.append(m) or
                        content(self, m))  # fmt: skip
    monkeypatch.setattr(OutboxChannel, "_write", lambda self, *a: written.append(a))
    result = simulate_journey("nudge", date(2026, 6, 1), date(2026, 6, 3), events=shop,
                              at="12:00", settings=load_settings())  # fmt: skip
    sent = sum(s["states"].get("sent", 0) for s in result["sends"].values())
    assert sent > 0 and len(built) == sent
    assert written == []


def test_a_scenario_naming_no_send_step_is_one_clear_line(engine, shop, real_clock):
    shop.write_text("responses:\n  - {after: pause, event: replied, share: 10%, within: 1 day}\n")
    result = CliRunner().invoke(
        main, ["journey", "simulate", "nudge", "--from", "2026-06-01", "--to", "2026-06-03",
              "--events", str(shop)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "'pause' is no send step of journey 'nudge'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_event_of_a_customer_the_shop_does_not_have_is_one_clear_line(
    engine, shop, real_clock
):
    shop.write_text('events:\n  - {customer: 999, event: replied, at: "2026-06-02T10:00:00Z"}\n')
    result = CliRunner().invoke(
        main, ["journey", "simulate", "nudge", "--from", "2026-06-01", "--to", "2026-06-03",
               "--events", str(shop)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "events[0].customer: no customer 999" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "says"), [
    (["--from", "2026-06-31", "--to", "2026-07-01"], "--from '2026-06-31' is not a date"),
    (["--from", "2026-06-05", "--to", "2026-06-01"], "--to 2026-06-01 is before --from"),
    (["--from", "2026-06-01", "--to", "2026-06-02", "--at", "25:00"], "--at '25:00' is not"),
    (["--from", "2026-06-01", "--to", "2026-06-02", "--every", "soon"], "--every 'soon'"),
    (["--from", "2000-01-01", "--to", "2026-06-02"], "more than 3660 advances"),
])
def test_bad_days_are_one_clear_line(engine, templates, args, says):
    result = CliRunner().invoke(main, ["journey", "simulate", "nudge", *args])
    assert result.exit_code != 0
    assert says in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_instants_keep_the_local_time_across_a_clock_change_and_step_by_hours():
    # London leaves summer time on 2026-10-25: 10:00 local is 09:00 UTC, then 10:00 UTC
    days = instants(date(2026, 10, 24), date(2026, 10, 26), "10:00", "1 day", "Europe/London")
    assert [t.strftime("%d %H:%M") for t in days] == ["24 09:00", "25 10:00", "26 10:00"]
    hours = instants(date(2026, 6, 1), date(2026, 6, 2), "06:00", "6 hours", "UTC")
    assert [t.strftime("%d %H") for t in hours] == ["01 06", "01 12", "01 18", "02 00",
                                                    "02 06", "02 12", "02 18"]  # fmt: skip
    assert on_grid(datetime(2026, 6, 1, 9, 1, tzinfo=UTC)) == datetime(2026, 6, 1, 9, 5,
                                                                       tzinfo=UTC)  # fmt: skip
    assert on_grid(datetime(2026, 6, 1, 9, 5, tzinfo=UTC)) == datetime(2026, 6, 1, 9, 5,
                                                                       tzinfo=UTC)  # fmt: skip


def _docs_scenario() -> str:
    text = (PROJECT_ROOT / "docs" / "journeys.md").read_text()
    found = re.search(r"```yaml\n(# scenario\.yaml.*?)```", text, re.S)
    assert found, "docs/journeys.md shows a scenario file"
    return found.group(1)


def test_the_docs_scenario_runs_on_the_demo_journey_from_the_command_line(
    engine, tmp_path, real_clock
):
    from careflow.demo.data import seed_demo

    seed_demo(engine, as_of=date(2026, 6, 1), customers=300)
    path = tmp_path / "scenario.yaml"
    path.write_text(_docs_scenario())
    assert path.read_text() == (PROJECT_ROOT / "templates" / "lapsing_journey" /
                                "scenario.yaml").read_text()  # fmt: skip
    before = snapshot(engine)
    result = CliRunner().invoke(
        main, ["journey", "simulate", "lapsing_journey", "--from", "2026-06-01",
              "--to", "2026-06-15", "--events", str(path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert snapshot(engine) == before
    found = json.loads(result.output)
    assert found["entered"] > 0
    assert found["outcomes"]["answer"].get("happened", 0) > 0  # the scenario's replies
    text = CliRunner().invoke(
        main, ["journey", "simulate", "lapsing_journey", "--from", "2026-06-01",
              "--to", "2026-06-15", "--events", str(path)],
    ).output  # fmt: skip
    assert "customers per step at the end:" in text
    assert f"entered {found['entered']} (held out {found['held_out']})" in text
