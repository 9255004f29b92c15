"""One customer's message: previewed, sent as a test, or rendered for ``careflow lint``.

**Preview** walks the route's own steps for one customer (careflow/flows/route.py:
select, occasion, policy, contact history, render) with the dry-run ledger,
so a preview and a run never disagree about who gets what. It shows the
message as text (what it says, its channel, SMS segments), as the HTML email
the customer's mail client shows (footer and unsubscribe link in place:
careflow/channels/email_content.py, as the outbox and SendGrid build it), or as the
fax PDF (careflow/channels/fax.py, as the outbox and the fax provider get it).
It also states the campaign's holdout split for that day: whether this
customer is held out, and the smallest difference in conversion the split
can detect (careflow/uplift.py).

**A test send** renders a campaign for a sample customer (or a real one's
data) and sends it through the configured channel (outbox or live) to an
address the marketer gives. It is recorded in the contact history under
the campaign key ``test:<campaign>`` and on a customer record of its own
(ref ``careflow-test-sends``: no contact details, no birthday, no orders, so
no segment ever selects it). So a test never counts as any customer's
occasion and never blocks the real send, and what comes back from the test
address (a click on its unsubscribe link, a STOP reply, a bounce) lands on
that record, never on the customer whose data filled the template.

**Lint** (careflow/lint.py) renders templates for sample customers;
:func:`sample_context` gives it the context a run would build for them.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from decimal import Decimal

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from careflow import registry, segments
from careflow.addresses import normalize_email, normalize_phone
from careflow.campaigns import CampaignSpec, load_campaign
from careflow.channels import closing_channel, get_channel
from careflow.channels.email_content import email_content
from careflow.channels.outbox import LOCAL_UNSUBSCRIBE
from careflow.channels.sms_text import sms_segments
from careflow.clock import resolve_as_of, utcnow
from careflow.db.models import ContactHistory, Customer
from careflow.errors import CareflowError, ConfigError, InvalidContact, RecipientError
from careflow.flows.route import (
    Route,
    RunPlan,
    decide,
    policy_outcome,
    render_message,
    render_messages,
    select_candidates,
    select_occasions,
    template_context,
)
from careflow.ledger import ContactLedger, DryRunLedger
from careflow.lint import Sample, samples_for
from careflow.messages import Message, Outcome, State
from careflow.rendering import Renderer
from careflow.settings import Settings

#: the customer record test sends are recorded on
TEST_CUSTOMER_REF = "careflow-test-sends"
#: what a preview's unsubscribe link carries instead of a working token
PREVIEW_TOKEN = "preview-only-not-a-real-token"


# --- preview --------------------------------------------------------------------------
@dataclass
class Preview:
    """What the route decides for one customer, and the message when it would send one."""

    lines: list[str] = field(default_factory=list)
    message: Message | None = None
    head: int = 0  # lines that describe the run (campaign, occasion, split), not the decision
    #: a deferred or held-out message: the lines saying when it would go out, or that it
    #: never does, and why (else empty)
    when: list[str] = field(default_factory=list)


def walk_route(
    engine: Engine,
    campaign: str,
    customer_id: int,
    as_of: str | None,
    channel: str | None,
    settings: Settings,
) -> Preview:
    """The route's steps for one customer (careflow/flows/route.py: ``select_occasions``,
    ``decide``, ``render_messages``), a dry run's: sending and recording nothing."""
    spec = load_campaign(campaign, settings.templates_dir)
    day, at = resolve_as_of(as_of, settings.time_zone)
    params = None
    if segments.get(spec.segment).needs_prepare:  # clv: its model is fitted on everyone first
        with engine.connect() as conn:
            params = segments.prepare(spec.segment, conn, day, spec.parameters)
    run = RunPlan(
        spec=spec,
        run_id="preview",
        as_of=day,
        at=at,
        settings=settings,
        only_channel=channel,
        dry_run=True,
        params=params,
    )
    route = Route.for_run(run, engine=engine)
    if channel and not route.renderer.has_channel(spec.name, channel):
        raise CareflowError(
            f"campaign {spec.name!r} has no {channel} template in templates/{spec.name}/"
        )
    # the dry-run ledger, for one claim: nothing to keep for later ones
    route.ledger = DryRunLedger(engine, settings.reservation_lease_seconds, remember=False)
    one = (customer_id, customer_id)
    candidates = select_occasions(route, one)
    if not candidates:
        raise CareflowError(
            f"customer {customer_id} is not in segment {spec.segment!r} as of {day}; "
            f"`careflow segment list {spec.segment} --as-of {day}` shows who is"
        )
    claim = decide(route, candidates, one)  # the dry-run ledger: shared addresses, caps
    c = candidates[0]
    out = Preview(
        [
            f"campaign {spec.name} ({spec.segment}, {spec.category}) as of {day}, "
            f"customer {customer_id}",
            f"occasion: {c.key[1]}",
            f"decided at: {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            *_split_lines(engine, route),
            *_experiment_lines(engine, route),
        ]
    )
    out.head = len(out.lines)
    if c.key in claim.already:
        state = claim.already[c.key]
        row = _ledger_row(engine, spec.name, c.key)
        if state == State.DEFERRED and row is not None:
            out.lines.append(
                f"ledger: deferred ({row.reason}) until {row.not_before:%Y-%m-%d %H:%M} UTC; "
                "the follow-up flow (or a run after then) sends it once"
            )
        else:
            out.lines.append(
                f"ledger: already {state} for this occasion (a run would not send it again)"
            )
    d = c.decision
    if d.action == "defer" and d.channel is not None and d.until is not None:
        # deferred, not refused: the message goes out later, so show it and when
        out.lines += _deferral_lines(route, c, d)
        out.when = out.lines[out.head :]
    elif d.action != "send":
        outcome = policy_outcome(0, d)
        verb = {
            "defer": "deferred",
            "skip": "skipped",
            "held_out": "held out",
        }[d.action]
        out.lines.append(f"would be {verb}: {outcome.reason}")
        if d.until is not None and d.action == "defer":
            out.lines.append(f"until: {d.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
        if outcome.detail:
            out.lines.append(f"why: {outcome.detail}")
        if outcome.state == State.SKIPPED:
            out.lines.append("(skips are decided again by every run)")
        if outcome.state == State.HELD_OUT and d.channel is not None:
            # the marketer still sees the message this customer's twins get
            out.lines.append(
                "(a run records it as held_out and never sends this occasion's message; "
                "below, the message as it would have gone)"
            )
            out.when = out.lines[out.head :]
        else:
            if outcome.state == State.HELD_OUT:
                out.lines.append(
                    "(a run records it as held_out and never sends this occasion's message)"
                )
            return out
    if d.action == "send" and d.detail:  # why now: the best hour, or the comparison group
        out.lines.append(f"send time: {d.detail}")
    fallback = [o.channel for o in d.options if o.channel != d.channel]
    if fallback:
        out.lines.append(f"fallbacks: {', '.join(fallback)}")
    out.lines.append(f"channel: {d.channel} to {d.address}")
    (message,) = render_messages(route, [(c, 0)])
    if isinstance(message, RecipientError):
        out.lines.append(f"would fail: {message.reason}: {message.detail}")
    else:
        out.message = message
    return out


def _deferral_lines(route: Route, c, d) -> list[str]:
    """When a deferred message would go out, in the customer's zone and in UTC, and why."""
    from careflow.policy.timing import zone_of

    config, settings = route.policy, route.run.settings
    zone, note = zone_of(
        c.row.get("time_zone"), config.business_zone if config else settings.time_zone
    )
    local = d.until.astimezone(zone)
    outcome = policy_outcome(0, d)
    lines = [
        f"would be deferred: {outcome.reason}",
        f"until: {d.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
        f"({local:%Y-%m-%d %H:%M} {zone}, the customer's time"
        + (f"; {note}" if note else "")
        + ")",
    ]
    if outcome.detail:
        lines.append(f"why: {outcome.detail}")
    lines.append(
        "(a run records it as deferred; the follow-up flow, or a run after then, "
        "sends this message once)"
    )
    return lines


def _split_lines(engine: Engine, route: Route) -> list[str]:
    """The day's holdout split, from the number the segment selects: the smallest
    difference in conversion it can detect (before anything is sent)."""
    from sqlalchemy import func

    from careflow.uplift import baseline_for, split_lines, split_summary

    run = route.run
    spec, settings, params = run.spec, run.settings, run.params
    seg = segments.build(
        spec.segment, run.as_of, spec.parameters if params is None else params, at=run.at
    ).subquery("seg")
    with engine.connect() as conn:
        selected = conn.execute(select(func.count()).select_from(seg)).scalar_one()
    share = route.policy.holdout if route.policy else 0.0
    held = round(selected * share)
    baseline, source = baseline_for(engine, spec.name, settings)
    lines = split_lines(split_summary(selected - held, held, share, baseline, source))
    if share:
        lines[0] += f" (of the {selected:,} selected that day, before the policy's skips)"
    return lines


def _experiment_lines(engine: Engine, route: Route) -> list[str]:
    """The campaign's experiment before launch, as a run states it: the smallest rise it
    finds, its power for the rise worth finding (a warning below
    CAREFLOW_EXPERIMENT_MIN_POWER; a preview never refuses) and the winner, once decided."""
    from careflow.experiment_decisions import decision_of
    from careflow.experiment_report import plan_for, plan_in_words

    spec, settings = route.run.spec, route.run.settings
    if spec.experiment is None:
        return []
    plan = plan_for(engine, spec, settings, "warn")  # a preview never refuses
    said = plan_in_words(plan)
    decided = decision_of(engine, spec.name)
    if decided is not None:
        said += (
            f"\ndecided on {decided['decided_at'][:10]}: {decided['winner']} won; every new "
            "customer gets it"
        )
    return said.splitlines()


def _ledger_row(engine: Engine, campaign: str, key: tuple[int, str]):
    ch = ContactHistory.__table__
    with engine.connect() as conn:
        return conn.execute(
            select(ch.c.reason, ch.c.not_before).where(
                ch.c.campaign == campaign, ch.c.customer_id == key[0], ch.c.occasion == key[1]
            )
        ).first()


def preview_message(
    engine: Engine,
    campaign: str,
    customer_id: int,
    as_of: str | None,
    channel: str | None,
    settings: Settings,
) -> str:
    """The text preview: the route's decisions, then the message as it would go out."""
    found = walk_route(engine, campaign, customer_id, as_of, channel, settings)
    lines, msg = list(found.lines), found.message
    if msg is None:
        return "\n".join(lines)
    if msg.subject:
        lines.append(f"subject: {msg.subject}")
    lines += ["", msg.body]
    if msg.channel == "sms":
        info = sms_segments(msg.body)
        lines += [
            "",
            f"({info.chars} characters, {info.encoding}, {info.segments} SMS segment(s); "
            f"limit {settings.sms_max_segments})",
        ]
    return "\n".join(lines)


def _sent_message(found: Preview, channel: str, customer_id: int) -> Message:
    if found.message is None:
        why = "; ".join(found.lines[found.head :]) or "nothing to send"
        raise CareflowError(f"customer {customer_id} would get no {channel}: {why}")
    return found.message


class _PreviewTokens:
    """Stands in for the signing key: a preview's unsubscribe link must not work."""

    def make(self, *args, **kwargs) -> str:
        return PREVIEW_TOKEN

    def sign(self, purpose: bytes, message: bytes) -> bytes:  # a preference link that fails
        return bytes(32)


def email_html(message: Message, settings: Settings) -> str:
    """The HTML a mail client shows for ``message``: footer and unsubscribe link in place.

    A text-only email is shown as its text, as mail clients do.
    """
    base = settings.unsubscribe_base_url or LOCAL_UNSUBSCRIBE
    content = email_content(message, _PreviewTokens(), base)  # type: ignore[arg-type]
    if content.html is not None:
        return content.html
    title = html.escape(message.subject or "")
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(message.locale)}">\n<head>\n'
        f'<meta charset="utf-8">\n<title>{title}</title>\n</head>\n<body>\n'
        '<pre style="white-space:pre-wrap;font-family:monospace;font-size:15px">'
        f"{html.escape(content.text)}</pre>\n</body>\n</html>\n"
    )


