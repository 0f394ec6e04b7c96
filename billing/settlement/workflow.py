"""The settlement workflow: closing a period into statements, who may see and act on them, and
each step of their review and payout.

Closing a period (``close_period``) writes one draft statement per participant and currency,
computed from the ledger (``billing.settlement.compute``). Every statement of a period shares
one cutoff, by default the first instant of the next month on the business calendar
(``BUSINESS_TIMEZONE``: in Beijing, 16:00 UTC on the month's last day). Its review is due
``STATEMENT_REVIEW_DAYS`` after the close, however the period was closed (``review_due_on``).

Workflow (each step audited)::

    draft --issue--> issued --start_review--> under_review --approve--> approved --pay--> paid
                        \\________ dispute ________/      ^
                                    |                     |
                                 disputed --resolve_dispute (adjustment in a later period)

Segregation of duties: the statement's own participant never reviews it (an exchange that takes
part in a supply chain has statements of its own: another exchange's or the platform's staff
review those). Approval is maker-checker: whoever generated, issued or submitted the statement
for approval cannot approve it, and whoever approved it does not also record it paid. An
adjustment names its reason code and the lines it corrects, and is bounded by them: never more
than the cited lines' gross (or amount, when larger); from the dual-control threshold it waits,
unposted, for a second person (``decide_adjustment``). Once approved, a statement and its lines
never change (its models refuse it at flush, as the ledger's do for entries), and approval
checks first that its content still matches its hash and the ledger. Corrections are
never edits: ``resolve_dispute`` posts an ``adjustment`` transaction now, which the next
period's statement shows as a line.

Payouts are bank transfers only: platform finance sends the money and records the bank's
reference; ``pay`` posts it (participant_payable debit, platform_clearing credit). A Stripe
Connect transfer is not offered: the local Stripe server the suite runs against has no Connect,
and a payout path that cannot be exercised end to end is not shipped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from billing.context import BillingSettings
from billing.models.statements import (
    AdjustmentStatus, SettlementStatement, StatementAdjustment, StatementLine, StatementStatus,
)
from billing.runs import JobContext
from billing.settlement.checkpoints import sign_checkpoint, signing_key_from_settings
from billing.settlement.compute import (
    compute_all, computed_content, content_hash, mismatch, period_bounds, window_start,
)
from billing.settlement.ledger import LedgerAccount, Line, Purpose, get_account, post
from market.accounts.authz import Maker, Principal, authorize, oversees, refuse_party, require_checker
from market.catalog.models import Listing, SupplyChainRevision, SupplyChainShare
from market.core import audit
from market.core.audit import SYSTEM, AuditEntry
from market.core.db import business_calendar, insert_rows, utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import Keyset, asc, desc
from pricing.money import Money

STATEMENT_CLOSE_DAY = 3  # day of the month the close-statements job runs, at 02:00
MAX_REASON = 2000
# Why a statement is corrected; every adjustment names one.
ADJUSTMENT_REASON_CODES = (
    "share_error",          # the supply chain's share was applied wrongly
    "price_error",          # the line's gross was priced wrongly
    "duplicate_line",       # the same sale or usage counted twice
    "refund_not_reflected", # a refund the line does not show
    "usage_error",          # metered usage counted wrongly
    "other",
)
MAX_EVIDENCE_DOCUMENT = 300


def is_closed(session: Session, period: str) -> bool:
    return session.scalar(select(func.count()).select_from(SettlementStatement)
                          .where(SettlementStatement.period == period)) > 0


def _exchanges(session: Session) -> dict[int, int | None]:
    """Each participant's exchange, by organization id, in one query: the exchange listing a
    dataset whose supply chain names the participant (the oldest such listing, so the answer
    never depends on query order)."""
    oldest = (select(SupplyChainShare.organization_id.label("organization_id"),
                     func.min(Listing.id).label("listing_id"))
              .join(SupplyChainRevision, SupplyChainShare.revision_id == SupplyChainRevision.id)
              .join(Listing, SupplyChainRevision.dataset_id == Listing.dataset_id)
              .where(SupplyChainShare.organization_id.in_(
                  select(LedgerAccount.organization_id).where(
                      LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value)))
              .group_by(SupplyChainShare.organization_id).subquery())
    return dict(session.execute(
        select(oldest.c.organization_id, Listing.exchange_id)
        .join(Listing, Listing.id == oldest.c.listing_id)).all())


def _statement_for(session: Session, account: Any, period: str, start: dt.datetime,
                   cutoff: dt.datetime, computed: dict[str, Any] | None,
                   exchange_id: int | None
                   ) -> tuple[SettlementStatement, list[dict[str, Any]]] | None:
    """One participant's statement for the window and the rows of its lines (written by the
    caller in bulk), or None when it has nothing to show. ``computed`` is the account's part
    of ``compute_all`` (None: no opening and no line)."""
    if computed is None or (computed["opening"] == 0 and not computed["lines"]):
        return None
    period_start, period_end = period_bounds(period)
    number = f"ST-{period}-{account.organization_id}-{account.currency}"
    statement = SettlementStatement(
        number=number, organization_id=account.organization_id,
        exchange_id=exchange_id, currency=account.currency,
        period=period, period_start=period_start, period_end=period_end, cutoff=cutoff,
        status=StatementStatus.DRAFT, opening_minor=computed["opening"],
        activity_minor=computed["activity"], closing_minor=computed["closing"],
        totals=computed["totals"])
    statement.content_hash = content_hash(computed_content(
        computed, number=number, organization_id=account.organization_id,
        currency=account.currency, period=period, cutoff=cutoff))
    return statement, computed["lines"]


# Closing a period -------------------------------------------------------------------------------

def review_due_on(settings: BillingSettings, closed_at: dt.datetime) -> dt.date:
    """When the review of statements closed at ``closed_at`` is due: ``STATEMENT_REVIEW_DAYS``
    later, however the period was closed."""
    return closed_at.date() + dt.timedelta(days=settings.statement_review_days)


def close_period(session: Session, period: str, *, actor: Principal | None,
                 settings: BillingSettings,
                 cutoff: dt.datetime | None = None) -> list[SettlementStatement]:
    """Write the period's statements, one per participant and currency, as drafts.

    ``actor`` None: the system (the close-statements job). A period closes once (the database
    holds one statement per participant, currency and period), only after its cutoff has
    passed, and never before a later period that is already closed. All in the caller's
    transaction: a failure part-way leaves no statement behind.

    A fixed number of queries whatever the size: the window's payable entries (columns), the
    openings (one GROUP BY), the traces in bulk (chunked IN lists), the exchanges, then the
    statements in one flush and their lines in one executemany.
    """
    period_start, period_end = period_bounds(period)
    if actor is not None:
        authorize(actor, "statements:manage")
        if not actor.is_platform:
            raise Forbidden("Only the platform closes a period for every participant.")
    now = utcnow()
    if cutoff is None:
        cutoff = business_calendar(session).start_of_day(period_end)
        if cutoff > now:
            raise InvalidInput(f"{period} has not ended yet; it can be closed from "
                               f"{period_end.isoformat()}.", field="period")
    elif cutoff.tzinfo is None:
        raise InvalidInput("The cutoff needs a time zone.", field="cutoff")
    elif cutoff > now:
        raise InvalidInput("The cutoff is in the future.", field="cutoff")
    if is_closed(session, period):
        raise Conflict(f"{period} is already closed.", field="period")
    later = session.scalar(select(func.max(SettlementStatement.period))
                           .where(SettlementStatement.period > period))
    if later is not None:
        raise Conflict(f"{later} is already closed; an earlier period cannot follow it.",
                       field="period")
    start = window_start(session, period)
    if cutoff <= start:
        raise InvalidInput(f"The cutoff must be after {start.isoformat()}, where the "
                           "previous close ended.", field="cutoff")
    accounts = session.execute(
        select(LedgerAccount.id, LedgerAccount.organization_id, LedgerAccount.currency)
        .where(LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value)
        .order_by(LedgerAccount.organization_id, LedgerAccount.currency)).all()
    computed = compute_all(session, start, cutoff)
    exchanges = _exchanges(session) if computed else {}
    made, line_rows = [], []
    for account in accounts:
        found = _statement_for(session, account, period, start, cutoff,
                               computed.get(account.id), exchanges.get(account.organization_id))
        if found is None:
            continue
        statement, lines = found
        statement.generated_by_id = actor.user_id if actor is not None else None
        statement.generated_at = now
        statement.review_due_on = review_due_on(settings, now)
        made.append(statement)
        line_rows.append(lines)
    session.add_all(made)
    session.flush()  # the statements' ids, for their lines and the audit entry
    rows = [{"statement_id": statement.id, **line}
            for statement, lines in zip(made, line_rows) for line in lines]
    insert_rows(session, StatementLine.__table__, rows)
    for statement in made:  # loaded from the rows just written when read
        session.expire(statement, ["lines"])
    audit.record(session, "statements.closed", actor=actor.actor if actor else SYSTEM,
                 organization_id=actor.organization_id if actor else None,
                 object_type="period", object_id=period,
                 data={"cutoff": cutoff.isoformat(), "from": start.isoformat(),
                       "statements": [s.number for s in made]})
    return made


# Who may see and act ----------------------------------------------------------------------------

def _is_staff_of(principal: Principal, statement: SettlementStatement) -> bool:
    return oversees(principal, statement.exchange_id)


def _visible(principal: Principal, statement: SettlementStatement) -> bool:
    return statement.organization_id == principal.organization_id or \
        _is_staff_of(principal, statement)


def get_statement(session: Session, principal: Principal, statement_id: int, *,
                  for_update: bool = False) -> SettlementStatement:
    """A statement, for its participant, its exchange and the platform; 404 for anyone else."""
    authorize(principal, "billing:read")
    query = select(SettlementStatement).where(SettlementStatement.id == statement_id)
    statement = session.scalar(query.with_for_update() if for_update else query)
    if statement is None or not _visible(principal, statement):
        raise NotFound("No such statement.")
    return statement


def _require_reviewer(principal: Principal, statement: SettlementStatement) -> None:
    if not _visible(principal, statement):
        raise NotFound("No such statement.")
    authorize(principal, "statements:manage")
    if not _is_staff_of(principal, statement):
        raise Forbidden("Only the statement's exchange or the platform reviews it.")
    refuse_party(principal, {statement.organization_id}, item="statement", action="review")


def _status(statement: SettlementStatement, *allowed: StatementStatus) -> None:
    if statement.status not in allowed:
        raise Conflict(f"The statement is {statement.status.replace('_', ' ')}; this needs it "
                       f"{' or '.join(s.replace('_', ' ') for s in allowed)}.", field="status")


def _audit(session: Session, principal: Principal | None, statement: SettlementStatement,
           action: str, **data: Any) -> None:
    audit.record(session, f"statements.{action}",
                 actor=principal.actor if principal else SYSTEM,
                 organization_id=statement.organization_id, object_type="settlement_statement",
                 object_id=statement.id,
                 data={"number": statement.number, "status": statement.status, **data})


# Workflow ---------------------------------------------------------------------------------------

def issue(session: Session, principal: Principal, statement: SettlementStatement
          ) -> SettlementStatement:
    """Draft → issued. The issuer becomes the statement's maker when the system generated it,
    so the same person cannot also approve it."""
    _require_reviewer(principal, statement)
    _status(statement, StatementStatus.DRAFT)
    statement.status = StatementStatus.ISSUED
    statement.issued_at = utcnow()
    if statement.generated_by_id is None:
        statement.generated_by_id = principal.user_id
    _audit(session, principal, statement, "issued")
    return statement


def start_review(session: Session, principal: Principal, statement: SettlementStatement
                 ) -> SettlementStatement:
    """Issued → under review, by the statement's exchange or the platform."""
    _require_reviewer(principal, statement)
    _status(statement, StatementStatus.ISSUED)
    statement.status = StatementStatus.UNDER_REVIEW
    statement.submitted_at = utcnow()
    _audit(session, principal, statement, "review_started")
    return statement


