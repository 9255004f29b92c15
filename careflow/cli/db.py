"""``careflow db``: the database schema."""

from __future__ import annotations

import click

from careflow.cli.common import _echo, _settings


@click.group()
def db():
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade():
    """Create or migrate the careflow tables in CAREFLOW_DATABASE_URL."""
    from careflow import db as cdb

    url = _settings().effective_database_url
    before = cdb.current_revision(url)
    cdb.upgrade(url)
    after = cdb.current_revision(url)
    where = cdb.shown_url(cdb.engine_for(url).url)  # the password stays hidden
    if before is None:
        _echo(f"created careflow's tables (migration {after}): {where}")
    elif before != after:
        _echo(f"migrated from {before} to {after}: {where}")
    else:
        _echo(f"already up to date (migration {after}): {where}")
    from careflow import purchase_facts

    refreshed = purchase_facts.refresh(cdb.engine_for(url), warn=click.echo)
    if refreshed:
        _echo(f"purchase facts brought up to date for {refreshed:,} customer(s)")
