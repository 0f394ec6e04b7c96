"""Credit lines run by platform finance: open, change and close through the API and the CLI,
every change audited; a raise above the approval threshold waits for a second, different
approver, and an approval against a line that moved since is refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from billing.context import BillingSettings
from billing.metering import credit_lines, charge as metering
from billing.models import CreditLine, CreditLineChange
from market.core.audit import AuditEntry
from market.core.errors import Forbidden
from pricing.money import Money
from tests.factories import make_org, make_user
from tests.fixtures import csrf_token


@pytest.fixture()
def team(session, passwords, sign_in_as):
    """Two finance people of the platform (a maker and a checker), and a buyer organization."""
    platform = make_org(session, "platform", name="Marketplace Platform")
    buyer = make_org(session, "buyer", name="Model Co")
    session.commit()
    maker, checker = sign_in_as(platform, "finance"), sign_in_as(platform, "owner")
    for client in (maker, checker):
        client.csrf = {"X-CSRFToken": csrf_token(client)}
    return {"platform": platform, "buyer": buyer, "maker": maker, "checker": checker}


def _request(client, org_id, amount, **extra):
    return client.post("/api/v1/credit-lines", headers=client.csrf, json={
        "organization_id": org_id, "limit": {"amount": amount, "currency": "CNY"},
        "reason": "Annual framework contract", **extra})


def _line(session, org_id):
    return session.scalar(select(CreditLine).where(CreditLine.organization_id == org_id)
                          .execution_options(populate_existing=True))


def _actions(session):
    return [e.action for e in session.scalars(select(AuditEntry).where(
        AuditEntry.action.like("credit_line.%")).order_by(AuditEntry.seq))]


def test_a_raise_within_the_threshold_applies_at_once(team, session):
    response = _request(team["maker"], team["buyer"].id, "50000.00")
    assert response.status_code == 201, response.get_json()
    change = response.get_json()
    assert change["status"] == "applied" and change["kind"] == "open"
    line = _line(session, team["buyer"].id)
    assert line.limit_minor == 5_000_000 and line.suspended_at is None
    assert _actions(session) == ["credit_line.change_requested", "credit_line.opened"]
    listed = team["maker"].get("/api/v1/credit-lines").get_json()["items"]
    assert [(entry["id"], entry["limit"]["amount"]) for entry in listed] == [(line.id, "50000.00")]


def test_a_raise_above_the_threshold_waits_for_a_second_approver(team, session):
    change = _request(team["maker"], team["buyer"].id, "150000.00").get_json()
    assert change["status"] == "pending"
    assert _line(session, team["buyer"].id) is None  # nothing granted yet
    pending = team["checker"].get("/api/v1/credit-line-changes?status=pending").get_json()[
        "items"]
    assert [c["id"] for c in pending] == [change["id"]]

    # The maker cannot approve their own change.
    own = team["maker"].post(f"/api/v1/credit-line-changes/{change['id']}/approve",
                             headers=team["maker"].csrf)
    assert own.status_code == 403 and "second approver" in own.get_json()["detail"]
    assert _line(session, team["buyer"].id) is None

    approved = team["checker"].post(f"/api/v1/credit-line-changes/{change['id']}/approve",
                                    headers=team["checker"].csrf)
    assert approved.status_code == 200, approved.get_json()
    body = approved.get_json()
    assert body["status"] == "applied" and body["decided_by_id"] == team["checker"].user.id
    assert _line(session, team["buyer"].id).limit_minor == 15_000_000
    assert _actions(session) == ["credit_line.change_requested",
                                 "credit_line.change_approved", "credit_line.opened"]
    opened = session.scalars(select(AuditEntry).where(
        AuditEntry.action == "credit_line.opened")).one()
    assert opened.data["requested_by_id"] == team["maker"].user.id
    assert opened.data["approved_by_id"] == team["checker"].user.id
    again = team["checker"].post(f"/api/v1/credit-line-changes/{change['id']}/approve",
                                 headers=team["checker"].csrf)
    assert again.status_code == 409


def test_an_approval_against_a_line_that_moved_is_refused(team, session):
    assert _request(team["maker"], team["buyer"].id, "10000.00").get_json()["status"] == \
        "applied"
    big = _request(team["maker"], team["buyer"].id, "200000.00").get_json()
    assert big["status"] == "pending" and big["limit_before"]["amount"] == "10000.00"
    # Meanwhile the limit is lowered (a decrease needs no second approver).
    assert _request(team["checker"], team["buyer"].id, "5000.00").get_json()["status"] == \
        "applied"
    stale = team["checker"].post(f"/api/v1/credit-line-changes/{big['id']}/approve",
                                 headers=team["checker"].csrf)
    assert stale.status_code == 409
    assert _line(session, team["buyer"].id).limit_minor == 500_000
    rejected = team["checker"].post(f"/api/v1/credit-line-changes/{big['id']}/reject",
                                    headers=team["checker"].csrf,
                                    json={"reason": "Asked against an older limit"})
    assert rejected.status_code == 200 and rejected.get_json()["status"] == "rejected"
    assert "credit_line.change_rejected" in _actions(session)


def test_closing_stops_calls_on_credit_and_reopening_is_an_increase(team, session):
    _request(team["maker"], team["buyer"].id, "1000.00")
    line = _line(session, team["buyer"].id)
    assert metering.take_credit(session, team["buyer"].id, Money("1.00", "CNY")) == line.id
    session.commit()
    closed = team["maker"].post(f"/api/v1/credit-lines/{line.id}/close",
                                headers=team["maker"].csrf, json={"reason": "Contract ended"})
    assert closed.status_code == 200 and closed.get_json()["kind"] == "close"
    line = _line(session, team["buyer"].id)
    assert line.suspended_at is not None
    assert metering.take_credit(session, team["buyer"].id, Money("1.00", "CNY")) is None
    assert team["maker"].post(f"/api/v1/credit-lines/{line.id}/close",
                              headers=team["maker"].csrf,
                              json={"reason": "again"}).status_code == 409
    # Reopening counts from zero: 150,000 is above the threshold even though the old limit
    # was 1,000.
    reopened = _request(team["maker"], team["buyer"].id, "150000.00").get_json()
    assert reopened["status"] == "pending" and reopened["kind"] == "open"
    team["checker"].post(f"/api/v1/credit-line-changes/{reopened['id']}/approve",
                         headers=team["checker"].csrf)
    line = _line(session, team["buyer"].id)
    assert line.suspended_at is None and line.limit_minor == 15_000_000
    assert "credit_line.closed" in _actions(session)


@pytest.mark.parametrize("role, org_role", [("member", "platform"), ("finance", "exchange"),
                                            ("owner", "buyer")])
def test_only_platform_finance_manages_credit_lines(session, sign_in_as, team, role, org_role):
    org = make_org(session, org_role)
    client = sign_in_as(org, role)
    response = client.post("/api/v1/credit-lines", headers={"X-CSRFToken": csrf_token(client)},
                           json={"organization_id": team["buyer"].id,
                                 "limit": {"amount": "1.00", "currency": "CNY"},
                                 "reason": "x"})
    assert response.status_code == 403
    assert _line(session, team["buyer"].id) is None


@pytest.mark.parametrize("body, field", [
    ({"limit": {"amount": "-1.00", "currency": "CNY"}}, "limit"),
    ({"reason": "   "}, "reason"),
    ({"payment_method": "cheque"}, "payment_method"),
])
def test_bad_requests_are_named(team, session, body, field):
    payload = {"organization_id": team["buyer"].id,
               "limit": {"amount": "10.00", "currency": "CNY"}, "reason": "ok"} | body
    response = team["maker"].post("/api/v1/credit-lines", headers=team["maker"].csrf,
                                  json=payload)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert session.scalar(select(CreditLineChange.id)) is None


def test_a_credit_line_for_a_non_buyer_is_refused(team, session):
    supplier = make_org(session, "supplier")
    session.commit()
    response = _request(team["maker"], supplier.id, "10.00")
    assert response.status_code == 422 and "organization_id" in response.get_json()["errors"]


def test_finance_never_opens_a_credit_line_for_its_own_organization(team, session):
    response = _request(team["maker"], team["platform"].id, "10.00")
    assert response.status_code == 403 and response.get_json()["code"] == "party_to_item"


def test_the_cli_runs_maker_checker(session, passwords, runner):
    platform = make_org(session, "platform")
    maker = make_user(session, passwords, platform, "finance")
    checker = make_user(session, passwords, platform, "finance")
    buyer = make_org(session, "buyer")
    session.commit()
    asked = runner.invoke(args=["finance", "credit-line", "set", buyer.slug, "250000", "CNY",
                                "--reason", "Framework", "--by", maker.email])
    assert asked.exit_code == 0, asked.output
    assert "pending" in asked.output
    change = session.scalar(select(CreditLineChange))
    own = runner.invoke(args=["finance", "credit-line", "approve", str(change.id),
                              "--by", maker.email])
    assert own.exit_code != 0 and "second approver" in own.output
    done = runner.invoke(args=["finance", "credit-line", "approve", str(change.id),
                               "--by", checker.email])
    assert done.exit_code == 0 and "applied" in done.output, done.output
    line = _line(session, buyer.id)
    assert line.limit_minor == 25_000_000
    listed = runner.invoke(args=["finance", "credit-line", "list", "--by", checker.email])
    assert f"credit line {line.id}" in listed.output and "(open)" in listed.output
    closed = runner.invoke(args=["finance", "credit-line", "close", str(line.id),
                                 "--reason", "Ended", "--by", checker.email])
    assert closed.exit_code == 0, closed.output
    assert _line(session, buyer.id).suspended_at is not None


def test_the_threshold_setting_is_read_in_the_lines_currency():
    def read(raw):
        return BillingSettings.from_settings({"CREDIT_LINE_APPROVAL_THRESHOLD": raw})

    assert credit_lines.approval_threshold(read("500"), "USD") == Money("500", "USD")
    assert credit_lines.approval_threshold(read(""), "CNY") is None


def test_an_api_key_of_platform_finance_cannot_extend_credit(session, team):
    from market.accounts.authz import Principal

    key = Principal(organization_id=team["platform"].id, api_key_id=1,
                    scopes=frozenset({"billing:write"}), org_roles=frozenset({"platform"}))
    with pytest.raises(Forbidden):
        credit_lines.request_change(session, key, team["buyer"].id,
                                    limit=Money("1.00", "CNY"), reason="x",
                                    approval_threshold=None)


def _form_token(client, path="/finance/credit-lines"):
    return csrf_token(client, path)


def test_the_console_page_opens_approves_and_closes(team, session):
    maker, checker = team["maker"], team["checker"]
    page = maker.get("/finance/credit-lines")
    assert page.status_code == 200
    assert "Model Co" in page.get_data(as_text=True)  # a buyer to choose
    assert "Credit lines" in maker.get("/").get_data(as_text=True)

    asked = maker.post("/finance/credit-lines", data={
        "csrf_token": _form_token(maker), "organization_id": team["buyer"].id,
        "limit": "120000.00", "currency": "CNY", "payment_method": "bank_transfer",
        "reason": "Framework contract"})
    assert asked.status_code == 302
    change = session.scalar(select(CreditLineChange))
    assert change.status == "pending"
    text = maker.get("/finance/credit-lines").get_data(as_text=True)
    assert "Waiting for a second approver" in text
    assert f"/finance/credit-line-changes/{change.id}/approve" not in text  # not for its maker

    text = checker.get("/finance/credit-lines").get_data(as_text=True)
    assert f"/finance/credit-line-changes/{change.id}/approve" in text
    approved = checker.post(f"/finance/credit-line-changes/{change.id}/approve",
                            data={"csrf_token": _form_token(checker)})
    assert approved.status_code == 302
    line = _line(session, team["buyer"].id)
    assert line.limit_minor == 12_000_000

    bad = maker.post("/finance/credit-lines", data={
        "csrf_token": _form_token(maker), "organization_id": team["buyer"].id,
        "limit": "-5", "currency": "CNY", "payment_method": "bank_transfer", "reason": "x"})
    assert bad.status_code == 422

    closed = checker.post(f"/finance/credit-lines/{line.id}/close", data={
        "csrf_token": _form_token(checker), f"close-{line.id}-reason": "Contract ended"})
    assert closed.status_code == 302
    assert _line(session, team["buyer"].id).suspended_at is not None
    assert "Closed" in checker.get("/finance/credit-lines").get_data(as_text=True)


def test_the_console_page_is_for_platform_finance_only(session, sign_in_as):
    buyer = make_org(session, "buyer")
    client = sign_in_as(buyer, "owner")
    assert client.get("/finance/credit-lines").status_code == 403