def preview_html(
    engine: Engine,
    campaign: str,
    customer_id: int,
    as_of: str | None,
    settings: Settings,
) -> str:
    """The email ``customer_id`` would get, as their mail client shows it."""
    return preview_file(engine, campaign, customer_id, as_of, "html", settings)[0]


def preview_pdf(
    engine: Engine,
    campaign: str,
    customer_id: int,
    as_of: str | None,
    settings: Settings,
) -> bytes:
    """The fax ``customer_id`` would get: the PDF the outbox and the fax provider are given."""
    return preview_file(engine, campaign, customer_id, as_of, "pdf", settings)[0]


def preview_file(
    engine: Engine,
    campaign: str,
    customer_id: int,
    as_of: str | None,
    fmt: str,
    settings: Settings,
) -> tuple[str | bytes, list[str]]:
    """The email (``fmt`` html) or the fax PDF (``pdf``) ``customer_id`` would get, and for a
    message the policy defers or holds out, the lines saying when it would go out (or that
    it never does) and why (else none)."""
    channel = {"html": "email", "pdf": "fax"}[fmt]
    found = walk_route(engine, campaign, customer_id, as_of, channel, settings)
    msg = _sent_message(found, channel, customer_id)
    if fmt == "html":
        return email_html(msg, settings), found.when
    from careflow.channels.fax import find_cjk_font, render_fax_pdf

    pdf = render_fax_pdf(msg.body, find_cjk_font(settings.fax_font_path), title=msg.subject)
    return pdf, found.when


