"""Where careflow keeps its files (CAREFLOW_HOME): the demo in the checkout, every other
database in a folder of its own (careflow.settings.home_for_database).

Regression (issue 25): production runs wrote into the checkout's .careflow/, beside the
demo's outbox, under file names (pyramid-<day>.html, the journal a run replays into its
database, unsubscribe.key) that a second database overwrote or took for its own.
"""

from __future__ import annotations

from careflow import outcome_journal
from careflow.messages import Outcome
from careflow.settings import DEMO_HOME, PROJECT_ROOT, load_settings

SHOP = "postgresql+psycopg://careflow:first-password@127.0.0.1:5432/careflow"
OTHER_SHOP = "postgresql+psycopg://careflow@127.0.0.1:5432/careflow_eu"


def test_the_demo_keeps_its_home_in_the_checkout(monkeypatch):
    monkeypatch.delenv("CAREFLOW_HOME", raising=False)
    monkeypatch.delenv("CAREFLOW_DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.home == DEMO_HOME == PROJECT_ROOT / ".careflow"
    assert settings.effective_database_url == f"sqlite:///{DEMO_HOME / 'careflow.db'}"
    assert settings.effective_outbox_dir == DEMO_HOME / "outbox"


def test_a_production_database_gets_a_home_of_its_own(monkeypatch, tmp_path):
    monkeypatch.delenv("CAREFLOW_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", SHOP)
    shop = load_settings()
    assert not shop.home.is_relative_to(PROJECT_ROOT)
    assert shop.home.parent == tmp_path / "careflow"
    assert shop.home.name.startswith("careflow-127.0.0.1-5432-")  # reads as its database
    assert shop.effective_outbox_dir.is_relative_to(shop.home)
    assert "first-password" not in str(shop.home)
    # the same database with another password or driver spelling: the same folder
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", SHOP.replace("first", "rotated"))
    assert load_settings().home == shop.home
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", "postgresql://careflow@127.0.0.1:5432/careflow")
    assert load_settings().home == shop.home
    # another database, or one of the same name elsewhere: another folder
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", OTHER_SHOP)
    assert load_settings().home != shop.home
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", SHOP.replace("127.0.0.1", "db.internal"))
    assert load_settings().home != shop.home
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'a' / 'shop.db'}")
    first = load_settings().home
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'b' / 'shop.db'}")
    assert load_settings().home != first


def test_an_explicit_home_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", SHOP)
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path / "mine"))
    assert load_settings().home == tmp_path / "mine"


def test_one_databases_kept_outcomes_are_not_replayed_into_another(monkeypatch, tmp_path):
    """The journal a run keeps while its database is away is replayed by the next run on
    the same home: homes per database keep one shop's outcomes out of the other's."""
    monkeypatch.delenv("CAREFLOW_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", SHOP)
    kept = outcome_journal.keep(
        load_settings().home, "run-1", [Outcome.sent(7)], {}
    )
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", OTHER_SHOP)
    other = outcome_journal.folder_of(load_settings().home)
    assert kept.exists() and not other.exists()