def approve(session: Session, principal: Principal, statement: SettlementStatement
            ) -> SettlementStatement:
    """Under review → approved, by a person other than its maker (maker-checker); the content
    must still match its hash and the ledger, since from now on it is frozen."""
    _require_reviewer(principal, statement)
    if statement.status == StatementStatus.DISPUTED:
        raise Conflict("The statement is disputed; resolve the dispute first.", field="status")
    _status(statement, StatementStatus.UNDER_REVIEW)
    if principal.user_id is None:
        raise Forbidden("A statement is approved by a person.", field="approver")
    if principal.user_id in makers_of(session, statement):
        raise Forbidden("Whoever generated, issued or submitted a statement cannot also "
                        "approve it; another reviewer must.", field="approver",
                        code="checker_required")
    problem = mismatch(session, statement)
    if problem is not None:
        raise Conflict(f"The statement cannot be approved: {problem}.", field="content_hash")
    statement.status = StatementStatus.APPROVED
    statement.approved_by_id = principal.user_id
    statement.approved_at = utcnow()
    _audit(session, principal, statement, "approved", content_hash=statement.content_hash)
    return statement


def makers_of(session: Session, statement: SettlementStatement) -> set[int]:
    """The people who made the statement: who generated it, issued it and submitted it for
    approval (the audit log records every step with its actor, in the same transaction as the
    step)."""
    issuers = session.scalars(select(AuditEntry.actor_user_id).where(
        AuditEntry.action.in_(("statements.issued", "statements.review_started")),
        AuditEntry.object_type == "settlement_statement",
        AuditEntry.object_id == str(statement.id), AuditEntry.actor_user_id.is_not(None)))
    return {statement.generated_by_id, *issuers} - {None}


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Give a reason.", field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"At most {MAX_REASON} characters.", field="reason")
    return reason


