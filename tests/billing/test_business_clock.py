"""One business clock: a month and a year end played on a fake clock in Asia/Shanghai.

Calls are made at 23:30 and 00:30 Beijing time around the end of November and of 2026 (00:30
Beijing on 1 December is still 30 November in UTC), through the metered API, while the four
period-closing jobs run on their own schedule (``scheduled_run``, what the scheduler calls).
Every call must be recognized, invoiced and posted to its budget exactly once, in the Beijing
day, month and fiscal year it was made in; a scheduler stopped for three days catches up; a job
never closes a period that has not ended in Beijing; a forced rerun changes nothing.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from billing import invoices, orders, runs
from billing.jobs import JOBS_BY_NAME
from billing.budgets import lines as budgets
from billing.payments import bank_transfer
from billing.settlement.ledger import LedgerTransaction
from billing.models import BudgetLine, BudgetRecord, CreditLine, Order, UsageEvent
from billing.models.operations import JobRun
from billing.models.statements import SettlementStatement
from market.web.cli.billing import scheduled_run
from market.core.db import business_calendar
from market.core.errors import InvalidInput
from pricing.money import Money
from tests.billing.conftest import billing_settings
from tests.billing import shop as shopping
from tests.factories import make_key

BEIJING = ZoneInfo("Asia/Shanghai")
CLOSING_JOBS = ("recognize-usage", "post-usage-to-budgets", "postpaid-invoices",
                "close-statements")
METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None,
     "price_per_million": {"amount": "300000", "currency": "CNY"}}]}


def beijing(year, month, day, hour=0, minute=0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=BEIJING)


@pytest.fixture()
def clock():
    with time_machine.travel(beijing(2026, 11, 28, 12), tick=False) as traveller:
        yield traveller


@pytest.fixture()
def market(clock, session, passwords):
    shop = shopping.listed_dataset(session, passwords, extra_offers=[METERED])
    org, _, principal = shopping.buyer(session, passwords)
    _, _, finance = shopping.platform_finance(session, passwords)
    session.add(CreditLine(organization_id=org.id, currency="CNY", limit_minor=100_000_000))
    lines = {}
    for year in (2026, 2027):
        budget = budgets.create_budget(session, principal, fiscal_year=year, currency="CNY",
                                       name=f"Data {year}")
        lines[year, "api"] = budgets.add_line(
            session, principal, budget, code=f"{year}-API", name="Data API",
            category="model_services", approved=Money("900000.00", "CNY"), default_for_api=True)
        lines[year, "data"] = budgets.add_line(
            session, principal, budget, code=f"{year}-DATA", name="Datasets",
            category="data_purchase", approved=Money("900000.00", "CNY"))
    _, secret = make_key(session, org, scopes=("data:read",))
    session.commit()
    return {"shop": shop, "org": org, "principal": principal, "finance": finance,
            "lines": lines, "headers": {"Authorization": f"Bearer {secret}"}}


def _call(client, clock, market, session, moment: dt.datetime) -> UsageEvent:
    clock.move_to(moment)
    response = client.get(f"/api/v1/datasets/{market['shop']['dataset'].id}/versions/1/records",
                          headers=market["headers"], query_string={"limit": 3})
    assert response.status_code == 200, response.get_json()
    event = session.scalars(select(UsageEvent).order_by(UsageEvent.id.desc())).first()
    assert event.paid_by == "postpaid" and event.amount_minor > 0
    return event


def _play(app, clock, day: dt.date) -> dict[str, runs.JobOutcome]:
    """One day of the scheduler: each closing job due that day, at its time in Beijing."""
    due = []
    for name in CLOSING_JOBS:
        trigger = JOBS_BY_NAME[name].trigger
        if trigger.get("day", day.day) == day.day:
            due.append((trigger["hour"], trigger["minute"], name))
    outcomes = {}
    for hour, minute, name in sorted(due):
        clock.move_to(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BEIJING))
        outcomes[name] = scheduled_run(app, name)
    return outcomes


def _days(first: dt.date, last: dt.date):
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def _done(session, name: str) -> list[str]:
    return sorted(session.scalars(select(JobRun.period).where(
        JobRun.job == name, JobRun.status == "done")))


def test_a_month_and_a_year_end_on_the_beijing_clock(app, client, runner, session, clock,
                                                     market):
    org, lines = market["org"], market["lines"]
    stopped = {dt.date(2026, 12, 10), dt.date(2026, 12, 11), dt.date(2026, 12, 12)}
    calls_at = {
        beijing(2026, 11, 30, 23, 30): ("2026-11", 2026),
        beijing(2026, 12, 1, 0, 30): ("2026-12", 2026),  # 16:30 on 30 November in UTC
        beijing(2026, 12, 9, 14): ("2026-12", 2026),
        beijing(2026, 12, 10, 14): ("2026-12", 2026),  # the scheduler is down from the 10th
        beijing(2026, 12, 11, 14): ("2026-12", 2026),
        beijing(2026, 12, 31, 23, 30): ("2026-12", 2026),
        beijing(2027, 1, 1, 0, 30): ("2027-01", 2027),  # 16:30 on 31 December 2026 in UTC
    }
    events = {}
    for day in _days(dt.date(2026, 11, 29), dt.date(2027, 1, 3)):
        if day not in stopped:
            _play(app, clock, day)
        for moment in sorted(m for m in calls_at if m.date() == day):
            events[moment] = _call(client, clock, market, session, moment)
        if day == dt.date(2026, 11, 30):
            clock.move_to(beijing(2026, 11, 30, 23, 50))  # 15:50 UTC: still November
            november_order = _paid_order(session, market, lines[2026, "data"], day)
        if day == dt.date(2026, 12, 12):
            # Three days without a scheduler: nothing of the 9th, 10th or 11th is closed yet.
            assert "2026-12-09" not in _done(session, "recognize-usage")
        if day == dt.date(2026, 12, 1):
            # An order paid at 04:00 on 1 December (20:00 on 30 November in UTC).
            clock.move_to(beijing(2026, 12, 1, 4))
            december_order = _paid_order(session, market, lines[2026, "data"], day)
        if day == dt.date(2027, 1, 1):
            clock.move_to(beijing(2027, 1, 1, 7, 30))  # 23:30 on 31 December 2026 in UTC
            with pytest.raises(InvalidInput) as refused, session.begin_nested():
                _order(session, market, lines[2026, "data"])
            assert "falls in 2027" in refused.value.detail
            new_year = _order(session, market, lines[2027, "data"])
            assert new_year.budget_line_id == lines[2027, "data"].id
    # January's days and invoice, on 1 February (the scheduler catches up the days it missed).
    _play(app, clock, dt.date(2027, 2, 1))
    session.expire_all()

    # Every day closed once, the three days the scheduler was down included.
    for name in ("recognize-usage", "post-usage-to-budgets"):
        closed = _done(session, name)
        assert closed == [d.isoformat() for d in _days(dt.date(2026, 11, 28),
                                                       dt.date(2027, 1, 31))], name
    assert _done(session, "postpaid-invoices") == ["2026-11", "2026-12", "2027-01"]
    assert _done(session, "close-statements") == ["2026-11", "2026-12"]

    calendar = business_calendar(session)
    usage_postings = session.scalars(select(LedgerTransaction).where(
        LedgerTransaction.kind == "usage")).all()
    expenditure = session.scalars(select(BudgetRecord).where(
        BudgetRecord.source == "usage", BudgetRecord.kind == "expenditure")).all()
    usage_orders = {order.billing_key: order for order in session.scalars(
        select(Order).where(Order.kind == "usage"))}
    assert len(usage_postings) == len(expenditure) == len(events)  # one call a day
    for moment, (month, year) in calls_at.items():
        event = events[moment]
        session.refresh(event)
        day = moment.date().isoformat()
        assert calendar.day_of(event.recorded_at).isoformat() == day
        # Recognized once, on its Beijing day.
        [posting] = [t for t in usage_postings if t.memo["day"] == day]
        assert posting.memo["organization_id"] == org.id
        assert Money(posting.memo["gross"], "CNY").minor == event.amount_minor
        # Invoiced once, in its Beijing month.
        assert event.period == month
        order = usage_orders[f"usage:{org.id}:{month}"]
        assert event.order_id == order.id and order.invoice is not None
        # Posted once to the budget of its Beijing fiscal year, in its Beijing month.
        [record] = [r for r in expenditure if r.reference.endswith(f":{day}:expenditure")]
        assert record.line_id == lines[year, "api"].id
        assert (record.amount_minor, record.month) == (event.amount_minor, month)
    for month in ("2026-11", "2026-12", "2027-01"):
        order = usage_orders[f"usage:{org.id}:{month}"]
        billed = [e for e in events.values() if e.period == month]
        assert order.subtotal_minor == sum(e.amount_minor for e in billed)
    assert len(usage_orders) == 3
    for year in (2026, 2027):
        line = session.get(BudgetLine, lines[year, "api"].id)
        spent = sum(e.amount_minor for m, e in events.items() if calls_at[m][1] == year)
        assert (line.committed_minor, line.spent_minor) == (0, spent)

    # The order paid at 04:00 on 1 December is December's in the supplier's statements; the one
    # paid at 23:50 on 30 November, November's.
    supplier = market["shop"]["supplier"].id
    statements = {s.period: s for s in session.scalars(select(SettlementStatement).where(
        SettlementStatement.organization_id == supplier))}
    assert statements["2026-11"].cutoff == beijing(2026, 12, 1)
    traced = {(period, line.order_number): line.occurred_on
              for period, statement in statements.items() for line in statement.lines
              if line.order_number in (november_order.number, december_order.number)}
    assert traced == {("2026-11", november_order.number): dt.date(2026, 11, 30),
                      ("2026-12", december_order.number): dt.date(2026, 12, 1)}

    # A forced rerun of a closed day or month changes nothing and ends cleanly.
    before = len(usage_postings), len(usage_orders)
    for name, period in (("recognize-usage", "2026-12-01"), ("post-usage-to-budgets",
                                                             "2026-12-31"),
                         ("postpaid-invoices", "2026-12")):
        result = runner.invoke(args=["billing", "run-job", name, "--period", period, "--force"])
        assert result.exit_code == 0, result.output
        assert result.exception is None
    session.expire_all()
    assert (len(session.scalars(select(LedgerTransaction).where(
        LedgerTransaction.kind == "usage")).all()),
        len(session.scalars(select(Order).where(Order.kind == "usage")).all())) == before


def _order(session, market, line) -> Order:
    return orders.place_mall_order(session, market["principal"],
                                   [orders.CartItem(market["shop"]["package"].id)],
                                   payment_method="bank_transfer", budget_line_id=line.id)


def _paid_order(session, market, line, day: dt.date) -> Order:
    settings = billing_settings()
    order = _order(session, market, line)
    invoice = invoices.issue_invoice(session, order, settings)
    bank_transfer.record_bank_receipt(session, market["finance"], invoice, amount=order.total,
                                      received_on=day, bank_reference=f"B-{day}",
                                      settings=settings)
    session.commit()
    return order


def test_a_period_that_has_not_ended_in_beijing_is_never_closed(app, runner, session, clock,
                                                                market):
    database = app.extensions["market.db"]
    # 03:00 on 1 December in Beijing: November has ended; 1 December has not.
    clock.move_to(beijing(2026, 12, 1, 3))
    for name, period in (("recognize-usage", "2026-12-01"), ("postpaid-invoices", "2026-12"),
                         ("post-usage-to-budgets", "2026-12-01"),
                         ("close-statements", "2026-12")):
        with pytest.raises(runs.PeriodNotEnded, match="has not ended yet in Asia/Shanghai"):
            runs.run_job(database, JOBS_BY_NAME[name], period, settings=app.config,
                         progress=lambda _: None)
        refused = runner.invoke(args=["billing", "run-job", name, "--period", period])
        assert refused.exit_code == 2 and "has not ended yet" in refused.output
    assert session.scalars(select(JobRun)).all() == []
    assert runs.default_period(JOBS_BY_NAME["postpaid-invoices"], runs.utcnow(),
                               database.calendar) == "2026-11"
    assert runs.run_job(database, JOBS_BY_NAME["postpaid-invoices"], "2026-11",
                        settings=app.config, progress=lambda _: None).ran


def test_the_calendar_bounds_business_periods_in_utc():
    calendar = business_calendar_of("Asia/Shanghai")
    utc = dt.timezone.utc
    assert calendar.month_bounds("2026-12") == (dt.datetime(2026, 11, 30, 16, tzinfo=utc),
                                                dt.datetime(2026, 12, 31, 16, tzinfo=utc))
    assert calendar.year_bounds(2027)[0] == dt.datetime(2026, 12, 31, 16, tzinfo=utc)
    assert calendar.day_of(dt.datetime(2026, 11, 30, 16, 30, tzinfo=utc)) == dt.date(2026, 12, 1)
    assert calendar.year_of(dt.datetime(2026, 12, 31, 23, 30, tzinfo=utc)) == 2027
    assert calendar.previous_month(beijing(2027, 1, 1, 0, 5)) == "2026-12"
    with pytest.raises(ValueError):
        calendar.day_of(dt.datetime(2026, 12, 1))
    with pytest.raises(ValueError, match="IANA"):
        business_calendar_of("Mars/Olympus")


def business_calendar_of(zone: str):
    from pricing.periods import BusinessCalendar

    return BusinessCalendar(zone)


def test_a_bad_business_time_zone_is_named(tmp_path):
    from market.core.settings import load_config

    with pytest.raises(RuntimeError, match="BUSINESS_TIMEZONE"):
        load_config(tmp_path, environ={"BUSINESS_TIMEZONE": "Beijing"})
    with pytest.raises(RuntimeError, match="SCHEDULER_TIMEZONE: renamed BUSINESS_TIMEZONE"):
        load_config(tmp_path, environ={"SCHEDULER_TIMEZONE": "UTC"})
    assert load_config(tmp_path, environ={})["BUSINESS_TIMEZONE"] == "Asia/Shanghai"
    assert load_config(tmp_path, environ={"BUSINESS_TIMEZONE": "Europe/Berlin"})[
        "BUSINESS_TIMEZONE"] == "Europe/Berlin"


def test_a_rerun_that_finds_a_late_commit_posts_only_the_rest(app, client, session, clock,
                                                              market):
    """An event that committed after its day was recognized (its transaction began before
    midnight) is posted on top when the day is run again — never a Conflict, never twice."""
    database = app.extensions["market.db"]
    event = _call(client, clock, market, session, beijing(2026, 11, 30, 23, 59))
    clock.move_to(beijing(2026, 12, 1, 0, 20))
    first = runs.run_job(database, JOBS_BY_NAME["recognize-usage"], "2026-11-30",
                         settings=app.config, progress=lambda _: None)
    assert first.summary["groups"] == 1
    late = UsageEvent(
        request_id="late-commit", organization_id=event.organization_id,
        dataset_id=event.dataset_id, version_id=event.version_id, kind="data", tokens=10,
        unit_price="1", amount_minor=123, currency="CNY", paid_by="postpaid",
        supply_chain_revision_id=event.supply_chain_revision_id, period="2026-11",
        occurred_at=event.recorded_at, recorded_at=event.recorded_at)
    session.add(late)
    session.commit()
    again = runs.run_job(database, JOBS_BY_NAME["recognize-usage"], "2026-11-30",
                         settings=app.config, progress=lambda _: None, force=True)
    assert again.summary["groups"] == 1
    third = runs.run_job(database, JOBS_BY_NAME["recognize-usage"], "2026-11-30",
                         settings=app.config, progress=lambda _: None, force=True)
    assert third.summary == {"already": 1}
    postings = session.scalars(select(LedgerTransaction).where(
        LedgerTransaction.kind == "usage").order_by(LedgerTransaction.id)).all()
    assert [Money(t.memo["gross"], "CNY").minor for t in postings] == [event.amount_minor, 123]
    assert postings[1].idempotency_key.endswith(f":upto:{event.amount_minor + 123}")


def test_a_catch_up_stops_at_a_failing_period(app, session, clock, market):
    """Catching up runs the missed days oldest first; one that fails stops it there, so no later
    day is closed over it, and the next run takes it up again."""
    database = app.extensions["market.db"]
    clock.move_to(beijing(2026, 12, 1, 0, 20))
    runs.run_job(database, JOBS_BY_NAME["recognize-usage"], "2026-11-30", settings=app.config,
                 progress=lambda _: None)
    clock.move_to(beijing(2026, 12, 5, 0, 20))
    job = JOBS_BY_NAME["recognize-usage"]
    assert runs.due_periods(database, job, runs.utcnow()) == [
        "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    real = job.run

    def failing_on_the_2nd(ctx):
        if ctx.period == "2026-12-02":
            raise RuntimeError("database went away")
        return real(ctx)

    failing = runs.Job(**{**job.__dict__, "run": failing_on_the_2nd})
    with pytest.raises(RuntimeError):
        runs.run_due(database, failing, settings=app.config, progress=lambda _: None)
    statuses = dict(session.execute(select(JobRun.period, JobRun.status).where(
        JobRun.job == "recognize-usage")).all())
    assert statuses == {"2026-11-30": "done", "2026-12-01": "done", "2026-12-02": "failed"}
    outcomes = runs.run_due(database, job, settings=app.config,
                            progress=lambda _: None)
    assert [(o.period, o.outcome) for o in outcomes] == [
        ("2026-12-02", "ran"), ("2026-12-03", "ran"), ("2026-12-04", "ran")]
