"""Delivering budget alerts: an e-mail to the budget's ``alert_email`` and a signed JSON webhook
to its ``webhook_url`` for every ``BudgetAlert`` a purchase fired (``billing.budgets.lines`` fires
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

A failed webhook is retried with exponential backoff: after its n-th failure the next attempt
is due ``RETRY_BASE * 2**(n-1)`` later (5, 10, 20 ... minutes, at most ``RETRY_MAX_DELAY``), and
after ``MAX_WEBHOOK_ATTEMPTS`` it is given up. Attempts, the next one's time and the last error
are kept on the alert and shown on the budget page. Setting the budget's URL again makes every
undelivered alert due at once. The URL is checked against server-side request forgery when it
is set and at every delivery (``billing.budgets.webhook_targets``).

The budget owner sets the URL (``set_webhook``); the marketplace generates the signing secret
(``new_webhook_secret``), shows it once in the answer that made it, and rotates it on request
(``rotate_webhook_secret``); no page or API shows it again, and the audit log never holds it.

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
import http.client
import json
import secrets
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Callable, Mapping

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from billing.budgets import webhook_targets
from billing.models.budgets import Budget, BudgetAlert, BudgetLine
from billing.runs import JobContext
from market.core import audit
from market.accounts.authz import Principal, authorize
from market.accounts.mail import send_smtp
from market.accounts.models import Organization
from market.core.db import Database, utcnow
from market.core.errors import Conflict, MarketError
from pricing.money import Money

MAX_AGE = dt.timedelta(days=7)
BATCH = 200  # alerts per run; the rest wait five minutes
TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "X-Market-Signature"
SIGNATURE_TOLERANCE = dt.timedelta(minutes=5)
RETRY_BASE = dt.timedelta(minutes=5)
RETRY_MAX_DELAY = dt.timedelta(hours=12)
MAX_WEBHOOK_ATTEMPTS = 10
SECRET_PREFIX = "whsec_"


def retry_delay(failures: int) -> dt.timedelta:
    """How long after its ``failures``-th failed attempt a webhook is tried again."""
    return min(RETRY_BASE * 2 ** (failures - 1), RETRY_MAX_DELAY)


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
    webhook_attempts: int
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
            webhook_due = (alert.webhook_at is None and bool(budget.webhook_url)
                           and alert.webhook_attempts < MAX_WEBHOOK_ATTEMPTS
                           and (alert.webhook_next_at is None or alert.webhook_next_at <= now))
            if not (email_due or webhook_due):
                continue
            pending.append(PendingAlert(
                id=alert.id, threshold=alert.threshold, fired_at=alert.fired_at,
                used_minor=alert.used_minor, approved_minor=alert.approved_minor,
                currency=budget.currency, organization=organization, budget_id=budget.id,
                budget_name=budget.name, fiscal_year=budget.fiscal_year, line_id=line.id,
                line_code=line.code, line_name=line.name, alert_email=budget.alert_email,
                webhook_url=budget.webhook_url, webhook_secret=budget.webhook_secret,
                webhook_attempts=alert.webhook_attempts, email_due=email_due,
                webhook_due=webhook_due))
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
    send_smtp(message, host=smtp.host, port=smtp.port, username=smtp.username,
              password=smtp.password, starttls=smtp.starttls)


class WebhookFailed(Exception):
    """The receiver could not be reached, or answered other than 2xx."""


def post_webhook(alert: PendingAlert, *, now: dt.datetime, production: bool,
                 resolver: webhook_targets.Resolver | None = None) -> None:
    """POST the signed alert to its checked address; anything but a 2xx answer raises."""
    try:
        target = webhook_targets.check_url(alert.webhook_url, production=production,
                                           resolver=resolver)
    except MarketError as error:
        raise WebhookFailed(f"refused: {error.detail}") from None
    body = webhook_body(alert)
    headers = {"Content-Type": "application/json", "User-Agent": "market-budget-alerts/1",
               "X-Market-Alert-Id": str(alert.id),
               SIGNATURE_HEADER: sign(alert.webhook_secret, body, int(now.timestamp()))}
    try:
        status = webhook_targets.post(target, body, headers, timeout=TIMEOUT_SECONDS)
    except (OSError, http.client.HTTPException) as error:  # refused, timed out, TLS, garbled
        raise WebhookFailed(f"{type(error).__name__}: {error}") from None
    if not 200 <= status < 300:
        raise WebhookFailed(f"the webhook answered HTTP {status}")


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


def _record_webhook(db: Database, alert: PendingAlert, *, run_at: dt.datetime,
                    moment: dt.datetime, error: str | None) -> None:
    """The webhook's outcome: delivered (once, never reset), or one more failed attempt and
    when the next is due (none after the last)."""
    where = [BudgetAlert.id == alert.id, BudgetAlert.webhook_at.is_(None)]
    if error is None:
        values: dict[str, Any] = {"webhook_at": moment, "webhook_error": None,
                                  "webhook_next_at": None, "delivery_error": None}
    else:
        failures = alert.webhook_attempts + 1
        values = {"webhook_attempts": BudgetAlert.webhook_attempts + 1,
                  "webhook_error": error[:500],
                  "webhook_next_at": (run_at + retry_delay(failures)
                                      if failures < MAX_WEBHOOK_ATTEMPTS else None)}
    with db.session() as session, session.begin():
        session.execute(update(BudgetAlert).where(*where).values(**values)
                        .execution_options(synchronize_session=False))


def _error_text(channel: str, error: Exception) -> str:
    if isinstance(error, WebhookFailed):
        return f"{channel}: {error}"
    return f"{channel}: {type(error).__name__}: {error}"


def deliver_alerts(db: Database, settings: Mapping[str, Any], *, now: dt.datetime,
                   progress: Callable[[str], None] = print,
                   clock: Callable[[], dt.datetime] | None = None,
                   resolver: webhook_targets.Resolver | None = None) -> dict[str, int]:
    """Send every alert channel due (see the module notes); the counts of what happened."""
    smtp = SmtpSettings.from_settings(settings)
    production = webhook_targets.is_production(settings)
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
            try:
                if not alert.webhook_secret:
                    raise WebhookFailed("the budget has no webhook secret to sign with")
                post_webhook(alert, now=clock(), production=production, resolver=resolver)
            except WebhookFailed as error:
                text = _error_text("webhook", error)
                errors.append(text)
                _record_webhook(db, alert, run_at=now, moment=clock(), error=text)
            else:
                _record_webhook(db, alert, run_at=now, moment=clock(), error=None)
                counts["webhooks"] += 1
        if errors:
            counts["failed"] += 1
            _record(db, alert.id, None, clock(), "; ".join(errors))
            progress(f"budget alert {alert.id}: " + "; ".join(errors))
    return counts


# Setting the webhook --------------------------------------------------------------------------

def new_webhook_secret() -> str:
    """A signing secret: 256 random bits, typed by its prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _audit_webhook(session: Session, principal: Principal, budget: Budget, action: str,
                   **data) -> None:
    # The secret itself is never audited: the log is readable by more people than the owner.
    audit.record(session, action, actor=principal.actor, organization_id=budget.organization_id,
                 object_type="budget", object_id=budget.id,
                 data={"webhook_url": budget.webhook_url, **data})


