"""What every ``careflow`` command shares: output, settings, the database, progress
bars, argument types, common options and the error handling of the top-level group.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import click
from sqlalchemy.exc import DBAPIError

from careflow import (
    channels,  # noqa: F401 - registers the built-in channels
    registry,
)
from careflow.errors import CareflowError

# Prefect's local server can take >20 s to start on a busy machine (its default limit).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The local server Prefect starts for a run sends usage telemetry unless told not to:
# offline (a CRM's database machine often is) each attempt printed an ERROR, and its
# heartbeat a "database is locked" traceback from the server's SQLite, in the middle
# of a run. A user who wants it sets the variable.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# One line per task run drowns the flow's own progress lines in a terminal;
# the Prefect UI still shows every task run.
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "WARNING")


def _echo(text: object = "", **style) -> None:
    """Print careflow's output: names, replies and providers' messages are data, and any
    control or bidi character they carry is written out (``\\u001b``) instead of reaching
    the terminal (careflow/safe_text.py). Takes ``click.secho``'s arguments."""
    from careflow.safe_text import for_terminal

    click.secho(for_terminal(text, lines=True), **style)


def _settings():
    from careflow.settings import load_settings

    return load_settings()


def _engine(migrate: bool = False):
    from careflow import db

    url = _settings().effective_database_url
    if migrate:
        db.upgrade(url)
    engine = db.engine_for(url)
    db.ensure_schema(engine)
    return engine


@contextmanager
def _progress_bars():
    """A listener drawing one progress bar per stage on stderr, in a terminal only.

    Piped or captured output stays as it was: no bars, no control characters.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    bars = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    tasks: dict[str, int] = {}

    def listener(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield listener


def _parse_params(pairs: tuple[str, ...]) -> dict:
    """key=value pairs; values are read as YAML so 180 is a number and [a, b] a list.

    The segment checks the values; here only the shape of each pair can be wrong.
    """
    import yaml

    from careflow.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {pair!r} is not KEY=VALUE, e.g. --param days=365")
        if key in out:
            raise ConfigError(f"--param {key} is given twice; give each parameter once")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(
                f"--param {key}: {value!r} is not a value; write a number, a word, "
                "true/false, or a list such as [VIP, Large]"
            ) from None
    return out


class ChannelChoice(click.Choice):
    """A choice of registered channels, read when asked (a channel registered later counts)."""

    def __init__(self, content_only: bool = False):
        self.content_only = content_only
        super().__init__([])

    @property
    def choices(self):
        return registry.content_names() if self.content_only else registry.names()

    @choices.setter
    def choices(self, value):
        pass


#: the largest id or count careflow's databases hold (a signed 64-bit integer)
LARGEST = 2**63 - 1


class WholeNumber(click.ParamType):
    """An id or a count, ``minimum`` to LARGEST: anything else is a one-line error, never a
    number the database cannot take (a traceback) or a negative LIMIT (all rows on SQLite,
    an error on PostgreSQL)."""

    name = "integer"

    def __init__(self, minimum: int = 0):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not a whole number", param, ctx)
        if not self.minimum <= number <= LARGEST:
            self.fail(f"{number} is not from {self.minimum} to {LARGEST}", param, ctx)
        return number


ID, COUNT = WholeNumber(1), WholeNumber(0)


class CareflowGroup(click.Group):
    """Turns careflow's own errors, and a mistyped argument, into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CareflowError as exc:
            _echo(f"error: {exc}", fg="red", err=True)  # may quote a file's or a customer's text
            sys.exit(2)
        except DBAPIError as exc:  # a query the database refused: e.g. a sum past 64 bits
            reason = " ".join(str(exc.orig or exc).split())[:200]
            _echo(f"error: the database refused careflow's query: {reason}", fg="red", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            if isinstance(exc, click.exceptions.NoArgsIsHelpError):
                raise
            command = exc.ctx.command_path if exc.ctx else "careflow"
            _echo(f"error: {exc.format_message()} (`{command} --help` says more)", err=True)
            sys.exit(2)


_as_of_option = click.option(
    "--as-of",
    default=None,
    help="Date (YYYY-MM-DD) or ISO date-time, 1900-01-01 to 2200-12-31; default: now.",
)
_param_option = click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Segment parameter, e.g. days=365 (repeatable).",
)


def _format_option(help: str):
    """``--format text|json|csv`` (as ``fmt``); ``help`` says what json and csv give."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json", "csv"]),
        default="text",
        show_default=True,
        help=help,
    )


def _print_decisions(summary: dict) -> None:
    """A few policy decisions per reason: deferred until when, capped by which messages."""
    notes = summary.get("decisions") or []
    if not notes:
        return
    _echo("\npolicy decisions (a few per reason):")
    for d in notes:
        until = f" until {d['until']}" if d.get("until") else ""
        _echo(f"  #{d['customer_id']} {d['action']} {d['reason']}{until}")
        if d.get("detail"):
            _echo(f"      {d['detail']}")
