"""The channel registry: a channel declared once is known everywhere."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from typing import ClassVar

import pytest
from click.testing import CliRunner

from careflow import registry
from careflow.campaigns import load_campaign
from careflow.cli.main import main
from careflow.errors import ConfigError
from careflow.flows.route import Route, RunPlan, process_batch
from careflow.messages import Outcome
from careflow.registry import ChannelSpec, TemplatePart
from careflow.settings import PROJECT_ROOT, load_settings
from tests.factories import add_customer

AS_OF = date(2026, 6, 1)


class Pigeon:
    """A fictitious channel: carries messages to a loft's address."""

    name = "pigeon"
    delivered: ClassVar[list] = []

    def send_batch(self, messages):
        Pigeon.delivered.extend(messages)
        return [Outcome.sent(m.contact_id, provider_id=f"coo-{m.contact_id}") for m in messages]


@pytest.fixture
def pigeon(tmp_path, monkeypatch):
    """One registration (plus a campaign with its template); no other edit."""
    registry.register(
        ChannelSpec(
            "pigeon",
            contact_field="owner",  # the loft is kept where the customer's owner is
            address_kind=None,
            parts=(TemplatePart("body", "pigeon.{locale}.j2"),),
            factory=lambda settings: Pigeon(),
        )
    )
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    (root / "coo").mkdir()
    (root / "coo" / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [pigeon]\noccasion: yearly\nmarketing: false\n"
    )
    (root / "coo" / "pigeon.en.j2").write_text("Coo, {{ name }}!")
    monkeypatch.setenv("CAREFLOW_TEMPLATES_DIR", str(root))
    monkeypatch.setenv("CAREFLOW_DELIVERY", "live")
    Pigeon.delivered = []
    yield
    registry.unregister("pigeon")


def test_a_registered_channel_is_known_everywhere(pigeon, engine):
    add_customer(engine, 1, owner=" loft 7 ", birthday=date(1990, 6, 1))
    add_customer(engine, 2, owner=None, birthday=date(1990, 6, 1))
    settings = load_settings()
    spec = load_campaign("coo", settings.templates_dir)  # campaign validation accepts it
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    run = RunPlan(spec=spec, run_id="r1", as_of=AS_OF, at=at, settings=settings)
    result = process_batch(Route.for_run(run), (1, 10))
    assert result.sent == 1 and result.skipped == {"no_contact": 1}
    assert [(m.to, m.body) for m in Pigeon.delivered] == [("loft 7", "Coo, C1!")]
    # the CLI offers it too
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert "pigeon" in help_text


def test_an_unknown_channel_in_a_campaign_names_the_known_ones(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    (root / "coo").mkdir(parents=True)
    (root / "coo" / "campaign.yaml").write_text("segment: birthday\nchannels: [pigeon]\n")
    with pytest.raises(ConfigError, match="'pigeon' is not a channel; choose from sms, email"):
        load_campaign("coo", root)
