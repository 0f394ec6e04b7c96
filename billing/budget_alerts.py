"""Delivering budget alerts: an e-mail to the budget's ``alert_email`` and a signed JSON webhook
to its ``webhook_url`` for every ``BudgetAlert`` a purchase fired (``billing.budgets`` fires
them, once per line and threshold, inside the purchase's transaction).

The job ``deliver-budget-alerts`` runs every five minutes. It reads the alerts with a channel
still to deliver in one short transaction, then sends each message with no transaction open
(an SMTP server or a webhook receiver may take seconds; no row lock waits on them), and records
each channel's outcome in a transaction of its own: ``emailed_at`` / ``webhook_at`` when it went
out (then never again: the UPDATE only sets a still-empty column), ``delivery_error`` when it
failed, to be retried by the next run. A channel is skipped, not failed, when it is not
configured: e-mail without ``SMTP_HOST`` or without the budget's ``alert_email``, the webhook
without its ``webhook_url``. Alerts older than ``MAX_AGE`` are no longer sent, so turning on
SMTP later does not mail a year of old alerts.

Delivery is at least once: a process that dies between sending and recording sends again on
the next run. So every message carries the alert's id (``X-Market-Alert-Id``, and ``id`` in the
webhook body), by which a receiver drops a repeat.

The webhook is a POST of ``application/json`` (the body below) with the header::

    X-Market-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC is keyed by the budget's ``webhook_secret`` (its UTF-8 bytes) over the bytes
``<t>`` + ``.`` + the raw request body, exactly as received. A receiver recomputes it from the
raw body (before any JSON parsing), compares in constant time, and refuses a ``t`` more than
five minutes away from its clock (a replay); ``verify_signature`` does all three. Signing ``t``
with the body is what makes the time stamp trustworthy. A budget with a webhook address but no
secret gets nothing (``delivery_error`` says why): an unsigned alert could not be told from a
forged one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Callable, Mapping

from sqlalchemy import or_, select, update

from billing.models.budgets import Budget, BudgetAlert, BudgetLine
from market.accounts.models import Organization
from market.db import Database
from pricing.money import Money

JOB_NAME = "deliver-budget-alerts"
FIVE_MINUTES = r"\d{4}-\d{2}-\d{2}T\d{2}:[0-5][05]"
MAX_AGE = dt.timedelta(days=7)
BATCH = 200  # alerts per run; the rest wait five minutes
TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "X-Market-Signature"
SIGNATURE_TOLERANCE = dt.timedelta(minutes=5)


def five_minutes(moment: dt.datetime) -> str:
    """The five minutes a run at ``moment`` handles, e.g. ``2026-11-23T10:05``."""
    return moment.replace(minute=moment.minute - moment.minute % 5).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str
    password: str
    starttls: bool

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SmtpSettings:
        host = settings.get("SMTP_HOST") or ""
        return cls(host=host, port=int(settings.get("SMTP_PORT") or 25),
                   sender=settings.get("SMTP_FROM") or f"budgets@{host or 'localhost'}",
                   username=settings.get("SMTP_USERNAME") or "",
                   password=settings.get("SMTP_PASSWORD") or "",
                   starttls=bool(settings.get("SMTP_STARTTLS")))


@dataclass(frozen=True)
class PendingAlert:
    """What delivering one alert needs, read before any message goes out."""

    id: int
    threshold: int
    fired_at: dt.datetime
    used_minor: int
    approved_minor: int
    currency: str
    organization: str
    budget_id: int
    budget_name: str
    fiscal_year: int
    line_id: int
    line_code: str
    line_name: str
    alert_email: str | None
    webhook_url: str | None
    webhook_secret: str | None
    email_due: bool
    webhook_due: bool


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Market-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                      hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, *, now: dt.datetime,
                     tolerance: dt.timedelta = SIGNATURE_TOLERANCE) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` at a time within ``tolerance``."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now.timestamp() - timestamp) > tolerance.total_seconds():
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def pending_alerts(db: Database, smtp: SmtpSettings, *, now: dt.datetime,
                   limit: int = BATCH) -> list[PendingAlert]:
    """Alerts fired within ``MAX_AGE`` with a configured channel not yet delivered."""
    with db.session() as session, session.begin():
        rows = session.execute(
            select(BudgetAlert, BudgetLine, Budget, Organization.name)
            .join(BudgetLine, BudgetLine.id == BudgetAlert.line_id)
            .join(Budget, Budget.id == BudgetLine.budget_id)
            .join(Organization, Organization.id == Budget.organization_id)
            .where(BudgetAlert.fired_at >= now - MAX_AGE,
                   or_(BudgetAlert.emailed_at.is_(None), BudgetAlert.webhook_at.is_(None)))
            .order_by(BudgetAlert.id).limit(limit)).all()
        pending = []
        for alert, line, budget, organization in rows:
            email_due = (alert.emailed_at is None and bool(smtp.host)
                         and bool(budget.alert_email))
            webhook_due = alert.webhook_at is None and bool(budget.webhook_url)
            if not (email_due or webhook_due):
                continue
            pending.append(PendingAlert(
                id=alert.id, threshold=alert.threshold, fired_at=alert.fired_at,
                used_minor=alert.used_minor, approved_minor=alert.approved_minor,
                currency=budget.currency, organization=organization, budget_id=budget.id,
                budget_name=budget.name, fiscal_year=budget.fiscal_year, line_id=line.id,
                line_code=line.code, line_name=line.name, alert_email=budget.alert_email,
                webhook_url=budget.webhook_url, webhook_secret=budget.webhook_secret,
                email_due=email_due, webhook_due=webhook_due))
        return pending


def _amount(minor: int, currency: str) -> str:
    return str(Money.from_minor(minor, currency).amount)


def webhook_body(alert: PendingAlert) -> bytes:
    """The webhook's JSON: the event, the budget, the line and the amounts as decimal strings."""
    return json.dumps({
        "id": f"budget_alert_{alert.id}", "type": "budget.threshold_crossed",
        "created": int(alert.fired_at.timestamp()),
        "data": {"alert_id": alert.id, "threshold": alert.threshold,
                 "organization": alert.organization, "budget_id": alert.budget_id,
                 "budget_name": alert.budget_name, "fiscal_year": alert.fiscal_year,
                 "line_id": alert.line_id, "line_code": alert.line_code,
                 "line_name": alert.line_name, "currency": alert.currency,
                 "used": _amount(alert.used_minor, alert.currency),
                 "approved": _amount(alert.approved_minor, alert.currency),
                 "fired_at": alert.fired_at.isoformat()},
    }, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def alert_email(alert: PendingAlert, sender: str) -> EmailMessage:
    """The alert as a bilingual plain-text e-mail."""
    used = f"{alert.currency} {_amount(alert.used_minor, alert.currency)}"
    approved = f"{alert.currency} {_amount(alert.approved_minor, alert.currency)}"
    message = EmailMessage()
    message["Subject"] = (f"预算提醒 Budget alert: {alert.line_code} {alert.line_name} "
                          f"≥ {alert.threshold}%")
    message["From"] = sender
    message["To"] = alert.alert_email
    message["X-Market-Alert-Id"] = str(alert.id)
    message.set_content(
        f"{alert.organization} · {alert.budget_name} ({alert.fiscal_year})\n\n"
        f"预算科目 {alert.line_code} {alert.line_name} 的已用金额（已承诺 + 已支出）"
        f"{used} 已达到批复金额 {approved} 的 {alert.threshold}%。\n\n"
        f"Budget line {alert.line_code} {alert.line_name} has used (committed + spent) {used}, "
        f"{alert.threshold}% or more of its approved {approved}.\n\n"
        f"{alert.fired_at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    return message


def send_email(smtp: SmtpSettings, message: EmailMessage) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=TIMEOUT_SECONDS) as client:
        if smtp.starttls:
            client.starttls()
        if smtp.username:
            client.login(smtp.username, smtp.password)
        client.send_message(message)


def post_webhook(alert: PendingAlert, *, now: dt.datetime) -> None:
    """POST the signed alert; anything but a 2xx answer raises."""
    body = webhook_body(alert)
    request = urllib.request.Request(alert.webhook_url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "market-budget-alerts/1",
        "X-Market-Alert-Id": str(alert.id),
        SIGNATURE_HEADER: sign(alert.webhook_secret, body, int(now.timestamp()))})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"the webhook answered HTTP {response.status}")


