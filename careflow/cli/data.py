"""Data in: ``careflow demo`` and ``careflow import``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from careflow.cli.common import WholeNumber, _echo, _engine, _progress_bars, _settings


@click.command()
@click.option(
    "--customers", type=WholeNumber(1), default=10_000, show_default=True,
    help="How many demo customers.",
)
@click.option("--as-of", default=None, help="Date the demo runs on (default: today).")
@click.option("--reseed", is_flag=True, help="Wipe the demo database and seed it again.")
@click.option("--seed-only", is_flag=True, help="Seed the data but run no campaigns.")
def demo(customers, as_of, reseed, seed_only):
    """Seed demo customers and run the four care campaigns on the outbox.

    Safe to run again: the data is seeded once, and a second run the same
    day sends nothing new (the ledger says who already got what).
    """
    from careflow.demo.run import run_demo

    run_demo(customers=customers, as_of=as_of, reseed=reseed, seed_only=seed_only)


@click.group("import")
def import_():
    """Load data from files."""


_encoding_option = click.option(
    "--encoding",
    default=None,
    metavar="NAME",
    help="The file's encoding, e.g. cp1252 or latin-1. Default: UTF-8, or what a byte "
    "order mark says; a file that is not stops with the line that shows it.",
)


_date_format_option = click.option(
    "--date-format",
    default=None,
    metavar="ORDER",
    help="How dates like 03/11/2026 read: DD/MM/YYYY or MM/DD/YYYY (separator / . or -); "
    "YYYY-MM-DD refuses them. Default: a column's order is inferred when one of its dates "
    "proves it (13/11/2026 is day first), otherwise such dates are listed as bad rows.",
)


def _finish(report) -> None:
    """Print the import's report; exit 1 when some rows were malformed (the rest loaded).

    Exit codes: 0 every row loaded or skipped on purpose; 1 malformed rows were left
    out and listed, the others loaded; 2 nothing loaded (an error about the whole file).
    """
    _echo(report.summary())
    if report.malformed_rows:
        rest = "the other rows are loaded" if report.rows_read > report.malformed_rows else (
            "no row was good"
        )
        _echo(
            f"{report.malformed_rows:,} malformed row(s) not loaded (listed above); {rest}. "
            "Exit code 1.",
            err=True,
        )
        sys.exit(1)


def _map_option(fields: str, default: str):
    return click.option(
        "--map",
        "mapping",
        multiple=True,
        metavar="FIELD=COLUMN",
        help=f"Column for a field: {fields}. Default: {default}.",
    )


def _mapping(pairs: tuple[str, ...]) -> dict[str, str] | None:
    fields = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair[:60]!r} is not FIELD=COLUMN", param_hint="--map")
        k, v = pair.split("=", 1)
        fields[k.strip()] = v.strip()
    return fields or None


_file_argument = click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


@import_.command("orders")
@_file_argument
@_map_option(
    "invoice, sku, description, quantity, ordered_at, unit_price, customer, country",
    "the UCI Online Retail columns",
)
@click.option("--currency", default="GBP", show_default=True, help="Currency of the amounts.")
@_encoding_option
@_date_format_option
def import_orders(file, mapping, currency, encoding, date_format):
    """Import a transactions CSV (or .csv.gz): customers, products, orders, lines.

    Cancellations (invoice C...) and non-positive quantities are not
    purchases; rows that cannot be read or are out of bounds are listed with
    their line numbers and the rest is loaded (exit code 1 when there are
    any); a row repeated exactly loads once.
    """
    from careflow.importers.orders import import_orders as run_import

    engine = _engine(migrate=True)
    names = {"read": "rows read", "orders": "orders loaded", "lines": "order lines loaded"}
    with _progress_bars() as bar:
        report = run_import(
            engine,
            file,
            mapping=_mapping(mapping),
            currency=currency,
            encoding=encoding,
            progress=lambda stage, done, total: bar(names.get(stage, stage), done, total),
            date_format=date_format,
        )
    _attribute(engine)
    _finish(report)


@import_.command("customers")
@_file_argument
@_map_option(
    "ref, full_name, given_name, family_name, mobile, email, fax, locale, time_zone, "
    "birthday, birthday_calendar, grade, owner, country, preferred_channel",
    "columns named like the fields",
)
@_encoding_option
@_date_format_option
def import_customers(file, mapping, encoding, date_format):
    """Import customers from a CSV: contacts, locale, time zone, birthday and more.

    Matched by ref: a new ref creates a customer, a known one is updated
    with the fields its row fills in (an empty cell changes nothing); a ref
    on several rows is one customer, its later rows filling in cells.
    birthday_calendar (solar or lunar) says which calendar a birthday is
    kept on; left empty, zh locales keep the lunar one. Bad rows are listed
    with their line numbers and the rest is loaded (exit code 1 when there
    are any).
    """
    from careflow.importers.customers import import_customers as run_import

    _import_file(run_import, file, mapping, encoding, date_format)


@import_.command("consents")
@_file_argument
@_map_option(
    "customer, channel, granted, category, source, when", "columns named like the fields"
)
@_encoding_option
@_date_format_option
def import_consents(file, mapping, encoding, date_format):
    """Import consent decisions from a CSV: customer ref, channel, granted, source, when.

    The latest decision per customer and channel wins, and one older than
    what careflow holds is not applied. Bad rows (an unknown customer, a
    channel that is not sms/email/fax) are listed with their line numbers
    and the rest is loaded (exit code 1 when there are any).
    """
    from careflow.importers.consents import import_consents as run_import

    _import_file(run_import, file, mapping, encoding, date_format)


def _import_file(run_import, file, mapping, encoding, date_format) -> None:
    """An import with no options of its own, then its one-line outcome and exit code."""
    report = run_import(
        _engine(migrate=True),
        file,
        mapping=_mapping(mapping),
        encoding=encoding,
        date_format=date_format,
    )
    _finish(report)


def _attribute(engine) -> None:
    """Orders that follow a delivered message become its conversions (docs/responses.md)."""
    from careflow.responses import attribute_orders

    settings = _settings()
    n = attribute_orders(engine, settings.attribution_window_days, settings.time_zone)
    if n:
        _echo(f"{n} order(s) attributed to a delivered message as conversions")