# --- sample customers ---------------------------------------------------------------------
#: what a segment's columns hold for a sample customer (by column name)
_SEGMENT_SAMPLES = {
    "local_date": lambda day: day.isoformat(),
    "last_purchase_on": lambda day: day - timedelta(days=45),
    "days_since": 45,
    "purchase_days": 6,
    "purchase_count": 4,
    "median_gap": 30.0,
    "interval_days": 30.0,
    "basis": "median_gap",
    "monetary_minor": 1_288_800,
    "currency": "CNY",
    "frequency": 12,
    "buyers": 1000,
    "tier": "VIP",
    "r_score": 5,
    "f_score": 5,
    "m_score": 5,
}
_BY_TYPE = {
    int: 7,
    float: 7.5,
    Decimal: Decimal("7.50"),
    str: "sample",
    bool: True,
}


#: values that make sense only for one segment (a dormant customer bought long ago)
_PER_SEGMENT = {
    "dormant": {"days_since": 210, "last_purchase_on": lambda day: day - timedelta(days=210)},
    "vip": {"days_since": 12},
}


def _sample_value(segment: str, name: str, sql_type, day: date):
    known = _PER_SEGMENT.get(segment, {}).get(name, _SEGMENT_SAMPLES.get(name))
    if known is not None:
        return known(day) if callable(known) else known
    try:
        python_type = sql_type.python_type
    except NotImplementedError:
        return None
    if issubclass(python_type, date):
        return day - timedelta(days=30)
    return _BY_TYPE.get(python_type)


