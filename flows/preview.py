"""Preview one customer's message: the route up to rendering, sending nothing."""

from __future__ import annotations

from sqlalchemy import Engine

from careflow.campaigns import enrich, load_campaign, occasion_key
from careflow.clock import resolve_as_of
from careflow.errors import CareflowError, TemplateError
from careflow.ledger import ContactLedger
from careflow.policy import decide
from careflow.rendering import Renderer
from careflow.settings import get_settings
from channels.sms import sms_preview
from flows.route import load_consents, segment_select, template_context


def preview_message(
    engine: Engine, campaign: str, customer_id: int, as_of: str | None, channel: str | None
) -> str:
    settings = get_settings()
    spec = load_campaign(campaign, settings.templates_dir)
    day, at = resolve_as_of(as_of, settings.time_zone)
    with engine.connect() as conn:
        row = (
            conn.execute(segment_select(spec, day, at, (customer_id, customer_id)))
            .mappings()
            .first()
        )
    if row is None:
        raise CareflowError(
            f"customer {customer_id} is not in segment {spec.segment!r} as of {day}; "
            f"`careflow segment list {spec.segment} --as-of {day}` shows who is"
        )
    row = dict(row)
    lines = [f"campaign {spec.name} ({spec.segment}) as of {day}, customer {customer_id}"]
    occasion = occasion_key(spec, enrich(row), day)
    lines.append(f"occasion: {occasion}")
    earlier = [
        h
        for h in ContactLedger(engine).history(customer_id, 200)
        if h["campaign"] == spec.name and h["occasion"] == occasion
    ]
    if earlier:
        lines.append(
            f"ledger: already {earlier[0]['state']} for this occasion "
            "(a run would not send it again)"
        )
    decision = decide(
        row,
        [channel] if channel else spec.channels,
        load_consents(engine, (customer_id, customer_id)).get(customer_id, {}),
        consent_required=settings.consent_required,
        default_region=settings.sms_default_region,
    )
    if decision.skip_reason and not channel:
        lines.append(f"would be skipped: {decision.skip_reason} ({decision.detail})")
        return "\n".join(lines)
    chosen = decision.channel or channel
    lines.append(f"channel: {chosen} to {decision.address or '(no usable address)'}")
    try:
        rendered = Renderer(settings.templates_dir, settings.default_locale).render(
            spec.name, chosen, row.get("locale"), template_context(spec, row, day, settings)
        )
    except TemplateError as exc:
        lines.append(f"template error: {exc}")
        return "\n".join(lines)
    if rendered.subject:
        lines.append(f"subject: {rendered.subject}")
    if chosen != "sms":
        return "\n".join([*lines, "", rendered.body])
    # the text exactly as a live send would carry it, opt-out line included
    sms = sms_preview(
        rendered.body,
        locale=row.get("locale") or settings.default_locale,
        marketing=spec.marketing,
        settings=settings,
    )
    info = sms.info
    lines += [
        "",
        sms.text,
        "",
        f"({info.chars} characters, {info.encoding}, {info.segments} SMS segment(s); "
        f"limit {sms.max_segments})",
    ]
    if sms.problem:
        lines.append(f"problem: {sms.problem}")
    return "\n".join(lines)
