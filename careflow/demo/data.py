"""Deterministic demo data: customers, consents, products and two years of orders.

``seed_demo`` fills an empty, migrated database so that every care campaign
has someone to talk to on the chosen date and the days around it:
birthdays every day of the year (Feb 29 included), regular buyers who are
due to reorder, customers dormant for over half a year, a heavy-tailed
spend distribution for the value pyramid, prospects who never bought.

A small, deliberate share of the data is bad the way real CRM data is bad
(malformed phone numbers and emails, customers with no contact point at all,
opt-outs) so a demo run shows per-recipient outcomes, not only successes.

Everything comes from one ``random.Random(seed)``: the same seed and as_of
give the same rows, ids included. Customers' ``country`` is an ISO 3166
alpha-2 code, which is also the region their local phone numbers parse in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import Engine, Table, func, insert, select, text

from careflow import purchase_facts
from careflow.db.models import Consent, Customer, Order, OrderLine, Product
from careflow.demo.contacts import email_address, fax_number, mobile_number
from careflow.errors import DataError
from careflow.money import from_minor, to_minor

# --- vocabulary ----------------------------------------------------------
# Common surnames, roughly by frequency (the first ones repeat to weight them).
_ZH_FAMILY = (
    "王wang 李li 张zhang 刘liu 陈chen 王wang 李li 张zhang 刘liu 陈chen 杨yang 黄huang "
    "赵zhao 吴wu 周zhou 徐xu 孙sun 马ma 朱zhu 胡hu 郭guo 何he 高gao 林lin 罗luo 郑zheng "
    "梁liang 谢xie 宋song 唐tang 许xu 韩han 冯feng 邓deng 曹cao 彭peng 曾zeng 肖xiao "
    "田tian 董dong 袁yuan 潘pan 于yu 蒋jiang 蔡cai 余yu 杜du 叶ye 程cheng 苏su 魏wei "
    "吕lv 丁ding 任ren 沈shen 姚yao 卢lu 钟zhong 谭tan 陆lu 范fan 金jin 石shi 廖liao "
    "贾jia 夏xia 方fang 白bai 邹zou 孟meng 熊xiong 秦qin 邱qiu 江jiang 欧阳ouyang 上官shangguan"
)
_ZH_GIVEN = (
    "伟wei 芳fang 娜na 秀xiu 英ying 敏min 静jing 丽li 强qiang 磊lei 军jun 洋yang 勇yong "
    "艳yan 杰jie 娟juan 涛tao 明ming 超chao 霞xia 平ping 刚gang 华hua 建jian 国guo 文wen "
    "红hong 玲ling 志zhi 海hai 燕yan 鹏peng 辉hui 宇yu 晨chen 浩hao 欣xin 婷ting 雪xue "
    "慧hui 琳lin 佳jia 子zi 涵han 梓zi 轩xuan 怡yi 博bo 思si 雨yu 嘉jia 俊jun 峰feng "
    "飞fei 斌bin 晓xiao 春chun 梅mei 兰lan 亮liang 成cheng 东dong 丹dan 萍ping 倩qian "
    "颖ying 瑶yao 晶jing 鑫xin 宁ning 凯kai 昊hao 然ran 悦yue 诺nuo 安an 可ke 一yi"
)
_EN_FIRST = (
    "James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Susan "
    "Richard Jessica Joseph Sarah Thomas Karen Charles Emma Daniel Olivia Matthew Sophie "
    "Andrew Emily George Charlotte Oliver Amelia Jack Grace Harry Chloe Noah Lucy Liam Ella "
    "Ethan Hannah Lucas Isla Samuel Ruby Benjamin Zoe Henry Mia Alexander Ava Ryan Megan"
)
_EN_LAST = (
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore "
    "Martin Jackson Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright "
    "Scott Hill Green Adams Baker Nelson Carter Mitchell Roberts Turner Phillips Campbell "
    "Evans Edwards Collins Stewart Morris Murphy Cook Rogers Morgan Cooper Kelly Hughes Ward "
    "Watson Wood Price Bennett Gray Hughes Patel Singh Nguyen Walsh O'Brien MacDonald"
)
_PAIR = re.compile(r"([^\x00-\x7f]+)([a-z]+)")
ZH_FAMILY = [m.groups() for m in _PAIR.finditer(_ZH_FAMILY)]
ZH_GIVEN = [m.groups() for m in _PAIR.finditer(_ZH_GIVEN)]
EN_FIRST, EN_LAST = _EN_FIRST.split(), _EN_LAST.split()

# sku, name, price in CNY, days one unit lasts (None: not a consumable)
PRODUCTS: list[tuple[str, str, int, int | None]] = [
    ("RICE-5KG", "Wuchang fragrant rice 5 kg", 89, 30),
    ("RICE-10KG", "Northeast japonica rice 10 kg", 128, 60),
    ("TEA-LJ250", "Longjing green tea 250 g", 268, 45),
    ("TEA-PUER", "Pu'er ripe tea cake 357 g", 198, 60),
    ("TEA-JASM", "Jasmine tea 100 g", 68, 30),
    ("COFFEE-1KG", "Yunnan coffee beans 1 kg", 158, 30),
    ("WF-CART", "Water filter cartridge", 199, 90),
    ("WF-PITCHER", "Water filter pitcher", 259, None),
    ("INK-BK", "Printer ink cartridge, black", 139, 60),
    ("INK-CMY", "Printer ink cartridges, colour set", 239, 90),
    ("PAPER-A4", "A4 copy paper, 5 reams", 129, 45),
    ("SKIN-TONER", "Hydrating toner 200 ml", 239, 60),
    ("SKIN-CREAM", "Night repair cream 50 ml", 459, 75),
    ("SKIN-SUN", "Sunscreen SPF50 60 ml", 169, 45),
    ("TOOTHPASTE", "Toothpaste family pack", 59, 45),
    ("DIAPER-L", "Baby diapers size L, 60 pcs", 139, 14),
    ("FORMULA", "Infant formula 800 g", 328, 21),
    ("PETFOOD-DOG", "Dry dog food 7.5 kg", 299, 30),
    ("PETFOOD-CAT", "Cat litter 10 L", 69, 21),
    ("LENS-30", "Monthly contact lenses, 6 pack", 219, 90),
    ("VITAMIN-C", "Vitamin C tablets, 60", 99, 60),
    ("OLIVE-OIL", "Extra virgin olive oil 1 L", 119, 45),
    ("SOY-SAUCE", "Premium light soy sauce 1.8 L", 39, None),
    ("RICE-COOKER", "Induction rice cooker 4 L", 899, None),
    ("KETTLE", "Electric kettle 1.7 L", 259, None),
    ("TEA-SET", "Porcelain tea set", 699, None),
    ("THERMOS", "Vacuum flask 500 ml", 149, None),
    ("AIR-PURIFIER", "Air purifier", 1999, None),
    ("PURIFIER-FILTER", "Air purifier HEPA filter", 299, None),
    ("BLENDER", "Soymilk maker", 499, None),
    ("TOWEL-SET", "Cotton towel set", 129, None),
    ("PILLOW", "Buckwheat pillow", 199, None),
    ("UMBRELLA", "Folding umbrella", 79, None),
    ("MOONCAKE", "Mooncake gift box", 238, None),
    ("GIFT-CARD", "Gift card", 500, None),
    ("HONEY", "Wildflower honey 500 g", 88, None),
    ("DATES", "Red dates 1 kg", 58, None),
    ("WALNUTS", "Walnuts 1 kg", 78, None),
    ("NOTEBOOK", "Hardcover notebook, 3 pack", 45, None),
    ("PEN-SET", "Fountain pen set", 368, None),
]
CONSUMABLES = [p for p in PRODUCTS if p[3]]

ZH_OWNERS = ["王芳", "陈杰", "刘洋", "赵敏"]
EN_OWNERS = ["Emma Clarke", "James Wilson", "Olivia Turner"]

# time zone, country, currency, weight
ZH_PLACES = [
    ("Asia/Shanghai", "CN", "CNY", 85),
    ("Asia/Hong_Kong", "HK", "CNY", 10),
    ("Asia/Taipei", "TW", "CNY", 5),
]
EN_PLACES = [
    ("America/New_York", "US", "USD", 25),
    ("America/Los_Angeles", "US", "USD", 20),
    ("Europe/London", "GB", "GBP", 30),
    ("Australia/Sydney", "AU", "AUD", 15),
    ("Pacific/Auckland", "NZ", "NZD", 10),
]
CNY_PER = {"CNY": 1.0, "USD": 7.1, "GBP": 9.0, "AUD": 4.7, "NZD": 4.3}

# Deliberately unusable contact points, as people type them into a CRM.
BAD_MOBILES = ["138-1234", "n/a", "1381234567", "123 4567 8901", "tbd", "+86 138 1234", "0"]
BAD_EMAILS = ["{a}@", "{a} {b}@example.com", "{a}@@example.com", "{a}.{b}.example.com", "none"]

# Behaviour archetypes and their shares of the customer base.
ARCHETYPES = [
    ("prospect", 8),
    ("one_time", 14),
    ("two_time", 7),
    ("regular", 42),
    ("lapsed", 14),
    ("occasional", 15),
]
HISTORY_DAYS = 730
CHUNK = 5_000


@dataclass
class _Person:
    id: int
    zh: bool
    country: str
    currency: str
    kind: str
    scale: float  # spend multiplier: lognormal, so the value pyramid is heavy-tailed
    business: bool
    days: list[date] = field(default_factory=list)
    staple: tuple[str, str, int, int | None] | None = None
    staple_qty: int = 1
    spent_cny: float = 0.0


def seed_demo(
    engine: Engine, *, as_of: date, customers: int = 10_000, seed: int = 20261122
) -> dict[str, int]:
    """Fill an empty migrated database with demo data; return row counts per table.

    Deterministic: the same ``seed`` and ``as_of`` give identical rows. Raises
    DataError when the database already has customers (ids are assigned here).
    """
    if customers < 1:
        raise DataError("customers must be at least 1")
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(Customer.__table__)).scalar_one():
            raise DataError("seed_demo needs an empty database: customers already exist")
    rng = random.Random(seed)
    people = [_person(rng, i + 1) for i in range(customers)]
    for p in people:
        _purchase_days(rng, p, as_of)
    orders, lines = _orders(rng, people, as_of)
    customer_rows, consent_rows = _customers(rng, people, as_of)
    product_rows = [{"sku": s, "name": n, "replenish_days": d} for s, n, _, d in PRODUCTS]

    tables: list[tuple[Table, list[dict]]] = [
        (Customer.__table__, customer_rows),
        (Consent.__table__, consent_rows),
        (Product.__table__, product_rows),
        (Order.__table__, orders),
        (OrderLine.__table__, lines),
    ]
    with engine.begin() as conn:
        for table, rows in tables:
            for start in range(0, len(rows), CHUNK):
                conn.execute(insert(table), rows[start : start + CHUNK])
        if conn.dialect.name == "postgresql":
            # Explicit ids leave the serial sequences at 1; move them past our rows
            # so later inserts without an id do not collide.
            for table in ("customers", "orders", "order_lines"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                    )
                )
    purchase_facts.refresh(engine)
    return {table.name: len(rows) for table, rows in tables}


# --- behaviour -------------------------------------------------------------


def _pick(rng: random.Random, weighted: list[tuple]) -> tuple:
    return rng.choices(weighted, weights=[w[-1] for w in weighted])[0]


def _person(rng: random.Random, cid: int) -> _Person:
    zh = rng.random() < 0.6
    _, country, currency, _ = _pick(rng, ZH_PLACES if zh else EN_PLACES)
    kind = _pick(rng, ARCHETYPES)[0]
    business = rng.random() < 0.15
    p = _Person(cid, zh, country, currency, kind, rng.lognormvariate(0, 1.3), business)
    if kind in ("regular", "lapsed") and rng.random() < 0.7:
        p.staple = rng.choice(CONSUMABLES)
        p.staple_qty = rng.randint(2, 6) if business else rng.choice((1, 1, 1, 2))
    return p


def _rhythm(rng: random.Random, p: _Person) -> float:
    """Days between purchases: the staple's lifetime when there is one, else 14-90."""
    if p.staple:
        days = p.staple[3] * p.staple_qty * rng.uniform(0.85, 1.15)
        if days > 90:  # a big household buys one unit more often
            p.staple_qty, days = 1, p.staple[3] * rng.uniform(0.85, 1.15)
        return min(max(days, 14.0), 90.0)
    return rng.uniform(14, 90)


