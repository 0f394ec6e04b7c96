"""Delivering budget alerts: the e-mail reaches a local SMTP server, the webhook a local HTTP
server that checks its signature, and a second run sends nothing twice."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from aiosmtpd.controller import Controller

from billing.jobs import JOBS_BY_NAME
from billing.budgets import alerts as budget_alerts
from billing.models import BudgetAlert
from tests.billing.conftest import free_port
from tests.billing.budgets.test_budget_reports import build_budget

SECRET = "whsec_test_budget"
NOW = dt.datetime.now(dt.timezone.utc)


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture()
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture()
def webhook_server(webhook_receiver):
    """The receiver as this module reads it: its URL, what it received, its answer."""
    return webhook_receiver["url"], webhook_receiver["received"], webhook_receiver["answer"]


@pytest.fixture()
def alerted(session, webhook_server):
    planned = build_budget(session)
    budget, line = planned["budget"], planned["lines"]["L01"]
    budget.webhook_url, budget.webhook_secret = webhook_server[0], SECRET
    alert = BudgetAlert(line_id=line.id, organization_id=budget.organization_id, threshold=80,
                        used_minor=80_000_000, approved_minor=100_000_000, detail={})
    session.add(alert)
    session.commit()
    return planned | {"alert": alert}


def _settings(controller) -> dict:
    return {"SMTP_HOST": controller.hostname, "SMTP_PORT": controller.port,
            "SMTP_FROM": "budgets@market.example", "SMTP_STARTTLS": False}


def test_the_e_mail_and_the_signed_webhook_go_out_once(db, session, alerted, smtp_server,
                                                        webhook_server):
    controller, inbox = smtp_server
    _url, received, _answer = webhook_server
    counts = budget_alerts.deliver_alerts(db, _settings(controller), now=NOW,
                                          progress=lambda line: None)
    assert counts == {"emailed": 1, "webhooks": 1, "failed": 0}

    [envelope] = inbox.messages
    assert envelope.rcpt_tos == ["finance@city.example"]
    text = envelope.content.decode("utf-8", "replace")
    assert "X-Market-Alert-Id: %d" % alerted["alert"].id in text

    [(headers, body)] = received
    assert budget_alerts.verify_signature(SECRET, body, headers[budget_alerts.SIGNATURE_HEADER],
                                          now=dt.datetime.now(dt.timezone.utc))
    assert not budget_alerts.verify_signature("another secret", body,
                                              headers[budget_alerts.SIGNATURE_HEADER],
                                              now=dt.datetime.now(dt.timezone.utc))
    assert not budget_alerts.verify_signature(SECRET, body + b" ",
                                              headers[budget_alerts.SIGNATURE_HEADER],
                                              now=dt.datetime.now(dt.timezone.utc))
    event = json.loads(body)
    assert event["type"] == "budget.threshold_crossed"
    assert event["data"]["line_code"] == "L01" and event["data"]["threshold"] == 80
    assert event["data"]["used"] == "800000.00"

    session.refresh(alerted["alert"])
    alert = alerted["alert"]
    assert alert.emailed_at is not None and alert.webhook_at is not None
    assert alert.delivery_error is None

    again = budget_alerts.deliver_alerts(db, _settings(controller), now=NOW,
                                         progress=lambda line: None)
    assert again == {"emailed": 0, "webhooks": 0, "failed": 0}
    assert len(inbox.messages) == 1 and len(received) == 1


def test_a_failed_webhook_is_recorded_and_retried_without_mailing_again(
        db, session, alerted, smtp_server, webhook_server):
    controller, inbox = smtp_server
    _url, received, answer = webhook_server
    answer["status"] = 500
    first = budget_alerts.deliver_alerts(db, _settings(controller), now=NOW,
                                         progress=lambda line: None)
    assert first == {"emailed": 1, "webhooks": 0, "failed": 1}
    session.refresh(alerted["alert"])
    assert alerted["alert"].webhook_at is None
    assert "HTTP 500" in alerted["alert"].delivery_error
    assert alerted["alert"].webhook_attempts == 1
    assert alerted["alert"].webhook_next_at == NOW + budget_alerts.RETRY_BASE

    answer["status"] = 204
    # Backoff: not retried before its time.
    early = budget_alerts.deliver_alerts(db, _settings(controller), now=NOW,
                                         progress=lambda line: None)
    assert early == {"emailed": 0, "webhooks": 0, "failed": 0} and len(received) == 1
    second = budget_alerts.deliver_alerts(db, _settings(controller),
                                          now=NOW + budget_alerts.RETRY_BASE,
                                          progress=lambda line: None)
    assert second == {"emailed": 0, "webhooks": 1, "failed": 0}
    session.refresh(alerted["alert"])
    assert alerted["alert"].webhook_at is not None and alerted["alert"].delivery_error is None
    assert len(inbox.messages) == 1 and len(received) == 2


def test_channels_not_configured_are_skipped(db, session, alerted, webhook_server):
    _url, received, _answer = webhook_server
    alerted["budget"].webhook_url = None
    session.commit()
    # No SMTP_HOST and no webhook address: nothing is due, nothing is an error.
    assert budget_alerts.deliver_alerts(db, {}, now=NOW, progress=lambda line: None) == {
        "emailed": 0, "webhooks": 0, "failed": 0}
    session.refresh(alerted["alert"])
    assert alerted["alert"].emailed_at is None and alerted["alert"].delivery_error is None


def test_a_webhook_without_a_secret_is_not_sent_unsigned(db, session, alerted, webhook_server):
    _url, received, _answer = webhook_server
    alerted["budget"].webhook_secret = None
    session.commit()
    counts = budget_alerts.deliver_alerts(db, {}, now=NOW, progress=lambda line: None)
    assert counts["failed"] == 1 and received == []
    session.refresh(alerted["alert"])
    assert "no webhook secret" in alerted["alert"].delivery_error


def test_an_unreachable_smtp_server_is_an_error_not_a_crash(db, session, alerted):
    alerted["budget"].webhook_url = None
    session.commit()
    settings = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": free_port()}
    counts = budget_alerts.deliver_alerts(db, settings, now=NOW, progress=lambda line: None)
    assert counts == {"emailed": 0, "webhooks": 0, "failed": 1}
    session.refresh(alerted["alert"])
    assert alerted["alert"].delivery_error.startswith("e-mail: ")


def test_the_job_is_registered_every_five_minutes():
    job = JOBS_BY_NAME["deliver-budget-alerts"]
    assert job.trigger == {"minute": "*/5"}
    assert job.period_of(dt.datetime(2026, 11, 23, 10, 9, 59)) == "2026-11-23T10:05"
    assert job.accepts("2026-11-23T10:05") and not job.accepts("2026-11-23T10:07")