def dispute(session: Session, principal: Principal, statement: SettlementStatement,
            reason: str) -> SettlementStatement:
    """Issued or under review → disputed, by the participant's owner or finance people, or by
    the reviewing exchange."""
    if not _visible(principal, statement):
        raise NotFound("No such statement.")
    if statement.organization_id == principal.organization_id and not principal.is_key:
        if not principal.is_finance:
            raise Forbidden("Your organization's owner or finance people dispute statements.")
    else:
        _require_reviewer(principal, statement)
    _status(statement, StatementStatus.ISSUED, StatementStatus.UNDER_REVIEW)
    statement.status = StatementStatus.DISPUTED
    statement.disputed_by_id = principal.user_id
    statement.disputed_at = utcnow()
    statement.dispute_reason = _reason(reason)
    _audit(session, principal, statement, "disputed", reason=statement.dispute_reason)
    return statement


def resolve_dispute(session: Session, principal: Principal, statement: SettlementStatement,
                    amount: Money, reason: str, *, reason_code: str = "other",
                    lines: Iterable[int] = (), document: str = "",
                    settings: BillingSettings | None = None) -> StatementAdjustment | None:
    """Settle a dispute: a non-zero ``amount`` (positive: owed more to the participant) becomes
    an ``adjustment`` that the next statement shows; the disputed statement returns to review
    as it stands, since approved statements are never edited.

    The adjustment cites the statement's lines it corrects (by position) and cannot exceed
    what they can justify: the sum of each cited line's gross, or its amount when larger.
    From the dual-control threshold it waits for a second person, posted only when confirmed.
    """
    settings = settings or BillingSettings()
    _require_reviewer(principal, statement)
    _status(statement, StatementStatus.DISPUTED)
    reason = _reason(reason)
    if amount.currency != statement.currency:
        raise InvalidInput(f"The statement is in {statement.currency}.",
                           field="amount.currency")
    adjustment = None
    if not amount.is_zero():
        evidence = _evidence(statement, amount, reason_code, lines, document)
        waits = settings.needs_second_approver(amount)
        adjustment = StatementAdjustment(
            statement_id=statement.id, organization_id=statement.organization_id,
            currency=amount.currency, amount_minor=amount.minor, reason=reason,
            reason_code=reason_code, evidence=evidence,
            status=AdjustmentStatus.PENDING_APPROVAL if waits else AdjustmentStatus.POSTED,
            created_by_id=principal.user_id, created_by_org_id=principal.organization_id,
            created_by_role=principal.member_role)
        session.add(adjustment)
        session.flush()  # the posting's key and the audit entry name the adjustment's id
        if not waits:
            _post_adjustment(session, statement, adjustment)
    statement.status = StatementStatus.UNDER_REVIEW
    _audit(session, principal, statement, "dispute_resolved", reason=reason,
           amount=str(amount), adjustment_id=adjustment.id if adjustment else None,
           adjustment_status=adjustment.status if adjustment else None)
    return adjustment