def segment_sample(spec: CampaignSpec, day: date) -> dict:
    """Made-up values for the columns the campaign's segment gives its templates."""
    try:
        select_ = segments.build(spec.segment, day, spec.parameters)
    except ConfigError as exc:
        raise ConfigError(f"templates/{spec.name}/campaign.yaml: {exc}") from None
    names = {c.name for c in Customer.__table__.c}
    return {
        c.name: _sample_value(spec.segment, c.name, c.type, day)
        for c in select_.selected_columns
        if c.name != "customer_id" and c.name not in names
    }


def sample_context(spec: CampaignSpec, sample: Sample, day: date, settings: Settings) -> dict:
    """The template context a run would build for ``sample`` (the route's own function)."""
    row = {**segment_sample(spec, day), **sample.customer}
    return template_context(spec, row, day, settings)


# --- test sends ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SendTestResult:
    """What a test send did: the outcome, where it went and where it is recorded."""

    outcome: Outcome
    channel: str
    to: str
    campaign_key: str
    recorded_on: int
    rendered_for: str
    subject: str | None
    body: str


def key_for_test_sends(campaign: str) -> str:
    """The contact-history campaign of ``campaign``'s test sends (fits its 64 characters)."""
    key = f"test:{campaign}"
    if len(key) <= 64:
        return key
    import hashlib

    return f"test:{campaign[:50]}~{hashlib.sha1(campaign.encode()).hexdigest()[:8]}"


def customer_for_test_sends(engine: Engine) -> int:
    """The record test sends are kept on, created the first time."""
    query = select(Customer.id).where(Customer.external_ref == TEST_CUSTOMER_REF)
    with engine.begin() as conn:
        found = conn.execute(query).scalar()
        if found is not None:
            return found
        try:
            with conn.begin_nested():
                return conn.execute(
                    insert(Customer)
                    .values(
                        external_ref=TEST_CUSTOMER_REF,
                        full_name="careflow test sends",
                        created_at=utcnow(),
                    )
                    .returning(Customer.id)
                ).scalar_one()
        except IntegrityError:  # another test send created it just now
            return conn.execute(query).scalar_one()


def _channel_for(spec: CampaignSpec, to: str, channel: str | None, renderer: Renderer) -> str:
    if channel is None:
        kind = "email" if "@" in to else "phone"
        choices = [c for c in spec.channels if registry.get(c).address_kind == kind]
        if not choices:
            raise ConfigError(
                f"campaign {spec.name!r} sends no {'email' if kind == 'email' else 'SMS or fax'}"
                f" ({'/'.join(spec.channels)}); give --channel or another --to"
            )
        channel = choices[0]
    if not renderer.has_channel(spec.name, channel):
        raise ConfigError(
            f"campaign {spec.name!r} has no {channel} template in templates/{spec.name}/"
        )
    return channel