def _purchase_days(rng: random.Random, p: _Person, as_of: date) -> None:
    """Distinct purchase days, oldest first, never after as_of."""
    start = as_of - timedelta(days=HISTORY_DAYS)
    span = HISTORY_DAYS
    days: set[date] = set()
    if p.kind == "one_time":
        days.add(start + timedelta(days=rng.randint(0, span)))
    elif p.kind == "two_time":
        days.update(start + timedelta(days=rng.randint(0, span)) for _ in range(2))
    elif p.kind == "occasional":
        days.update(start + timedelta(days=rng.randint(0, span)) for _ in range(rng.randint(3, 9)))
    elif p.kind in ("regular", "lapsed"):
        rhythm = _rhythm(rng, p)
        if p.kind == "regular":
            # Where in their cycle they are today: mostly on rhythm, some
            # due now (rhythm..2x rhythm since the last purchase), a few late.
            phase = rng.choices([(0, 1), (1, 2), (2, 3)], weights=[82, 13, 5])[0]
            since = int(rhythm * rng.uniform(*phase))
        else:
            since = rng.randint(181, 600)
        joined = rng.randint(0, 400) if rng.random() < 0.3 else 0
        t = float(HISTORY_DAYS - since)
        while t >= joined or len(days) < 3:
            days.add(start + timedelta(days=max(int(t), 0)))
            t -= rhythm * rng.uniform(0.8, 1.2)
            if t < -HISTORY_DAYS:  # cannot fit three purchases; settle for what fits
                break
    p.days = sorted(d for d in days if start <= d <= as_of)


