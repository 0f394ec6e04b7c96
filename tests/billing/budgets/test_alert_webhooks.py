"""Budget alert webhooks as a product: the owner sets the URL (API and budget page), the
marketplace generates the signing secret, shows it once and rotates it; deliveries to a real
local receiver are signed, failures retried with exponential backoff and shown on the page;
production refuses private and loopback addresses (SSRF), checking every resolved address."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from billing.budgets import alerts as budget_alerts, webhook_targets
from billing.models import Budget, BudgetAlert
from market.accounts.models import Organization
from market.core.audit import AuditEntry
from market.core.errors import InvalidInput
from tests.billing.conftest import free_port
from tests.billing.budgets.test_budget_reports import build_budget
from tests.fixtures import csrf_token

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture()
def owned(session, sign_in_as):
    """A budget of a buyer whose owner is signed in (page and API), with one alert fired."""
    planned = build_budget(session)
    budget, line = planned["budget"], planned["lines"]["L01"]
    budget.alert_email = None
    alert = BudgetAlert(line_id=line.id, organization_id=budget.organization_id, threshold=80,
                        used_minor=80_000_000, approved_minor=100_000_000, detail={})
    session.add(alert)
    session.commit()
    client = sign_in_as(session.get(Organization, budget.organization_id), "owner")
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    return {"budget": budget, "alert": alert, "client": client}


def _deliver(db, now=NOW, **settings):
    return budget_alerts.deliver_alerts(db, settings, now=now, progress=lambda line: None)


def _put(client, budget_id, url):
    return client.put(f"/api/v1/budgets/{budget_id}/alert-webhook", headers=client.csrf,
                      json={"url": url})


def test_the_owner_sets_a_webhook_gets_its_secret_once_and_deliveries_are_signed(
        db, session, owned, webhook_receiver):
    client, budget = owned["client"], owned["budget"]
    response = _put(client, budget.id, webhook_receiver["url"])
    assert response.status_code == 200, response.get_json()
    secret = response.get_json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    # Never shown again: not by the budget, not by setting the URL again, not in the audit log.
    shown = client.get(f"/api/v1/budgets/{budget.id}").get_data(as_text=True)
    assert secret not in shown and '"webhook_url"' in shown
    assert _put(client, budget.id, webhook_receiver["url"]).get_json()["secret"] is None
    entries = session.scalars(select(AuditEntry).where(
        AuditEntry.action.like("budget.webhook%"))).all()
    assert [e.action for e in entries] == ["budget.webhook_set", "budget.webhook_set"]
    assert all(secret not in json.dumps(e.data) for e in entries)

    assert _deliver(db) == {"emailed": 0, "webhooks": 1, "failed": 0}
    [(headers, body)] = webhook_receiver["received"]
    signature = headers[budget_alerts.SIGNATURE_HEADER]
    assert budget_alerts.verify_signature(secret, body, signature,
                                          now=dt.datetime.now(dt.timezone.utc))
    assert json.loads(body)["data"]["alert_id"] == owned["alert"].id

    rotated = client.post(f"/api/v1/budgets/{budget.id}/alert-webhook/rotate-secret",
                          headers=client.csrf).get_json()["secret"]
    assert rotated != secret and rotated.startswith("whsec_")
    assert "budget.webhook_secret_rotated" in [e.action for e in session.scalars(
        select(AuditEntry).where(AuditEntry.action.like("budget.webhook%")))]
    # A new alert is signed with the rotated secret; the old one no longer verifies it.
    second = BudgetAlert(line_id=owned["alert"].line_id, organization_id=budget.organization_id,
                         threshold=90, used_minor=90_000_000, approved_minor=100_000_000,
                         detail={})
    session.add(second)
    session.commit()
    assert _deliver(db)["webhooks"] == 1
    headers, body = webhook_receiver["received"][-1]
    now = dt.datetime.now(dt.timezone.utc)
    assert budget_alerts.verify_signature(rotated, body, headers[budget_alerts.SIGNATURE_HEADER],
                                          now=now)
    assert not budget_alerts.verify_signature(secret, body,
                                              headers[budget_alerts.SIGNATURE_HEADER], now=now)

    removed = client.delete(f"/api/v1/budgets/{budget.id}/alert-webhook", headers=client.csrf)
    assert removed.status_code == 200 and removed.get_json()["url"] is None
    session.refresh(budget)
    assert budget.webhook_url is None and budget.webhook_secret is None


def test_failures_are_retried_with_exponential_backoff_then_given_up(db, session, owned):
    budget = owned["budget"]
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    budget.webhook_url, budget.webhook_secret = dead, budget_alerts.new_webhook_secret()
    session.commit()
    alert = owned["alert"]
    moment, delays = NOW, []
    for attempt in range(1, budget_alerts.MAX_WEBHOOK_ATTEMPTS + 1):
        assert _deliver(db, now=moment)["failed"] == 1
        session.refresh(alert)
        assert alert.webhook_attempts == attempt and alert.webhook_at is None
        assert "ConnectionRefusedError" in alert.webhook_error
        # Not retried before its time.
        if alert.webhook_next_at is not None:
            assert _deliver(db, now=alert.webhook_next_at - dt.timedelta(seconds=1)) == {
                "emailed": 0, "webhooks": 0, "failed": 0}
            delays.append(alert.webhook_next_at - moment)
            moment = alert.webhook_next_at
    minutes = [int(d.total_seconds() // 60) for d in delays]
    assert minutes == [5, 10, 20, 40, 80, 160, 320, 640, 720]
    assert alert.webhook_next_at is None  # given up
    assert _deliver(db, now=moment + dt.timedelta(days=1)) == {
        "emailed": 0, "webhooks": 0, "failed": 0}


def test_a_receiver_that_recovers_gets_the_alert_on_the_next_due_attempt(db, session, owned,
                                                                        webhook_receiver):
    budget = owned["budget"]
    budget.webhook_url, budget.webhook_secret = webhook_receiver["url"], "whsec_x"
    session.commit()
    webhook_receiver["answer"]["status"] = 503
    assert _deliver(db)["failed"] == 1
    webhook_receiver["answer"]["status"] = 200
    assert _deliver(db, now=NOW + dt.timedelta(minutes=5))["webhooks"] == 1
    session.refresh(owned["alert"])
    assert owned["alert"].webhook_at is not None and owned["alert"].webhook_error is None
    assert len(webhook_receiver["received"]) == 2


def test_production_refuses_loopback_at_delivery(db, session, owned, webhook_receiver):
    budget = owned["budget"]
    budget.webhook_url, budget.webhook_secret = webhook_receiver["url"], "whsec_x"
    session.commit()
    assert _deliver(db, MARKET_ENV="production")["failed"] == 1
    assert webhook_receiver["received"] == []  # nothing reached the loopback receiver
    session.refresh(owned["alert"])
    assert "refused" in owned["alert"].webhook_error


def test_delivery_checks_the_address_again_and_connects_only_to_it(db, session, owned,
                                                                  webhook_receiver):
    """DNS rebinding: a host that resolved to a public address when set and to a private one
    at delivery is refused; the connection goes to the address that was checked."""
    budget = owned["budget"]
    budget.webhook_url, budget.webhook_secret = "https://hooks.example.com/x", "whsec_x"
    session.commit()
    counts = budget_alerts.deliver_alerts(db, {"MARKET_ENV": "production"}, now=NOW,
                                          progress=lambda line: None,
                                          resolver=lambda host, port: ["10.0.0.7"])
    assert counts["failed"] == 1
    session.refresh(owned["alert"])
    assert "10.0.0.7" in owned["alert"].webhook_error
    # Pinned: a name that resolves nowhere real is sent to the checked loopback address, with
    # its own name in the Host header.
    target = webhook_targets.WebhookTarget(
        url="http://receiver.invalid/hook", scheme="http", host="receiver.invalid",
        port=webhook_receiver["port"], path="/hook", addresses=("127.0.0.1",))
    assert webhook_targets.post(target, b"{}", {"Content-Type": "application/json"},
                                timeout=5) == 200
    headers, _body = webhook_receiver["received"][-1]
    assert headers["Host"] == f"receiver.invalid:{webhook_receiver['port']}"


def _public(host, port):
    return ["93.184.216.34"]


@pytest.mark.parametrize("url, addresses", [
    ("http://hooks.example.com/x", ["93.184.216.34"]),  # http
    ("https://127.0.0.1/x", ["127.0.0.1"]),
    ("https://localhost/x", ["::1"]),
    ("https://internal.example/x", ["10.1.2.3"]),
    ("https://metadata.example/x", ["169.254.169.254"]),
    ("https://cgnat.example/x", ["100.64.0.1"]),
    ("https://mapped.example/x", ["::ffff:192.168.1.1"]),
    ("https://fd.example/x", ["fd00::1"]),
    ("https://mixed.example/x", ["93.184.216.34", "192.168.0.10"]),  # every address counts
    ("https://user:pw@hooks.example.com/x", ["93.184.216.34"]),
    ("ftp://hooks.example.com/x", ["93.184.216.34"]),
])
def test_production_refuses_private_and_loopback_addresses(url, addresses):
    with pytest.raises(InvalidInput) as refused:
        webhook_targets.check_url(url, production=True, resolver=lambda h, p: addresses)
    assert refused.value.field == "url"


def test_production_accepts_a_public_https_address():
    target = webhook_targets.check_url("https://hooks.example.com:8443/a?b=1", production=True,
                                       resolver=_public)
    assert (target.host, target.port, target.path, target.addresses) == (
        "hooks.example.com", 8443, "/a?b=1", ("93.184.216.34",))


@pytest.mark.parametrize("url, addresses, ok", [
    ("http://127.0.0.1:8080/hook", ["127.0.0.1"], True),
    ("http://localhost:8080/hook", ["127.0.0.1", "::1"], True),
    ("http://10.0.0.5/hook", ["10.0.0.5"], False),  # plain http only to this machine
    ("http://sneaky.example/hook", ["127.0.0.1", "10.0.0.5"], False),
    ("https://10.0.0.5/hook", ["10.0.0.5"], True),
])
def test_development_accepts_http_loopback_only(url, addresses, ok):
    check = lambda: webhook_targets.check_url(url, production=False,  # noqa: E731
                                              resolver=lambda h, p: addresses)
    if ok:
        assert check().url == url
    else:
        with pytest.raises(InvalidInput):
            check()


def test_the_api_refuses_a_loopback_url_in_production(owned, app, monkeypatch, session):
    monkeypatch.setitem(app.config, "MARKET_ENV", "production")
    client, budget = owned["client"], owned["budget"]
    for url in ("http://127.0.0.1:8080/hook", "https://127.0.0.1/hook",
                "https://localhost/hook"):
        response = _put(client, budget.id, url)
        assert response.status_code == 422, response.get_json()
        assert "url" in response.get_json()["errors"]
    session.refresh(budget)
    assert budget.webhook_url is None and budget.webhook_secret is None


def test_the_budget_page_sets_the_webhook_shows_the_secret_once_and_the_failures(
        db, session, owned, webhook_receiver):
    client, budget = owned["client"], owned["budget"]
    page = f"/budgets/{budget.id}"
    token = csrf_token(client, page)
    bad = client.post(f"{page}/alert-webhook", data={"csrf_token": token,
                                                     "url": "http://10.9.9.9/x"})
    assert bad.status_code == 422 and "this machine" in bad.get_data(as_text=True)

    shown = client.post(f"{page}/alert-webhook", data={"csrf_token": token,
                                                       "url": webhook_receiver["url"]})
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    session.refresh(budget)
    assert budget.webhook_secret in shown.get_data(as_text=True)
    assert budget.webhook_secret not in client.get(page).get_data(as_text=True)

    rotated = client.post(f"{page}/alert-webhook/rotate-secret", data={"csrf_token": token})
    session.refresh(budget)
    assert budget.webhook_secret in rotated.get_data(as_text=True)

    webhook_receiver["answer"]["status"] = 500
    assert _deliver(db)["failed"] == 1
    text = client.get(page).get_data(as_text=True)
    assert "Webhook failed 1 times" in text and "HTTP 500" in text

    client.post(f"{page}/alert-webhook/remove", data={"csrf_token": token})
    session.refresh(budget)
    assert budget.webhook_url is None
    assert session.get(Budget, budget.id).webhook_secret is None
