"""CPU per event of `careflow serve`'s app alone, one kind at a time, in this process.

    python -m bench.inbound_app sendgrid sqlite 20000
    python -m bench.inbound_app twilio postgresql 3000 --profile      # cProfile, top functions
    python -m bench.inbound_app shop sqlite 20000 --tree /tmp/inbound-before   # another tree

The app (careflow/service/app.py) is called as ASGI directly, no HTTP server:
what careflow does per event from the request's body to its commit (the
signature check, parsing, the writer's batch, matching, inserting, acting),
without uvicorn's per-request cost. Requests are bench/inbound.py's, shaped
and signed as the providers do, on a seeded database; CPU by
``time.process_time`` (every thread of this process), after a warm-up of a
tenth. ``--tree DIR``: that source tree's ``careflow`` package instead of
this one (a ``git archive <commit> careflow | tar -x -C DIR``), to compare
before and after in one session. ``--profile`` runs the writer's work on the
event loop's thread so cProfile sees it.
"""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["sendgrid", "twilio", "shop"])
    parser.add_argument("dialect", choices=["sqlite", "postgresql"])
    parser.add_argument("events", type=int)
    parser.add_argument("--tree", help="a source tree whose careflow package to run")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    run(args.kind, args.dialect, args.events, args.profile)


def run(kind: str, dialect: str, events: int, profile: bool) -> None:
    import asyncio
    import cProfile
    import os
    import pstats
    import time

    import anyio.to_thread

    from bench import inbound
    from bench.fixtures import fresh_database
    from tests.service.asgi import request, running

    per = {"sendgrid": 500, "twilio": 1, "shop": 50}[kind]
    posts = max(1, events // per)
    url, cleanup = fresh_database(dialect)
    try:
        inbound.seed(url, {0: {kind: events}, 1: {kind: events}})
        pem, public = inbound._keys()
        os.environ.update(
            {k: v for k, v in inbound._env(url, public).items() if k.startswith("CAREFLOW_")}
        )
        from careflow import db
        from careflow.service.app import create_app
        from careflow.settings import load_settings

        app = create_app(load_settings(), db.engine_for(url), emitter=lambda *a, **k: None)
        spec = {"sendgrid_key": pem, "sendgrid_batch": per}
        made = [inbound._Requests(kind, phase, spec) for phase in (0, 1)]
        warm, measured = ([m(j) for j in range(posts)] for m in made)

        if profile:

            async def inline(fn, *args, limiter=None, **kwargs):
                return fn(*args)

            anyio.to_thread.run_sync = inline

        async def post_all(requests, at_once):
            gate = asyncio.Semaphore(at_once)

            async def one(path, body, headers):
                async with gate:
                    call = await request(
                        app,
                        "POST",
                        path,
                        chunks=[body],
                        headers={**headers, "host": "care.example.com"},
                    )
                    assert call.status < 300, (call.status, call.body)

            await asyncio.gather(*(one(*r) for r in requests))

        profiler = cProfile.Profile()

        async def main():
            async with running(app):
                await post_all(warm[: max(1, posts // 10)], 8)
                cpu, wall = time.process_time(), time.perf_counter()
                if profile:
                    profiler.enable()
                await post_all(measured, 8 if kind == "sendgrid" else 64)
                profiler.disable()
                return time.process_time() - cpu, time.perf_counter() - wall

        cpu, wall = asyncio.run(main())
        n = posts * per
        print(f"{kind} {dialect}: {n} events, CPU {1e6 * cpu / n:.1f} µs/event, "
              f"wall {wall:.2f} s")  # fmt: skip
        if profile:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(50)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
