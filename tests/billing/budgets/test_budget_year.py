"""A budget's year, played month by month through the real services, and every report figure
checked against a value worked out by hand.

The buyer's budget has three lines, amended (a transfer and a decrease in January, an increase
in July). Across the months it buys packages on the data line and pays by bank transfer, starts
a subscription and pays its renewal (spent on the same line), leaves an order unpaid, has part
of a payment refunded, makes postpaid API calls (committed by the budget guard, posted day by
day to the API line), cancels an order and pays another a month after placing it. Only the
clock moves: every module's ``utcnow`` is set to the scenario's day; the one shortcut is that
the postpaid calls are written as ``UsageEvent`` rows (after the budget guard, as metering does)
rather than served through the API.

Money in minor units (fen). With 6% VAT on every offer:

    G  Grid load series package    9,800.00 + 588.00 = 10,388.00  ->  1,038,800
    M  CT scan reports package     4,500.00 + 270.00 =  4,770.00  ->    477,000
    S  CT scan reports, monthly    1,200.00 +  72.00 =  1,272.00  ->    127,200
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from billing.budgets import guards, reports
from billing import invoices, orders, subscriptions
from billing.budgets import lines as budgets
from billing.payments import bank_transfer, refunds
from billing.models import BudgetAlert, BudgetLine, Order, UsageEvent
from market.core import db as market_db
from market.catalog import importer, listings, offers
from market.catalog import services as catalog
from pricing.money import Money
from tests.billing import shop as shopping
from tests.billing.budgets.amendments import amendments_of, approved_from_amendments
from tests.factories import make_org, make_user

UTC = dt.timezone.utc
# The fiscal year is this year: an order's year is its ``created_at``, which the model stamps
# with the real clock (a column default, bound at import), so the scenario's months are this
# year's.
YEAR = dt.datetime.now(UTC).year

G, M, S = 1_038_800, 477_000, 127_200
REAL_UTCNOW = market_db.utcnow


def month(m: int) -> str:
    return f"{YEAR}-{m:02d}"


def cny(amount: str) -> Money:
    return Money(amount, "CNY")


class Clock:
    """Every loaded module's ``utcnow`` (market.core.db's function, imported by name) set to one
    moment of the scenario."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.now = REAL_UTCNOW()

    @staticmethod
    def _clocked() -> list:
        # Looked for at every move, so a module imported since (lazily) moves too.
        return [module for name, module in list(sys.modules.items())
                if name.split(".")[0] in ("billing", "market", "pricing")
                and getattr(module, "utcnow", None) is REAL_UTCNOW]

    def set(self, m: int, day: int = 15, hour: int = 10) -> dt.datetime:
        self.now = now = dt.datetime(YEAR, m, day, hour, tzinfo=UTC)
        modules = self._clocked()
        if not hasattr(self, "modules"):
            self.modules = modules
            assert {budgets, orders, bank_transfer, invoices, refunds,
                    subscriptions} <= set(modules)
        else:
            self.modules = [*self.modules, *modules]
        for module in self.modules:
            self.monkeypatch.setattr(module, "utcnow", lambda: now)
        return now

    def today(self) -> dt.date:
        return self.now.date()


# The world ---------------------------------------------------------------------------------------

DATASET = {"modality": "text", "ai_stage": "pretraining", "licence": "commercial_standard",
           "personal_information": "none",
           "rights": {"holding": "X", "usage": "X", "operation": "X"}}
RECORDS = [{"instruction": "总结这份报告。", "response": "未见明显异常。"},
           {"instruction": "Summarize the report.", "response": "No acute findings."}]
METERED = {"kind": "metered", "code": "api", "tiers": [
    {"from_tokens": 0, "up_to": None,
     "price_per_million": {"amount": "12.50", "currency": "CNY"}}]}


