"""The benchmarks' seconds-long versions, so they never rot (bench/README.md).

Figures are not checked here (timings belong in bench/, never in tests);
what the benchmarks claim about behaviour is: every selected customer has
one outcome, a re-run sends nothing, the shop is the same for a seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.shop import generate
from careflow import db
from careflow.db.models import Customer, Order

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.prefect
def test_scale_benchmark_runs_end_to_end_and_its_rerun_sends_nothing(tmp_path):
    out = tmp_path / "scale.json"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    (tmp_path / "prefect").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    for first, again in (("run", "rerun"), ("everyone", "everyone_rerun")):
        run = r[first]
        assert run["selected"] > 0 and run["sent"] > 0, first
        settled = run["sent"] + run["held_out"] + sum(run["skipped"].values())
        settled += sum(run["deferred"].values())
        assert settled == run["selected"] == run["ledger_rows"], first  # one outcome each
        assert r[again]["sent"] == 0, first
    assert r["everyone"]["selected"] > r["run"]["selected"]  # the holiday greets everyone
    assert r["naive"]["customers"] > 0
    assert "| re-run of the same occasion |" in done.stdout


@pytest.mark.prefect
def test_scale_out_benchmark_settles_everyone_once_on_each_runner(tmp_path):
    out = tmp_path / "scale-out.json"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env = {k: v for k, v in env.items() if not k.startswith(("CAREFLOW_", "PREFECT_API"))}
    (tmp_path / "prefect").mkdir()
    log = tmp_path / "scale-out.log"
    with log.open("w") as to:  # a file, not a pipe, which Dask's processes would inherit
        done = subprocess.run(
            [sys.executable, "-m", "bench.scale_out", "--quick", "--dialect", "sqlite",
             "--json", str(out)],
            cwd=ROOT, env=env, stdout=to, stderr=subprocess.STDOUT, timeout=600,
        )
    assert done.returncode == 0, log.read_text()[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [r["runner"] for r in runs] == ["threads", "dask 2x2"]
    for r in runs:
        assert r["selected"] == r["ledger_rows"] == r["keys"] > 0, r  # one outcome each
    assert len({(r["selected"], r["sent"]) for r in runs}) == 1  # the same run, however run
    assert "| dask 2x2 |" in log.read_text()


def test_the_shop_is_the_same_for_a_seed(tmp_path):
    counts = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        db.upgrade(url)
        generate(url, 300, 1_500, seed=3, quiet=True)
        with db.engine_for(url).connect() as conn:
            counts.append(
                conn.execute(
                    select(
                        func.count(Order.id),
                        func.sum(Order.amount_minor),
                        select(func.count()).select_from(Customer).scalar_subquery(),
                    )
                ).one()
            )
    assert counts[0] == counts[1] and counts[0][0] > 300


@pytest.mark.prefect
def test_journeys_benchmark_advances_each_due_position_once(tmp_path):
    out = tmp_path / "journeys.json"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env = {k: v for k, v in env.items() if not k.startswith("CAREFLOW_")}
    (tmp_path / "prefect").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench.journeys", "--quick", "--simulate", "2",
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["positions"]["in_journey"] == r["customers"] == 3_000
    assert r["positions"]["due"] == 300
    advance = r["advance"]
    assert all(advance["checks"].values()), advance["checks"]  # each due step once
    assert advance["messages"] > 0 and advance["step_rows"] > r["positions"]["due"]
    assert r["simulate"]["advances"] >= 2 and r["simulate"]["sent"] > 0
    assert "| due positions per second |" in done.stdout


def _inbound(tmp_path, *extra) -> dict:
    out = tmp_path / "inbound.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREFLOW_", "PREFECT_API"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench.inbound", "--quick", "--json", str(out), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())["rows"][0]


def test_inbound_benchmark_stores_every_event_once_under_retries_and_reordering(tmp_path):
    r = _inbound(tmp_path)
    for kind, once in r["once"].items():  # retried and reordered posts included
        assert once["stored"] == once["expected"] > 0, (kind, once)
        assert once["missing"] == once["unexpected"] == once["duplicated"] == 0, (kind, once)
    mixed = next(p for p in r["phases"] if p["name"] == "mixed")
    assert set(mixed["kinds"]) == {"sendgrid", "twilio", "shop"}
    assert all(k["still_failing"] == 0 for k in mixed["kinds"].values())
    alone = {(p["receiver"], p["name"]) for p in r["phases"]}
    assert ("validation only", "sendgrid alone") in alone  # the baseline ran beside it
    for k in mixed["kinds"].values():  # the generators' own cost is reported beside serve's
        assert k["generator"]["client"] == "raw" and k["generator"]["cpu_s"] >= 0
    assert mixed["generator_cpu_s"] >= 0


def test_the_inbound_load_generator_reads_every_answer_on_its_bounded_connections():
    """bench.inbound's client: pre-built requests on at most ``limit`` keep-alive
    connections, each answer read to its end (a length, a chunked body, none), a new
    connection when the server closes one; requests beyond the limit wait their turn."""
    import asyncio
    import re

    from bench.inbound import _Pool

    answers = [
        b"HTTP/1.1 204 No Content\r\ndate: today\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ]

    async def main():
        received, connections = [], []

        async def handle(reader, writer):
            connections.append(writer)
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(re.search(rb"Content-Length: (\d+)", head)[1])
                    received.append(await reader.readexactly(length))
                    answer = answers[len(received) - 1]
                    writer.write(answer)
                    await writer.drain()
                    if b"connection: close" in answer:
                        break
            except asyncio.IncompleteReadError:
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = _Pool("127.0.0.1", server.sockets[0].getsockname()[1], limit=1)
        statuses, finished = [], asyncio.get_running_loop().create_future()

        def done(status):
            statuses.append(status)
            if len(statuses) == len(answers):
                finished.set_result(None)

        for i in range(len(answers)):
            body = f"request {i}".encode()
            pool.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body), done)  # fmt: skip
        await finished
        pool.close()
        server.close()
        return statuses, received, len(connections)

    statuses, received, connections = asyncio.run(main())
    assert statuses == [204, 200, 202, 503, 200]
    assert received == [f"request {i}".encode() for i in range(len(answers))]
    assert connections == 2  # one at a time; another after the server closed the first


def test_the_inbound_benchmark_passes_workers_to_serve_only_when_more_than_one():
    from argparse import Namespace

    from bench.inbound import _workers

    assert _workers(Namespace(workers=1)) == []
    assert _workers(Namespace(workers=3)) == ["--workers", "3"]


def test_the_inbound_benchmark_stops_with_one_line_when_serve_refuses_workers(tmp_path):
    from bench.inbound import _start
    from bench.webhooks import _free_port

    refuses = "import sys; print('Error: No such option: --workers'); sys.exit(2)"
    with pytest.raises(SystemExit) as stopped:
        _start(["-c", refuses, "--workers", "2"], dict(os.environ), _free_port(),
               tmp_path / "serve.log")  # fmt: skip
    assert "no --workers option" in str(stopped.value)
    assert "\n" not in str(stopped.value)


def test_inbound_benchmark_sends_nothing_after_an_acknowledged_opt_out(tmp_path):
    r = _inbound(tmp_path, "--opt-out", "--opt-out-load", "0.5")
    assert r["sent_after_opt_out_acknowledged"] == 0
    assert r["withheld"] > 0  # opt-outs did reach customers the campaign had not sent to
    assert all(route["posted"] > 0 and route["refused"] == 0 for route in r["routes"].values())
    for kind, once in r["background_once"].items():
        assert once["missing"] == once["unexpected"] == once["duplicated"] == 0, (kind, once)


def test_a_fresh_sqlite_database_goes_with_its_cleanup():
    """Regression: every SQLite benchmark run (the quick ones in this file included) left
    its folder in the temporary directory."""
    from bench.fixtures import fresh_database

    url, cleanup = fresh_database("sqlite")
    folder = Path(url.removeprefix("sqlite:///")).parent
    assert (folder / "bench.db").is_file()
    cleanup()
    assert not folder.exists()


def test_the_before_server_runs_the_other_tree_s_careflow(tmp_path):
    """Regression: ``bench.inbound --before DIR`` put DIR on PYTHONPATH but started
    ``python -m careflow`` from this checkout, whose careflow ``-m`` finds first: every
    before/after comparison ran this code twice."""
    from bench.inbound import _start

    (tmp_path / "tree" / "careflow").mkdir(parents=True)
    (tmp_path / "tree" / "careflow" / "__init__.py").write_text("")
    (tmp_path / "tree" / "careflow" / "__main__.py").write_text("print('the other tree')\n")
    with pytest.raises(RuntimeError, match="the other tree"):  # it exits: never healthy
        _start(["-m", "careflow", "serve"], {**os.environ, "PYTHONPATH": str(tmp_path / "tree")},
               9, tmp_path / "serve.log", tmp_path / "tree")  # fmt: skip