def _evidence(statement: SettlementStatement, amount: Money, reason_code: str,
              lines: Iterable[int], document: str) -> dict[str, Any]:
    if reason_code not in ADJUSTMENT_REASON_CODES:
        raise InvalidInput(f"Choose one of: {', '.join(ADJUSTMENT_REASON_CODES)}.",
                           field="reason_code")
    positions = sorted(set(lines))
    if not positions:
        raise InvalidInput("Name the statement lines the correction is about.",
                           field="evidence.lines")
    by_position = {line.position: line for line in statement.lines}
    unknown = [p for p in positions if p not in by_position]
    if unknown:
        raise InvalidInput(f"The statement has no line {unknown[0]}.", field="evidence.lines")
    justified = sum(max(abs(by_position[p].gross_minor or 0), abs(by_position[p].amount_minor))
                    for p in positions)
    if abs(amount.minor) > justified:
        limit = Money.from_minor(justified, statement.currency)
        raise InvalidInput(f"The lines named justify a correction of at most {limit}.",
                           field="amount")
    document = (document or "").strip()
    if len(document) > MAX_EVIDENCE_DOCUMENT:
        raise InvalidInput(f"At most {MAX_EVIDENCE_DOCUMENT} characters.",
                           field="evidence.document")
    return {"lines": positions, "document": document}


