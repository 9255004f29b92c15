"""Configuration mistakes, through the real ``careflow`` command: each one ends in exit
code 2 and a single line on stderr naming what to fix, never a traceback, never a
password."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from careflow import db
from careflow.cli.main import main
from careflow.settings import PROJECT_ROOT
from tests.conftest import PG_ADMIN_URL, _postgres_available
from tests.factories import add_customer, add_orders

PASSWORD = "hunter2-s3cret"


def one_line_error(result, *expected: str) -> str:
    """The error line, after checking it is the only thing on stderr."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def careflow(monkeypatch, tmp_path):
    """Run ``careflow ARGS`` with the given environment (CAREFLOW_HOME: a fresh folder)."""
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CAREFLOW_DATABASE_URL", raising=False)

    def run(*args: str, **env: str):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return CliRunner().invoke(main, list(args))

    return run


@pytest.fixture
def shop(careflow, tmp_path):
    """A migrated SQLite database under CAREFLOW_HOME with one dormant customer."""
    from datetime import date

    url = f"sqlite:///{tmp_path / 'home' / 'careflow.db'}"
    db.upgrade(url)
    engine = db.engine_for(url)
    add_customer(engine, 1)
    add_orders(engine, 1, [date(2026, 1, 1)])
    return careflow


# --- the database --------------------------------------------------------------
BAD_URLS = {
    "unreachable": (
        f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:1/x",
        ["cannot connect to CAREFLOW_DATABASE_URL postgresql+psycopg://nobody:***@127.0.0.1:1/x",
         "Connection refused", "check that the server is running"],
    ),
    "port-not-a-number": (
        f"postgresql+psycopg://nobody:{PASSWORD}@db.example:fivefourthreetwo/x",
        ["CAREFLOW_DATABASE_URL is not a database URL", "expected dialect+driver://"],
    ),
    "not-a-url": (
        f"nobody:{PASSWORD}",
        ["CAREFLOW_DATABASE_URL is not a database URL", "expected dialect+driver://"],
    ),
    "driver-not-installed": (
        f"postgresql+psycopg2://nobody:{PASSWORD}@127.0.0.1/x",
        ["CAREFLOW_DATABASE_URL postgresql+psycopg2://nobody:***@127.0.0.1/x",
         "the driver psycopg2 is not installed", "postgresql+psycopg://"],
    ),
    "unknown-driver": (
        f"postgresql+pg9000://nobody:{PASSWORD}@127.0.0.1/x",
        ["CAREFLOW_DATABASE_URL postgresql+pg9000://nobody:***@127.0.0.1/x is not usable"],
    ),
    "unknown-option": (
        f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:1/x?colour=red",
        ["cannot connect to CAREFLOW_DATABASE_URL", 'invalid connection option "colour"'],
    ),
}


@pytest.mark.parametrize("command", [["segment", "count", "dormant"], ["db", "upgrade"],
                                     ["report", "last"], ["run", "winback"]],
                         ids=lambda c: " ".join(c))
@pytest.mark.parametrize("case", BAD_URLS, ids=str)
def test_an_unusable_database_url_is_one_line_without_the_password(careflow, case, command):
    url, expected = BAD_URLS[case]
    result = careflow(*command, CAREFLOW_DATABASE_URL=url)
    one_line_error(result, *expected)
    assert PASSWORD not in result.output


#: passwords with characters a URL gives a meaning to, written as they are or encoded:
#: neither half of the password may show, whatever the parser made of the URL
SHAPES = {
    "at-sign": ("postgresql+psycopg://nobody:hunter2@Zq9xW@127.0.0.1:1/x",
                ["has an @ after the one that ends the password", "%40"]),
    "at-sign-and-colon": ("postgresql+psycopg://nobody:hunter2@Zq9:xW@127.0.0.1:1/x",
                          ["is not a database URL", "%40"]),
    "encoded-at-sign": ("postgresql+psycopg://nobody:hunter2%40Zq9xW@127.0.0.1:1/x",
                        ["postgresql+psycopg://nobody:***@127.0.0.1:1/x"]),
    "slash-hash-question": ("postgresql+psycopg://nobody:hunter2/#?Zq9xW@127.0.0.1:1/x",
                            ["postgresql+psycopg://nobody:***@127.0.0.1:1/x"]),
    "in-the-query": ("postgresql+psycopg://nobody@127.0.0.1:1/x?password=hunter2%40Zq9xW",
                     ["cannot connect to CAREFLOW_DATABASE_URL"]),
    "ipv6-not-closed": ("postgresql+psycopg://nobody:hunter2@[::1:Zq9xW/x",
                        ["is not a database URL"]),
}


@pytest.mark.parametrize("command", [["segment", "count", "dormant"], ["db", "upgrade"]],
                         ids=lambda c: " ".join(c))
@pytest.mark.parametrize("case", SHAPES, ids=str)
def test_no_part_of_a_password_shows_whatever_the_url_shape(careflow, case, command):
    url, expected = SHAPES[case]
    result = careflow(*command, CAREFLOW_DATABASE_URL=url)
    one_line_error(result, *expected)
    assert "hunter2" not in result.output and "Zq9" not in result.output, result.output


@pytest.mark.skipif(not _postgres_available(), reason="PostgreSQL not reachable")
def test_a_missing_postgres_database_is_named_without_the_password(careflow):
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("://postgres@", f"://postgres:{PASSWORD}@")
    result = careflow("segment", "count", "dormant",
                      CAREFLOW_DATABASE_URL=f"{base}/careflow_no_such_database")
    line = one_line_error(result, 'database "careflow_no_such_database" does not exist')
    assert PASSWORD not in result.output and "postgres:***@" in line