def _new_secret(budget: Budget) -> str:
    secret = new_webhook_secret()
    budget.webhook_secret, budget.webhook_secret_created_at = secret, utcnow()
    return secret


def set_webhook(session: Session, principal: Principal, budget: Budget, url: str, *,
                production: bool,
                resolver: webhook_targets.Resolver | None = None) -> str | None:
    """Point the budget's alerts at ``url`` (checked: ``billing.budgets.webhook_targets``); the new
    signing secret when the budget had none (shown once), else None (the secret is kept)."""
    authorize(principal, "budgets:manage")
    target = webhook_targets.check_url(url, production=production, resolver=resolver)
    before = budget.webhook_url
    budget.webhook_url = target.url
    secret = _new_secret(budget) if not budget.webhook_secret else None
    # Alerts that failed or were given up go out again, now to the address just set.
    lines = select(BudgetLine.id).where(BudgetLine.budget_id == budget.id)
    session.execute(update(BudgetAlert).where(BudgetAlert.line_id.in_(lines),
                                              BudgetAlert.webhook_at.is_(None))
                    .values(webhook_attempts=0, webhook_next_at=None)
                    .execution_options(synchronize_session=False))
    _audit_webhook(session, principal, budget, "budget.webhook_set", webhook_url_before=before,
                   secret_generated=secret is not None)
    return secret


def rotate_webhook_secret(session: Session, principal: Principal, budget: Budget) -> str:
    """A new signing secret for the budget's webhook, shown once; the old one stops signing."""
    authorize(principal, "budgets:manage")
    if not budget.webhook_url:
        raise Conflict("The budget has no webhook; set its URL first.", field="url")
    secret = _new_secret(budget)
    _audit_webhook(session, principal, budget, "budget.webhook_secret_rotated")
    return secret


def remove_webhook(session: Session, principal: Principal, budget: Budget) -> Budget:
    """No more webhooks for the budget's alerts; the secret is forgotten."""
    authorize(principal, "budgets:manage")
    if not budget.webhook_url:
        raise Conflict("The budget has no webhook.", field="url")
    before = budget.webhook_url
    budget.webhook_url = budget.webhook_secret = budget.webhook_secret_created_at = None
    _audit_webhook(session, principal, budget, "budget.webhook_removed",
                   webhook_url_before=before)
    return budget


def run_alert_delivery(ctx: JobContext) -> dict:
    """Job ``deliver-budget-alerts``: send the alerts not yet sent."""
    return deliver_alerts(ctx.db, ctx.settings, now=ctx.now, progress=ctx.progress)

