"""The preference centre's pages, in the customer's language.

Plain HTML forms, no scripts and no outside resources (the service's content
security policy allows neither): it works in any mail client's browser,
without JavaScript, by keyboard alone. The words are data: one YAML file per
locale in careflow/service/locales/ (en.yaml, zh-CN.yaml); a language is added
by adding a file with the same keys. careflow/preferences.py holds the state
and the one write; this module only shows it and reads the form back.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from careflow.addresses import mask_address
from careflow.errors import DataError
from careflow.policy.cadence import FEWER_DAYS, FEWER_LIMIT
from careflow.preferences import CADENCES, CATEGORIES, MAX_PAUSE_DAYS, State, View

LOCALES = Path(__file__).with_name("locales")
DEFAULT_LOCALE = "en"


@functools.cache
def texts() -> dict[str, dict[str, str]]:
    """locale tag -> its words, every file of careflow/service/locales/."""
    out = {}
    for path in sorted(LOCALES.glob("*.yaml")):
        words = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[path.stem] = {k: str(v) for k, v in words.items()}
    return out


def locale_for(*wanted: str | None) -> str:
    """The first of ``wanted`` (a customer's locale, Accept-Language's tags) that a file
    speaks: exactly, then by language (``zh-TW`` and ``zh`` read zh-CN), else English."""
    known = texts()
    by_language = {}
    for tag in sorted(known):
        by_language.setdefault(tag.split("-")[0].lower(), tag)
    for raw in wanted:
        for part in (raw or "").split(","):
            tag = part.split(";")[0].strip().replace("_", "-")
            if not tag:
                continue
            exact = {t.lower(): t for t in known}.get(tag.lower())
            if exact:
                return exact
            language = by_language.get(tag.split("-")[0].lower())
            if language:
                return language
    return DEFAULT_LOCALE


def _page(t: dict, title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="{escape(t["lang"])}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>"
        "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;"
        "padding:0 1rem;color:#222}fieldset{border:1px solid #bbb;border-radius:.4rem;"
        "margin:0 0 1rem;padding:.5rem 1rem}legend{font-weight:600;padding:0 .3rem}"
        "label{display:block;padding:.35rem 0}input[type=date]{font:inherit}"
        "button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:.4rem;"
        "background:#2d5a3d;color:#fff;cursor:pointer;margin:.3rem 0}"
        "button.stop{background:#8a1c1c}:focus-visible{outline:3px solid #1a5fb4;"
        "outline-offset:2px}.note{color:#555;font-size:.9rem}.blocked{color:#8a1c1c}"
        "</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def _channel(t: dict, channel: str) -> str:
    return t.get(f"channel_{channel}", channel)


def _reason(t: dict, reason: str) -> str:
    return t.get(f"reason_{reason}", t["reason_other"])


def zone_for(customer_zone: str | None, business_zone: str) -> ZoneInfo:
    for name in (customer_zone, business_zone, "UTC"):
        try:
            return ZoneInfo(name) if name else ZoneInfo("UTC")
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    """The day an instant (naive UTC) falls on in ``zone``."""
    return instant.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).date()


def centre(
    settings, view: View, locale: str, now: datetime, zone: ZoneInfo, error: str | None = None
) -> str:
    """The page: what careflow sends this customer now, as a form to change it."""
    t = texts()[locale]
    state = view.state
    parts = [f"<p>{escape(t['intro'].format(brand=settings.brand_name))}</p>"]
    if error:
        parts.append(f'<p role="alert" class="blocked">{escape(error)}</p>')
    if not view.addresses:
        parts.append(f"<p>{escape(t['no_channels'])}</p>")
        return _page(t, t["title"], "".join(parts))
    shown = ", ".join(mask_address(a) for a in view.addresses.values())
    parts.append(f'<p class="note">{escape(t["for"].format(addresses=shown))}</p>')
    for channel, reason in view.blocked.items():
        line = t["blocked"].format(
            channel=_channel(t, channel),
            address=mask_address(view.addresses[channel]),
            reason=_reason(t, reason),
        )
        parts.append(f'<p class="blocked">{escape(line)}</p>')
    form = ['<form method="post" action="">']
    form.append(f'<input type="hidden" name="shown" value="{escape(",".join(view.addresses))}">')
    for category in CATEGORIES:
        form.append(f"<fieldset><legend>{escape(t[category])}</legend>")
        for channel in view.addresses:
            name = f"c.{category}.{channel}"
            checked = " checked" if state.allowed.get((category, channel)) else ""
            form.append(
                f'<label><input type="checkbox" name="{name}" value="on"{checked}> '
                f"{escape(_channel(t, channel))}</label>"
            )
        form.append("</fieldset>")
    form.append(f'<p class="note">{escape(t["transactional"])}</p>')
    today = local_day(now, zone)
    if state.cadence == "paused" and state.paused_until is not None:
        until_day = local_day(state.paused_until, zone)
        form.append(f"<p>{escape(t['paused_now'].format(until=until_day.isoformat()))}</p>")
    else:
        until_day = today + timedelta(days=30)
    form.append(f"<fieldset><legend>{escape(t['cadence'])}</legend>")
    for cadence in CADENCES:
        words = t[f"cadence_{cadence}"].format(limit=FEWER_LIMIT, days=FEWER_DAYS)
        checked = " checked" if state.cadence == cadence else ""
        form.append(
            f'<label><input type="radio" name="cadence" value="{cadence}"{checked}> '
            f"{escape(words)}</label>"
        )
    form.append(
        f'<label>{escape(t["until"])} <input type="date" name="until" '
        f'value="{until_day.isoformat()}" min="{(today + timedelta(days=1)).isoformat()}" '
        f'max="{(today + timedelta(days=MAX_PAUSE_DAYS)).isoformat()}"></label>'
    )
    form.append("</fieldset>")
    form.append(f'<button type="submit" name="action" value="save">{escape(t["save"])}</button>')
    form.append("</form>")
    # its own form, so Enter in the first one never presses it
    form.append(
        '<form method="post" action=""><input type="hidden" name="action" value="stop_marketing">'
        f'<button type="submit" class="stop">{escape(t["stop"])}</button>'
        f'<p class="note">{escape(t["stop_hint"])}</p></form>'
    )
    parts.append("".join(form))
    return _page(t, t["title"], "".join(parts))


def read_form(
    fields: list[tuple[str, str]], view: View, now: datetime, zone: ZoneInfo
) -> State:
    """The state a post asks for. The page's form posts a box for each category and
    channel it showed (a box left unticked is not posted: off), the cadence and the
    pause's end (a day in the customer's zone: the pause ends as it begins); the stop
    button's form posts only its action. DataError (a locale key) for a date out of range
    or an unknown cadence. Choices for channels the page did not show keep their value."""
    form: dict[str, str] = {}
    for name, value in fields:
        form.setdefault(name, value)
    state = view.state
    if form.get("action") == "stop_marketing":
        allowed = dict(state.allowed)
        allowed.update({("marketing", ch): False for ch in view.addresses})
        return State(state.cadence, state.paused_until, allowed)
    shown = [ch for ch in form.get("shown", "").split(",") if ch in view.addresses]
    allowed = dict(state.allowed)
    for category in CATEGORIES:
        for channel in shown:
            allowed[(category, channel)] = form.get(f"c.{category}.{channel}") == "on"
    cadence = form.get("cadence", state.cadence)
    if cadence not in CADENCES:
        raise DataError("bad_cadence")
    until = None
    if cadence == "paused":
        today = local_day(now, zone)
        try:
            day = date.fromisoformat(form.get("until", "").strip())
        except ValueError:
            raise DataError("bad_date") from None
        if not today < day <= today + timedelta(days=MAX_PAUSE_DAYS):
            raise DataError("bad_date")
        start = datetime.combine(day, time(0), tzinfo=zone)
        until = start.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    return State(cadence, until, allowed)


def done(settings, change, view: View, locale: str, token: str, zone: ZoneInfo) -> str:
    """The confirmation: what changed, and what careflow sends from now on."""
    t = texts()[locale]
    parts = []
    lines = _changes(t, change, zone)
    if lines:
        parts.append(f"<p>{escape(t['done_changed'])}</p><ul>")
        parts += [f"<li>{escape(line)}</li>" for line in lines]
        parts.append("</ul>")
    else:
        parts.append(f"<p>{escape(t['done_nothing'])}</p>")
    parts.append(f"<p>{escape(t['done_now'])}</p><ul>")
    parts += [f"<li>{escape(line)}</li>" for line in _summary(t, change.after, view, zone)]
    parts.append("</ul>")
    parts.append(f'<p><a href="{escape(token)}">{escape(t["again"])}</a></p>')
    return _page(t, t["done_title"], "".join(parts))


def _cadence_words(t: dict, state: State, zone: ZoneInfo) -> str:
    if state.cadence == "paused" and state.paused_until is not None:
        day = local_day(state.paused_until, zone).isoformat()
        return f"{t['cadence_paused']}: {day}"
    return t[f"cadence_{state.cadence}"].format(limit=FEWER_LIMIT, days=FEWER_DAYS)


def _summary(t: dict, state: State, view: View, zone: ZoneInfo) -> list[str]:
    out = []
    for category in CATEGORIES:
        for channel in view.addresses:
            on = state.allowed.get((category, channel)) and channel not in view.blocked
            word = t["state_on" if on else "state_off"]
            out.append(f"{t[category]} · {_channel(t, channel)}: {word}")
    out.append(f"{t['cadence']}: {_cadence_words(t, state, zone)}")
    return out


def _changes(t: dict, change, zone: ZoneInfo) -> list[str]:
    before, after = change.before, change.after
    out = []
    for key in sorted(after.allowed):
        if before.allowed.get(key) != after.allowed[key]:
            category, channel = key
            out.append(
                f"{t[category]} · {_channel(t, channel)}: "
                f"{t['state_on' if before.allowed.get(key) else 'state_off']} → "
                f"{t['state_on' if after.allowed[key] else 'state_off']}"
            )
    if (before.cadence, before.paused_until) != (after.cadence, after.paused_until):
        out.append(
            f"{t['cadence']}: {_cadence_words(t, before, zone)} → {_cadence_words(t, after, zone)}"
        )
    return out


def invalid(locale: str, why: str, days: int) -> str:
    t = texts()[locale]
    return _page(t, t["invalid_title"], f"<p>{escape(t['invalid'].format(why=why, days=days))}</p>")


def bad_input(settings, view, locale, now, zone, key: str) -> str:
    t = texts()[locale]
    max_day = (local_day(now, zone) + timedelta(days=MAX_PAUSE_DAYS)).isoformat()
    message = t.get(key, t["bad_date"]).format(max=max_day)
    return centre(settings, view, locale, now, zone, error=message)