def _orders(rng: random.Random, people: list[_Person], as_of: date) -> tuple[list, list]:
    prices = {cur: {sku: _local_price(cny, cur) for sku, _, cny, _ in PRODUCTS} for cur in CNY_PER}
    orders: list[dict] = []
    lines: list[dict] = []
    for p in people:
        for day in p.days:
            oid = len(orders) + 1
            # Orders on as_of happen in the morning: a run "as of" a date is noon there.
            hour = rng.randint(8, 11) if day == as_of else rng.randint(8, 22)
            items: list[tuple[str, int]] = []
            if p.staple:
                items.append((p.staple[0], p.staple_qty))
            extras = (
                rng.choices((0, 1, 2, 3), weights=(35, 35, 20, 10))[0]
                if p.staple
                else rng.randint(1, 3)
            )
            for _ in range(extras):
                sku = rng.choice(PRODUCTS)[0]
                if all(sku != s for s, _ in items):
                    qty = max(1, round(p.scale * rng.uniform(0.5, 1.5) * (4 if p.business else 1)))
                    items.append((sku, qty))
            total = 0  # minor units of the customer's currency
            for sku, qty in items:
                unit = prices[p.currency][sku]
                amount = unit * qty
                total += amount
                lines.append(
                    {
                        "id": len(lines) + 1,
                        "order_id": oid,
                        "sku": sku,
                        "quantity": qty,
                        "unit_price_minor": unit,
                        "amount_minor": amount,
                    }
                )
            at = datetime.combine(day, time(hour, rng.randint(0, 59), rng.randint(0, 59)))
            orders.append(
                {
                    "id": oid,
                    "external_ref": f"DEMO-{oid:07d}",
                    "customer_id": p.id,
                    "ordered_at": at,
                    "ordered_on": day,
                    "currency": p.currency,
                    "amount_minor": total,
                }
            )
            p.spent_cny += float(from_minor(total, p.currency)) * CNY_PER[p.currency]
    return orders, lines


