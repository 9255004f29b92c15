"""Where a message's time goes: the route's stages timed on one thread, per message.

    python -m bench.route_stages                 # 50,000 customers, win-back as SMS, outbox
    python -m bench.route_stages --channel email # the same as HTML email (text + HTML parts)
    python -m bench.route_stages --quick

The route (careflow/flows/route.py) runs batch by batch as a run does it, without
Prefect, with a clock around each stage: the keys' selection, the
selection of customer records, occasions and the settled-key read, the
policy (consent, addresses, suppression, holdout, send time), the claim,
rendering (in the render worker process, with the IPC: template, opt-out
line, segments), the outbox file's content (the
text, or an email's MIME message and unsubscribe link) and its write, and the
ledger's sending mark and outcome record. The sum is what
one core can do; a run's threads share one core's worth of Python, so a
machine does about this per process, times the processes it runs (Dask
workers, Prefect workers).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager, suppress
from pathlib import Path

STAGES = {
    "select keys": ("careflow.flows.route", "select_keys"),
    "select": ("careflow.flows.route", "select_candidates"),
    "occasion + settled read": None,  # assign_occasions + drop_settled, timed together
    "policy": ("careflow.flows.route", "apply_policy"),
    "claim": ("careflow.flows.route", "reserve"),
    "render": ("careflow.flows.route", "render_messages"),
}


#: what a message of each channel is, in the report
WHAT = {"sms": "SMS", "email": "HTML emails"}


def run(customers: int, orders: int, channel: str = "sms") -> dict:
    from bench.fixtures import fresh_database
    from bench.shop import AS_OF, generate

    url, cleanup = fresh_database("sqlite")
    home = Path(tempfile.mkdtemp(prefix="careflow-stages-"))
    os.environ.update(CAREFLOW_DATABASE_URL=url, CAREFLOW_HOME=str(home))
    try:
        generate(url, customers, orders, quiet=True)
        return _measure(AS_OF, channel) | {"file_create_us": _file_create_us(home / "disk-check")}
    finally:
        cleanup()


def _file_create_us(folder: Path, n: int = 2000) -> float:
    """What creating one small file costs on this disk: the outbox's floor per message."""
    folder.mkdir(parents=True)
    body = b"x" * 300
    t0 = time.perf_counter()
    for i in range(n):
        (folder / f"{i}.txt").write_bytes(body)
    return round((time.perf_counter() - t0) / n * 1e6, 1)


def _measure(as_of, channel: str) -> dict:
    import careflow.flows.route as route_mod
    from careflow import db, purchase_facts, segments
    from careflow.campaigns import load_campaign
    from careflow.clock import resolve_as_of
    from careflow.errors import TemplateError
    from careflow.flows.campaign import plan_batches
    from careflow.flows.runners import settle_heap
    from careflow.ledger import ContactLedger
    from careflow.settings import load_settings

    settings = load_settings().model_copy(update={"delivery": "outbox"})
    engine = db.engine_for(settings.effective_database_url)
    purchase_facts.refresh(engine)
    spec = load_campaign("winback", settings.templates_dir)
    day, at = resolve_as_of(as_of, settings.time_zone)
    with engine.connect() as conn:
        params = segments.prepare(spec.segment, conn, day, spec.parameters)
    ranges = plan_batches(engine, spec, day, at, params, 1000)
    spent: dict[str, float] = defaultdict(float)

    @contextmanager
    def clock(stage):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            spent[stage] += time.perf_counter() - t0

    def timed(stage, fn):
        def wrapper(*args, **kwargs):
            with clock(stage):
                return fn(*args, **kwargs)

        return wrapper

    originals = {}
    for stage, where in STAGES.items():
        if where:
            originals[where[1]] = getattr(route_mod, where[1])
            setattr(route_mod, where[1], timed(stage, originals[where[1]]))
    for name in ("assign_occasions", "drop_settled"):
        originals[name] = getattr(route_mod, name)
        setattr(route_mod, name, timed("occasion + settled read", originals[name]))
    ledger_methods = {"mark_sending": "ledger: mark sending", "record": "ledger: record"}
    saved = {m: getattr(ContactLedger, m) for m in ledger_methods}
    for method, stage in ledger_methods.items():
        setattr(ContactLedger, method, timed(stage, saved[method]))
    run = route_mod.RunPlan(
        spec=spec,
        run_id=str(uuid.uuid4()),
        as_of=day,
        at=at,
        settings=settings,
        only_channel=channel,
        params=params,
    )
    route = route_mod.Route.for_run(run)
    from careflow.channels.outbox import OutboxChannel

    send, content = OutboxChannel.send_batch, OutboxChannel._content
    OutboxChannel.send_batch = timed("outbox write", send)
    OutboxChannel._content = timed("outbox: file content", content)  # inside the write
    sent = 0
    settle_heap()  # as a run's first batch does (careflow/flows/campaign.py, run_batch)
    # The render worker's fork server and first worker start once per process (a
    # template error here, for want of a context, is beside the point): timed apart.
    t0 = time.perf_counter()
    with suppress(TemplateError):
        route.renderer.render_file(f"{spec.name}/sms.en.j2", {})
    worker_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        for r in ranges:
            sent += route_mod.process_batch(route, r).sent
    finally:
        total = time.perf_counter() - t0
        OutboxChannel.send_batch, OutboxChannel._content = send, content
        for method in ledger_methods:
            setattr(ContactLedger, method, saved[method])
        for name, fn in originals.items():
            setattr(route_mod, name, fn)
    spent["outbox write"] -= spent["outbox: file content"]  # what is left: the file itself
    per = {stage: round(s / max(sent, 1) * 1e6, 1) for stage, s in spent.items()}
    per["other"] = round((total - sum(spent.values())) / max(sent, 1) * 1e6, 1)
    return {
        "channel": channel,
        "sent": sent,
        "seconds": round(total, 2),
        "msg_per_s": round(sent / total),
        "us_per_message": per,
        "render_worker_start_s": round(worker_start, 2),
    }


def render(r: dict) -> str:
    lines = [
        f"{r['sent']:,} win-back {WHAT[r['channel']]} on the outbox in {r['seconds']} s on one "
        f"thread: {r['msg_per_s']:,} msg/s",
        "",
        "| stage | µs per message | share |",
        "| --- | ---: | ---: |",
    ]
    total = sum(r["us_per_message"].values())
    for stage, us in sorted(r["us_per_message"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {stage} | {us} | {100 * us / total:.0f}% |")
    lines.append(f"| **total** | **{total:.0f}** | |")
    lines += [
        "",
        f"Creating one 300-byte file on this disk, measured in the same run: "
        f"{r['file_create_us']} µs (the outbox writes one file per message).",
        f"Starting the render worker (its fork server, once per process): "
        f"{r['render_worker_start_s']} s, not in the figures above.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="3,000 customers")
    parser.add_argument("--channel", choices=sorted(WHAT), default="sms")
    args = parser.parse_args(argv)
    customers = 3_000 if args.quick else args.customers
    print(render(run(customers, customers * 5, args.channel)))


if __name__ == "__main__":
    main()