def _record(db: Database, alert_id: int, column: str | None, moment: dt.datetime,
            error: str | None) -> None:
    values: dict[str, Any] = {"delivery_error": error[:500] if error else None}
    where = [BudgetAlert.id == alert_id]
    if column is not None:
        values[column] = moment
        where.append(getattr(BudgetAlert, column).is_(None))  # delivered once: never reset
    with db.session() as session, session.begin():
        session.execute(update(BudgetAlert).where(*where).values(**values)
                        .execution_options(synchronize_session=False))


def _error_text(channel: str, error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"{channel}: the webhook answered HTTP {error.code}"
    return f"{channel}: {type(error).__name__}: {error}"


def deliver_alerts(db: Database, settings: Mapping[str, Any], *, now: dt.datetime,
                   progress: Callable[[str], None] = print,
                   clock: Callable[[], dt.datetime] | None = None) -> dict[str, int]:
    """Send every alert channel due (see the module notes); the counts of what happened."""
    smtp = SmtpSettings.from_settings(settings)
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    counts = {"emailed": 0, "webhooks": 0, "failed": 0}
    for alert in pending_alerts(db, smtp, now=now):
        errors = []
        if alert.email_due:
            try:
                send_email(smtp, alert_email(alert, smtp.sender))
            except (OSError, smtplib.SMTPException) as error:
                errors.append(_error_text("e-mail", error))
            else:
                _record(db, alert.id, "emailed_at", clock(), None)
                counts["emailed"] += 1
        if alert.webhook_due:
            if not alert.webhook_secret:
                errors.append("webhook: the budget has no webhook secret to sign with")
            else:
                try:
                    post_webhook(alert, now=clock())
                except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
                    errors.append(_error_text("webhook", error))
                else:
                    _record(db, alert.id, "webhook_at", clock(), None)
                    counts["webhooks"] += 1
        if errors:
            counts["failed"] += 1
            _record(db, alert.id, None, clock(), "; ".join(errors))
            progress(f"budget alert {alert.id}: " + "; ".join(errors))
    return counts


def _job(ctx) -> dict:
    return deliver_alerts(ctx.db, ctx.settings, now=ctx.now, progress=ctx.progress)


def _register() -> None:
    from billing.jobs import Job, register

    register(Job(name=JOB_NAME,
                 description="E-mail and post (signed webhook) the budget alerts not yet sent",
                 run=_job, trigger={"minute": "*/5"}, period_of=five_minutes,
                 period_pattern=FIVE_MINUTES))


_register()
