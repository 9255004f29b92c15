"""``careflow consent``: the proof of every change of a customer's consent or suppression
(``show``), a change the shop makes for a customer who asked (``set``: written by
careflow/preferences.py ``apply_change``, as the preference centre's), and the retention
of the proof (``prune``). careflow/consent_proof.py owns the proof."""

from __future__ import annotations

import contextlib
import json

import click

from careflow.cli.common import _echo, _engine, _settings
from careflow.errors import ConfigError


@click.group()
def consent():
    """Consent proof: who opted in or out, when, how, and the evidence (docs/preferences.md)."""


@consent.command("show")
@click.argument("customer")
@click.option("--json", "as_json", is_flag=True, help="Every record with all its fields.")
def show(customer, as_json):
    """Every change of CUSTOMER's consent or suppression, oldest first, with its evidence.

    CUSTOMER is the customer's id (17 or #17) or the shop's customer ref (C-17, or ref:17
    for a ref of digits). Times are UTC.
    """
    from careflow.consent_proof import find_customer, proof_of, table

    settings = _settings()
    with _engine().connect() as conn:
        found = find_customer(conn, customer)
        if found is None:
            raise ConfigError(f"no customer {customer!r}: give an id (#17) or a customer ref")
        customer_id, ref = found
        items = proof_of(conn, customer_id, _addresses(conn, customer_id, settings))
    who = f"customer #{customer_id}" + (f" ({ref})" if ref else "")
    if as_json:
        _echo(
            json.dumps(
                {"customer_id": customer_id, "customer_ref": ref, "records": items},
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    if not items:
        _echo(f"no consent proof for {who}: careflow has recorded no change of their consent")
        return
    _echo(f"consent proof for {who}, times in UTC:")
    _echo(table(items))


@consent.command("set")
@click.argument("customer")
@click.option("--marketing", type=click.Choice(["on", "off"]), help="Marketing messages.")
@click.option("--care", type=click.Choice(["on", "off"]), help="Care messages (birthdays...).")
@click.option("--channel", "channels", multiple=True, metavar="CHANNEL",
              help="Only on this channel (repeat for more). Default: every channel the "
                   "customer has an address for.")  # fmt: skip
@click.option("--cadence", type=click.Choice(["normal", "fewer", "paused"]),
              help="How often marketing may come; paused needs --until.")
@click.option("--until", "until", type=click.DateTime(["%Y-%m-%d"]),
              help="The day a pause ends (midnight UTC), with --cadence paused.")
@click.option("--reason", required=True,
              help='What the customer asked, and how ("phoned: no more SMS offers").')
@click.option("--by", "by", envvar="USER", required=True, show_envvar=True,
              help="Who at the shop makes the change (default: $USER).")
def set_(customer, marketing, care, channels, cadence, until, reason, by):
    """Change CUSTOMER's choices as they asked the shop (by phone, at the counter, in a
    letter), exactly as the preference centre would.

    The change is written with its consent proof (source operator, your name and the
    reason), and runs apply it from the next message on. CUSTOMER is an id (#17) or the
    shop's customer ref. Example: careflow consent set C-17 --marketing off --channel sms
    --reason "phoned: no more SMS offers"
    """
    from careflow import clock
    from careflow.consent_proof import find_customer
    from careflow.errors import DataError
    from careflow.preferences import Operator, State, apply_change, view

    if marketing is None and care is None and cadence is None:
        raise ConfigError("nothing to change: give --marketing, --care or --cadence")
    if (cadence == "paused") != (until is not None):
        raise ConfigError("--until goes with --cadence paused, and a pause needs it")
    settings = _settings()
    engine = _engine()
    with engine.connect() as conn:
        found = find_customer(conn, customer)
    if found is None:
        raise ConfigError(f"no customer {customer!r}: give an id (#17) or a customer ref")
    customer_id, ref = found
    now = clock.utcnow()
    seen = view(engine, customer_id, settings, now)
    unknown = sorted(set(channels) - set(seen.addresses))
    if unknown:
        raise ConfigError(
            f"customer #{customer_id} has no usable address on {', '.join(unknown)}"
            f" (they have: {', '.join(seen.addresses) or 'none'})"
        )
    allowed = dict(seen.state.allowed)
    for category, wish in (("marketing", marketing), ("care", care)):
        for channel in channels or seen.addresses:
            if wish is not None:
                allowed[(category, channel)] = wish == "on"
    wanted = State(
        cadence or seen.state.cadence,
        until if cadence == "paused" else (None if cadence else seen.state.paused_until),
        allowed,
    )
    try:
        change = apply_change(
            engine, customer_id, wanted, locale=seen.locale or "", token_id="", at=now,
            settings=settings, operator=Operator(by, reason),
        )  # fmt: skip
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    who = f"customer #{customer_id}" + (f" ({ref})" if ref else "")
    if not change.changed:
        _echo(f"{who}: nothing changed, their choices were already so")
        return
    _echo(f"{who}: changed by {by}, with its consent proof (careflow consent show {customer}):")
    for line in change.changed:
        _echo(f"  {line}")


def _addresses(conn, customer_id: int, settings) -> list[tuple[str, str]]:
    """The customer's addresses as they are stored and as channels normalise them: proof
    that came for an address without a customer (a bounce no message matched) is theirs."""
    from sqlalchemy import select

    from careflow.addresses import normalize_email, normalize_phone
    from careflow.db.models import Customer
    from careflow.errors import InvalidContact

    row = conn.execute(
        select(Customer.mobile, Customer.email, Customer.fax).where(Customer.id == customer_id)
    ).one()
    out = []
    for channel, raw, normalize in (
        ("sms", row.mobile, lambda a: normalize_phone(a, settings.sms_default_region)),
        ("email", row.email, normalize_email),
        ("fax", row.fax, lambda a: normalize_phone(a, settings.sms_default_region)),
    ):
        if raw:
            out.append((channel, raw))
            with contextlib.suppress(InvalidContact):
                out.append((channel, normalize(raw)))
    return out


@consent.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def prune(dry_run, as_json):
    """Delete consent proof older than CAREFLOW_CONSENT_PROOF_RETENTION_DAYS.

    The newest record of each customer, channel and category (and of each suppressed
    address) is kept however old: it proves the state careflow acts on today. The
    database refuses to delete anything younger than the legal minimum (180 days).
    """
    from careflow.consent_proof import prune as run_prune

    days = _settings().consent_proof_retention_days
    pruned = run_prune(_engine(), days, dry_run=dry_run)
    if as_json:
        _echo(json.dumps({**pruned.as_dict(), "retention_days": days}))
        return
    verb = "would delete" if dry_run else "deleted"
    _echo(
        f"{verb} {pruned.deleted:,} consent proof record(s) recorded before "
        f"{pruned.before:%Y-%m-%d %H:%M} UTC (retention {days} days)"
    )
