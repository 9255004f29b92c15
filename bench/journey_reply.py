"""How soon a reply posted to `careflow serve` moves its waiting customer on (issue 22).

    .venv/bin/python -m bench.journey_reply [--customers 200] [--replies 40] [--every 5]
                                            [--dialect sqlite|postgresql]

The production path, every piece a process of its own as in the README: `prefect
server start` on a free loopback port, the `careflow` process work pool, `prefect
deploy` of `journey-advance-every-5-minutes` from prefect.yaml (its five-minute
schedule, its event trigger `journey-advance-on-responses`, its concurrency limit),
`prefect worker start` on the pool, and `careflow serve` with the Prefect API set, so
it emits `careflow.message.replied` as each reply is recorded.

The shop: ``--customers`` customers, each texted by the bench journey's first step
(a ledger row, as the route leaves it) and waiting in its ``wait_for replied``
step. Once a first reply has gone all the way round (the warm-up, not counted),
``--replies`` replies are posted open loop, one every ``--every`` seconds, each
from another customer's number, as Twilio posts an inbound SMS (signed with the
twilio SDK's RequestValidator). Per reply: the seconds from the POST to the
moment the customer's position has left the wait (read every 0.25 s from the
database), so serve -> event -> trigger -> flow run -> advance, all of it. Then
p50/p95/p99/max, n, and the deployment's flow runs in the measured span (how
many, by what started them): the debounce's cost.

Figures and the command in bench/README.md; the result also goes to
bench/results/journey-reply.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select
from twilio.request_validator import RequestValidator

from bench.fixtures import fresh_database
from careflow import channels, db  # noqa: F401 - channels registers sms
from careflow.db.models import ContactHistory, Customer, JourneyPosition
from careflow.journey_spec import load_journey
from careflow.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
TOKEN = "bench-twilio-auth-token-0123456789"
PUBLIC = "https://care.example.com"
OUR_NUMBER = "+15005550006"
DEPLOYMENT = "journey-advance-every-5-minutes"
JOURNEY = "reply_bench"
SPEC = """\
description: Bench - a text, then the customer's answer
category: care
entry: {event: bounced}
steps:
  - {id: ask, type: send, channels: [sms]}
  - id: answer
    type: wait_for
    event: replied
    within: 3 days
    then: thanks
    else: thanks
  - {id: thanks, type: exit}
"""
#: longest a reply may take before the bench gives up on it (the schedule is 5 minutes)
GIVE_UP = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(8):
        req = urllib.request.Request(f"{url}{path}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or "null")
        except urllib.error.HTTPError as exc:  # a busy Prefect on SQLite answers 503
            if exc.code not in (408, 429, 502, 503) or attempt == 7:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _templates(work: Path) -> Path:
    """The shipped templates with the bench journey as the only journey."""
    root = work / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", root)
    for spec in root.glob("*/journey.yaml"):
        shutil.rmtree(spec.parent)
    folder = root / JOURNEY
    folder.mkdir()
    (folder / "journey.yaml").write_text(SPEC)
    (folder / "ask.sms.en.j2").write_text("Hello {{ name }}, shall we call you? Reply YES")
    return root


def _mobile(cid: int) -> str:
    return f"+4479111{cid:05d}"


def _seed(url: str, templates: Path, customers: int) -> None:
    """Customers texted by the journey's first step and waiting for their reply."""
    spec = load_journey(JOURNEY, templates)
    now = datetime.now(UTC).replace(tzinfo=None)
    since = now - timedelta(minutes=1)
    engine = db.engine_for(url)
    ids = range(1, customers + 1)
    with engine.begin() as conn:
        conn.execute(insert(Customer), [
            {"id": i, "full_name": f"C{i}", "mobile": _mobile(i), "country": "GB"} for i in ids
        ])  # fmt: skip
        conn.execute(insert(ContactHistory), [{
            "campaign": f"j_{JOURNEY}__ask", "customer_id": i, "occasion": since.date().isoformat(),
            "channel": "sms", "state": "sent", "retryable": False, "attempts": 1,
            "recipient": _mobile(i), "provider_id": f"SM{i:032d}", "created_at": since,
            "updated_at": since, "sent_at": since,
        } for i in ids])  # fmt: skip
        conn.execute(insert(JourneyPosition), [{
            "journey": JOURNEY, "customer_id": i, "entry_key": "once",
            "entered_on": since.date(), "version": spec.version, "step": "answer", "visit": 1,
            "state": "waiting", "due_at": since + timedelta(days=3), "waiting_for": "replied",
            "waiting_since": since, "arrived_at": since, "entered_at": since,
            "updated_at": since,
        } for i in ids])  # fmt: skip