def _listed(session, passwords, exchange, reviewer, *, supplier_name: str, title_en: str,
            title_zh: str, sector: str, terms: list[dict]) -> dict:
    """A supplier's dataset with one version, the supplier as its whole supply chain, these
    offers, and an approved listing."""
    supplier = make_org(session, "supplier", name=supplier_name)
    owner = shopping.principal_of(make_user(session, passwords, supplier, "owner"), supplier)
    dataset = catalog.create_dataset(session, owner, DATASET | {
        "title_en": title_en, "title_zh": title_zh, "sector": sector})
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode()
    importer.import_version(session, owner, dataset, io.BytesIO(body), source_format="jsonl",
                            encoding="o200k_base")
    catalog.set_supply_chain(session, owner, dataset, [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 10_000}])
    made = {t["code"]: offers.add_offer(session, owner, dataset, t) for t in terms}
    listing = listings.submit(session, owner, dataset, version_id=dataset.versions[0].id,
                              exchange_id=exchange.id, review_days=5)
    listings.approve(session, reviewer, listing)
    session.flush()
    return {"dataset": dataset, "supplier": supplier, "offers": made}


@pytest.fixture()
def world(session, passwords):
    exchange = make_org(session, "exchange", name="Shanghai Data Exchange")
    reviewer = shopping.principal_of(make_user(session, passwords, exchange, "reviewer"),
                                     exchange)

    def package(price: str) -> dict:
        return {"kind": "mall_package", "code": "pack",
                "price": {"amount": price, "currency": "CNY"}, "api_tokens": 0}

    grid = _listed(session, passwords, exchange, reviewer, supplier_name="Grid Data Co",
                   title_en="Grid load series", title_zh="电网负荷数据", sector="smart_energy",
                   terms=[package("9800.00"), METERED])
    ct = _listed(session, passwords, exchange, reviewer, supplier_name="Medical Imaging Co",
                 title_en="CT scan reports", title_zh="CT影像报告", sector="healthcare",
                 terms=[package("4500.00"), {
                     "kind": "subscription", "code": "monthly", "period": "month",
                     "price": {"amount": "1200.00", "currency": "CNY"},
                     "included_tokens": 1_000_000,
                     "overage_per_million": {"amount": "10", "currency": "CNY"},
                     "rollover": False}])
    notes = _listed(session, passwords, exchange, reviewer, supplier_name="Hospital Data Co",
                    title_en="Clinical notes", title_zh="临床病历文本", sector="healthcare",
                    terms=[METERED])
    org, _, buyer = shopping.buyer(session, passwords)
    _, _, finance = shopping.platform_finance(session, passwords)
    session.commit()
    return {"grid": grid, "ct": ct, "notes": notes, "org": org, "buyer": buyer,
            "finance": finance}


# The year ----------------------------------------------------------------------------------------

def _pay_by_bank(session, clock, finance, order, settings, reference: str) -> None:
    invoice = order.invoice or invoices.issue_invoice(session, order, settings)
    bank_transfer.record_bank_receipt(session, finance, invoice, amount=order.total,
                                      received_on=clock.today(), bank_reference=reference,
                                      settings=settings)
    assert order.status == "paid"


def _call(session, clock, org, dataset, amount_minor: int, n: int) -> None:
    """One postpaid metered call: the budget guard commits its amount on the API line, then
    its usage event is written (12.50 per million tokens: 800 tokens a fen)."""
    amount = Money.from_minor(amount_minor, "CNY")
    guards.commit_usage(session, org.id, dataset.id, amount)
    session.add(UsageEvent(
        request_id=f"year-call-{n}", organization_id=org.id, dataset_id=dataset.id,
        version_id=dataset.versions[0].id, kind="data", tokens=amount_minor * 800,
        unit_price="12.50", amount_minor=amount_minor, currency="CNY", paid_by="postpaid",
        period=f"{clock.now:%Y-%m}", occurred_at=clock.now, recorded_at=clock.now))
    session.flush()


