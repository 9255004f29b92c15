"""A segment is declared once: one ``register`` call (here, in the test only) and it is
validated, listed, counted and built like the built-in ones, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from click.testing import CliRunner
from pydantic import Field
from sqlalchemy import Select, select

from careflow import segments
from careflow.cli.main import main
from careflow.db.models import Customer
from careflow.errors import ConfigError
from careflow.segments import Segment
from careflow.segments._params import SegmentParams
from tests.factories import add_customer, ids

AS_OF = date(2026, 11, 22)


class SpeaksParams(SegmentParams):
    """Parameters of the fictitious ``speaks``."""

    locale: str = Field("en", strict=True, min_length=2, description="The customers' locale.")


def speaks(as_of: date, p: SpeaksParams, *, id_range: tuple[int, int] | None = None) -> Select:
    """Customers whose locale is ``p.locale`` (as-of does not matter to it)."""
    query = select(Customer.id.label("customer_id"), Customer.locale).where(
        Customer.locale == p.locale
    )
    if id_range is not None:
        query = query.where(Customer.id.between(*id_range))
    return query


@pytest.fixture
def speaks_segment():
    """One registration; no other edit."""
    segments.register(Segment("speaks", speaks, SpeaksParams, "Customers speaking a locale."))
    yield
    segments.unregister("speaks")


def test_a_registered_segment_is_known_everywhere(speaks_segment, engine):
    for cid, locale in [(1, "fr"), (2, "en"), (3, "fr")]:
        add_customer(engine, cid, locale=locale)

    assert "speaks" in segments.names()
    assert segments.validate_params("speaks", {"locale": "fr"}) == {"locale": "fr"}
    with pytest.raises(ConfigError, match=r"^segment 'speaks': locale must be text \(got 7\)$"):
        segments.validate_params("speaks", {"locale": 7})
    with pytest.raises(ConfigError, match="unknown parameter 'lang'; parameters: locale"):
        segments.build("speaks", AS_OF, {"lang": "fr"})

    assert ids(engine, segments.build("speaks", AS_OF, {"locale": "fr"})) == {1, 3}
    assert ids(engine, segments.build("speaks", AS_OF, {"locale": "fr"}, id_range=(2, 3))) == {3}
    with engine.connect() as conn:
        assert segments.prepare("speaks", conn, AS_OF, {}) == {"locale": "en"}

    runner = CliRunner()
    assert segments.describe_segments()["speaks"] == "Customers speaking a locale."
    listed = runner.invoke(main, ["segment", "params", "speaks"])
    assert "speaks: Customers speaking a locale." in listed.output
    assert "locale  text; default en" in listed.output
    count = ["segment", "count", "speaks", "--as-of", "2026-11-22", "--param", "locale=fr"]
    out = runner.invoke(main, count)
    assert out.exit_code == 0 and out.output.strip() == "2"
    out = runner.invoke(main, ["segment", "list", "speaks", "--param", "locale=fr", "--format",
                               "csv"])
    assert out.exit_code == 0 and out.output.count("\n") == 3  # a header and two customers


def test_registering_a_name_twice_is_an_error(speaks_segment):
    with pytest.raises(ConfigError, match="segment 'speaks' is already registered"):
        segments.register(Segment("speaks", speaks, SpeaksParams, "Again."))


def test_unregistered_segment_is_unknown_again(speaks_segment):
    segments.unregister("speaks")
    with pytest.raises(ConfigError, match="unknown segment 'speaks'"):
        segments.build("speaks", AS_OF)