def _reply(base: str, cid: int, n: int) -> float:
    """Post customer ``cid``'s reply as Twilio does; the instant (monotonic) it was posted."""
    url = "/webhooks/twilio/inbound"
    params = {
        "MessageSid": f"SM{0x10000 + n:032x}", "AccountSid": "AC" + "0" * 32,
        "From": _mobile(cid), "To": OUR_NUMBER, "Body": "Yes, any time after 6",
        "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01",
    }  # fmt: skip
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{url}", params)
    req = urllib.request.Request(
        f"{base}{url}", data=urllib.parse.urlencode(params).encode(),
        headers={"X-Twilio-Signature": signature,
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    posted = time.monotonic()
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"serve answered {resp.status}")
    return posted


class Watcher(threading.Thread):
    """Reads every 0.25 s which customers have left the wait: customer -> first seen."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.engine = db.engine_for(url)
        self.moved: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        P = JourneyPosition
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                gone = conn.execute(
                    select(P.customer_id).where(P.journey == JOURNEY, P.step != "answer")
                ).scalars()
                seen = time.monotonic()
                for cid in gone:
                    self.moved.setdefault(cid, seen)
            time.sleep(0.25)


def _start(args: list, env: dict, log: Path, cwd: Path = PROJECT_ROOT) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([str(a) for a in args], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _run(args: list, env: dict) -> str:
    done = subprocess.run([str(a) for a in args], env=env, cwd=PROJECT_ROOT, text=True,
                          capture_output=True, timeout=600)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _wait(what: str, ok, seconds: float, proc: subprocess.Popen | None = None, log=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: exited\n{log.read_text()[-3000:] if log else ''}")
        try:
            if ok():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not ready after {seconds:.0f} s")


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status == 200


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _runs(api_url: str, deployment_id: str, after: datetime) -> list[dict]:
    runs = _api(api_url, "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"expected_start_time": {"after_": after.isoformat()}},
        "limit": 200,
    })  # fmt: skip
    return [r for r in runs if r["state"]["type"] not in ("SCHEDULED",)]


def measure(opts, work: Path, url: str) -> dict:
    templates = _templates(work)
    _seed(url, templates, opts.customers)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("CAREFLOW_", "PREFECT_"))}  # fmt: skip
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    (work / "prefect").mkdir()
    env = {
        **base_env, "PREFECT_HOME": str(work / "prefect"), "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CAREFLOW_CHECKOUT": str(PROJECT_ROOT),
        "CAREFLOW_DATABASE_URL": url, "CAREFLOW_TEMPLATES_DIR": str(templates),
        "CAREFLOW_HOME": str(work / "home"), "CAREFLOW_QUIET_HOURS": "off",
        "CAREFLOW_SENDING_WINDOWS": "false",
    }  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        log = work / "server.log"
        procs.append(_start([BIN / "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", port], server_env, log))  # fmt: skip
        _wait("prefect server", lambda: _api(api_url, "/health") is True, 300, procs[-1], log)
        _run([BIN / "prefect", "work-pool", "create", "careflow", "--type", "process"], env)
        _run([BIN / "prefect", "--no-prompt", "deploy", "--name", DEPLOYMENT,
              "--prefect-file", opts.prefect_file], env)  # fmt: skip
        deployment = _api(api_url, f"/deployments/name/journey-advance/{DEPLOYMENT}")
        log = work / "worker.log"
        procs.append(_start([BIN / "prefect", "worker", "start", "--pool", "careflow"], env, log))
        serve_port = _free_port()
        serve = f"http://127.0.0.1:{serve_port}"
        log = work / "serve.log"
        procs.append(_start([sys.executable, "-m", "careflow", "serve", "--port", serve_port],
                            {**env, "CAREFLOW_TWILIO_AUTH_TOKEN": TOKEN,
                             "CAREFLOW_PUBLIC_BASE_URL": PUBLIC}, log))  # fmt: skip
        _wait("careflow serve", lambda: _healthy(f"{serve}/healthz"), 120, procs[-1], log)

        watcher = Watcher(url)
        watcher.start()
        # warm-up: one reply all the way round (the first flow run, the trigger loaded)
        warm = time.monotonic()
        _reply(serve, opts.customers, 0)
        _wait("the warm-up reply", lambda: opts.customers in watcher.moved, GIVE_UP)
        warm_s = watcher.moved[opts.customers] - warm
        time.sleep(opts.every)

        started_utc = datetime.now(UTC)
        load_before = _uptime()
        posted: dict[int, float] = {}
        lock = threading.Lock()
        threads = []
        t0 = time.monotonic()
        for i in range(opts.replies):
            cid = i + 1
            delay = t0 + i * opts.every - time.monotonic()
            if delay > 0:
                time.sleep(delay)

            def post(cid=cid, n=i + 1):
                at = _reply(serve, cid, n)
                with lock:
                    posted[cid] = at

            th = threading.Thread(target=post)
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline and any(c not in watcher.moved for c in posted):
            time.sleep(0.5)
        watcher.stop.set()
        load_after = _uptime()
        lat = [watcher.moved[c] - at for c, at in posted.items() if c in watcher.moved]
        missed = [c for c in posted if c not in watcher.moved]
        runs = _runs(api_url, deployment["id"], started_utc - timedelta(seconds=5))
        by = {}
        for r in runs:
            how = "trigger" if (r.get("created_by") or {}).get("type") == "AUTOMATION" else (
                "schedule" if r.get("auto_scheduled") else "other")  # fmt: skip
            by[how] = by.get(how, 0) + 1
        span = time.monotonic() - t0
        return {
            "prefect_file": opts.prefect_file, "dialect": opts.dialect,
            "customers": opts.customers, "replies": len(posted),
            "every_s": opts.every, "warm_up_s": round(warm_s, 1),
            "n": len(lat), "missed": len(missed),
            "p50_s": round(_pct(lat, 0.50), 1), "p95_s": round(_pct(lat, 0.95), 1),
            "p99_s": round(_pct(lat, 0.99), 1), "max_s": round(max(lat), 1),
            "over_60_s": sum(x > 60 for x in lat),
            "latencies_s": [round(x, 1) for x in lat],
            "flow_runs": len(runs), "flow_runs_by": by, "span_s": round(span),
            "load_before": load_before, "load_after": load_after,
            "when": started_utc.isoformat(timespec="seconds"),
        }  # fmt: skip
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--replies", type=int, default=40)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between replies")
    parser.add_argument("--dialect", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--prefect-file", default=str(PROJECT_ROOT / "prefect.yaml"),
                        help="deploy from this file (another design of the trigger)")
    parser.add_argument("--out", default="journey-reply.json", help="file in bench/results/")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    opts = parser.parse_args()
    if opts.replies >= opts.customers:
        parser.error("--customers must be more than --replies (one more for the warm-up)")
    work = Path(tempfile.mkdtemp(prefix="careflow-journey-reply-"))
    url, cleanup = fresh_database(opts.dialect)
    try:
        out = measure(opts, work, url)
    finally:
        cleanup()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs in {work}", file=sys.stderr)
    print(f"| n | p50 s | p95 s | p99 s | max s | over 60 s | flow runs | load |\n"
          f"| --- | --- | --- | --- | --- | --- | --- | --- |\n"
          f"| {out['n']} ({out['missed']} missed) | {out['p50_s']} | {out['p95_s']} | "
          f"{out['p99_s']} | {out['max_s']} | {out['over_60_s']} | {out['flow_runs']} "
          f"{out['flow_runs_by']} | {out['load_after']} |")  # fmt: skip
    results = Path(__file__).parent / "results" / opts.out
    results.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
