"""The holdout split: deterministic, the share it says, fresh per occasion, configured in one place."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from careflow.campaigns import CampaignSpec
from careflow.errors import ConfigError
from careflow.policy import Decision, HoldoutRule, Option, PolicyContext, evaluate
from careflow.policy.config import PolicyConfig, resolve
from careflow.policy.holdout import holdout_draw
from careflow.settings import PROJECT_ROOT, load_settings

N = 200_000


def is_held_out(share: float, campaign: str, customer_id: int, occasion: str) -> bool:
    """What the route's holdout rule decides for this ledger key at ``share``."""
    ctx = PolicyContext(
        customer={"id": customer_id},
        channels=["sms"],
        now=None,
        config=PolicyConfig(category="care", holdout=share),
        campaign=campaign,
        occasion=occasion,
    )
    return isinstance(HoldoutRule().apply(ctx, [Option("sms")]), Decision)


def test_the_draw_is_sha256_of_the_ledger_key_whatever_the_process():
    by_hand = int.from_bytes(hashlib.sha256(b"birthday\x1f42\x1f2026").digest()[:8], "big") / 2**64
    assert holdout_draw("birthday", 42, "2026") == by_hand
    # Python's own hash() is salted per process; the draw must not be
    code = "from careflow.policy.holdout import holdout_draw; print(holdout_draw('birthday', 42, '2026'))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert float(out.stdout) == by_hand


@pytest.mark.parametrize("share", [0.10, 0.25])
def test_the_share_held_out_is_the_share_asked_for(share):
    # The draw is a fixed function: this cannot flake. The bound is what a fair coin of
    # this share would stay inside with probability 1 - 7e-6 (4.5 standard deviations).
    held = sum(is_held_out(share, "winback", cid, "after-2026-01-01") for cid in range(1, N + 1))
    sd = math.sqrt(N * share * (1 - share))
    assert abs(held - N * share) < 4.5 * sd


def test_each_occasion_is_drawn_afresh_so_nobody_is_left_out_for_good():
    this_year = {c for c in range(1, N + 1) if is_held_out(0.1, "birthday", c, "2026")}
    next_year = {c for c in range(1, N + 1) if is_held_out(0.1, "birthday", c, "2027")}
    # independent draws: about 1% of customers are held out of both years, not 10%
    both = len(this_year & next_year)
    sd = math.sqrt(N * 0.01 * 0.99)
    assert abs(both - N * 0.01) < 4.5 * sd
    # and campaigns draw independently of each other
    other = {c for c in range(1, N + 1) if is_held_out(0.1, "vip_care", c, "2026")}
    assert abs(len(this_year & other) - N * 0.01) < 4.5 * sd


def test_zero_holds_nobody_out():
    assert not any(is_held_out(0.0, "birthday", c, "2026") for c in range(1, 10_000))


def _ctx(cid, share, occasion="2026", **customer):
    row = {"id": cid, "mobile": "+447911123456", "country": "GB", **customer}
    return PolicyContext(
        customer=row,
        channels=["sms"],
        now=None,
        config=PolicyConfig(category="care", holdout=share),
        campaign="birthday",
        occasion=occasion,
    )


def test_the_rule_holds_out_only_customers_the_campaign_could_contact():
    held = [c for c in range(1, 400) if is_held_out(0.5, "birthday", c, "2026")]
    kept = [c for c in range(1, 400) if not is_held_out(0.5, "birthday", c, "2026")]
    d = evaluate(_ctx(held[0], 0.5))
    assert (d.action, d.skip_reason, d.channel) == ("held_out", "holdout", "sms")
    assert "50% holdout" in d.detail
    assert evaluate(_ctx(kept[0], 0.5)).action == "send"
    # no usable contact: skipped as before, never counted in the holdout group
    d = evaluate(_ctx(held[0], 0.5, mobile=None))
    assert (d.action, d.skip_reason) == ("skip", "no_contact")
    # without an occasion (a check outside a run) nobody is held out
    ctx = _ctx(held[0], 0.5)
    assert evaluate(replace(ctx, occasion=None)).action == "send"
    assert isinstance(evaluate(_ctx(held[0], 0.0)), Decision)


def test_default_ten_percent_settings_and_campaign_yaml(monkeypatch):
    monkeypatch.delenv("CAREFLOW_HOLDOUT", raising=False)
    settings = load_settings()
    assert settings.holdout == 0.10
    spec = CampaignSpec(name="x", segment="birthday", channels=["sms"])
    assert resolve(settings, spec).holdout == 0.10
    spec = CampaignSpec(name="x", segment="birthday", channels=["sms"], policy={"holdout": "5%"})
    assert resolve(settings, spec).holdout == 0.05
    spec = CampaignSpec(name="x", segment="birthday", channels=["sms"], policy={"holdout": 0})
    assert resolve(settings, spec).holdout == 0
    monkeypatch.setenv("CAREFLOW_HOLDOUT", "20%")
    assert load_settings().holdout == 0.20


@pytest.mark.parametrize("value", ["lots", "0.9", "-1"])
def test_a_bad_holdout_is_one_line_naming_the_setting(monkeypatch, value):
    monkeypatch.setenv("CAREFLOW_HOLDOUT", value)
    with pytest.raises(ConfigError, match="CAREFLOW_HOLDOUT"):
        load_settings()


def test_a_bad_holdout_in_campaign_yaml_names_the_file(tmp_path):
    from careflow.campaigns import load_campaign

    folder = tmp_path / "promo"
    folder.mkdir()
    (folder / "campaign.yaml").write_text(
        "segment: birthday\nchannels: [sms]\npolicy:\n  holdout: 60%\n"
    )
    with pytest.raises(ConfigError, match=r"promo/campaign.yaml: policy.holdout"):
        load_campaign("promo", tmp_path)
