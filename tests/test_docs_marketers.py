"""Every command docs/marketers.md shows works on the demo's data, as a marketer types it.

The guide's shell blocks (```sh, ```console, ```shell) are read from the file
itself, so an example added or changed there is tested as written: each
``careflow ...`` line runs, with no ``--as-of`` unless it says one, against a
database seeded the way ``make demo`` seeds it (careflow.demo, 10,000 customers as of
today), and must end with exit code 0 and no traceback. A line that is not a careflow
command must be one this file names, with the reason it is not run here.
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from careflow import db
from careflow.cli.main import main
from careflow.demo.data import seed_demo
from careflow.settings import PROJECT_ROOT

GUIDE = PROJECT_ROOT / "docs" / "marketers.md"
SHELL_BLOCK = re.compile(r"^```(?:sh|console|shell|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: commands the guide shows that are not careflow's, and why they are not run here
ELSEWHERE = {
    "prefect deploy --all": "needs a Prefect server; tests/test_deployments.py checks prefect.yaml",
}
#: customers in the demo, as `careflow demo` seeds them
DEMO_CUSTOMERS = 10_000


def guide_commands() -> list[list[str]]:
    """Each command line of the guide's shell blocks, as its words (comments dropped)."""
    out = []
    for block in SHELL_BLOCK.findall(GUIDE.read_text(encoding="utf-8")):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                out.append(shlex.split(line, comments=True))
    return out


COMMANDS = guide_commands()


def test_the_guide_has_examples_and_every_one_is_run():
    careflow = [c for c in COMMANDS if c[0] == "careflow"]
    assert len(careflow) >= 15  # the guide's sections 2-6
    other = {" ".join(c) for c in COMMANDS if c[0] != "careflow"}
    assert other <= set(ELSEWHERE), f"not careflow commands, not run: {other - set(ELSEWHERE)}"


@pytest.fixture(scope="module")
def demo_shop(tmp_path_factory):
    """The demo's database, seeded once for every example (SQLite, as `make demo`)."""
    home = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{home / 'careflow.db'}"
    db.upgrade(url)
    seed_demo(db.engine_for(url), as_of=datetime.now(UTC).date(), customers=DEMO_CUSTOMERS)
    yield url, home
    db.engines.dispose(url)


@pytest.mark.parametrize(
    "words",
    [c for c in COMMANDS if c[0] == "careflow"],
    ids=lambda words: " ".join(words[1:]),
)
def test_the_guides_example_works_on_the_demo(words, demo_shop, tmp_path, monkeypatch):
    url, home = demo_shop
    monkeypatch.setenv("CAREFLOW_DATABASE_URL", url)
    monkeypatch.setenv("CAREFLOW_HOME", str(home))
    monkeypatch.delenv("CAREFLOW_HOLDOUT")  # the demo's campaigns as shipped: 10% held out
    monkeypatch.chdir(tmp_path)  # where `--out winback-10.html` lands
    out = CliRunner().invoke(main, words[1:])
    shown = f"$ {shlex.join(words)}\n{out.output}"
    assert out.exit_code == 0, shown
    assert "Traceback" not in out.output, shown
    for option in ("--out", "--output"):  # a file it says it wrote is there, not empty
        if option in words:
            written = tmp_path / words[words.index(option) + 1]
            assert written.is_file() and written.stat().st_size > 0, shown