def _local_price(cny: int, currency: str) -> int:
    """Shelf prices in minor units: CNY as listed, elsewhere converted and ending in .99."""
    if currency == "CNY":
        return to_minor(cny, currency)
    return to_minor(Decimal(max(1, round(cny / CNY_PER[currency]))) - Decimal("0.01"), currency)


# --- who they are --------------------------------------------------------------


def _customers(rng: random.Random, people: list[_Person], as_of: date) -> tuple[list, list]:
    grades = _grades(rng, people)
    birthdays = _birthdays(rng, len(people), as_of, lunar=[p.zh for p in people])
    emails: set[str] = set()
    customers: list[dict] = []
    consents: list[dict] = []
    for p, grade, birthday in zip(people, grades, birthdays, strict=True):
        if p.zh:
            (family, family_py), given = (
                rng.choice(ZH_FAMILY),
                rng.sample(ZH_GIVEN, rng.choice((1, 2, 2))),
            )
            given_name, given_py = "".join(g[0] for g in given), "".join(g[1] for g in given)
            full_name, place = family + given_name, ZH_PLACES
        else:
            given_name, family = rng.choice(EN_FIRST), rng.choice(EN_LAST)
            given_py, family_py = given_name.lower(), re.sub(r"[^a-z]", "", family.lower())
            full_name, place = f"{given_name} {family}", EN_PLACES
        zone = _pick(rng, [z for z in place if z[1] == p.country])[0]

        roll = rng.random()
        if roll < 0.03:  # nobody ever wrote down how to reach them
            mobile = email = fax = None
        else:
            mobile = (
                None if roll < 0.08 else mobile_number(rng, zh=p.zh, country=p.country, zone=zone)
            )
            email = (
                None
                if 0.08 <= roll < 0.15
                else email_address(rng, given_py, family_py, birthday, emails)
            )
            fax = fax_number(rng, p.country) if p.business else None
            if mobile and rng.random() < 0.01:
                mobile = rng.choice(BAD_MOBILES)
            if email and rng.random() < 0.005:
                email = rng.choice(BAD_EMAILS).format(a=given_py, b=family_py)

        first_day = p.days[0] if p.days else as_of - timedelta(days=rng.randint(0, HISTORY_DAYS))
        created = datetime.combine(
            first_day - timedelta(days=rng.randint(0, 60)), time(9)
        ) + timedelta(minutes=rng.randint(0, 600))
        reachable = {"sms": mobile, "email": email, "fax": fax}
        preferred = _preferred(rng, p, reachable)
        customers.append(
            {
                "id": p.id,
                "external_ref": f"DEMO-C{p.id:06d}",
                "full_name": full_name,
                "given_name": given_name,
                "family_name": family,
                "mobile": mobile,
                "email": email,
                "fax": fax,
                "locale": "zh-CN" if p.zh else "en",
                "time_zone": zone,
                "birthday": birthday,
                "grade": grade,
                "owner": rng.choice(ZH_OWNERS if p.zh else EN_OWNERS),
                "country": p.country,
                "preferred_channel": preferred,
                "created_at": created,
            }
        )
        for channel, address in reachable.items():
            # 2% never asked about email: the policy treats a missing row as "not asked".
            if address is None or (channel == "email" and rng.random() < 0.02):
                continue
            opted_out = {"sms": 0.02, "email": 0.01, "fax": 0.01}[channel]
            consents.append(
                {
                    "customer_id": p.id,
                    "channel": channel,
                    "granted": rng.random() >= opted_out,
                    "source": rng.choice(("web_signup", "store", "phone", "event")),
                    "updated_at": created + timedelta(days=rng.randint(0, 30)),
                }
            )
    return customers, consents