@pytest.mark.parametrize("home, expected", [
    ("/proc/x", "cannot create the folder /proc/x for the SQLite database"),
    ("/proc", "cannot connect to CAREFLOW_DATABASE_URL sqlite:////proc/careflow.db"),
])
@pytest.mark.parametrize("command", [["segment", "count", "dormant"], ["db", "upgrade"]],
                         ids=lambda c: " ".join(c))
def test_an_unwritable_home_is_one_line_naming_the_setting(careflow, home, expected, command):
    one_line_error(careflow(*command, CAREFLOW_HOME=home), expected, "set CAREFLOW_HOME")


def test_the_real_command_in_a_fresh_process(tmp_path):
    """No test harness in between: the installed entry point, its stderr, its exit code."""
    env = {**os.environ, "CAREFLOW_HOME": str(tmp_path),
           "CAREFLOW_DATABASE_URL": f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:1/x"}
    proc = subprocess.run([sys.executable, "-m", "careflow", "segment", "count", "dormant"],
                          capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    assert "cannot connect to CAREFLOW_DATABASE_URL" in proc.stderr
    assert PASSWORD not in proc.stderr and "Traceback" not in proc.stderr


# --- dates at the calendar's ends ---------------------------------------------------
@pytest.mark.parametrize("as_of", ["0001-01-01", "9999-12-31", "9999-12-31T23:00:00-12:00",
                                   "0001-01-01T00:30:00+14:00", "1899-12-31", "2201-01-01"])
@pytest.mark.parametrize("command", [["segment", "count", "birthday"], ["segment", "list", "vip"],
                                     ["preview", "winback", "--customer", "1"],
                                     ["run", "winback"]],
                         ids=lambda c: " ".join(c[:2]))
def test_as_of_outside_the_supported_dates_is_one_line(shop, as_of, command):
    one_line_error(shop(*command, "--as-of", as_of),
                   "--as-of", "is outside the dates careflow works with: 1900-01-01 to 2200-12-31")


def test_the_ends_of_the_supported_range_work(shop):
    # the one customer bought on 2026-01-01: not yet a customer in 1900, long gone in 2200
    for as_of, dormant in (("1900-01-01", "0"), ("2200-12-31", "1")):
        result = shop("segment", "count", "dormant", "--as-of", as_of, "--param", "days=3650")
        assert result.exit_code == 0 and result.stdout.strip() == dormant, result.output


# --- segment parameters --------------------------------------------------------------
@pytest.mark.parametrize("segment, param, expected", [
    ("dormant", "days=-5", "segment 'dormant': days must be a whole number from 1 to 3650 (got -5)"),
    ("dormant", "days=1000000", "segment 'dormant': days must be a whole number from 1 to 3650"),
    ("dormant", "days=", "segment 'dormant': days must be a whole number from 1 to 3650 (got None)"),
    ("dormant", "dayz=5", "segment 'dormant': unknown parameter 'dayz' (did you mean 'days'?)"),
    ("vip", "tiers=VIP", "segment 'vip': tiers must be a list of one or more of VIP, Large"),
    ("vip", "tiers=[Gold]", "segment 'vip': tiers must be a list"),
    ("vip", "vip_pct=0", "segment 'vip': vip_pct must be a percentage above 0"),
    ("pyramid", "cutoffs={}", "segment 'pyramid': cutoffs must be what segments.prepare returns"),
    ("birthday", "default_zone=Mars/Base", "segment 'birthday': default_zone must be an IANA"),
    ("birthday", "feb29_on=feb30", "segment 'birthday': feb29_on must be one of feb28, mar1"),
    ("reorder_due", "min_purchase_days=1", "min_purchase_days must be a whole number from 3"),
    ("dormant", "days", "--param 'days' is not KEY=VALUE"),
    ("vip", "tiers=[VIP", "--param tiers: '[VIP' is not a value"),
])
@pytest.mark.parametrize("command", ["count", "list"])
def test_a_bad_segment_parameter_is_one_line(shop, command, segment, param, expected):
    result = shop("segment", command, segment, "--as-of", "2026-11-22", "--param", param)
    one_line_error(result, expected)


def test_a_parameter_given_twice_is_refused(shop):
    result = shop("segment", "count", "dormant", "--param", "days=5", "--param", "days=6")
    one_line_error(result, "--param days is given twice")


def test_a_bad_parameter_in_campaign_yaml_is_one_line(shop, tmp_path):
    root = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    spec = root / "winback" / "campaign.yaml"
    spec.write_text(spec.read_text().replace("{days: 180}", "{days: -180}"))
    result = shop("preview", "winback", "--customer", "1", "--as-of", "2026-11-22",
                  CAREFLOW_TEMPLATES_DIR=str(root))
    one_line_error(result, "segment 'dormant': days must be a whole number from 1 to 3650 (got -180)")


def test_segment_params_lists_every_parameter(careflow):
    result = careflow("segment", "params", "dormant")
    assert result.exit_code == 0
    assert "days  a whole number from 1 to 3650; default 180" in result.stdout
    assert "max_days  a whole number from 1 to 3650, or null; default null" in result.stdout
    result = careflow("segment", "params")
    assert "tiers  a list of one or more of VIP, Large, Medium, Small" in result.stdout
    assert "cutoffs" not in result.stdout  # filled in by careflow, not a person
    one_line_error(careflow("segment", "params", "loyal"), "unknown segment 'loyal'")


@pytest.mark.parametrize("as_of", ["0001-01-01", "9999-12-31", "not-a-date"])
def test_demo_refuses_a_bad_as_of_before_seeding(careflow, tmp_path, as_of):
    result = careflow("demo", "--customers", "5", "--seed-only", "--as-of", as_of)
    one_line_error(result, "--as-of")
    assert not (tmp_path / "home" / "careflow.db").exists()
