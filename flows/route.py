"""The whole route for one batch of customers, as plain functions.

select -> policy -> occasion -> reserve -> render -> send -> record. This is
the only module that knows every step; flows/campaign.py wraps it in Prefect
tasks. Keeping it free of Prefect makes it easy to test and to run from a
Dask worker or a plain script later.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from sqlalchemy import Engine, func, select

import segments
from careflow.campaigns import CampaignSpec, enrich, occasion_key
from careflow.db.models import Consent, Customer
from careflow.errors import TemplateError, Unsendable
from careflow.ledger import ContactLedger
from careflow.messages import Message, Outcome, State
from careflow.policy import Decision, decide
from careflow.rendering import Rendered, Renderer, greeting_name
from careflow.settings import Settings
from channels import closing_channel, get_channel
from channels.sms import sms_preview

CUSTOMER_COLUMNS = [c for c in Customer.__table__.c]


@dataclass
class BatchResult:
    """Counts for one batch; merged into the run's summary."""

    selected: int = 0
    sent: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    already: Counter = field(default_factory=Counter)
    would_send: Counter = field(default_factory=Counter)  # dry runs: per channel
    samples: list = field(default_factory=list)

    def merge(self, other: BatchResult, max_samples: int = 5) -> None:
        self.selected += other.selected
        self.sent += other.sent
        for name in ("skipped", "failed", "already", "would_send"):
            getattr(self, name).update(getattr(other, name))
        self.samples.extend(other.samples[: max(0, max_samples - len(self.samples))])

    def as_dict(self) -> dict:
        return {
            "selected": self.selected,
            "sent": self.sent,
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
            "already": dict(self.already),
            "would_send": dict(self.would_send),
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, d: dict) -> BatchResult:
        return cls(
            selected=d["selected"],
            sent=d["sent"],
            skipped=Counter(d["skipped"]),
            failed=Counter(d["failed"]),
            already=Counter(d["already"]),
            would_send=Counter(d["would_send"]),
            samples=list(d["samples"]),
        )


def id_ranges(engine: Engine, batch_size: int) -> list[tuple[int, int]]:
    """Customer-id ranges of ``batch_size`` ids covering every customer."""
    with engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(Customer.id), func.max(Customer.id))).one()
    if lo is None:
        return []
    return [(start, min(start + batch_size - 1, hi)) for start in range(lo, hi + 1, batch_size)]


def segment_select(
    spec: CampaignSpec, as_of: date, at: datetime, id_range, params: dict | None = None
):
    """The campaign's segment joined to the customer record, for one id range.

    ``params`` (from ``segments.prepare``) replaces the campaign's parameters."""
    params = spec.parameters if params is None else params
    seg = segments.build(spec.segment, as_of, params, at=at, id_range=id_range)
    sub = seg.subquery("seg")
    names = {c.name for c in CUSTOMER_COLUMNS}
    context = [c for c in sub.c if c.name != "customer_id" and c.name not in names]
    return (
        select(*CUSTOMER_COLUMNS, *context)
        .join(sub, sub.c.customer_id == Customer.id)
        .order_by(Customer.id)
    )


def load_consents(engine: Engine, id_range) -> dict[int, dict[str, bool]]:
    out: dict[int, dict[str, bool]] = defaultdict(dict)
    with engine.connect() as conn:
        for r in conn.execute(
            select(Consent.customer_id, Consent.channel, Consent.granted).where(
                Consent.customer_id.between(*id_range)
            )
        ):
            out[r.customer_id][r.channel] = bool(r.granted)
    return out


def template_context(spec: CampaignSpec, row: dict, as_of: date, settings: Settings) -> dict:
    customer = {c.name: row.get(c.name) for c in CUSTOMER_COLUMNS}
    return {
        **enrich({k: v for k, v in row.items() if k not in customer}),
        "customer": customer,
        "name": greeting_name(customer),
        "brand": settings.brand_name,
        "campaign": spec.name,
        "as_of": as_of,
    }


def render_message(
    spec: CampaignSpec,
    renderer: Renderer,
    settings: Settings,
    row: dict,
    decision: Decision,
    as_of: date,
) -> Rendered:
    """The message exactly as it will go out, whatever the delivery mode.

    SMS get their opt-out line and length check here rather than only in the
    live channel, so the outbox and the ledger hold the text a customer
    would receive, and a too-long SMS fails the same way in a demo.
    """
    locale = row.get("locale") or settings.default_locale
    try:
        rendered = renderer.render(
            spec.name,
            decision.channel,
            row.get("locale"),
            template_context(spec, row, as_of, settings),
        )
    except TemplateError as exc:
        raise Unsendable("template_error", str(exc)) from None
    if decision.channel == "sms":
        sms = sms_preview(rendered.body, locale=locale, marketing=spec.marketing, settings=settings)
        if sms.problem:
            raise Unsendable("sms_too_long", sms.problem)
        rendered = replace(rendered, body=sms.text)
    return rendered