def play_the_year(session, db, monkeypatch, settings, world) -> dict:
    clock = Clock(monkeypatch)
    buyer, finance, org = world["buyer"], world["finance"], world["org"]
    grid, ct, notes = world["grid"], world["ct"], world["notes"]

    def pack(listed) -> int:
        return listed["offers"]["pack"].id

    # January: the budget, its lines and their first amendments; a cart of two packages.
    clock.set(1, 5)
    budget = budgets.create_budget(session, buyer, fiscal_year=YEAR, currency="CNY",
                                   name=f"FY{YEAR} data and AI budget", enforcement="block")
    data = budgets.add_line(session, buyer, budget, code=f"{YEAR}-DATA-01",
                            name="Industry datasets", category="data_purchase",
                            project="Smart city", approved=cny("50000.00"))
    api = budgets.add_line(session, buyer, budget, code=f"{YEAR}-API-01",
                           name="Model API usage", category="model_services",
                           approved=cny("5000.00"), default_for_api=True)
    compute = budgets.add_line(session, buyer, budget, code=f"{YEAR}-COMP-01",
                               name="Compute", category="compute", approved=cny("20000.00"))
    budgets.amend(session, buyer, data, kind="transfer", amount=cny("2000.00"),
                  reason="API pilot for the diagnosis assistant", to_line=api)
    budgets.amend(session, buyer, compute, kind="decrease", amount=cny("5000.00"),
                  reason="Compute moved to the cloud framework contract")

    clock.set(1)
    jan = orders.place_mall_order(session, buyer, [orders.CartItem(pack(grid)),
                                                   orders.CartItem(pack(ct))],
                                  payment_method="bank_transfer", budget_line_id=data.id,
                                  purchase_order_number="PO-2026-001")
    assert jan.total_minor == G + M
    _pay_by_bank(session, clock, finance, jan, settings, "IN-JAN")

    # February: a monthly subscription on the data line, its first month paid.
    clock.set(2)
    sub = subscriptions.subscribe(session, buyer, ct["offers"]["monthly"].id,
                                  payment_method="bank_transfer", settings=settings,
                                  budget_line_id=data.id)
    first = subscriptions.first_order(session, sub)
    assert first.total_minor == S
    assert (sub.current_period_start, sub.current_period_end) == (
        dt.date(YEAR, 2, 15), dt.date(YEAR, 3, 15))
    _pay_by_bank(session, clock, finance, first, settings, "IN-FEB")

    # March: the renewal billed (its invoice issued by the renewal) and paid.
    clock.set(3, 15, 1)
    outcome, renewal = subscriptions.renew_subscription(session, sub.id,
                                                        day=dt.date(YEAR, 3, 15),
                                                        settings=settings)
    assert outcome == "renewed" and renewal.total_minor == S and renewal.budget_line_id is None
    clock.set(3, 20)
    _pay_by_bank(session, clock, finance, renewal, settings, "IN-MAR")
    assert renewal.budget_line_id == data.id

    # April: another grid package, ordered and left unpaid.
    clock.set(4)
    april = orders.place_mall_order(session, buyer, [orders.CartItem(pack(grid))],
                                    payment_method="bank_transfer", budget_line_id=data.id)

    # May: 1,000.00 of January's payment refunded by bank transfer.
    clock.set(5)
    payment = jan.payments[0]
    session.commit()
    refunds.refund_payment(db, None, finance, payment.id, amount=cny("1000.00"),
                           reason="one file was corrupt", bank_reference="OUT-MAY")
    session.expire_all()
    assert jan.status == "partially_refunded" and jan.refunded_minor == 100_000

    # June: postpaid API calls, each committed by the guard, each day posted the next night.
    calls = [(3, grid, 10_000), (3, grid, 2_345), (3, notes, 5_000), (10, grid, 20_000),
             (17, notes, 7_655)]
    for n, (day, listed, amount) in enumerate(calls):
        clock.set(6, day, 9 + n)
        _call(session, clock, org, listed["dataset"], amount, n)
    assert session.get(BudgetLine, api.id).committed_minor == 45_000
    posted = {}
    for day in (3, 10, 17):
        clock.set(6, day + 1, 0)  # the job runs at 00:40 for the day before
        posted[day] = budgets.post_usage_day(session, dt.date(YEAR, 6, day))
    assert posted == {3: {"posted": 2}, 10: {"posted": 1}, 17: {"posted": 1}}

    # July: the data line increased; a CT package on the compute line...
    clock.set(7)
    budgets.amend(session, buyer, data, kind="increase", amount=cny("10000.00"),
                  reason="Second-half data programme")
    july = orders.place_mall_order(session, buyer, [orders.CartItem(pack(ct))],
                                   payment_method="bank_transfer", budget_line_id=compute.id)
    # ... August: cancelled.
    clock.set(8)
    orders.cancel_order(session, buyer, july)

    # September: the CT package again on the compute line; October: paid.
    clock.set(9)
    september = orders.place_mall_order(session, buyer, [orders.CartItem(pack(ct))],
                                        payment_method="bank_transfer",
                                        budget_line_id=compute.id)
    clock.set(10)
    _pay_by_bank(session, clock, finance, september, settings, "IN-OCT")

    # October 20: a call today, committed by the guard; the nightly posting has not run yet.
    clock.set(10, 20, 11)
    _call(session, clock, org, notes["dataset"], 3_000, 99)

    # No module kept the real clock (one imported lazily during the year would show here).
    assert Clock._clocked() == []
    session.commit()
    session.expire_all()
    return {"budget": budget, "data": data, "api": api, "compute": compute, "clock": clock,
            "orders": {"jan": jan, "first": first, "renewal": renewal, "april": april,
                       "july": july, "september": september}}


