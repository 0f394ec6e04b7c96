"""The statements console and API: the platform closes last month, the queue shows the statement,
the maker cannot approve it (403), a checker can and finance pays it; the participant and its
exchange download it as CSV, XLSX and PDF, anyone else gets 404; pages in English and Chinese;
the reconciliation's difference is zero and shown as such."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from billing.settlement.ledger import (
    LedgerEntry, LedgerTransaction, Line, Purpose, get_account, seal_of_lines,
)
from billing.models.statements import SettlementStatement, StatementAdjustment
from billing.payments.gateway import GatewayError
from market.core.db import utcnow
from pricing.money import Money
from tests.billing.payments.fake_gateway import FakeGateway
from tests.billing.shop import listed_dataset
from tests.factories import make_org
from tests.fixtures import csrf_token

NOW = utcnow()
PERIOD = f"{NOW.replace(day=1) - dt.timedelta(days=1):%Y-%m}"  # last month
AMOUNT_MINOR = 123_456  # CNY 1,234.56 owed to the supplier


def _owed_last_month(session, participant, dataset, minor: int) -> None:
    """A usage day of last month that left ``minor`` owed to the participant.

    Written as the recognition job would have, but dated in last month: postings made through
    ``ledger.post`` are dated now, and a period closes only once it has ended."""
    payable = get_account(session, Purpose.PARTICIPANT_PAYABLE, "CNY", participant.id)
    revenue = get_account(session, Purpose.PLATFORM_REVENUE, "CNY")
    day = NOW.replace(day=1) - dt.timedelta(days=5)
    key = f"test-usage:{participant.id}:{day:%Y-%m-%d}"
    memo = {"kind": "data", "dataset_id": dataset.id, "day": f"{day:%Y-%m-%d}",
            "tokens": 1_000_000, "gross": "1300.00"}
    owed = Money.from_minor(minor, "CNY")
    seal = seal_of_lines("usage", [Line.credit(payable, owed), Line.debit(revenue, owed)],
                         idempotency_key=key, reference=None, memo=memo, occurred_at=day)
    session.add(LedgerTransaction(
        kind="usage", idempotency_key=key, fingerprint="0" * 64, occurred_at=day, memo=memo,
        seal=seal, entries=[LedgerEntry(account_id=payable.id, amount_minor=-minor, currency="CNY"),
                 LedgerEntry(account_id=revenue.id, amount_minor=minor, currency="CNY")]))
    session.flush()


@pytest.fixture()
def shop(session, passwords):
    listed = listed_dataset(session, passwords)
    _owed_last_month(session, listed["supplier"], listed["dataset"], AMOUNT_MINOR)
    listed["platform"] = make_org(session, "platform", name="Marketplace Platform")
    session.commit()
    return listed


def _form(client, path, data, page="/statements"):
    return client.post(path, data={"csrf_token": csrf_token(client, page), **data})


def _text(response) -> str:
    return response.get_data(as_text=True)


def _close(client) -> None:
    response = _form(client, "/statements/close", {"period": PERIOD})
    assert response.status_code == 302, _text(response)


def _statement(session, shop) -> SettlementStatement:
    session.expire_all()
    return session.query(SettlementStatement).filter_by(
        organization_id=shop["supplier"].id, period=PERIOD).one()


@pytest.fixture()
def maker(sign_in_as, shop):
    return sign_in_as(shop["platform"], "owner")


@pytest.fixture()
def closed(session, shop, maker) -> SettlementStatement:
    _close(maker)
    return _statement(session, shop)


def test_the_queue_shows_a_closed_statement(session, shop, maker):
    page = _text(maker.get("/statements"))
    assert "Close a period" in page and "No statements." in page
    _close(maker)
    page = _text(maker.get("/statements"))
    statement = _statement(session, shop)
    assert statement.status == "draft" and statement.closing_minor == AMOUNT_MINOR
    row = re.search(rf"<tr>\s*<td><a href=\"/statements/{statement.id}\">.*?</tr>", page, re.S)
    assert row, page
    for expected in ("Grid Data Co", PERIOD, "CNY 1,234.56", "draft"):
        assert expected in row.group(0)
    assert "Reconciliation" in page  # the platform's own link


@pytest.mark.parametrize("how", ["api", "console", "command"])
def test_every_close_gives_the_configured_review_days(app, monkeypatch, session, shop, maker,
                                                     how):
    monkeypatch.setitem(app.config, "STATEMENT_REVIEW_DAYS", 9)
    monkeypatch.setitem(app.extensions, "market.billing", dataclasses.replace(
        app.extensions["market.billing"], statement_review_days=9))
    before = utcnow().date()
    if how == "api":
        assert _api(maker, "POST", "/statements/close", {"period": PERIOD}).status_code == 201
    elif how == "console":
        _close(maker)
    else:
        result = app.test_cli_runner().invoke(
            args=["billing", "run-job", "close-statements", "--period", PERIOD])
        assert result.exit_code == 0, result.output
    after = utcnow().date()
    due = _statement(session, shop).review_due_on
    assert due in {before + dt.timedelta(days=9), after + dt.timedelta(days=9)}


def test_closing_a_period_twice_re_renders_with_the_reason(maker, closed):
    response = _form(maker, "/statements/close", {"period": PERIOD})
    assert response.status_code == 422
    assert "already closed" in _text(response)


def test_a_malformed_period_is_refused_by_the_form(maker, shop):
    response = _form(maker, "/statements/close", {"period": "2026-13"})
    assert response.status_code == 422 and "YYYY-MM" in _text(response)


def test_the_exchange_reviews_but_does_not_close(sign_in_as, shop, closed):
    exchange = sign_in_as(shop["exchange"], "reviewer")
    page = _text(exchange.get("/statements"))
    assert closed.number in page and "Close a period" not in page
    assert exchange.get(f"/reconciliation?period={PERIOD}").status_code == 403


@pytest.mark.parametrize("accept, lang, title", [("en", 'lang="en"', "Grid load series"),
                                                 ("zh-CN,zh;q=0.9", 'lang="zh-CN"', "电网负荷数据")])
def test_pages_render_in_english_and_chinese(session, shop, maker, closed, accept, lang, title):
    maker.environ_base["HTTP_ACCEPT_LANGUAGE"] = accept
    for path in ("/statements", f"/statements/{closed.id}",
                 f"/statements/participants/{shop['supplier'].id}",
                 f"/reconciliation?period={PERIOD}"):
        response = maker.get(path)
        assert response.status_code == 200, (path, _text(response))
        assert lang in _text(response), path
    page = _text(maker.get(f"/statements/{closed.id}"))
    assert title in page  # the line's dataset, in the page's language
    assert closed.content_hash in page
    assert f"/api/v1/statements/{closed.id}/export.pdf" in page
    assert 'href="/statements">' in page  # the console's link in the navigation


@pytest.mark.parametrize("accept", ["en", "zh-CN,zh;q=0.9"])
def test_an_amount_owed_back_is_shown_negative_in_both_languages(session, shop, maker, accept):
    _owed_last_month(session, shop["processor"], shop["dataset"], -50)  # a refund taken back
    session.commit()
    _close(maker)
    session.expire_all()
    statement = session.query(SettlementStatement).filter_by(
        organization_id=shop["processor"].id, period=PERIOD).one()
    assert statement.closing_minor == -50
    maker.environ_base["HTTP_ACCEPT_LANGUAGE"] = accept
    page = _text(maker.get(f"/statements/{statement.id}"))
    # The line, its kind's total, the period's activity and the closing balance; never the
    # amount without its sign.
    assert page.count("-CNY 0.50") == 4, page
    assert re.search(r"[^-]CNY 0\.50", page) is None


def test_the_maker_cannot_approve_but_another_reviewer_can(session, sign_in_as, shop, maker,
                                                          closed):
    page = f"/statements/{closed.id}"
    assert "Issue to the participant" in _text(maker.get(page))
    assert _form(maker, f"{page}/issue", {}, page).status_code == 302
    assert _form(maker, f"{page}/review", {}, page).status_code == 302
    shown = _text(maker.get(page))
    assert "Approve</button>" not in shown and "another reviewer must approve" in shown

    refused = _form(maker, f"{page}/approve", {}, page)
    assert refused.status_code == 403
    assert "cannot also approve" in _text(refused)
    assert _statement(session, shop).status == "under_review"

    checker = sign_in_as(shop["platform"], "finance")
    assert "Approve</button>" in _text(checker.get(page))
    assert _form(checker, f"{page}/approve", {}, page).status_code == 302
    statement = _statement(session, shop)
    assert statement.status == "approved" and statement.approved_by_id == checker.user.id

    # Whoever approved it does not also record its payout: another person of finance does.
    assert "Record as paid" not in _text(checker.get(page))
    refused = _form(checker, f"{page}/pay", {"pay-bank_reference": "BOC-20260203-77"}, page)
    assert refused.status_code == 403
    payer = sign_in_as(shop["platform"], "finance")
    missing = _form(payer, f"{page}/pay", {"pay-bank_reference": ""}, page)
    assert missing.status_code == 422
    paid = _form(payer, f"{page}/pay", {"pay-bank_reference": "BOC-20260203-77"}, page)
    assert paid.status_code == 302
    statement = _statement(session, shop)
    assert statement.status == "paid" and statement.payout_reference == "BOC-20260203-77"


def test_a_step_out_of_turn_re_renders_with_the_reason(maker, closed):
    page = f"/statements/{closed.id}"
    response = _form(maker, f"{page}/approve", {}, page)
    assert response.status_code == 409 and "draft" in _text(response)


def test_the_participant_disputes_and_the_platform_resolves(session, sign_in_as, passwords,
                                                           shop, maker, closed):
    page = f"/statements/{closed.id}"
    _form(maker, f"{page}/issue", {}, page)
    participant = sign_in_as(shop["supplier"], "finance")
    assert "Dispute the statement" in _text(participant.get(page))
    assert _form(participant, f"{page}/dispute", {"dispute-reason": ""}, page).status_code == 422
    response = _form(participant, f"{page}/dispute",
                     {"dispute-reason": "The usage of the 3rd is missing."}, page)
    assert response.status_code == 302
    assert _statement(session, shop).status == "disputed"

    too_fine = _form(maker, f"{page}/resolve",
                     {"resolve-amount": "1.001", "resolve-reason": "x"}, page)
    assert too_fine.status_code == 422
    response = _form(maker, f"{page}/resolve",
                     {"resolve-amount": "12.50", "resolve-reason": "Found it.",
                      "resolve-reason_code": "usage_error", "resolve-lines": "1"}, page)
    assert response.status_code == 302, _text(response)
    assert _statement(session, shop).status == "under_review"


def test_a_large_correction_waits_for_a_checker_on_the_page(app, session, sign_in_as, shop,
                                                            maker, closed, monkeypatch):
    monkeypatch.setitem(app.extensions, "market.billing", dataclasses.replace(
        app.extensions["market.billing"], dual_control_threshold=Decimal("10.00")))
    page = f"/statements/{closed.id}"
    _form(maker, f"{page}/issue", {}, page)
    participant = sign_in_as(shop["supplier"], "finance")
    _form(participant, f"{page}/dispute", {"dispute-reason": "Short by 12.50."}, page)
    resolved = _form(maker, f"{page}/resolve",
                     {"resolve-amount": "12.50", "resolve-reason": "Found it.",
                      "resolve-reason_code": "usage_error", "resolve-lines": "1",
                      "resolve-document": "Usage log 2026-01-03"}, page)
    assert resolved.status_code == 302, _text(resolved)
    [adjustment] = session.scalars(select(StatementAdjustment).where(
        StatementAdjustment.statement_id == closed.id)).all()
    assert adjustment.status == "pending_approval" and adjustment.ledger_transaction_id is None
    shown = _text(maker.get(page))
    assert "Awaiting a second person" in shown and "Usage log 2026-01-03" in shown

    # Its maker (the platform's owner) is refused, and so is a platform finance person (a lower
    # role than the owner); the statement's exchange, another organization, posts it.
    confirm = f"/statements/adjustments/{adjustment.id}/confirm"
    assert _form(maker, confirm, {"note": "mine"}, page).status_code == 403
    junior = sign_in_as(shop["platform"], "finance")
    assert _form(junior, confirm, {"note": "ok"}, page).status_code == 403
    checker = sign_in_as(shop["exchange"], "reviewer")
    assert _form(checker, confirm, {"note": "Checked the log."}, page).status_code == 302
    session.refresh(adjustment)
    assert adjustment.status == "posted" and adjustment.decision_note == "Checked the log."
    assert adjustment.ledger_transaction_id is not None


def test_the_participant_history_is_the_platforms_and_its_own(session, sign_in_as, shop, maker,
                                                              closed):
    path = f"/statements/participants/{shop['supplier'].id}"
    assert closed.number in _text(maker.get(path))
    assert closed.number in _text(sign_in_as(shop["supplier"], "member").get(path))
    stranger = sign_in_as(make_org(session, "supplier", name="Stranger Co"), "owner")
    assert stranger.get(path).status_code == 404
    assert stranger.get(f"/statements/{closed.id}").status_code == 404


def test_the_reconciliation_difference_is_zero_and_green(maker, closed):
    page = _text(maker.get(f"/reconciliation?period={PERIOD}"))
    assert re.search(r'class="verdict genuine difference"[^>]*>\s*Difference: <strong>CNY 0.00',
                     page), page
    assert "CNY 1,234.56" in page


def _processor_down(app, monkeypatch) -> FakeGateway:
    gateway = FakeGateway()
    gateway.failure = GatewayError("api_connection_error", "connection refused",
                                   outcome_unknown=True)
    monkeypatch.setitem(app.extensions, "market.gateway", gateway)
    return gateway


def test_a_silent_card_processor_is_a_message_on_the_reconciliation_page(
        app, monkeypatch, maker, closed):
    gateway = _processor_down(app, monkeypatch)
    response = maker.get(f"/reconciliation?period={PERIOD}")
    page = _text(response)
    assert response.status_code == 502
    assert "The card processor did not answer" in page
    assert "CNY 1,234.56" in page  # the ledger's figures are still shown
    assert "Difference from the card processor" not in page
    assert gateway.windows  # it was asked


def test_a_silent_card_processor_is_a_502_problem_naming_it(app, monkeypatch, maker, closed):
    _processor_down(app, monkeypatch)
    for path in ("/reconciliation", "/reconciliation/export.csv"):
        response = _api(maker, "GET", f"{path}?period={PERIOD}")
        assert response.status_code == 502, path
        assert response.mimetype == "application/problem+json"
        problem = response.get_json()
        assert problem["code"] == "processor_unavailable" and problem["processor"] == "fake"
        assert "card processor (fake)" in problem["detail"]


# Exports ----------------------------------------------------------------------------------------

EXPORTS = {"csv": "text/csv", "pdf": "application/pdf",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@pytest.mark.parametrize("extension", sorted(EXPORTS))
@pytest.mark.parametrize("who", ["participant", "exchange", "platform"])
def test_exports_download_for_the_participant_and_its_reviewers(sign_in_as, shop, maker,
                                                                 closed, who, extension):
    client = {"participant": lambda: sign_in_as(shop["supplier"], "member"),
              "exchange": lambda: sign_in_as(shop["exchange"], "reviewer"),
              "platform": lambda: maker}[who]()
    response = client.get(f"/api/v1/statements/{closed.id}/export.{extension}")
    assert response.status_code == 200, _text(response)
    assert response.mimetype == EXPORTS[extension]
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="statement-{closed.number}.{extension}"')
    body = response.get_data()
    if extension == "csv":
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
        assert ["参与方 / Participant", "Grid Data Co"] in rows
        assert ["期末余额 / Closing balance", "1234.56"] in rows
    elif extension == "xlsx":
        sheet = load_workbook(io.BytesIO(body)).active
        closing = next(row for row in sheet.iter_rows() if row[0].value == "期末余额 / Closing balance")
        assert Decimal(str(closing[1].value)) == Decimal("1234.56")
    else:
        assert body.startswith(b"%PDF") and closed.content_hash.encode() in body


@pytest.mark.parametrize("extension", sorted(EXPORTS))
def test_exports_are_not_found_for_another_organization(sign_in_as, session, shop, closed,
                                                        extension):
    other = make_org(session, "supplier", "exchange", name="Other Exchange Co")
    client = sign_in_as(other, "owner")
    response = client.get(f"/api/v1/statements/{closed.id}/export.{extension}")
    assert response.status_code == 404
    assert "Grid Data Co" not in _text(response)


# The API ----------------------------------------------------------------------------------------

def _api(client, method, path, json=None):
    headers = {"X-CSRFToken": csrf_token(client)}
    return client.open(f"/api/v1{path}", method=method, json=json, headers=headers)


def test_the_api_closes_reviews_and_reconciles(session, sign_in_as, passwords, shop, maker):
    response = _api(maker, "POST", "/statements/close", {"period": PERIOD})
    assert response.status_code == 201, _text(response)
    [made] = [s for s in response.get_json() if s["organization_id"] == shop["supplier"].id]
    assert made["closing"] == {"amount": "1234.56", "currency": "CNY"}
    assert made["status"] == "draft" and made["exchange_id"] == shop["exchange"].id

    detail = _api(maker, "GET", f"/statements/{made['id']}").get_json()
    assert [line["amount"] for line in detail["lines"]] == [
        {"amount": "1234.56", "currency": "CNY"}]
    assert detail["lines"][0]["gross"] == {"amount": "1300.00", "currency": "CNY"}
    listed = _api(maker, "GET", f"/statements?period={PERIOD}").get_json()["items"]
    assert made["id"] in [s["id"] for s in listed]

    for step in ("issue", "review"):
        assert _api(maker, "POST", f"/statements/{made['id']}/{step}").status_code == 200
    refused = _api(maker, "POST", f"/statements/{made['id']}/approve")
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    checker = sign_in_as(shop["platform"], "finance")
    approved = _api(checker, "POST", f"/statements/{made['id']}/approve")
    assert approved.status_code == 200 and approved.get_json()["status"] == "approved"
    payer = sign_in_as(shop["platform"], "finance")
    paid = _api(payer, "POST", f"/statements/{made['id']}/pay", {"bank_reference": "B-1"})
    assert paid.get_json()["status"] == "paid"

    figures = _api(maker, "GET", f"/reconciliation?period={PERIOD}").get_json()
    assert figures["period"] == PERIOD
    assert figures["currencies"]["CNY"]["difference"] == 0


def test_the_api_disputes_and_resolves(sign_in_as, shop, maker):
    made = _api(maker, "POST", "/statements/close", {"period": PERIOD}).get_json()
    statement_id = made[0]["id"]
    _api(maker, "POST", f"/statements/{statement_id}/issue")
    participant = sign_in_as(shop["supplier"], "owner")
    disputed = _api(participant, "POST", f"/statements/{statement_id}/dispute",
                    {"reason": "Short by 12.50."})
    assert disputed.status_code == 200 and disputed.get_json()["status"] == "disputed"
    wrong = _api(maker, "POST", f"/statements/{statement_id}/resolve",
                 {"amount": {"amount": "12.50", "currency": "USD"}, "reason": "Found it."})
    assert wrong.status_code == 422
    resolved = _api(maker, "POST", f"/statements/{statement_id}/resolve",
                    {"amount": {"amount": "12.50", "currency": "CNY"}, "reason": "Found it.",
                     "reason_code": "usage_error", "evidence": {"lines": [1]}})
    assert resolved.status_code == 200 and resolved.get_json()["status"] == "under_review"
