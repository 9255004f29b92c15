"""The customer pyramid and RFM scores: tiers by rank, ties kept together."""

from datetime import date, timedelta

from careflow import segments
from careflow.money import from_minor
from tests.factories import add_customer, add_orders, rows

AS_OF = date(2026, 11, 22)


def pyramid(as_of: date, *, id_range=None, **params):
    return segments.build("pyramid", as_of, params, id_range=id_range)


def vip(as_of: date, **params):
    return segments.build("vip", as_of, params)


def prepare(conn, as_of: date) -> dict:
    """The pyramid's parameters with the cut values a run's batches get."""
    return segments.prepare("pyramid", conn, as_of)


def _spenders(engine, amounts):
    for cid, amount in enumerate(amounts, start=1):
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=cid)], amount=str(amount))


def test_tiers_follow_the_playbook_shares(engine):
    _spenders(engine, range(1000, 0, -10))  # 100 buyers, distinct amounts
    tiers = {c: r["tier"] for c, r in rows(engine, pyramid(AS_OF)).items()}
    counts = {t: list(tiers.values()).count(t) for t in ("VIP", "Large", "Medium", "Small")}
    assert counts == {"VIP": 1, "Large": 4, "Medium": 15, "Small": 80}
    assert tiers[1] == "VIP" and tiers[2] == "Large" and tiers[6] == "Medium"


def test_ties_at_a_boundary_go_to_the_higher_tier(engine):
    # 100 buyers; customers 1 and 2 tie at the top: both VIP, not one chosen at random
    _spenders(engine, [500, 500] + list(range(400, 302, -1)))
    tiers = {c: r["tier"] for c, r in rows(engine, pyramid(AS_OF)).items()}
    assert tiers[1] == tiers[2] == "VIP"
    assert tiers[3] == "Large"


def test_top_spender_is_vip_even_with_few_buyers(engine):
    _spenders(engine, [30, 20, 10])
    assert {c for c, r in rows(engine, vip(AS_OF, tiers=["VIP"])).items()} == {1}


def test_window_excludes_old_and_future_orders(engine):
    add_customer(engine, 1)
    add_orders(engine, 1, [AS_OF - timedelta(days=400)], amount="9999")
    add_customer(engine, 2)
    add_orders(engine, 2, [AS_OF - timedelta(days=5)], amount="10")
    add_orders(engine, 2, [AS_OF + timedelta(days=1)], amount="9999")
    got = rows(engine, pyramid(AS_OF))
    assert set(got) == {2} and from_minor(got[2]["monetary_minor"], "GBP") == 10


def test_rfm_scores_are_quintiles_with_5_best(engine):
    _spenders(engine, range(100, 0, -1))  # customer 1: most money and most recent
    got = rows(engine, pyramid(AS_OF))
    assert got[1]["m_score"] == 5 and got[1]["r_score"] == 5
    assert got[100]["m_score"] == 1 and got[100]["r_score"] == 1
    scores = [r["m_score"] for r in got.values()]
    assert all(scores.count(s) == 20 for s in range(1, 6))


def _like_a_real_shop(engine, n=100):
    """Most buyers bought on one day only and many on the same days, as in real data:
    60 one-day buyers, 25 two-day buyers, 15 regulars; last purchases on few days."""
    for cid in range(1, n + 1):
        add_customer(engine, cid)
        visits = 1 if cid % 20 < 12 else 2 if cid % 20 < 17 else 3 + cid % 5
        last = [2, 9, 30, 120][cid % 4]
        add_orders(engine, cid, [AS_OF - timedelta(days=last + 7 * k) for k in range(visits)],
                   amount=str(10 * (1 + cid % 7)))


