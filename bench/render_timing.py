"""Microseconds per message render with the shipped templates.

    .venv/bin/python -m bench.render_timing

Renders the shipped SMS and email templates many times with one Renderer,
as a batch does, and prints the best of several rounds. It times the
thread's CPU time, not the wall clock, so other work on a shared machine
disturbs it less. Used to
check that the render limits (careflow/template_sandbox.py) keep the common case
fast. Timings on a shared machine are noisy: compare runs made back to back.
"""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal

from careflow.rendering import Renderer
from careflow.settings import PROJECT_ROOT

CONTEXT = {
    "name": "Ann",
    "brand": "Lotus & Pine",
    "campaign": "birthday",
    "as_of": date(2026, 11, 22),
    "customer": {"full_name": "Ann Lee", "given_name": "Ann", "owner": "Li Na", "locale": "en"},
    "tier": "VIP",
    "monetary": Decimal(8800),
    "local_date": "2026-11-22",
}


def per_render_us(renderer: Renderer, campaign: str, channel: str, locale: str, n: int) -> float:
    """Best CPU microseconds per render over nine rounds of ``n`` renders, in this process
    (a run's render worker does the same work; bench.route_stages times the whole stage)."""
    renderer.render_here(campaign, channel, locale, CONTEXT)  # compile and cache the templates
    rounds = []
    for _ in range(9):
        start = time.thread_time()
        for _ in range(n):
            renderer.render_here(campaign, channel, locale, CONTEXT)
        rounds.append((time.thread_time() - start) / n * 1e6)
    return min(rounds)


def main() -> None:
    from careflow import channels  # noqa: F401 (registers the channels whose templates are rendered)

    renderer = Renderer(PROJECT_ROOT / "templates")
    for campaign, channel, locale in [
        ("birthday", "sms", "en"),
        ("birthday", "sms", "zh-CN"),
        ("vip_care", "sms", "en"),
        ("birthday", "email", "en"),
    ]:
        us = per_render_us(renderer, campaign, channel, locale, 2_000)
        print(f"{campaign:10} {channel:6} {locale:6} {us:7.1f} µs per render")


if __name__ == "__main__":
    main()