@pytest.fixture()
def year(session, db, monkeypatch, settings, world):
    return play_the_year(session, db, monkeypatch, settings, world)


# Lines and amendments ----------------------------------------------------------------------------

def test_approved_is_the_original_plus_the_amendments(session, year):
    data, api, compute = year["data"], year["api"], year["compute"]
    # DATA: 50,000.00 − 2,000.00 (transfer to API) + 10,000.00 (increase) = 58,000.00
    # API:   5,000.00 + 2,000.00 (transfer from DATA)                     =  7,000.00
    # COMP: 20,000.00 − 5,000.00 (decrease)                               = 15,000.00
    for line, original, approved in ((data, 5_000_000, 5_800_000), (api, 500_000, 700_000),
                                     (compute, 2_000_000, 1_500_000)):
        assert (line.original_minor, line.approved_minor) == (original, approved)
        assert approved_from_amendments(session, line) == approved
    kinds = {line.code: [a.kind for a in amendments_of(session, line)]
             for line in (data, api, compute)}
    assert kinds == {data.code: ["transfer_out", "increase"], api.code: ["transfer_in"],
                     compute.code: ["decrease"]}
    # One threshold crossed, once: in April DATA had 1,038,800 committed and 1,515,800
    # + 127,200 + 127,200 = 1,770,200 spent, 2,809,000 of 4,800,000 approved (58.52%) before
    # July's increase; at the year's end it stands at 2,709,000 / 5,800,000 = 46.71%.
    alerts = session.scalars(select(BudgetAlert)).all()
    assert [(a.line_id, a.threshold, a.used_minor, a.approved_minor) for a in alerts] == [
        (data.id, 50, 2_809_000, 4_800_000)]
    assert alerts[0].detail["percent"] == 58.52


def test_the_orders_of_the_year(session, year):
    o = year["orders"]
    assert [(o[k].status, o[k].budget_line_id) for k in o] == [
        ("partially_refunded", year["data"].id), ("paid", year["data"].id),
        ("paid", year["data"].id), ("awaiting_payment", year["data"].id),
        ("cancelled", year["compute"].id), ("paid", year["compute"].id)]
    assert session.get(Order, o["renewal"].id).kind == "renewal"


# The reports -------------------------------------------------------------------------------------

# By line (approved, committed, spent, remaining, execution rate, records)
#
# DATA   committed  1,038,800  April's grid package, unpaid
#        spent      1,515,800 (January, G + M) + 127,200 (February) + 127,200 (March renewal)
#                   − 100,000 (May refund)                                      = 1,670,200
#        remaining  5,800,000 − 1,038,800 − 1,670,200                          = 3,091,000
#        rate       1,670,200 / 5,800,000 = 28.7965…%                          → 28.80
#        records    January 2 commitments + 2 releases + 2 expenditures, February 3, March 1,
#                   April 1, May 2 refunds (one per item)                      = 13
# API    committed  3,000  October 20's call, not yet posted (no record shows it)
#        spent      12,345 + 5,000 (June 3) + 20,000 (June 10) + 7,655 (June 17) = 45,000
#        remaining  700,000 − 3,000 − 45,000                                   = 652,000
#        rate       45,000 / 700,000 = 6.42857…%                               → 6.43
#        records    4 (dataset, day) postings × (release + expenditure)        = 8
# COMP   committed  477,000 (July) − 477,000 (August, cancelled) + 477,000 (September)
#                   − 477,000 (October, paid)                                  = 0
#        spent      477,000
#        remaining  1,500,000 − 0 − 477,000                                    = 1,023,000
#        rate       477,000 / 1,500,000 = 31.8%                                → 31.80
#        records    2 commitments + 2 releases + 1 expenditure                 = 5
# Total  approved   5,800,000 + 700,000 + 1,500,000                            = 8,000,000
#        committed  1,038,800 + 3,000 + 0                                      = 1,041,800
#        spent      1,670,200 + 45,000 + 477,000                               = 2,192,200
#        remaining  8,000,000 − 1,041,800 − 2,192,200                          = 4,766,000
#        rate       2,192,200 / 8,000,000 = 27.4025%                           → 27.40
#        records    13 + 8 + 5                                                 = 26
BY_LINE = {  # code suffix: approved, committed, spent, remaining, rate, records
    "API-01": (700_000, 3_000, 45_000, 652_000, Decimal("6.43"), 8),
    "COMP-01": (1_500_000, 0, 477_000, 1_023_000, Decimal("31.80"), 5),
    "DATA-01": (5_800_000, 1_038_800, 1_670_200, 3_091_000, Decimal("28.80"), 13),
}
TOTAL = (8_000_000, 1_041_800, 2_192_200, 4_766_000, Decimal("27.40"), 26)
UNRECORDED = 3_000  # October 20's call