def test_every_rfm_score_holds_a_fifth_of_buyers_despite_ties(engine):
    """Regression: with ties kept together the 60 one-day buyers all got F=2 and
    no one F=1; recency and money had empty scores too."""
    _like_a_real_shop(engine)
    got = rows(engine, pyramid(AS_OF))
    for score in ("r_score", "f_score", "m_score"):
        counts = {s: [r[score] for r in got.values()].count(s) for s in range(1, 6)}
        assert counts == dict.fromkeys(range(1, 6), 20), (score, counts)


def test_rfm_scores_follow_the_measure_and_break_ties_in_tie_key_order(engine):
    from careflow.segments.vip import tie_key

    _like_a_real_shop(engine)
    got = rows(engine, pyramid(AS_OF)).values()
    for score, key in (("f_score", "frequency"), ("r_score", "days_since")):
        sign = 1 if key == "frequency" else -1
        order = sorted(got, key=lambda r: (-sign * r[key], tie_key(r["customer_id"])))
        assert [r[score] for r in order] == sorted((r[score] for r in order), reverse=True)
    # the 60 one-day buyers fill the bottom three fifths, in tie_key order
    one_day = sorted((r for r in got if r["frequency"] == 1),
                     key=lambda r: tie_key(r["customer_id"]))
    assert [r["f_score"] for r in one_day] == [3] * 20 + [2] * 20 + [1] * 20


def test_which_of_two_equal_buyers_scores_higher_has_nothing_to_do_with_age(engine):
    """Regression: ties broken by plain id gave every old one-day buyer (low id, bought
    long ago) F=2 and every new one F=1, so no lapsed one-day buyer had F=1 (on Online
    Retail the R=1 x F=1 cell was empty). The tie order mixes old and new."""
    for cid in range(1, 201):
        add_customer(engine, cid)
        if cid > 150:  # regulars
            add_orders(engine, cid, [AS_OF - timedelta(days=d) for d in (5, 40, 80)])
        else:  # one-day buyers, the older the lower the id
            add_orders(engine, cid, [AS_OF - timedelta(days=300 - 2 * cid)])
    got = rows(engine, pyramid(AS_OF))
    lapsed_f = [got[c]["f_score"] for c in range(1, 51)]
    recent_f = [got[c]["f_score"] for c in range(101, 151)]
    assert {1, 2} <= set(lapsed_f) and {1, 2} <= set(recent_f)
    assert 10 <= lapsed_f.count(1) <= 30 and 10 <= recent_f.count(1) <= 30


def test_few_buyers_get_spread_scores(engine):
    _spenders(engine, [30, 20, 10])  # pos 1, 2, 3 of 3: 5 - floor(5 x (pos - 1) / 3)
    got = rows(engine, pyramid(AS_OF))
    assert [got[c]["m_score"] for c in (1, 2, 3)] == [5, 4, 2]


def test_batches_agree_with_the_whole_query_on_a_shop_full_of_ties(engine):
    _like_a_real_shop(engine)
    whole = rows(engine, pyramid(AS_OF))
    with engine.connect() as conn:
        params = prepare(conn, AS_OF)
    batched = {}
    for lo in range(1, 101, 13):
        batched |= rows(engine, pyramid(AS_OF, id_range=(lo, lo + 12), **params))
    assert batched == whole


def test_batches_with_prepared_cutoffs_agree_with_one_whole_query(engine):
    """The per-batch form (cut values from prepare) equals the window-function form,
    ties and all, on a population with many ties."""
    import random

    rnd = random.Random(3)
    for cid in range(1, 241):
        add_customer(engine, cid)
        days = sorted({rnd.choice([3, 10, 30, 60, 90, 200]) for _ in range(rnd.randint(1, 4))})
        add_orders(engine, cid, [AS_OF - timedelta(days=d) for d in days],
                   amount=str(rnd.choice([10, 20, 20, 50, 100, 500])))
    whole = rows(engine, pyramid(AS_OF))
    with engine.connect() as conn:
        params = prepare(conn, AS_OF)
    batched = {}
    for lo in range(1, 241, 50):
        batched |= rows(engine, pyramid(AS_OF, id_range=(lo, lo + 49), **params))
    keys = ("tier", "r_score", "f_score", "m_score", "buyers")
    assert {c: tuple(r[k] for k in keys) for c, r in batched.items()} == {
        c: tuple(r[k] for k in keys) for c, r in whole.items()
    }
    assert {r["tier"] for r in whole.values()} == {"VIP", "Large", "Medium", "Small"}


