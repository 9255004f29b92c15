"""README "Your own data" runs as written on the samples a clone has (issue 25).

Regression: the section imported ../shared/data/online_retail.csv.gz, a file no
clone has, into whatever database was current, the demo's included. Its shell
blocks are read from README.md (every ```sh block from the "### Your own data"
heading to the next "## " one) and run in order in one fresh shell in a
checkout-like folder (tests/readme_shell.py): they must leave the demo's
database and folder alone and load the samples into a database of their own.
"""

from __future__ import annotations

import re

from sqlalchemy import create_engine, text

from tests.readme_shell import README, Shell

SECTION = re.compile(r"^### Your own data\n(.*?)^## ", re.MULTILINE | re.DOTALL)
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def own_data_blocks() -> list[str]:
    sections = SECTION.findall(README.read_text(encoding="utf-8"))
    assert len(sections) == 1, 'README.md must have one "### Your own data" section'
    return BLOCK.findall(sections[0])


def test_your_own_data_runs_as_written_on_the_samples(tmp_path):
    blocks = own_data_blocks()
    assert len(blocks) >= 2  # orders and segments; then customers and consents
    script = "\n".join(blocks)
    assert "docs/samples/" in script and "../" not in script
    shell = Shell(tmp_path)
    try:
        out = shell.run(script, timeout=600)
    finally:
        shell.close()
    assert out.returncode == 0, out.stdout
    assert "Traceback" not in out.stdout
    # dormant and reorder_due each find two of the sample's six customers
    counts = [line for line in out.stdout.splitlines() if line.strip().isdigit()]
    assert counts == ["2", "2"], out.stdout
    # a database of its own, away from the demo's, holding every sample row
    assert not (shell.work / ".careflow").exists()
    engine = create_engine(f"sqlite:///{shell.home / 'myshop.db'}")
    try:
        with engine.connect() as conn:
            customers = conn.execute(
                text("SELECT count(*) FROM customers WHERE email IS NOT NULL OR mobile IS NOT NULL")
            ).scalar_one()
            consents = conn.execute(text("SELECT count(*) FROM consents")).scalar_one()
    finally:
        engine.dispose()
    assert (customers, consents) == (6, 5)
