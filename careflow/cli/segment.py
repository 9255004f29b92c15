"""``careflow segment``: who a campaign would select."""

from __future__ import annotations

import json

import click

from careflow.cli.common import (
    COUNT,
    _as_of_option,
    _echo,
    _engine,
    _format_option,
    _param_option,
    _parse_params,
    _settings,
)


@click.group()
def segment():
    """Inspect segments: who a campaign would select.

    `careflow segment params` lists every segment, whom it selects and its
    parameters (set them with --param KEY=VALUE here, or under `parameters:`
    in a campaign.yaml).
    """


def _segment_select(name, as_of, params, engine=None):
    from careflow import segments
    from careflow.clock import resolve_as_of
    from careflow.money import check_stored_amounts

    day, at = resolve_as_of(as_of, _settings().time_zone)
    params = _parse_params(params)
    with (engine or _engine()).connect() as conn:
        check_stored_amounts(conn)  # segments sum orders: one line naming an absurd amount
        if segments.get(name).needs_prepare:  # e.g. clv: a model fitted on every customer first
            params = segments.prepare(name, conn, day, params)
    return segments.build(name, day, params, at=at)


@segment.command("count")
@click.argument("name")
@_as_of_option
@_param_option
def segment_count(name, as_of, params):
    """How many customers are in segment NAME (see `careflow segment --help`)."""
    from careflow import segments

    engine = _engine()
    query = _segment_select(name, as_of, params, engine)
    with engine.connect() as conn:
        _echo(segments.count(conn, query))


@segment.command("params")
@click.argument("name", required=False)
def segment_params(name):
    """The parameters of segment NAME (or of every segment): allowed values, default, meaning."""
    import yaml

    from careflow import segments

    names = [name] if name else segments.names()
    listed = {seg: segments.describe_params(seg) for seg in names}  # unknown NAME: error first
    about = segments.describe_segments()
    for seg, params in listed.items():
        _echo(f"{seg}: {about[seg]}")
        for p in params:
            # the default as one would write it after --param KEY=
            default = yaml.safe_dump(p["default"], default_flow_style=True)
            default = default.removesuffix("\n").removesuffix("\n...")
            _echo(f"  {p['name']}  {p['allowed']}; default {default}")
            _echo(f"      {p['description']}")


@segment.command("list")
@click.argument("name")
@_as_of_option
@_param_option
@click.option(
    "--limit",
    type=COUNT,
    default=None,
    help="Rows to show (0: all). Default: 20 for text, all for json and csv.",
)
@_format_option(
    "json and csv carry every column the segment computes, for a spreadsheet or a script."
)
def segment_list(name, as_of, params, limit, fmt):
    """List customers in segment NAME: who they are, and every column the segment computes.

    Money columns are shown as amounts in the row's currency (as templates see
    them); json and csv print every row unless --limit says otherwise.
    """
    from sqlalchemy import select

    from careflow.db.models import Customer
    from careflow.money import with_amounts
    from careflow.report import text_table

    engine = _engine()
    seg = _segment_select(name, as_of, params, engine).subquery("seg")
    query = (
        select(
            seg.c.customer_id,
            Customer.external_ref.label("ref"),
            Customer.full_name.label("name"),
            *[c for c in seg.c if c.name != "customer_id"],
        )
        .join(Customer, Customer.id == seg.c.customer_id)
        .order_by(seg.c.customer_id)
    )
    if limit is None:
        limit = 20 if fmt == "text" else 0
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        result = conn.execute(query)
        # money columns (monetary_minor) shown as amounts (monetary), as templates see them
        cols = list(with_amounts(dict.fromkeys(result.keys())))
        shown = [with_amounts(r) for r in result.mappings()]
    if fmt == "json":
        plain = [{k: _plain(v) for k, v in r.items()} for r in shown]
        _echo(json.dumps(plain, indent=2, ensure_ascii=False))
        return
    rows = [["" if v is None else str(_plain(v)) for v in r.values()] for r in shown]
    if fmt == "csv":
        from careflow.csv_export import csv_text

        click.echo(csv_text(cols, rows), nl=False)  # cells made safe by the writer
        return
    _echo(text_table(cols, rows))


def _plain(value):
    """A value as JSON and CSV carry it: amounts as exact decimal text, dates as ISO."""
    from datetime import date
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
