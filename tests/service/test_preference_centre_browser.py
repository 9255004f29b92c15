"""The preference centre in headless Debian chromium (playwright-core), by keyboard only.

Both languages, at phone (390 px) and desktop width: the page fits without sideways
scrolling, and Tab, Space, an arrow key and Enter turn marketing email off, choose
"fewer" and save; the confirmation shows, and the database holds the change.
tests/ui/preference_centre.mjs drives the browser. Screenshots go to a temporary
folder; set CAREFLOW_UI_SCREENSHOTS_DIR=docs/img to refresh docs/preferences.md's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from careflow.db.models import Consent, Preference
from careflow.preferences import PreferenceTokens
from careflow.settings import PROJECT_ROOT
from careflow.unsubscribe import UnsubscribeTokens
from tests.browser import playwright_tools
from tests.factories import add_customer
from tests.service.conftest import UNSUB_SECRET

SCRIPT = Path(__file__).parents[1] / "ui" / "preference_centre.mjs"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

#: (customer, locale, width name): one visit each
VISITS = [
    (11, "en", "phone"),
    (12, "en", "desktop"),
    (13, "zh-CN", "phone"),
    (14, "zh-CN", "desktop"),
]
WORDS = {
    "en": (["Your message preferences", "Offers and news (marketing)", "Stop all marketing"],
           "Your choices are saved"),
    "zh-CN": (["消息偏好设置", "优惠与资讯（营销消息）", "停止所有营销消息"], "您的选择已保存"),
}



@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_both_languages_at_phone_and_desktop_width_by_keyboard_only(served, engine, tmp_path):
    chromium, node = playwright_tools()
    shots = Path(os.environ.get("CAREFLOW_UI_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots = shots if shots.is_absolute() else PROJECT_ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    tokens = PreferenceTokens(UnsubscribeTokens(UNSUB_SECRET))
    visits = []
    for cid, locale, width in VISITS:
        add_customer(engine, cid, email=f"customer{cid}@example.com", mobile="+447911123456",
                     locale=locale, country="GB")
        must_show, confirmed = WORDS[locale]
        visits.append({
            "name": f"preferences-{locale}-{width}",
            "url": f"{served.url}/p/{tokens.make(cid, now=served.clock.now)}",
            "viewport": PHONE if width == "phone" else DESKTOP,
            "mobile": width == "phone",
            "browser_locale": "en-GB",  # the customer's own language wins over the browser's
            "must_show": must_show,
            "confirmed": confirmed,
            "confirmation_shot": cid in (12, 13),
        })
    spec = {"chromium": chromium, "screenshots_dir": str(shots), "visits": visits}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    result = subprocess.run([node, str(SCRIPT), str(spec_path)], capture_output=True, text=True,
                            timeout=240, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr.strip()
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["outside_requests"] == []
    for visit, (_, _, width) in zip(seen["visits"], VISITS, strict=True):
        limit = PHONE["width"] if width == "phone" else DESKTOP["width"]
        assert visit["scroll_width"] <= limit, visit  # no sideways scrolling
        assert (shots / f"{visit['name']}.png").read_bytes().startswith(b"\x89PNG")
    with engine.connect() as conn:
        refused = {(r.customer_id, r.category, r.channel)
                   for r in conn.execute(select(Consent)) if not r.granted}
        fewer = {r.customer_id for r in conn.execute(select(Preference)) if r.cadence == "fewer"}
    ids = {cid for cid, _, _ in VISITS}
    assert refused == {(cid, "marketing", "email") for cid in ids}
    assert fewer == ids