# The May refund of 100,000 shared over January's items in proportion, the last taking the
# rest:  G: 100,000 × 1,038,800 // 1,515,800 = 68,531 (1,515,800 × 68,531 = 103,879,289,800
# ≤ 103,880,000,000 < 103,880,805,600);  M: 100,000 − 68,531 = 31,469.
REFUND_G, REFUND_M = 68_531, 31_469

# By month (committed, spent, records); committed counts commitments less their releases (the
# usage postings' releases give back unrecorded commitments and count nothing).
BY_MONTH = {
    1: (0, 1_515_800, 6),          # G + M committed 1,515,800, released 1,515,800 when paid
    2: (0, 127_200, 3),            # the subscription's first month: committed, released, spent
    3: (0, 127_200, 1),            # the renewal: spent only
    4: (1_038_800, 0, 1),          # April's package, unpaid
    5: (0, -100_000, 2),           # the refund: − 68,531 − 31,469
    6: (0, 45_000, 8),             # 12,345 + 5,000 + 20,000 + 7,655 posted
    7: (477_000, 0, 1),            # the CT package on the compute line
    8: (-477_000, 0, 1),           # ... cancelled
    9: (477_000, 0, 1),            # the CT package again
    10: (-477_000, 477_000, 2),    # ... paid
    11: (0, 0, 0),
    12: (0, 0, 0),
}

# By supplier, by dataset (each supplier here sells one dataset): committed, spent, records.
# Grid  committed 1,038,800 − 1,038,800 + 1,038,800 (January paid, April unpaid) = 1,038,800
#       spent     1,038,800 − 68,531 + 12,345 + 20,000                           = 1,002,614
#       records   January 3, April 1, May 1, June 2 postings × 2                 = 9
# CT    committed January, February, July−August, September−October: all released = 0
#       spent     477,000 + 127,200 + 127,200 − 31,469 + 477,000                  = 1,176,931
#       records   January 3, February 3, March 1, May 1, compute line 5           = 13
# Notes spent     5,000 + 7,655 (October 20's 3,000 not posted)                   = 12,655
#       records   2 postings × 2                                                  = 4
# Check: 1,002,614 + 1,176,931 + 12,655 = 2,192,200 spent; 9 + 13 + 4 = 26 records.
BY_SUPPLIER = [  # largest spending first
    ("Medical Imaging Co", 0, 1_176_931, 13),
    ("Grid Data Co", 1_038_800, 1_002_614, 9),
    ("Hospital Data Co", 0, 12_655, 4),
]
BY_DATASET = [
    ("CT scan reports", "CT影像报告", 0, 1_176_931, 13),
    ("Grid load series", "电网负荷数据", 1_038_800, 1_002_614, 9),
    ("Clinical notes", "临床病历文本", 0, 12_655, 4),
]
# By sector: healthcare = CT + Notes: spent 1,176,931 + 12,655 = 1,189,586, records 13 + 4 = 17.
BY_SECTOR = [
    ("healthcare", "Healthcare", "医疗健康", 0, 1_189_586, 17),
    ("smart_energy", "Smart energy", "智慧能源", 1_038_800, 1_002_614, 9),
]


def _from_records(records) -> tuple[int, int]:
    """Committed and spent summed in Python from the records themselves."""
    committed = spent = 0
    for r in records:
        if r.kind == "commitment":
            committed += r.amount_minor
        elif r.kind == "release" and r.source != reports.USAGE_SOURCE:
            committed -= r.amount_minor
        elif r.kind == "expenditure":
            spent += r.amount_minor
        elif r.kind == "refund":
            spent -= r.amount_minor
    return committed, spent