def test_shares_are_exact_not_floating_point(engine):
    # 300 buyers: 1% is exactly 3 VIPs (0.01 * 300 is 3.0000000000000004 in floats)
    _spenders(engine, range(3000, 0, -10))
    tiers = [r["tier"] for r in rows(engine, pyramid(AS_OF)).values()]
    assert tiers.count("VIP") == 3 and tiers.count("Large") == 12


def _tiers_both_ways(engine, batch=50):
    """Tiers from the window-function path (segment list, preview) and from the
    prepared path a campaign run takes (cut values from prepare, batch by batch)."""
    whole = {c: r["tier"] for c, r in rows(engine, pyramid(AS_OF)).items()}
    with engine.connect() as conn:
        params = prepare(conn, AS_OF)
    batched = {}
    for lo in range(1, max(whole) + 1, batch):
        got = rows(engine, pyramid(AS_OF, id_range=(lo, lo + batch - 1), **params))
        batched |= {c: r["tier"] for c, r in got.items()}
    return whole, batched


def test_a_customer_spending_exactly_the_vip_cut_off_is_vip_in_runs_and_lists(engine):
    """10.00 + 29.99 is exactly 39.99, the top spend: VIP whichever path asks.

    Regression: amounts were stored as REAL on SQLite, where 10.00 + 29.99 is
    39.989999999999995: the run (cut value 39.99 from prepare) put this
    customer in Large while `segment list` and `preview` said VIP, so the
    run sent the Large wording."""
    add_customer(engine, 1)
    add_orders(engine, 1, [AS_OF - timedelta(days=3)], amount="10.00")
    add_orders(engine, 1, [AS_OF - timedelta(days=2)], amount="29.99")
    for cid in range(2, 101):  # 99 others, all spending less
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=2)], amount=f"{30 - cid * 0.25:.2f}")
    whole, batched = _tiers_both_ways(engine)
    assert whole[1] == batched[1] == "VIP"
    assert whole == batched


def test_customers_tied_at_the_cut_off_by_different_sums_share_the_tier(engine):
    add_customer(engine, 1)
    add_orders(engine, 1, [AS_OF - timedelta(days=3)], amount="10.00")
    add_orders(engine, 1, [AS_OF - timedelta(days=2)], amount="29.99")
    add_customer(engine, 2)
    add_orders(engine, 2, [AS_OF - timedelta(days=2)], amount="39.99")
    for cid in range(3, 101):
        add_customer(engine, cid)
        add_orders(engine, cid, [AS_OF - timedelta(days=2)], amount=f"{30 - cid * 0.25:.2f}")
    whole, batched = _tiers_both_ways(engine)
    assert whole[1] == whole[2] == batched[1] == batched[2] == "VIP"
    assert whole == batched


def test_prepared_and_window_paths_agree_on_amounts_with_cents(engine):
    """The per-batch form equals the window form on prices with cents, where
    sums of binary floats would drift."""
    import random

    rnd = random.Random(11)
    prices = ["0.10", "0.20", "0.70", "9.99", "19.99", "29.99", "10.00", "4.35"]
    for cid in range(1, 301):
        add_customer(engine, cid)
        for _ in range(rnd.randint(1, 5)):
            add_orders(engine, cid, [AS_OF - timedelta(days=rnd.randint(1, 300))],
                       amount=rnd.choice(prices))
    whole, batched = _tiers_both_ways(engine)
    assert whole == batched