def _post_adjustment(session: Session, statement: SettlementStatement,
                     adjustment: StatementAdjustment) -> None:
    amount = Money.from_minor(adjustment.amount_minor, adjustment.currency)
    payable = get_account(session, Purpose.PARTICIPANT_PAYABLE, amount.currency,
                          statement.organization_id)
    revenue = get_account(session, Purpose.PLATFORM_REVENUE, amount.currency)
    # A credit to the payable is owed to the participant; a negative amount reverses both.
    transaction = post(session, "adjustment",
                       [Line.credit(payable, amount), Line.debit(revenue, amount)],
                       idempotency_key=f"statement:{statement.id}:adjustment:{adjustment.id}",
                       reference=("statement", statement.id),
                       memo={"statement": statement.number, "reason": adjustment.reason[:300],
                             "reason_code": adjustment.reason_code})
    adjustment.ledger_transaction_id = transaction.id
    adjustment.status = AdjustmentStatus.POSTED


def adjustments_of(statement: SettlementStatement) -> list[StatementAdjustment]:
    """The corrections made when the statement's disputes were resolved, oldest first."""
    session = Session.object_session(statement)
    return list(session.scalars(select(StatementAdjustment).where(
        StatementAdjustment.statement_id == statement.id).order_by(StatementAdjustment.id)))


def get_adjustment(session: Session, principal: Principal, adjustment_id: int
                   ) -> StatementAdjustment:
    """An adjustment, locked, for whoever may review its statement (404 for anyone else)."""
    adjustment = session.scalar(select(StatementAdjustment).where(
        StatementAdjustment.id == adjustment_id).with_for_update())
    if adjustment is None:
        raise NotFound("No such adjustment.")
    statement = session.get(SettlementStatement, adjustment.statement_id)
    if not _visible(principal, statement):
        raise NotFound("No such adjustment.")
    return adjustment


def decide_adjustment(session: Session, principal: Principal, adjustment: StatementAdjustment,
                      *, approve: bool, note: str = "") -> StatementAdjustment:
    """The checker confirms (posts) or rejects an adjustment awaiting approval: a person of
    another team or a higher role than its maker, who neither made it nor disputed the
    statement, of an organization that is no party to it."""
    statement = session.get(SettlementStatement, adjustment.statement_id)
    _require_reviewer(principal, statement)
    if adjustment.status != AdjustmentStatus.PENDING_APPROVAL:
        raise Conflict(f"The adjustment is {adjustment.status.replace('_', ' ')}; only one "
                       "awaiting approval is decided.", field="status")
    require_checker(principal, Maker(adjustment.created_by_id, adjustment.created_by_org_id,
                                     adjustment.created_by_role),
                    excluded={statement.disputed_by_id} - {None}, item="adjustment")
    note = (note or "").strip()
    if not approve and not note:
        raise InvalidInput("Say why the adjustment is rejected.", field="note")
    if len(note) > MAX_REASON:
        raise InvalidInput(f"At most {MAX_REASON} characters.", field="note")
    adjustment.decided_by_id = principal.user_id
    adjustment.decided_at = utcnow()
    adjustment.decision_note = note
    if approve:
        _post_adjustment(session, statement, adjustment)
    else:
        adjustment.status = AdjustmentStatus.REJECTED
    _audit(session, principal, statement,
           "adjustment_confirmed" if approve else "adjustment_rejected",
           adjustment_id=adjustment.id, amount=str(Money.from_minor(adjustment.amount_minor,
                                                            adjustment.currency).amount),
           note=note)
    return adjustment