def _drills_down(session, budget, by: str, row) -> None:
    page = reports.budget_records(session, budget, {by: row.key}, per_page=500)
    assert page.total == len(page.records) == row.records
    recorded_committed = row.committed_minor - row.unrecorded_committed_minor
    assert (page.committed_minor, page.spent_minor) == (recorded_committed, row.spent_minor)
    assert _from_records(page.records) == (recorded_committed, row.spent_minor)


def test_by_line(session, year):
    budget = year["budget"]
    report = reports.budget_report(session, budget, "line")
    assert [row.code for row in report.rows] == [f"{YEAR}-{code}" for code in BY_LINE]
    for row, expected in zip(report.rows, BY_LINE.values()):
        assert (row.approved_minor, row.committed_minor, row.spent_minor, row.remaining_minor,
                row.execution_rate, row.records) == expected, row.code
        assert row.reconciled, row.code
        _drills_down(session, budget, "line", row)
    assert [row.unrecorded_committed_minor for row in report.rows] == [UNRECORDED, 0, 0]
    totals = report.totals
    assert (totals.approved_minor, totals.committed_minor, totals.spent_minor,
            totals.remaining_minor, totals.execution_rate, totals.records) == TOTAL
    assert totals.unrecorded_committed_minor == UNRECORDED
    # The lines' own columns say the same.
    for line in (year["api"], year["compute"], year["data"]):
        assert (line.approved_minor, line.committed_minor, line.spent_minor,
                line.remaining_minor) == BY_LINE[line.code.split("-", 1)[1]][:4]
    data = report.to_dict()
    assert (data["totals"]["approved"], data["totals"]["committed"], data["totals"]["spent"],
            data["totals"]["remaining"], data["totals"]["execution_rate"],
            data["totals"]["unrecorded_committed"]) == (
        "80000.00", "10418.00", "21922.00", "47660.00", "27.40", "30.00")


def test_by_month(session, year):
    budget = year["budget"]
    report = reports.budget_report(session, budget, "month")
    assert [row.key for row in report.rows] == [month(m) for m in range(1, 13)]
    assert {int(row.key[5:]): (row.committed_minor, row.spent_minor, row.records)
            for row in report.rows} == BY_MONTH
    for row in report.rows:
        _drills_down(session, budget, "month", row)
    # The months sum to the year: 1,038,800 committed by records (1,041,800 by line less the
    # 3,000 unrecorded), 2,192,200 spent, 26 records.
    assert (report.totals.committed_minor, report.totals.spent_minor, report.totals.records,
            report.totals.unrecorded_committed_minor, report.totals.approved_minor) == (
        1_038_800, 2_192_200, 26, UNRECORDED, 8_000_000)
    # January's drill-down: the two items committed, released and spent.
    january = reports.budget_records(session, budget, {"month": month(1)})
    assert sorted((r.kind, r.amount_minor) for r in january.records) == [
        ("commitment", M), ("commitment", G), ("expenditure", M), ("expenditure", G),
        ("release", M), ("release", G)]
    may = reports.budget_records(session, budget, {"month": month(5)})
    assert sorted((r.kind, r.amount_minor) for r in may.records) == [
        ("refund", REFUND_M), ("refund", REFUND_G)]


def test_by_supplier(session, year, world):
    budget = year["budget"]
    report = reports.budget_report(session, budget, "supplier")
    assert [(row.label, row.committed_minor, row.spent_minor, row.records)
            for row in report.rows] == BY_SUPPLIER
    names = {world[k]["supplier"].name: world[k]["supplier"].id for k in ("grid", "ct", "notes")}
    assert [row.key for row in report.rows] == [str(names[name]) for name, *_ in BY_SUPPLIER]
    for row in report.rows:
        _drills_down(session, budget, "supplier", row)
    assert (report.totals.committed_minor, report.totals.spent_minor,
            report.totals.records) == (1_038_800, 2_192_200, 26)


