"""One campaign run in its own process, for tests/flows/test_kill.py to SIGKILL.

    python -m tests.flows.kill_worker '<json plan>'

The plan names the fault server (``base_url``), the run id, the campaign date
and instant, the reservation lease, and the jobs: ``[campaign, channel, lo,
hi]`` each (``channel`` null: the campaign's own channel preference), run in
that order through ``careflow.flows.route.process_batch`` on the route a real
run's batch builds (``Route.for_run``), less the contact policy (``main`` says
why), with live channels (the real twilio and sendgrid SDKs).
``pause_before_mark_sending`` (seconds) makes each hand-over to a channel
slower, so kills can land while rows are reserved.
``start_gate`` (a file path) holds the run, once started up, until that file
exists, so two workers can begin at the same moment.
The database comes from CAREFLOW_DATABASE_URL, as for any careflow process.

Each SMS campaign sends from its own number (:data:`SMS_SENDERS`), so the
fault server can tell which campaign an accepted SMS belongs to; email
carries the ledger key in its custom_args anyway.

Progress goes to stdout as JSON lines, flushed as they happen, so whatever a
killed run managed to report is readable afterwards::

    {"event": "start", "run_id": ...}
    {"event": "batch", "campaign": ..., "channel": ..., "range": [lo, hi], "result": {...}}
    {"event": "done", "run_id": ...}
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, datetime

#: the Twilio sender of each campaign (E.164), so accepted SMS name their campaign
SMS_SENDERS = {
    "birthday": "+15005550001",
    "reorder_reminder": "+15005550002",
    "winback": "+15005550003",
    "vip_care": "+15005550004",
}
CAMPAIGN_OF_SENDER = {number: campaign for campaign, number in SMS_SENDERS.items()}


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def main(argv: list[str]) -> int:
    plan = json.loads(argv[0])

    # careflow/flows/route.py builds the run's route as a real run's batch does, and
    # imports no Prefect (seconds of start-up per worker on a busy machine)
    from careflow import db
    from careflow.campaigns import load_campaign
    from careflow.flows.route import Route, RunPlan, process_batch
    from tests.providers import kit

    # No fax here: skip subsetting a CJK font (and the temporary folder a
    # SIGKILL would leave behind, since atexit handlers never run).
    kit.small_cjk_font = lambda: None  # type: ignore[assignment]

    def settings_for(campaign: str):
        return kit.live_settings(
            plan["base_url"],
            twilio_from_number=SMS_SENDERS[campaign],
            reservation_lease_seconds=plan["lease_seconds"],
            **plan.get("settings", {}),
        )

    pause = plan.get("pause_before_mark_sending", 0.0)
    if pause:
        # Widen the moment between claiming rows and handing them to a channel
        # (a slow database or channel set-up), so kills land there too.
        from careflow.ledger import ContactLedger

        mark_sending = ContactLedger.mark_sending

        def slow_mark_sending(self, *args, **kwargs):
            time.sleep(pause)
            return mark_sending(self, *args, **kwargs)

        ContactLedger.mark_sending = slow_mark_sending  # type: ignore[method-assign]

    run_id = plan["run_id"]
    as_of = date.fromisoformat(plan["as_of"])
    at = datetime.fromisoformat(plan["at"])
    first = settings_for(plan["jobs"][0][0])
    engine = db.engine_for(first.effective_database_url)
    emit("start", run_id=run_id)
    gate = plan.get("start_gate")
    while gate and not os.path.exists(gate):
        time.sleep(0.002)
    for campaign, channel, lo, hi in plan["jobs"]:
        settings = settings_for(campaign)
        spec = load_campaign(campaign, settings.templates_dir)
        run = RunPlan(
            spec=spec, run_id=run_id, as_of=as_of, at=at, settings=settings, only_channel=channel
        )
        route = Route.for_run(run)
        # Without the campaign's contact policy (send times, caps, consent by country):
        # four campaigns to the same customers at one instant would be mostly deferred
        # or capped, and what the kill tests count is the claim, the sending mark and
        # the record across crashes.
        route.policy = None
        result = process_batch(route, (lo, hi))
        summary = result.as_dict()
        summary.pop("samples")
        emit("batch", campaign=campaign, channel=channel, range=[lo, hi], result=summary)
    engine.dispose()
    emit("done", run_id=run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
