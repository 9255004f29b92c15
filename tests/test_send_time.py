"""Send-time optimisation, without a database: the best-hour estimate, the rule in the policy
table (quiet hours judged at the target, the window, the switch, timed messages), the arms'
draw, and campaign.yaml's settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from careflow.errors import ConfigError
from careflow.policy import PolicyContext, evaluate
from careflow.policy.config import CampaignPolicy, PolicyConfig, SendTimeSpec, parse_quiet_hours
from careflow.policy.holdout import holdout_draw
from careflow.policy.send_time import (
    BEST,
    FIXED,
    HOURS,
    SendTimeFacts,
    arm_draw,
    arm_of,
    best_hour,
    next_local_hour,
)
from careflow.variants import Experiment

#: a shop whose customers act mostly in the evening: 20:00 is its busiest hour
SHOP = tuple(30 if h == 20 else 20 if h in (19, 21) else 5 for h in range(HOURS))


def hist(**hours) -> tuple[int, ...]:
    """``hist(h9=3)``: three events at 09:00."""
    out = [0] * HOURS
    for name, n in hours.items():
        out[int(name[1:])] = n
    return tuple(out)


# --- the estimate ----------------------------------------------------------------------------
def test_a_customer_with_strong_history_gets_their_own_hour():
    found = best_hour(hist(h9=12, h14=2), SHOP, k=10)
    assert (found.hour, found.events) == (9, 14)


def test_a_customer_without_history_gets_the_shops_hour():
    assert best_hour(None, SHOP, k=10).hour == 20
    assert best_hour(hist(), SHOP, k=10).hour == 20


def test_little_history_is_shrunk_towards_the_shop_and_more_of_it_wins():
    # one order at 09:00 is not enough to leave the shop's 20:00; two are
    assert best_hour(hist(h9=1), SHOP, k=10).hour == 20
    assert best_hour(hist(h9=2), SHOP, k=10).hour == 9
    # a weaker prior lets a single event win, a stronger one needs more
    assert best_hour(hist(h9=1), SHOP, k=2).hour == 9
    assert best_hour(hist(h9=2), SHOP, k=40).hour == 20
    # history at an hour the shop also likes wins sooner than at one it does not
    assert best_hour(hist(h21=1), SHOP, k=10).hour == 21


def test_no_shop_history_means_no_best_hour():
    assert best_hour(hist(h9=5), None, k=10).hour is None
    assert best_hour(None, (0,) * HOURS, k=10).hour is None


def test_next_local_hour_is_now_in_that_hour_and_otherwise_the_next_time_the_clock_shows_it():
    zone = ZoneInfo("Asia/Shanghai")  # UTC+8
    now = datetime(2026, 6, 1, 11, 30, tzinfo=UTC)  # 19:30 there
    assert next_local_hour(now, zone, 19) == now
    assert next_local_hour(now, zone, 20) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert next_local_hour(now, zone, 9) == datetime(2026, 6, 2, 1, tzinfo=UTC)
    assert next_local_hour(now, zone, 18) == datetime(2026, 6, 2, 10, tzinfo=UTC)


# --- the rule --------------------------------------------------------------------------------
NOW = datetime(2026, 6, 1, 2, tzinfo=UTC)  # 10:00 in Shanghai
CAMPAIGN = "promo"


def config(quiet=None, **spec) -> PolicyConfig:
    return PolicyConfig(
        quiet_hours=parse_quiet_hours(quiet),
        send_time=SendTimeSpec(optimise=True, **spec),
    )


def best_arm_customer(start=1) -> int:
    return next(c for c in range(start, 10_000) if arm_of(CAMPAIGN, c, 0.2) == BEST)


def fixed_arm_customer() -> int:
    return next(c for c in range(1, 10_000) if arm_of(CAMPAIGN, c, 0.2) == FIXED)


def decide(cid, counts, *, cfg=None, now=NOW, timed=False, zone="Asia/Shanghai", **customer):
    row = {"id": cid, "mobile": "13812345678", "time_zone": zone, **customer}
    return evaluate(
        PolicyContext(
            customer=row,
            channels=["sms"],
            now=now,
            default_region="CN",
            config=cfg or config(),
            campaign=CAMPAIGN,
            occasion="2026",
            send_time=SendTimeFacts(counts, SHOP, timed),
        )
    )


def test_the_best_arm_is_deferred_to_their_best_hour_and_says_why():
    d = decide(best_arm_customer(), hist(h19=12))
    assert d.action == "defer" and d.skip_reason == "best_hour"
    assert d.until == datetime(2026, 6, 1, 11, tzinfo=UTC)  # 19:00 in Shanghai
    assert d.send_time_arm == BEST
    assert d.detail.startswith(
        "their best hour 19:00 Asia/Shanghai (from 12 of their orders, replies and clicks)"
    )


def test_without_history_the_shops_hour_is_used_and_said():
    d = decide(best_arm_customer(), None)
    assert d.until == datetime(2026, 6, 1, 12, tzinfo=UTC)  # 20:00 in Shanghai
    assert d.detail.startswith("the shop's best hour 20:00 Asia/Shanghai (from none of their own")


def test_in_their_best_hour_it_goes_now_and_says_why():
    d = decide(best_arm_customer(), hist(h10=12))
    assert d.action == "send" and d.send_time_arm == BEST
    assert "best hour 10:00" in d.detail and "that hour now" in d.detail


def test_a_best_hour_inside_quiet_hours_moves_to_the_next_allowed_time():
    # at 23:00 there; quiet hours 21:00-09:00 in the customer's zone: next morning 09:00
    d = decide(best_arm_customer(), hist(h23=12), cfg=config("21:00-09:00"))
    assert d.action == "defer" and d.skip_reason == "best_hour"
    assert d.until == datetime(2026, 6, 2, 1, tzinfo=UTC)  # 09:00 the next day in Shanghai
    assert "moved from 23:00 by quiet hours 21:00-09:00" in d.detail


def test_a_move_is_bounded_by_the_window():
    # 19:00 is 9 hours away; a 6-hour window keeps the campaign's time
    d = decide(best_arm_customer(), hist(h19=12), cfg=config(window_hours=6))
    assert d.action == "send" and d.until is None and d.send_time_arm == BEST
    assert "not allowed within 6 h" in d.detail


def test_the_fixed_arm_goes_at_the_campaigns_time_and_quiet_hours_still_apply():
    cid = fixed_arm_customer()
    d = decide(cid, hist(h19=12))
    assert d.action == "send" and d.send_time_arm == FIXED
    assert d.detail.startswith("the fixed-time comparison group")
    night = NOW + timedelta(hours=14)  # 00:00 in Shanghai
    d = decide(cid, hist(h19=12), cfg=config("21:00-09:00"), now=night)
    assert d.action == "defer" and d.skip_reason == "quiet_hours" and d.send_time_arm == FIXED
    assert "fixed-time comparison group" in d.detail


def test_the_customers_switch_turns_it_off():
    d = decide(best_arm_customer(), hist(h19=12), personal_send_time=False)
    assert d.action == "send" and d.send_time_arm is None
    assert "personalised send times are off" in d.detail
    # switched on (or never set) it moves again
    assert decide(best_arm_customer(), hist(h19=12), personal_send_time=True).action == "defer"


def test_a_timed_message_is_never_moved_again():
    # the follow-up, hours after the best hour: it goes now, not at tomorrow's 19:00
    late = datetime(2026, 6, 1, 13, 30, tzinfo=UTC)  # 21:30 in Shanghai
    d = decide(best_arm_customer(), hist(h19=12), now=late, timed=True)
    assert d.action == "send" and d.until is None
    untimed = decide(best_arm_customer(), hist(h19=12), now=late)
    assert untimed.action == "defer" and untimed.until.date().day == 2  # what it would do


def test_a_campaign_that_does_not_optimise_is_untouched():
    d = evaluate(
        PolicyContext(
            customer={"id": 1, "mobile": "13812345678", "time_zone": "Asia/Shanghai"},
            channels=["sms"],
            now=NOW,
            default_region="CN",
            config=PolicyConfig(),
            send_time=SendTimeFacts(hist(h19=12), SHOP),
        )
    )
    assert d.action == "send" and d.detail is None and d.send_time_arm is None


# --- the arms --------------------------------------------------------------------------------
def test_arms_are_balanced_sticky_and_independent_of_the_holdout_and_experiment_draws():
    ids = range(1, 20_001)
    fixed = [c for c in ids if arm_of(CAMPAIGN, c, 0.2) == FIXED]
    # 20% of 20,000 is 4,000 with a standard deviation of 57: within 4 of them
    assert abs(len(fixed) - 4000) < 230
    assert all(arm_of(CAMPAIGN, c, 0.2) == FIXED for c in fixed[:100])  # the same every time
    # within the holdout (share 0.1) and outside it the fixed share is the same 20%
    held = [c for c in ids if holdout_draw(CAMPAIGN, c, "2026") < 0.1]
    held_fixed = sum(arm_of(CAMPAIGN, c, 0.2) == FIXED for c in held)
    assert abs(held_fixed / len(held) - 0.2) < 0.04
    # and across an experiment's variants too
    experiment = Experiment(variants=["a", "b"])
    b = [c for c in ids if experiment.variant_of(CAMPAIGN, c) == "b"]
    assert abs(sum(arm_of(CAMPAIGN, c, 0.2) == FIXED for c in b) / len(b) - 0.2) < 0.02
    # the draws themselves are uncorrelated
    xs = [arm_draw(CAMPAIGN, c) for c in ids]
    ys = [holdout_draw(CAMPAIGN, c, "2026") for c in ids]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / len(xs)
    assert abs(cov / (1 / 12)) < 0.03  # correlation; 1/12 is a uniform's variance


# --- campaign.yaml ---------------------------------------------------------------------------
def test_campaign_yaml_settings_are_validated_with_one_line_errors(tmp_path):
    from careflow.campaigns import load_campaign

    p = CampaignPolicy(send_time={"optimise": True, "fixed_share": "25%"})
    assert p.send_time.fixed_share == 0.25 and p.send_time.prior_weight == 10
    folder = tmp_path / "promo"
    folder.mkdir()
    (folder / "sms.en.j2").write_text("hi")
    for bad, words in (
        ("{optimise: true, fixed_share: 0.9}", "fixed_share"),
        ("{optimise: true, window_hours: 48}", "window_hours"),
        ("{optimise: yes please}", "optimise"),
        ("{optimize: true}", "optimize"),
    ):
        (folder / "campaign.yaml").write_text(
            f"segment: birthday\nchannels: [sms]\npolicy:\n  send_time: {bad}\n"
        )
        with pytest.raises(ConfigError) as exc:
            load_campaign("promo", tmp_path)
        assert words in str(exc.value) and "\n" not in str(exc.value)


# --- the simulation (bench/send_time.py, smaller) ---------------------------------------------
def test_in_simulated_shops_the_reports_interval_covers_the_true_gain():
    from bench.send_time import simulate

    # 40 shops of 1,000: a seeded simulation, so the figures are the same on every machine
    out = simulate(runs=40, customers=1000, base=0.05, lift=0.03, k=10, seed=3)
    assert out.coverage >= 0.85  # nominal 95%: 38 of 40 expected, 34 allowed
    assert abs(out.mean_measured - out.mean_true) < 0.5  # points: unbiased
    assert out.mean_true > 1.5  # the estimator finds most hours: the gain is real
    # more history finds the true hour more often; none finds only the shop's hour
    assert out.found_by_history[0] < out.found_by_history[3] < out.found_by_history[10]
    # and with no true gain the interval covers zero just as often
    none = simulate(runs=40, customers=1000, base=0.05, lift=0.0, k=10, seed=4)
    assert none.mean_true == 0 and none.coverage >= 0.85


def test_the_simulations_figures_are_written_as_json(tmp_path):
    # regression: numpy counts made --json fail after a 1,000-run simulation
    import json

    from bench.send_time import main

    out = tmp_path / "sto.json"
    main(["--runs", "2", "--customers", "200", "--json", str(out)])
    figures = json.loads(out.read_text())
    assert figures["runs"] == 2 and 0 <= figures["covered"] <= 2 and figures["k"] == 10