def test_by_dataset(session, year, world):
    budget = year["budget"]
    report = reports.budget_report(session, budget, "dataset")
    assert [(row.label, row.label_zh, row.committed_minor, row.spent_minor, row.records)
            for row in report.rows] == BY_DATASET
    for row in report.rows:
        _drills_down(session, budget, "dataset", row)
    # The grid dataset's spending, record by record:
    # January 1,038,800 − May 68,531 + June 3 12,345 + June 10 20,000 = 1,002,614.
    grid = reports.budget_records(session, budget,
                                  {"dataset": str(world["grid"]["dataset"].id)})
    assert sorted((r.month, r.kind, r.amount_minor) for r in grid.records
                  if r.kind in ("expenditure", "refund")) == [
        (month(1), "expenditure", G), (month(5), "refund", REFUND_G),
        (month(6), "expenditure", 12_345), (month(6), "expenditure", 20_000)]


def test_by_sector(session, year):
    budget = year["budget"]
    report = reports.budget_report(session, budget, "sector")
    assert [(row.key, row.label, row.label_zh, row.committed_minor, row.spent_minor,
             row.records) for row in report.rows] == BY_SECTOR
    for row in report.rows:
        _drills_down(session, budget, "sector", row)


def test_drill_downs_combine(session, year, world):
    budget = year["budget"]
    # The data line's CT spending: January 477,000 + February 127,200 + March 127,200
    # − May 31,469 = 699,931; nothing committed; records: January 3 (commitment, release,
    # expenditure), February 3, March 1, May 1 = 8.
    page = reports.budget_records(session, budget, {
        "line": str(year["data"].id), "dataset": str(world["ct"]["dataset"].id)})
    assert (page.committed_minor, page.spent_minor, page.total) == (0, 699_931, 8)
    # The API line in June: 4 postings, each a release and an expenditure.
    page = reports.budget_records(session, budget, {"line": str(year["api"].id),
                                                    "month": month(6)})
    assert (page.committed_minor, page.spent_minor, page.total) == (0, 45_000, 8)


# The exports -------------------------------------------------------------------------------------

def _money(minor: int) -> Decimal:
    return Decimal(minor) / 100


def _expected_table() -> list[list]:
    rows = [[f"{YEAR}-{code}", *values[:5]] for code, values in BY_LINE.items()]
    rows.append(["合计 / Total", *TOTAL[:5]])
    return [[first, _money(a), _money(c), _money(s), _money(r), rate]
            for first, a, c, s, r, rate in rows]


def test_the_xlsx_export_holds_the_same_numbers(session, year):
    report = reports.budget_report(session, year["budget"], "line")
    sheet = load_workbook(io.BytesIO(reports.report_xlsx(report))).active
    assert sheet.title == f"FY{YEAR}"
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0][1] == f"FY{YEAR} data and AI budget"
    assert rows[1][1] == "City Health Commission" and rows[2][1] == YEAR
    assert rows[4][1] == "CNY"
    start = next(i for i, r in enumerate(rows) if r[0] == "编码 / Code") + 1
    body = rows[start:]
    assert len(body) == 4
    found = [[cells[0], *(Decimal(str(v)).quantize(Decimal("0.01")) for v in cells[4:9])]
             for cells in body]
    assert found == _expected_table()
    assert [cells[1:4] for cells in body[:3]] == [
        ["Model API usage", "模型服务 Model services", None],  # no project: an empty cell
        ["Compute", "算力 Compute", None],
        ["Industry datasets", "数据采购 Data purchase", "Smart city"]]
    for column in range(5, 10):
        assert not isinstance(sheet.cell(row=start + 1, column=column).value, str)


def test_the_csv_export_holds_the_same_numbers(session, year):
    report = reports.budget_report(session, year["budget"], "line")
    rows = list(csv.reader(io.StringIO(reports.report_csv(report).decode("utf-8-sig"))))
    start = next(i for i, r in enumerate(rows) if r and r[0] == "编码 / Code") + 1
    body = rows[start:]
    assert [[r[0], *r[4:]] for r in body] == [
        [f"{YEAR}-API-01", "7000.00", "30.00", "450.00", "6520.00", "6.43"],
        [f"{YEAR}-COMP-01", "15000.00", "0.00", "4770.00", "10230.00", "31.80"],
        [f"{YEAR}-DATA-01", "58000.00", "10388.00", "16702.00", "30910.00", "28.80"],
        ["合计 / Total", "80000.00", "10418.00", "21922.00", "47660.00", "27.40"]]
    assert [[r[0], *(Decimal(v) for v in r[4:])] for r in body] == _expected_table()
