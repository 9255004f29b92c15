"""Preview one customer's message: the route's own steps for one customer, sending nothing.

The same select, policy, occasion, contact-history and render steps a run
uses (flows/route.py), with the dry-run ledger, so a preview and a run can
never disagree about who gets what.
"""

from __future__ import annotations

from sqlalchemy import Engine

import segments
from careflow.campaigns import load_campaign
from careflow.clock import resolve_as_of
from careflow.errors import CareflowError, RecipientError
from careflow.messages import State
from careflow.settings import Settings
from channels.sms_text import sms_segments
from flows.campaign import build_route
from flows.route import apply_policy, assign_occasions, policy_outcome, select_candidates


def preview_message(
    engine: Engine,
    campaign: str,
    customer_id: int,
    as_of: str | None,
    channel: str | None,
    settings: Settings,
) -> str:
    spec = load_campaign(campaign, settings.templates_dir)
    day, at = resolve_as_of(as_of, settings.time_zone)
    params = None
    if spec.segment in segments.NEEDS_PREPARE:  # clv: its model is fitted on everyone first
        with engine.connect() as conn:
            params = segments.prepare(spec.segment, conn, day, spec.parameters)
    route = build_route(settings, spec, "preview", day, at, channel, dry_run=True, params=params)
    if channel and not route.renderer.has_channel(spec.name, channel):
        raise CareflowError(
            f"campaign {spec.name!r} has no {channel} template in templates/{spec.name}/"
        )
    route.engine = engine
    one = (customer_id, customer_id)
    candidates = select_candidates(route, one)
    if not candidates:
        raise CareflowError(
            f"customer {customer_id} is not in segment {spec.segment!r} as of {day}; "
            f"`careflow segment list {spec.segment} --as-of {day}` shows who is"
        )
    apply_policy(route, candidates, one)
    assign_occasions(route, candidates)
    c = candidates[0]
    lines = [
        f"campaign {spec.name} ({spec.segment}) as of {day}, customer {customer_id}",
        f"occasion: {c.key[1]}",
    ]
    already = route.ledger.peek(spec.name, [c.key])
    if c.key in already:
        lines.append(
            f"ledger: already {already[c.key]} for this occasion (a run would not send it again)"
        )
    d = c.decision
    if d.action != "send":
        outcome = policy_outcome(0, d)
        verb = "held" if d.action == "hold" else "deferred" if d.action == "defer" else "skipped"
        lines.append(f"would be {verb}: {outcome.reason} ({outcome.detail})")
        if outcome.state == State.SKIPPED:
            lines.append("(skips are decided again by every run)")
        return "\n".join(lines)
    lines.append(f"channel: {d.channel} to {d.address}")
    from flows.route import build_message

    try:
        msg = build_message(route, c, contact_id=0)
    except RecipientError as exc:
        lines.append(f"would fail: {exc.reason}: {exc.detail}")
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