def process_batch(
    *,
    spec: CampaignSpec,
    engine: Engine,
    settings: Settings,
    run_id: str,
    as_of: date,
    at: datetime,
    id_range: tuple[int, int],
    channel_override: str | None = None,
    dry_run: bool = False,
    params: dict | None = None,
    renderer: Renderer | None = None,
) -> BatchResult:
    """Run the whole route for the customers of the campaign's segment in ``id_range``."""
    renderer = renderer or Renderer(settings.templates_dir, settings.default_locale)
    result = BatchResult()
    with engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(segment_select(spec, as_of, at, id_range, params)).mappings()
        ]
    if not rows:
        return result
    result.selected = len(rows)
    consents = load_consents(engine, id_range)
    channels = [channel_override] if channel_override else list(spec.channels)
    region = settings.sms_default_region
    decisions: dict[int, Decision] = {
        r["id"]: decide(
            r,
            channels,
            consents.get(r["id"], {}),
            consent_required=settings.consent_required,
            default_region=region,
        )
        for r in rows
    }
    keys = {r["id"]: (r["id"], occasion_key(spec, enrich(r), as_of)) for r in rows}

    if dry_run:
        for r in rows:
            d = decisions[r["id"]]
            if d.skip_reason:
                result.skipped[d.skip_reason] += 1
                continue
            try:
                rendered = render_message(spec, renderer, settings, r, d, as_of)
            except Unsendable as exc:
                result.failed[exc.reason] += 1
                _sample(result, r, d, None, exc.detail)
                continue
            result.would_send[d.channel] += 1
            _sample(result, r, d, rendered.subject or rendered.body, None)
        return result

    ledger = ContactLedger(engine, settings.reservation_lease_seconds)
    claim = ledger.claim(spec.name, run_id, list(keys.values()))
    for state in claim.already.values():
        result.already["in_progress" if state in (State.RESERVED, State.SENDING) else state] += 1
    # Rows an earlier attempt left in 'sending' may have reached the customer: settle
    # them as failed: interrupted rather than leave them hanging or send them again.
    sending = [k for k, state in claim.already.items() if state == State.SENDING]
    interrupted = ledger.resolve_interrupted(spec.name, sending, run_id) if sending else 0
    if interrupted:
        result.already["in_progress"] -= interrupted
        result.failed["interrupted"] += interrupted

    outcomes: list[Outcome] = []
    details: dict[int, dict] = {}
    by_channel: dict[str, list[Message]] = defaultdict(list)
    for r in rows:
        contact_id = claim.owned.get(keys[r["id"]])
        if contact_id is None:
            continue  # another run handled (or is handling) this customer's occasion
        d = decisions[r["id"]]
        if d.skip_reason:
            outcomes.append(Outcome.skipped(contact_id, d.skip_reason, d.detail))
            continue
        try:
            rendered = render_message(spec, renderer, settings, r, d, as_of)
        except Unsendable as exc:
            outcomes.append(Outcome.failed(contact_id, exc.reason, detail=exc.detail))
            continue
        msg = Message(
            contact_id=contact_id,
            campaign=spec.name,
            customer_id=r["id"],
            occasion=keys[r["id"]][1],
            channel=d.channel,
            to=d.address,
            body=rendered.body,
            subject=rendered.subject,
            html=rendered.html,
            locale=r.get("locale") or settings.default_locale,
            marketing=spec.marketing,
        )
        by_channel[d.channel].append(msg)
        details[contact_id] = {
            "channel": d.channel,
            "recipient": d.address,
            "subject": rendered.subject,
            "body": rendered.body,
        }
    ledger.record(outcomes, run_id)  # skips and template errors first: nothing left hanging

    for channel_name, messages in by_channel.items():
        with closing_channel(get_channel(channel_name, settings)) as channel:
            for start in range(0, len(messages), settings.send_chunk_size):
                chunk = messages[start : start + settings.send_chunk_size]
                sent, lost = _send_chunk(ledger, channel, channel_name, chunk, run_id, details)
                outcomes.extend(sent)
                result.already["in_progress"] += lost

    for o in outcomes:
        if o.state == State.SENT:
            result.sent += 1
        elif o.state == State.SKIPPED:
            result.skipped[o.reason] += 1
        else:
            result.failed[o.reason] += 1
    result.already += Counter()  # drop zero counts
    return result


def _send_chunk(
    ledger: ContactLedger,
    channel,
    channel_name: str,
    messages: list[Message],
    run_id: str,
    details: dict[int, dict],
) -> tuple[list[Outcome], int]:
    """Mark sending, send, record, for one chunk; returns (outcomes, rows lost to another run).

    Marking just before each chunk keeps what a crash leaves ambiguous
    ("sending": maybe delivered) to one chunk, not the whole batch.
    """
    mine = ledger.mark_sending([m.contact_id for m in messages], channel_name, run_id)
    to_send = [m for m in messages if m.contact_id in mine]
    if not to_send:
        return [], len(messages)
    try:
        sent = channel.send_batch(to_send)
    except Exception as exc:  # a channel bug: outcome unknown, so never resend
        sent = [
            Outcome.failed(m.contact_id, "channel_error", detail=f"{type(exc).__name__}: {exc}")
            for m in to_send
        ]
    missing = mine - {o.contact_id for o in sent}
    sent += [Outcome.failed(cid, "no_outcome", detail="channel returned none") for cid in missing]
    ledger.record(sent, run_id, details)
    return sent, len(messages) - len(to_send)


def _sample(result: BatchResult, row: dict, d: Decision, text: str | None, error: str | None):
    if len(result.samples) < 5:
        result.samples.append(
            {
                "customer_id": row["id"],
                "channel": d.channel,
                "to": d.address,
                "text": text,
                "error": error,
            }
        )
