"""Credit lines as platform finance runs them: open, change and close, under maker-checker.

Only the platform's finance people (owner or finance members of a platform organization, signed
in as people: a machine key cannot extend credit) request changes. Every request is a
``CreditLineChange`` row and an audit entry, whatever happens to it:

- a change that raises the line's limit by no more than the approval threshold
  (``CREDIT_LINE_APPROVAL_THRESHOLD``, in the line's currency), a decrease, a change of the
  payment method and a close are applied at once;
- a change that raises it by more is ``pending``: the line is untouched until a second finance
  person, never the one who asked, approves it (then it is applied) or rejects it. A closed line
  counts as a limit of zero, so reopening it is an increase by its whole new limit.

An approval applies the change only if the line's limit is still the one its maker saw
(``limit_before_minor``); otherwise it is refused with 409 and the maker asks again, so nobody
signs off a change made against a line that has moved since. Closing sets the line's
``suspended_at``: no further call on credit is accepted, and what was used is still invoiced by
``postpaid-invoices``. The limit may go below what is used: further calls are refused until the
usage is paid; paying a usage order frees what it used (``release_paid_usage``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal, refuse_party
from market.accounts.models import Organization
from market.core.db import utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import Keyset, asc, desc
from billing import orders
from billing.context import BillingSettings
from billing.models import CreditLine, CreditLineChange, CreditLineChangeStatus, Order
from pricing.money import Money

MAX_REASON = 500


def _require_platform_finance(principal: Principal) -> None:
    if not principal.is_platform_finance:
        raise Forbidden("Only the platform's finance staff manage credit lines.")


def _line_for_update(session: Session, organization_id: int, currency: str) -> CreditLine | None:
    return session.scalar(select(CreditLine).where(
        CreditLine.organization_id == organization_id, CreditLine.currency == currency)
        .with_for_update())


def _effective_limit(line: CreditLine | None) -> int:
    return 0 if line is None or line.suspended_at is not None else line.limit_minor


def _money(minor: int | None, currency: str) -> str | None:
    return None if minor is None else str(Money.from_minor(minor, currency))


def _audit(session: Session, action: str, principal: Principal | None,
           change: CreditLineChange, **data) -> None:
    audit.record(session, action, actor=principal.actor if principal else audit.SYSTEM,
                 organization_id=change.organization_id, object_type="credit_line_change",
                 object_id=change.id,
                 data={"credit_line_id": change.credit_line_id, "kind": change.kind,
                       "limit": _money(change.limit_minor, change.currency),
                       "limit_before": _money(change.limit_before_minor, change.currency),
                       "payment_method": change.payment_method, "status": change.status,
                       "reason": change.reason, **data})


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Give the reason for the change (it is kept in the audit log).",
                           field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"At most {MAX_REASON} characters.", field="reason")
    return reason


def request_change(session: Session, principal: Principal, organization_id: int, *,
                   limit: Money, payment_method: str = "bank_transfer", reason: str,
                   approval_threshold: Money | None) -> CreditLineChange:
    """Open a buyer organization's credit line or change its limit or payment method.

    Rule: applied at once unless it raises the limit by more than ``approval_threshold`` (in
    the limit's currency; None: never), then ``pending`` for a second approver.
    """
    _require_platform_finance(principal)
    refuse_party(principal, {organization_id}, item="credit line", action="set")
    reason = _reason(reason)
    currency = limit.currency
    if limit.is_negative():
        raise InvalidInput("The limit cannot be negative.", field="limit")
    if payment_method not in orders.PAYMENT_METHODS:
        raise InvalidInput(f"Pay by {' or '.join(orders.PAYMENT_METHODS)}.",
                           field="payment_method")
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise NotFound("No such organization.", field="organization_id")
    if not organization.has_role_name("buyer"):
        raise InvalidInput("Credit lines are for buyer organizations.", field="organization_id")
    if approval_threshold is not None and approval_threshold.currency != currency:
        raise InvalidInput(f"The approval threshold is in {approval_threshold.currency}; credit "
                           f"in {currency} has none configured.", field="limit.currency")
    line = _line_for_update(session, organization_id, currency)
    if (line is not None and line.suspended_at is None and line.limit_minor == limit.minor
            and line.payment_method == payment_method):
        raise Conflict("The credit line already has this limit and payment method.",
                       field="limit")
    increase = limit.minor - _effective_limit(line)
    needs_second = approval_threshold is not None and increase > approval_threshold.minor
    change = CreditLineChange(
        organization_id=organization_id, currency=currency,
        credit_line_id=line.id if line is not None else None,
        kind="open" if line is None or line.suspended_at is not None else "change",
        limit_minor=limit.minor, limit_before_minor=_effective_limit(line),
        payment_method=payment_method, reason=reason,
        status=(CreditLineChangeStatus.PENDING if needs_second
                else CreditLineChangeStatus.APPLIED),
        requested_by_id=principal.user_id, requested_at=utcnow())
    session.add(change)
    session.flush()  # the audit entry names the change's id
    _audit(session, "credit_line.change_requested", principal, change,
           needs_second_approver=needs_second,
           threshold=str(approval_threshold) if approval_threshold is not None else None)
    if not needs_second:
        _apply(session, principal, change, line)
    return change


def _apply(session: Session, principal: Principal, change: CreditLineChange,
           line: CreditLine | None) -> CreditLine:
    opened = line is None
    if line is None:
        line = CreditLine(organization_id=change.organization_id, currency=change.currency,
                          limit_minor=change.limit_minor, used_minor=0,
                          payment_method=change.payment_method)
        session.add(line)
    reopened = line.suspended_at is not None and change.kind == "open"
    line.limit_minor, line.payment_method = change.limit_minor, change.payment_method
    if change.kind == "close":
        line.suspended_at = utcnow()
    elif reopened:
        line.suspended_at = None
    session.flush()  # the change and the audit entry name the line's id
    change.credit_line_id = line.id
    change.status = CreditLineChangeStatus.APPLIED
    action = {"close": "credit_line.closed"}.get(
        change.kind, "credit_line.opened" if opened or reopened else "credit_line.changed")
    audit.record(session, action, actor=principal.actor,
                 organization_id=change.organization_id, object_type="credit_line",
                 object_id=line.id,
                 data={"change_id": change.id, "limit": _money(line.limit_minor, line.currency),
                       "limit_before": _money(change.limit_before_minor, line.currency),
                       "used": _money(line.used_minor, line.currency),
                       "payment_method": line.payment_method,
                       "requested_by_id": change.requested_by_id,
                       "approved_by_id": change.decided_by_id})
    return line


def _pending(session: Session, change_id: int) -> CreditLineChange:
    change = session.scalar(select(CreditLineChange).where(CreditLineChange.id == change_id)
                            .with_for_update())
    if change is None:
        raise NotFound("No such credit line change.", field="change_id")
    if change.status != CreditLineChangeStatus.PENDING:
        raise Conflict(f"This change is {change.status}; only a pending one can be decided.",
                       field="status")
    return change


def approve_change(session: Session, principal: Principal, change_id: int) -> CreditLineChange:
    """The second approver applies a pending change: never its maker, and only while the line
    is as its maker saw it."""
    _require_platform_finance(principal)
    change = _pending(session, change_id)
    refuse_party(principal, {change.organization_id}, item="credit line", action="approve")
    if change.requested_by_id == principal.user_id:
        raise Forbidden("A change needs a second approver: someone other than who asked for it.",
                        field="change_id")
    line = _line_for_update(session, change.organization_id, change.currency)
    if _effective_limit(line) != change.limit_before_minor:
        raise Conflict("The credit line has changed since this was asked for; reject it and "
                       "ask again against the line as it is now.", field="change_id")
    change.decided_by_id, change.decided_at = principal.user_id, utcnow()
    _audit(session, "credit_line.change_approved", principal, change)
    _apply(session, principal, change, line)
    return change


def reject_change(session: Session, principal: Principal, change_id: int, *,
                  reason: str) -> CreditLineChange:
    """Turn a pending change down (its maker may withdraw it this way too)."""
    _require_platform_finance(principal)
    note = _reason(reason)
    change = _pending(session, change_id)
    refuse_party(principal, {change.organization_id}, item="credit line", action="decide")
    change.status = CreditLineChangeStatus.REJECTED
    change.decided_by_id, change.decided_at, change.decision_note = (
        principal.user_id, utcnow(), note)
    _audit(session, "credit_line.change_rejected", principal, change, note=note)
    return change


def close_credit_line(session: Session, principal: Principal, credit_line_id: int, *,
                      reason: str) -> CreditLineChange:
    """Close a line: no more calls on credit; what was used is still invoiced and paid."""
    _require_platform_finance(principal)
    reason = _reason(reason)
    line = session.scalar(select(CreditLine).where(CreditLine.id == credit_line_id)
                          .with_for_update())
    if line is None:
        raise NotFound("No such credit line.", field="credit_line_id")
    refuse_party(principal, {line.organization_id}, item="credit line", action="close")
    if line.suspended_at is not None:
        raise Conflict("The credit line is closed already.", field="credit_line_id")
    change = CreditLineChange(
        organization_id=line.organization_id, currency=line.currency, credit_line_id=line.id,
        kind="close", limit_minor=line.limit_minor, limit_before_minor=line.limit_minor,
        payment_method=line.payment_method, reason=reason, status=CreditLineChangeStatus.APPLIED,
        requested_by_id=principal.user_id, requested_at=utcnow())
    session.add(change)
    session.flush()  # the audit entry names the change's id
    _audit(session, "credit_line.change_requested", principal, change,
           needs_second_approver=False)
    _apply(session, principal, change, line)
    return change


def list_credit_lines(session: Session, principal: Principal) -> Keyset[CreditLine]:
    """Every credit line, oldest first."""
    _require_platform_finance(principal)
    return Keyset(session, select(CreditLine), [asc(CreditLine.id)])


def list_changes(session: Session, principal: Principal, *,
                 status: CreditLineChangeStatus | None = None) -> Keyset[CreditLineChange]:
    """Credit line changes, newest first, of one status or all."""
    _require_platform_finance(principal)
    query = select(CreditLineChange)
    if status is not None:
        query = query.where(CreditLineChange.status == status)
    return Keyset(session, query, [desc(CreditLineChange.id)])


def approval_threshold(settings: BillingSettings, currency: str) -> Money | None:
    """The ``CREDIT_LINE_APPROVAL_THRESHOLD`` setting as money in ``currency`` (None: none)."""
    amount = settings.credit_line_approval_threshold
    return Money(amount, currency) if amount is not None else None


def release_paid_usage(session: Session, order: Order) -> None:
    """A usage order was paid (``billing.fulfilment``): the credit it used is free again."""
    credit = session.scalar(select(CreditLine).where(
        CreditLine.organization_id == order.organization_id,
        CreditLine.currency == order.currency).with_for_update())
    if credit is None:
        return
    before = credit.used_minor
    credit.used_minor = max(credit.used_minor - order.subtotal_minor, 0)
    audit.record(session, "credit_line.released", organization_id=order.organization_id,
                 object_type="credit_line", object_id=credit.id,
                 data={"order_id": order.id, "released_minor": before - credit.used_minor,
                       "used_minor": credit.used_minor})