def pay(session: Session, principal: Principal, statement: SettlementStatement, *,
        bank_reference: str) -> SettlementStatement:
    """Approved → paid, by platform finance after sending the bank transfer: the closing
    amount leaves the platform (participant_payable debit, platform_clearing credit). Nothing
    is owed when the closing is zero or less, so nothing is posted."""
    if not _visible(principal, statement):
        raise NotFound("No such statement.")
    authorize(principal, "payments:manage")
    if not principal.is_platform:
        raise Forbidden("The platform's finance people pay statements.")
    refuse_party(principal, {statement.organization_id}, item="statement", action="pay")
    _status(statement, StatementStatus.APPROVED)
    if principal.user_id is not None and principal.user_id == statement.approved_by_id:
        raise Forbidden("Whoever approved a statement does not also record its payout; "
                        "another person must.", field="approver", code="checker_required")
    bank_reference = (bank_reference or "").strip()
    if not bank_reference:
        raise InvalidInput("Give the bank's reference of the transfer.", field="bank_reference")
    if len(bank_reference) > 100:
        raise InvalidInput("At most 100 characters.", field="bank_reference")
    if statement.closing_minor > 0:
        amount = Money.from_minor(statement.closing_minor, statement.currency)
        post(session, "payout", [
            Line.debit(get_account(session, Purpose.PARTICIPANT_PAYABLE, statement.currency,
                                   statement.organization_id), amount),
            Line.credit(get_account(session, Purpose.PLATFORM_CLEARING, statement.currency),
                        amount)],
            idempotency_key=f"payout:{statement.id}:{statement.organization_id}",
            reference=("statement", statement.id),
            memo={"statement": statement.number, "bank_reference": bank_reference})
    statement.status = StatementStatus.PAID
    statement.paid_at = utcnow()
    statement.payout_method = "bank_transfer"
    statement.payout_reference = bank_reference
    _audit(session, principal, statement, "paid", bank_reference=bank_reference,
           amount=str(Money.from_minor(max(statement.closing_minor, 0),
                                       statement.currency).amount))
    return statement


# Queries ----------------------------------------------------------------------------------------

def list_statements(session: Session, principal: Principal, *, period: str | None = None
                    ) -> Keyset[SettlementStatement]:
    """A participant's own statements, newest first; for exchange and platform staff, the
    review queue: the statements they review (and their own), by due date (drafts, due on no
    date yet, last)."""
    authorize(principal, "billing:read")
    query = select(SettlementStatement)
    if period is not None:
        period_bounds(period)
        query = query.where(SettlementStatement.period == period)
    by_due_date = [asc(SettlementStatement.review_due_on), asc(SettlementStatement.id)]
    if principal.is_platform:
        return Keyset(session, query, by_due_date)
    if principal.is_exchange:
        return Keyset(session, query.where(or_(
            SettlementStatement.exchange_id == principal.organization_id,
            SettlementStatement.organization_id == principal.organization_id)), by_due_date)
    return Keyset(session, query.where(
        SettlementStatement.organization_id == principal.organization_id),
        [desc(SettlementStatement.period), asc(SettlementStatement.currency),
         asc(SettlementStatement.id)])


def participant_history(session: Session, principal: Principal, organization_id: int
                        ) -> list[SettlementStatement]:
    """One participant's statements, oldest first: for itself, the platform, and an exchange
    (the statements it reviews). Anyone else: 404."""
    authorize(principal, "billing:read")
    query = select(SettlementStatement).where(
        SettlementStatement.organization_id == organization_id)
    if principal.organization_id != organization_id and not principal.is_platform:
        if not principal.is_exchange:
            raise NotFound("No such participant.")
        query = query.where(SettlementStatement.exchange_id == principal.organization_id)
    found = list(session.scalars(query.order_by(SettlementStatement.period,
                                                SettlementStatement.currency)))
    if not found and principal.organization_id != organization_id and \
            not principal.is_platform:
        raise NotFound("No such participant.")
    return found


# The scheduled close ----------------------------------------------------------------------------

def run_statement_close(ctx: JobContext) -> dict:
    """Job ``close-statements``: close the period, then sign a checkpoint of the audit chain, the ledger and the period's
    statements (in a transaction of its own: the checkpoint briefly holds posting back, which
    the close, however long, does not)."""
    signing_key = signing_key_from_settings(ctx.settings)
    with ctx.db.session() as session, session.begin():
        if is_closed(session, ctx.period):
            ctx.progress(f"statements of {ctx.period} are already closed; nothing done")
            return {"statements": 0, "already_closed": True}
        made = close_period(session, ctx.period, actor=None,
                            settings=BillingSettings.from_settings(ctx.settings))
        ctx.progress(f"statements of {ctx.period}: {len(made)} written")
        hashes = {statement.number: statement.content_hash for statement in made}
    with ctx.db.session() as session, session.begin():
        checkpoint = sign_checkpoint(session, signing_key, reason=f"close {ctx.period}",
                                     statements=hashes)
        number = checkpoint.number
    ctx.progress(f"checkpoint #{number} signed")
    return {"statements": len(made), "already_closed": False, "checkpoint": number}