def _address(channel: str, to: str, settings: Settings) -> str:
    kind = registry.get(channel).address_kind
    try:
        if kind == "email":
            return normalize_email(to)
        return normalize_phone(to, settings.sms_default_region)
    except InvalidContact as exc:
        wanted = "an email address" if kind == "email" else "a phone number"
        raise ConfigError(f"--to: {exc} (the {channel} channel sends to {wanted})") from None


def _customer_row(engine: Engine, spec, customer_id: int, day, at, settings) -> tuple[dict, str]:
    """A real customer's row as the segment gives it, or their record with sample columns."""
    run = RunPlan(spec=spec, run_id="test-send", as_of=day, at=at, settings=settings, dry_run=True)
    found = select_candidates(Route.for_run(run, engine=engine), (customer_id, customer_id))
    if found:
        return found[0].row, f"customer {customer_id}"
    with engine.connect() as conn:
        record = (
            conn.execute(select(*Customer.__table__.c).where(Customer.id == customer_id))
            .mappings()
            .first()
        )
    if record is None:
        raise ConfigError(f"--customer {customer_id}: no such customer")
    row = {**segment_sample(spec, day), **dict(record)}
    return row, (
        f"customer {customer_id} (not in segment {spec.segment!r} as of {day}: "
        "its columns are samples)"
    )


def send_test(
    engine: Engine,
    campaign: str,
    to: str,
    settings: Settings,
    *,
    customer_id: int | None = None,
    channel: str | None = None,
    locale: str | None = None,
    as_of: str | None = None,
    variant: str | None = None,
) -> SendTestResult:
    """Render ``campaign`` for a sample (or ``customer_id``'s data) and send it to ``to``
    (its experiment's ``variant``, default the control).

    Sent through the configured delivery (outbox or live) and recorded as a
    test (see the module docs); raises CareflowError when it cannot be rendered.
    """
    spec = load_campaign(campaign, settings.templates_dir)
    if variant is not None and (spec.experiment is None or variant not in spec.experiment.names):
        names = ", ".join(spec.experiment.names) if spec.experiment else "none: no experiment"
        raise ConfigError(f"{spec.name} has no variant {variant!r}; its variants: {names}")
    day, at = resolve_as_of(as_of, settings.time_zone)
    renderer = Renderer.from_settings(settings)
    channel = _channel_for(spec, to, channel, renderer)
    address = _address(channel, to, settings)
    if customer_id is not None:
        row, rendered_for = _customer_row(engine, spec, customer_id, day, at, settings)
    else:
        sample = samples_for(locale or settings.default_locale)[0]
        row = {**segment_sample(spec, day), **sample.customer}
        rendered_for = f"sample customer ({sample.label})"
    try:
        rendered = render_message(spec, renderer, settings, row, channel, day, variant)
    except RecipientError as exc:
        raise CareflowError(f"{spec.name} cannot be sent: {exc.reason}: {exc.detail}") from None

    key = key_for_test_sends(spec.name)
    recorded_on = customer_for_test_sends(engine)
    occasion = f"test-{utcnow():%Y%m%dT%H%M%S%f}"
    run_id = f"test-send-{uuid.uuid4()}"
    ledger = ContactLedger(engine, settings.reservation_lease_seconds)
    contact_id = ledger.claim(key, run_id, [(recorded_on, occasion)]).owned[(recorded_on, occasion)]
    message = Message(
        contact_id=contact_id,
        campaign=key,
        customer_id=recorded_on,
        occasion=occasion,
        channel=channel,
        to=address,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        locale=row.get("locale") or settings.default_locale,
        marketing=spec.marketing,
        category=spec.category,
    )
    ledger.mark_sending([contact_id], channel, run_id, {contact_id: (address, message.subject,
                                                                     message.body)})  # fmt: skip
    try:
        with closing_channel(get_channel(channel, settings)) as sender:
            outcome = sender.send_batch([message])[0]
    except Exception as exc:  # as the route does: the outcome is unknown, never resent
        ledger.release(run_id, "test_send_failed")
        if isinstance(exc, CareflowError):
            raise
        raise CareflowError(f"test send failed: {type(exc).__name__}: {exc}") from None
    if outcome.state == State.SENT:
        outcome = Outcome(
            contact_id,
            State.SENT,
            provider_id=outcome.provider_id,
            detail=f"test send of {spec.name} to {address}, rendered for {rendered_for}",
        )
    details = {
        contact_id: {
            "channel": channel,
            "recipient": address,
            "subject": rendered.subject,
            "body": rendered.body,
        }
    }
    ledger.record([outcome], run_id, details)
    return SendTestResult(
        outcome, channel, address, key, recorded_on, rendered_for, rendered.subject, rendered.body
    )