def _grades(rng: random.Random, people: list[_Person]) -> list[str]:
    """HSBC-style grades: A/B/C/D by spend rank, E inactive, F/G not yet buyers."""
    ranked = sorted((p for p in people if p.days), key=lambda p: -p.spent_cny)
    rank = {p.id: i / max(len(ranked), 1) for i, p in enumerate(ranked)}
    grades = []
    for p in people:
        if not p.days:
            grades.append(rng.choice("FG"))
        elif p.kind == "lapsed" or (p.kind in ("one_time", "two_time") and rng.random() < 0.5):
            grades.append("E")
        else:
            r = rank[p.id]
            grades.append("A" if r < 0.05 else "B" if r < 0.2 else "C" if r < 0.5 else "D")
    return grades


def _birthdays(
    rng: random.Random, n: int, as_of: date, lunar: list[bool] | None = None
) -> list[date | None]:
    """Ages 18-80 on as_of, uniform over the calendar; a few unknown, some Feb 29.

    ``lunar[i]``: customer i keeps the lunar birthday (a zh locale), so a
    birthday planted around as_of is one whose lunar date falls there.
    """
    oldest = _years_before(as_of, 81) + timedelta(days=1)
    youngest = _years_before(as_of, 18)
    span = (youngest - oldest).days
    days: list[date | None] = [
        None if rng.random() < 0.03 else oldest + timedelta(days=rng.randint(0, span))
        for _ in range(n)
    ]
    known = [i for i, d in enumerate(days) if d is not None]
    # Leap-day birthdays are rare (1 in 1461) but the campaign must handle
    # them, so make sure small demos have some; and plant the days around
    # as_of so the birthday campaign always has someone to greet.
    # Three per day: one planted customer may live where it is already tomorrow at the
    # run's instant, or keep the lunar calendar (greeted on another day).
    leap_years = [y for y in range(oldest.year + 1, youngest.year) if y % 4 == 0 and y % 100]
    around = [offset for offset in range(-3, 8) for _ in range(3)]
    planted = rng.sample(known, min(len(known), max(2, n // 1000) + len(around)))
    for i in planted[: -len(around)]:
        days[i] = date(rng.choice(leap_years), 2, 29)
    for offset, i in zip(around, planted[-len(around) :], strict=False):
        target = as_of + timedelta(days=offset)
        year = rng.randint(oldest.year + 1, youngest.year - 1)
        days[i] = _on_year(target, year)
        if lunar and lunar[i]:
            days[i] = _lunar_on_year(target, year) or days[i]
    return days


def _lunar_on_year(d: date, year: int) -> date | None:
    """A date of birth in or near ``year`` whose lunar birthday falls on ``d``."""
    from lunardate import LunarDate

    kept = LunarDate.from_solar_date(d.year, d.month, d.day)
    for y in (year, year - 1, year + 1, year - 2):
        try:
            born = LunarDate(y, kept.month, kept.day, False).to_solar_date()
        except ValueError:
            continue
        back = LunarDate.from_solar_date(born.year, born.month, born.day)
        if (back.month, back.day, back.is_leap_month) == (kept.month, kept.day, False):
            return born
    return None


def _years_before(d: date, years: int) -> date:
    return _on_year(d, d.year - years)


def _on_year(d: date, year: int) -> date:
    """d's month and day in ``year``; Feb 29 becomes Feb 28 outside leap years."""
    try:
        return d.replace(year=year)
    except ValueError:
        return d.replace(year=year, day=28)


def _preferred(rng: random.Random, p: _Person, reachable: dict[str, str | None]) -> str | None:
    options = [c for c, address in reachable.items() if address]
    if not options:
        return None
    weights = {"sms": 70 if p.zh else 25, "email": 25 if p.zh else 70, "fax": 5}
    return rng.choices(options, weights=[weights[c] for c in options])[0]
