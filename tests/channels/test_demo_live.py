"""The demo, switched to live SMS and email, against the providers' spec-driven mocks.

The whole route runs (segments, policy, templates, ledger, the real twilio and
sendgrid SDKs): every selected customer must end sent or skipped with a
reason, and Prism must accept every request without a spec violation.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from careflow.campaigns import load_campaign
from careflow.demo.data import seed_demo
from careflow.flows.route import Route, RunPlan, process_batch
from tests.providers.kit import live_settings
from tests.providers.prism import PrismServer

pytestmark = pytest.mark.mockserver

AS_OF = date(2026, 11, 22)


def test_demo_campaigns_over_live_sms_and_email(
    engine, prism_twilio: PrismServer, prism_sendgrid: PrismServer
) -> None:
    seed_demo(engine, as_of=AS_OF, customers=600)
    settings = live_settings(
        prism_twilio.base_url, sendgrid_api_base_url=prism_sendgrid.base_url
    )
    marks = prism_twilio.mark(), prism_sendgrid.mark()
    sent_by_channel = {"sms": 0, "email": 0}
    for campaign, channel in [("birthday", "sms"), ("reorder_reminder", "sms"),
                              ("winback", "email"), ("vip_care", "email")]:
        run = RunPlan(
            spec=load_campaign(campaign, settings.templates_dir), run_id=f"live-{campaign}",
            as_of=AS_OF, at=datetime.combine(AS_OF, time(12), tzinfo=UTC), settings=settings,
            only_channel=channel,
        )  # fmt: skip
        route = Route.for_run(run)
        route.engine = engine
        result = process_batch(route, (1, 10_000))
        assert result.selected > 0, campaign
        assert result.failed == {}, (campaign, result.failed)
        # every selected customer is sent, skipped with a reason, or deferred by the policy
        settled = result.sent + sum(result.skipped.values()) + sum(result.deferred.values())
        assert settled == result.selected, (campaign, result.as_dict())
        assert set(result.skipped) <= {
            "no_contact", "invalid_contact", "opted_out", "shared_address", "frequency_cap"
        }
        assert set(result.deferred) <= {"quiet_hours", "sending_window", "frequency_cap"}
        sent_by_channel[channel] += result.sent
    assert sent_by_channel["sms"] > 0 and sent_by_channel["email"] > 0
    for prism, mark, channel in zip((prism_twilio, prism_sendgrid), marks, ("sms", "email"),
                                    strict=True):
        assert prism.violations(since=mark) == []
        assert prism.requests_seen(since=mark) == sent_by_channel[channel]
