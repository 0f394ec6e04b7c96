"""Settlement statements: what the marketplace owes each supply-chain participant, per period.

Closing a period (``close_period``) writes one statement per participant and currency: a pure
function of that participant's ``participant_payable`` ledger account up to the cutoff. The
opening is what was owed before the statement's window, each ledger entry in the window is one
line traced to the payment, refund, usage day, adjustment or payout that caused it, and the
closing is what is owed at the cutoff. Every statement of a period shares one cutoff, by default
the first instant of the next month on the business calendar (``BUSINESS_TIMEZONE``: in
Beijing, 16:00 UTC on the month's last day), and lines are dated by business day; the window
starts where the previous close's cutoff ended (the period's first instant when no earlier
period was closed), so every entry lands in exactly one statement whatever cutoff an operator
chose.

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
unposted, for a second person (``decide_adjustment``). Once
approved, a statement and its lines never change (a ``before_flush`` listener refuses it, as the
ledger does for entries): its ``content_hash`` is SHA-256 over the canonical JSON of
``statement_content``, and ``verify_statements`` (``flask billing verify-statements``) finds any
statement whose stored content no longer matches its hash or, once approved, the ledger.
Corrections are never edits: ``resolve_dispute`` posts an ``adjustment`` transaction now, which
the next period's statement shows as a line.

Payouts are bank transfers only: platform finance sends the money and records the bank's
reference; ``pay`` posts it (participant_payable debit, platform_clearing credit). A Stripe
Connect transfer is not offered: the local Stripe server the suite runs against has no Connect,
and a payout path that cannot be exercised end to end is not shipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any, Iterable

from sqlalchemy import event, func, inspect, or_, select
from sqlalchemy.orm import Session

from billing.settlement.checkpoints import sign_checkpoint, signed_bodies, signing_key_from_settings
from billing.context import BillingSettings
from billing.settlement.ledger import (
    LedgerAccount, LedgerEntry, LedgerTransaction, Line, Purpose, get_account, post,
)
from billing.models import BankReceipt, IntegrityCheckpoint, Order, OrderLine, Payment, Refund
from billing.payments.card import payment_tag
from billing.models.statements import SettlementStatement, StatementAdjustment, StatementLine
from market.core import audit
from market.accounts.authz import Maker, Principal, authorize, refuse_party, require_checker
from market.core.audit import SYSTEM, AuditEntry
from market.catalog.models import Dataset, Listing, SupplyChainRevision, SupplyChainShare
from market.core.db import business_calendar, insert_rows, utcnow
from market.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from market.core.keyset import Keyset, asc, desc
from pricing.money import Money
from pricing.periods import month_days

REVIEW_DAYS = 5  # the default of the STATEMENT_REVIEW_DAYS setting
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

# What a payment's order kind is called on a statement line.
_ORDER_LINE_KINDS = {"mall": "sale", "token_pack": "sale", "subscription": "subscription",
                     "renewal": "subscription", "plan_change": "subscription",
                     "custom": "custom", "usage": "usage"}
FROZEN = ("approved", "paid")
# What may still change on an approved statement: it being paid.
_PAYMENT_FIELDS = frozenset({"status", "paid_at", "payout_method", "payout_reference"})


# Periods and windows ----------------------------------------------------------------------------

def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    """The first day of the period and the first day after it."""
    try:
        return month_days(period)
    except ValueError:
        raise InvalidInput("A period is a month written YYYY-MM.", field="period") from None


def _window_start(session: Session, period: str) -> dt.datetime:
    """Where a period's statements begin: the cutoff of the latest earlier close, else the
    period's first instant."""
    previous = session.scalar(select(func.max(SettlementStatement.cutoff))
                              .where(SettlementStatement.period < period))
    if previous is not None:
        return previous
    return business_calendar(session).start_of_day(period_bounds(period)[0])


def is_closed(session: Session, period: str) -> bool:
    return session.scalar(select(func.count()).select_from(SettlementStatement)
                          .where(SettlementStatement.period == period)) > 0


# Computing a statement from the ledger ----------------------------------------------------------

def _minor(amount: str | Decimal | None, currency: str) -> int | None:
    return None if amount is None else Money(amount, currency).minor


def _decimal(minor: int, currency: str) -> str:
    return str(Money.from_minor(minor, currency).amount)


def _org_of_key(key: str) -> int | None:
    try:
        return int(str(key).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _share_bps(shares: Iterable[Any], organization_id: int) -> int:
    return sum(int(bps) for key, bps in shares if _org_of_key(key) == organization_id)


IN_CHUNK = 5_000  # ids per IN list of the bulk look-ups


def _chunks(ids: Iterable[Any]) -> Iterable[list[Any]]:
    ordered = sorted(set(ids))
    for at in range(0, len(ordered), IN_CHUNK):
        yield ordered[at:at + IN_CHUNK]


def _as_id(value: Any) -> int | None:
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


class _Traces:
    """What the lines' descriptions name, read in bulk: payments and refunds (order, gross),
    orders (number, kind), order lines (dataset, description, shares, by position) and dataset
    titles, each by id."""

    def __init__(self) -> None:
        self.payments: dict[int, tuple[int, int]] = {}
        self.refunds: dict[int, tuple[int, int]] = {}
        self.orders: dict[int, tuple[str, str]] = {}
        self.order_lines: dict[int, list[tuple[int | None, str, Any]]] = defaultdict(list)
        self.titles: dict[int, str | None] = {}

    @classmethod
    def load(cls, session: Session, rows: Iterable[Any]) -> _Traces:
        """The traces of every entry row (``_ENTRY_COLUMNS``) in a fixed number of queries
        (one per kind of thing and chunk of ids)."""
        traces = cls()
        payment_ids, refund_ids, dataset_ids = set(), set(), set()
        for row in rows:
            if row.kind == "payment" and row.reference_type == "payment":
                payment_ids.add(int(row.reference_id))
            elif row.kind == "refund" and row.reference_type == "refund":
                refund_ids.add(int(row.reference_id))
            elif row.kind == "usage":
                dataset_id = _as_id((row.memo or {}).get("dataset_id"))
                if dataset_id is not None:
                    dataset_ids.add(dataset_id)
        for chunk in _chunks(payment_ids):
            traces.payments.update((id_, (order_id, amount)) for id_, order_id, amount in
                                   session.execute(select(Payment.id, Payment.order_id,
                                                          Payment.amount_minor)
                                                   .where(Payment.id.in_(chunk))))
        for chunk in _chunks(refund_ids):
            traces.refunds.update((id_, (order_id, amount)) for id_, order_id, amount in
                                  session.execute(select(Refund.id, Refund.order_id,
                                                         Refund.amount_minor)
                                                  .where(Refund.id.in_(chunk))))
        order_ids = {order_id for order_id, _ in traces.payments.values()} | \
            {order_id for order_id, _ in traces.refunds.values()}
        for chunk in _chunks(order_ids):
            traces.orders.update((id_, (number, kind)) for id_, number, kind in
                                 session.execute(select(Order.id, Order.number, Order.kind)
                                                 .where(Order.id.in_(chunk))))
            for order_id, dataset_id, description, shares in session.execute(
                    select(OrderLine.order_id, OrderLine.dataset_id, OrderLine.description,
                           OrderLine.shares)
                    .where(OrderLine.order_id.in_(chunk))
                    .order_by(OrderLine.order_id, OrderLine.position, OrderLine.id)):
                traces.order_lines[order_id].append((dataset_id, description, shares))
                if dataset_id:
                    dataset_ids.add(dataset_id)
        for chunk in _chunks(dataset_ids):
            traces.titles.update(session.execute(
                select(Dataset.id, Dataset.title_en).where(Dataset.id.in_(chunk))).all())
        return traces

    def title(self, dataset_id: Any) -> str | None:
        dataset_id = _as_id(dataset_id)
        return self.titles.get(dataset_id) if dataset_id is not None else None


def _order_trace(traces: _Traces, order_id: int, number: str, organization_id: int
                 ) -> tuple[int | None, str]:
    """The dataset of the order line this participant shares in, and how it reads."""
    lines = traces.order_lines.get(order_id, [])
    chosen = lines[0] if len(lines) == 1 else next(
        (line for line in lines if _share_bps(line[2] or [], organization_id)), None)
    if chosen is None:
        return None, f"Order {number}"
    dataset_id, line_description, shares = chosen
    title = traces.title(dataset_id) or line_description
    bps = _share_bps(shares or [], organization_id)
    share = f", share {Decimal(bps) / 100:.2f}%" if bps else ""
    return dataset_id, f"Order {number} — {title}{share}"


def _describe(traces: _Traces, row: Any, organization_id: int, currency: str
              ) -> dict[str, Any]:
    """A line's kind, trace and description, from the transaction that made the entry."""
    kind, memo = row.kind, row.memo or {}
    trace: dict[str, Any] = {"kind": "other", "order_number": None, "dataset_id": None,
                             "gross_minor": None, "description": kind}
    if kind == "payment" and row.reference_type == "payment":
        order_id, gross = traces.payments[int(row.reference_id)]
        number, order_kind = traces.orders[order_id]
        dataset_id, description = _order_trace(traces, order_id, number, organization_id)
        trace.update(kind=_ORDER_LINE_KINDS.get(order_kind, "other"), order_number=number,
                     dataset_id=dataset_id, gross_minor=gross, description=description)
    elif kind == "refund" and row.reference_type == "refund":
        order_id, gross = traces.refunds[int(row.reference_id)]
        number, _ = traces.orders[order_id]
        dataset_id, description = _order_trace(traces, order_id, number, organization_id)
        trace.update(kind="refund", order_number=number, dataset_id=dataset_id,
                     gross_minor=gross, description=f"Refund: {description}")
    elif kind == "usage":
        royalty = memo.get("kind") == "royalty"
        dataset_id = memo.get("dataset_id")
        what = "Royalties" if royalty else "Metered usage"
        title = traces.title(dataset_id) or "platform"
        trace.update(kind="royalty" if royalty else "usage", dataset_id=dataset_id,
                     gross_minor=_minor(memo.get("gross"), currency),
                     description=f"{what} {memo.get('day', '')} — {title}, "
                                 f"{int(memo.get('tokens', 0)):,} tokens")
    elif kind == "adjustment":
        trace.update(kind="adjustment",
                     description=f"Adjustment for {memo.get('statement', 'a statement')}: "
                                 f"{memo.get('reason', '')}")
    elif kind == "payout":
        trace.update(kind="payout",
                     description=f"Payout of {memo.get('statement', 'a statement')} by bank "
                                 f"transfer ({memo.get('bank_reference', '')})")
    trace["description"] = trace["description"][:300]
    return trace


_ENTRY_COLUMNS = (LedgerEntry.account_id, LedgerAccount.organization_id,
                  LedgerAccount.currency, LedgerEntry.id.label("entry_id"),
                  LedgerEntry.amount_minor, LedgerEntry.transaction_id, LedgerTransaction.kind,
                  LedgerTransaction.reference_type, LedgerTransaction.reference_id,
                  LedgerTransaction.memo, LedgerTransaction.occurred_at)


def _payable_filter(account_id: int | None) -> list[Any]:
    return [LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value] + (
        [LedgerAccount.id == account_id] if account_id is not None else [])


def _compute_all(session: Session, start: dt.datetime, cutoff: dt.datetime, *,
                 account_id: int | None = None) -> dict[int, dict[str, Any]]:
    """Opening, lines, totals and closing over [start, cutoff) of every participant_payable
    account (or just ``account_id``) with an opening or a line, by account id: one query for
    the entries (columns, not objects), one for the openings, and the traces in bulk."""
    rows = session.execute(
        select(*_ENTRY_COLUMNS)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(*_payable_filter(account_id), LedgerTransaction.occurred_at >= start,
               LedgerTransaction.occurred_at < cutoff)
        .order_by(LedgerEntry.account_id, LedgerTransaction.occurred_at, LedgerEntry.id)).all()
    openings = dict(session.execute(
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount_minor))
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(*_payable_filter(account_id), LedgerTransaction.occurred_at < start)
        .group_by(LedgerEntry.account_id)).all())
    traces = _Traces.load(session, rows)
    calendar = business_calendar(session)
    by_account: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        lines = by_account[row.account_id]
        lines.append({"position": len(lines) + 1,
                      "occurred_on": calendar.day_of(row.occurred_at),
                      "ledger_transaction_id": row.transaction_id,
                      "amount_minor": -row.amount_minor,
                      **_describe(traces, row, row.organization_id, row.currency)})
    currencies = {row.account_id: row.currency for row in rows}  # totals need lines
    computed = {}
    for account in set(by_account) | set(openings):
        lines = by_account.get(account, [])
        currency = currencies.get(account, "")
        totals: dict[str, int] = defaultdict(int)
        for line in lines:
            totals[line["kind"]] += line["amount_minor"]
        opening = -int(openings.get(account) or 0)
        activity = sum(line["amount_minor"] for line in lines)
        computed[account] = {
            "opening": opening, "lines": lines, "activity": activity,
            "closing": opening + activity,
            "totals": {kind: _decimal(total, currency) for kind, total in sorted(totals.items())}}
    return computed


def _empty() -> dict[str, Any]:
    return {"opening": 0, "lines": [], "activity": 0, "closing": 0, "totals": {}}


def _compute(session: Session, account: LedgerAccount, start: dt.datetime,
             cutoff: dt.datetime) -> dict[str, Any]:
    """Opening, lines, totals and closing of one payable account over [start, cutoff)."""
    return _compute_all(session, start, cutoff, account_id=account.id).get(
        account.id) or _empty()


def _line_content(line: dict[str, Any]) -> dict[str, Any]:
    occurred_on = line["occurred_on"]
    return {"position": line["position"], "kind": line["kind"],
            "occurred_on": occurred_on.isoformat() if isinstance(occurred_on, dt.date)
            else occurred_on,
            "ledger_transaction_id": line["ledger_transaction_id"],
            "order_number": line["order_number"], "dataset_id": line["dataset_id"],
            "description": line["description"], "gross_minor": line["gross_minor"],
            "amount_minor": line["amount_minor"]}


def _content(*, number: str, organization_id: int, currency: str, period: str,
             cutoff: dt.datetime, opening: int, lines: Iterable[dict[str, Any]],
             totals: dict[str, Any], closing: int) -> dict[str, Any]:
    return {"number": number, "participant": organization_id, "currency": currency,
            "period": period, "cutoff": cutoff.astimezone(dt.timezone.utc).isoformat(),
            "opening": opening, "lines": [_line_content(line) for line in lines],
            "totals": dict(totals), "closing": closing}


def statement_content(statement: SettlementStatement) -> dict[str, Any]:
    """What a statement says, as plain JSON values: the input of its content hash."""
    lines = [{column: getattr(line, column) for column in (
        "position", "kind", "occurred_on", "ledger_transaction_id", "order_number",
        "dataset_id", "description", "gross_minor", "amount_minor")}
        for line in sorted(statement.lines, key=lambda line: line.position)]
    return _content(number=statement.number, organization_id=statement.organization_id,
                    currency=statement.currency, period=statement.period,
                    cutoff=statement.cutoff, opening=statement.opening_minor, lines=lines,
                    totals=statement.totals or {}, closing=statement.closing_minor)


def content_hash(content: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, compact, UTF-8) of a statement's content."""
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
    of ``_compute_all`` (None: no opening and no line)."""
    if computed is None or (computed["opening"] == 0 and not computed["lines"]):
        return None
    period_start, period_end = period_bounds(period)
    number = f"ST-{period}-{account.organization_id}-{account.currency}"
    statement = SettlementStatement(
        number=number, organization_id=account.organization_id,
        exchange_id=exchange_id, currency=account.currency,
        period=period, period_start=period_start, period_end=period_end, cutoff=cutoff,
        status="draft", opening_minor=computed["opening"],
        activity_minor=computed["activity"], closing_minor=computed["closing"],
        totals=computed["totals"])
    statement.content_hash = content_hash(_content(
        number=number, organization_id=account.organization_id, currency=account.currency,
        period=period, cutoff=cutoff, opening=computed["opening"], lines=computed["lines"],
        totals=computed["totals"], closing=computed["closing"]))
    return statement, computed["lines"]


# Closing a period -------------------------------------------------------------------------------

def close_period(session: Session, period: str, *, actor: Principal | None,
                 cutoff: dt.datetime | None = None,
                 review_days: int = REVIEW_DAYS) -> list[SettlementStatement]:
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
        if "platform" not in actor.org_roles:
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
    start = _window_start(session, period)
    if cutoff <= start:
        raise InvalidInput(f"The cutoff must be after {start.isoformat()}, where the "
                           "previous close ended.", field="cutoff")
    accounts = session.execute(
        select(LedgerAccount.id, LedgerAccount.organization_id, LedgerAccount.currency)
        .where(LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value)
        .order_by(LedgerAccount.organization_id, LedgerAccount.currency)).all()
    computed = _compute_all(session, start, cutoff)
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
        statement.review_due_on = now.date() + dt.timedelta(days=review_days)
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
    return "platform" in principal.org_roles or (
        "exchange" in principal.org_roles
        and statement.exchange_id == principal.organization_id)


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


def _status(statement: SettlementStatement, *allowed: str) -> None:
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
    _status(statement, "draft")
    statement.status = "issued"
    statement.issued_at = utcnow()
    if statement.generated_by_id is None:
        statement.generated_by_id = principal.user_id
    _audit(session, principal, statement, "issued")
    return statement


def start_review(session: Session, principal: Principal, statement: SettlementStatement
                 ) -> SettlementStatement:
    """Issued → under review, by the statement's exchange or the platform."""
    _require_reviewer(principal, statement)
    _status(statement, "issued")
    statement.status = "under_review"
    statement.submitted_at = utcnow()
    _audit(session, principal, statement, "review_started")
    return statement


def _mismatch(session: Session, statement: SettlementStatement) -> str | None:
    """Why the statement's stored content is not what it claims, or None."""
    if content_hash(statement_content(statement)) != statement.content_hash:
        return "its content does not match its hash"
    fresh = _recompute(session, statement)
    if fresh is None:
        return "its participant has no payable account in the ledger"
    stored = statement_content(statement)
    # Descriptions are left out: they name datasets, whose titles may be edited later.
    for content in (stored, fresh):
        for line in content["lines"]:
            line.pop("description")
    for key in ("opening", "closing", "totals", "lines"):
        if stored[key] != fresh[key]:
            return f"its {key} differ from the ledger up to its cutoff"
    return None


def _recompute(session: Session, statement: SettlementStatement) -> dict[str, Any] | None:
    account = session.scalar(select(LedgerAccount).where(
        LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value,
        LedgerAccount.organization_id == statement.organization_id,
        LedgerAccount.currency == statement.currency))
    if account is None:
        return None
    computed = _compute(session, account, _window_start(session, statement.period),
                        statement.cutoff)
    return _content(number=statement.number, organization_id=statement.organization_id,
                    currency=statement.currency, period=statement.period,
                    cutoff=statement.cutoff, opening=computed["opening"],
                    lines=computed["lines"], totals=computed["totals"],
                    closing=computed["closing"])


def approve(session: Session, principal: Principal, statement: SettlementStatement
            ) -> SettlementStatement:
    """Under review → approved, by a person other than its maker (maker-checker); the content
    must still match its hash and the ledger, since from now on it is frozen."""
    _require_reviewer(principal, statement)
    if statement.status == "disputed":
        raise Conflict("The statement is disputed; resolve the dispute first.", field="status")
    _status(statement, "under_review")
    if principal.user_id is None:
        raise Forbidden("A statement is approved by a person.", field="approver")
    if principal.user_id in makers_of(session, statement):
        raise Forbidden("Whoever generated, issued or submitted a statement cannot also "
                        "approve it; another reviewer must.", field="approver",
                        code="checker_required")
    problem = _mismatch(session, statement)
    if problem is not None:
        raise Conflict(f"The statement cannot be approved: {problem}.", field="content_hash")
    statement.status = "approved"
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
        if principal.member_role not in ("owner", "finance"):
            raise Forbidden("Your organization's owner or finance people dispute statements.")
    else:
        _require_reviewer(principal, statement)
    _status(statement, "issued", "under_review")
    statement.status = "disputed"
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
    _status(statement, "disputed")
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
            status="pending_approval" if waits else "posted",
            created_by_id=principal.user_id, created_by_org_id=principal.organization_id,
            created_by_role=principal.member_role)
        session.add(adjustment)
        session.flush()  # the posting's key and the audit entry name the adjustment's id
        if not waits:
            _post_adjustment(session, statement, adjustment)
    statement.status = "under_review"
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
    adjustment.status = "posted"


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
    if adjustment.status != "pending_approval":
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
        adjustment.status = "rejected"
    _audit(session, principal, statement,
           "adjustment_confirmed" if approve else "adjustment_rejected",
           adjustment_id=adjustment.id, amount=_decimal(adjustment.amount_minor,
                                                        adjustment.currency), note=note)
    return adjustment


def pay(session: Session, principal: Principal, statement: SettlementStatement, *,
        bank_reference: str) -> SettlementStatement:
    """Approved → paid, by platform finance after sending the bank transfer: the closing
    amount leaves the platform (participant_payable debit, platform_clearing credit). Nothing
    is owed when the closing is zero or less, so nothing is posted."""
    if not _visible(principal, statement):
        raise NotFound("No such statement.")
    authorize(principal, "payments:manage")
    if "platform" not in principal.org_roles:
        raise Forbidden("The platform's finance people pay statements.")
    refuse_party(principal, {statement.organization_id}, item="statement", action="pay")
    _status(statement, "approved")
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
    statement.status = "paid"
    statement.paid_at = utcnow()
    statement.payout_method = "bank_transfer"
    statement.payout_reference = bank_reference
    _audit(session, principal, statement, "paid", bank_reference=bank_reference,
           amount=_decimal(max(statement.closing_minor, 0), statement.currency))
    return statement


# Immutability -----------------------------------------------------------------------------------

def _status_before(statement: SettlementStatement) -> str | None:
    history = inspect(statement).attrs.status.history
    return history.deleted[0] if history.deleted else statement.status


def _frozen_statement_of(session: Session, line: StatementLine) -> bool:
    statement = line.statement
    if statement is None and line.statement_id is not None:
        with session.no_autoflush:
            statement = session.get(SettlementStatement, line.statement_id)
    return statement is not None and _status_before(statement) in FROZEN


@event.listens_for(Session, "before_flush")
def _approved_statements_are_frozen(session: Session, _context, _instances) -> None:
    for obj in session.dirty:
        if isinstance(obj, SettlementStatement) and _status_before(obj) in FROZEN:
            changed = {attr.key for attr in inspect(obj).attrs if attr.history.has_changes()}
            if changed and not (_status_before(obj) == "approved" and obj.status == "paid"
                                and changed <= _PAYMENT_FIELDS):
                raise Conflict("An approved statement never changes; corrections are "
                               "adjustments in a later period.", field="statement")
        elif isinstance(obj, StatementLine) and session.is_modified(obj) and \
                _frozen_statement_of(session, obj):
            raise Conflict("The lines of an approved statement never change.", field="lines")
    for obj in list(session.deleted) + list(session.new):
        if isinstance(obj, SettlementStatement) and obj in session.deleted and \
                _status_before(obj) in FROZEN:
            raise Conflict("An approved statement is never deleted.", field="statement")
        if isinstance(obj, StatementLine) and _frozen_statement_of(session, obj):
            raise Conflict("The lines of an approved statement never change.", field="lines")


def verify_statements(session: Session, public_key: Any = None) -> list[tuple[int, str]]:
    """Every statement whose stored content does not match its hash, and every approved or paid
    one that no longer matches the ledger up to its cutoff, with what is wrong.

    With the platform's ``public_key``, also every statement whose hash is not the one a valid
    signed checkpoint recorded when its period closed: a statement rewritten together with its
    hash matches itself, never the signature.
    """
    problems = []
    if public_key is not None:
        bodies, _ = signed_bodies(((str(c.number), c.payload, c.signature) for c in
                                   session.scalars(select(IntegrityCheckpoint)
                                                   .order_by(IntegrityCheckpoint.number))),
                                  public_key)
        signed = {number: (body["number"], digest) for body in bodies
                  for number, digest in body.get("statements", {}).items()}
        for statement in session.scalars(select(SettlementStatement).where(
                SettlementStatement.number.in_(list(signed)))
                .order_by(SettlementStatement.id)):
            checkpoint, digest = signed[statement.number]
            if statement.content_hash != digest:
                problems.append((statement.id, f"{statement.number}: its hash is not the one "
                                               f"checkpoint #{checkpoint} signed at its close "
                                               "(the statement was rewritten and re-hashed)"))
    for statement in session.scalars(select(SettlementStatement)
                                     .order_by(SettlementStatement.id)):
        if content_hash(statement_content(statement)) != statement.content_hash:
            problems.append((statement.id, f"{statement.number}: its content does not match "
                                           "its hash (it was altered)"))
        elif statement.status in FROZEN:
            problem = _mismatch(session, statement)
            if problem is not None:
                problems.append((statement.id, f"{statement.number}: {problem}"))
    return problems


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
    if "platform" in principal.org_roles:
        return Keyset(session, query, by_due_date)
    if "exchange" in principal.org_roles:
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
    if principal.organization_id != organization_id and "platform" not in principal.org_roles:
        if "exchange" not in principal.org_roles:
            raise NotFound("No such participant.")
        query = query.where(SettlementStatement.exchange_id == principal.organization_id)
    found = list(session.scalars(query.order_by(SettlementStatement.period,
                                                SettlementStatement.currency)))
    if not found and principal.organization_id != organization_id and \
            "platform" not in principal.org_roles:
        raise NotFound("No such participant.")
    return found


# Reconciliation ---------------------------------------------------------------------------------

COLLECTED = ("payment", "payment_unapplied", "bank_receipt")


def _period_window(session: Session, period: str) -> tuple[dt.datetime, dt.datetime]:
    """The instants a period covers: its statements' window once closed, else the month."""
    start = _window_start(session, period)
    cutoff = session.scalar(select(func.max(SettlementStatement.cutoff))
                            .where(SettlementStatement.period == period))
    if cutoff is None:
        cutoff = business_calendar(session).start_of_day(period_bounds(period)[1])
    return start, cutoff


def reconciliation(session: Session, period: str, *, gateway: Any = None) -> dict[str, Any]:
    """Where the period's money came from and where it went, per currency, in minor units.

    From the ledger, over the period's window (its statements' once closed):

    - ``gross_collected``: platform_clearing debits of card payments (``payment``, and
      ``payment_unapplied`` late successes kept as credit) and bank receipts;
    - ``refunds`` and ``payouts``: platform_clearing credits of those kinds;
    - ``participants`` (by kind, payouts excluded), ``platform_revenue``, ``tax_payable``,
      ``buyer_prepaid`` and ``buyer_receivable``: what each came to be owed (credit positive;
      a buyer's receivable growing is negative);
    - ``difference`` = participants + platform + tax + buyer credit and receivable changes −
      (gross collected − refunds): zero when every movement of money is accounted for;
    - ``participants_by_organization``: what each participant came to be owed (its statement's
      activity, payouts excluded), and ``payouts_by_organization``;
    - ``buyer_credit``: each buyer's credit movement by what it is (``BUYER_CREDIT_PARTS``):
      its prepaid token ``wallet``, money it ``overpaid`` (bank receipts beyond their invoice,
      late card successes kept as credit), money ``underpaid`` (bank receipts held against an
      invoice not yet covered, less what paid an invoice), ``other`` prepaid movements, and its
      ``receivable`` (usage owed, less invoices paid). They sum to buyer_prepaid + receivable.

    With a ``gateway``, ``processor_difference`` is our succeeded card payments in the window
    minus the processor's succeeded PaymentIntents that carry their tags (``payment_tag``).
    """
    start, end = _period_window(session, period)
    rows = session.execute(
        select(LedgerAccount.purpose, LedgerEntry.currency, LedgerTransaction.kind,
               LedgerEntry.amount_minor, LedgerAccount.organization_id,
               LedgerTransaction.reference_type, LedgerTransaction.reference_id)
        .join(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .where(LedgerTransaction.occurred_at >= start, LedgerTransaction.occurred_at < end)
        .order_by(LedgerEntry.id)).all()
    report: dict[str, dict[str, Any]] = {}
    credit_part = _buyer_credit_classifier(session, rows)

    def of(currency: str) -> dict[str, Any]:
        return report.setdefault(currency, {
            "gross_collected": 0, "collected_by_kind": {}, "refunds": 0, "payouts": 0,
            "participants": 0, "participants_by_kind": {}, "participants_by_organization": {},
            "payouts_by_organization": {}, "platform_revenue": 0,
            "tax_payable": 0, "buyer_prepaid": 0, "buyer_receivable": 0, "buyer_credit": {},
            "other_clearing": 0})

    def add(mapping: dict, key: Any, amount: int) -> None:
        mapping[key] = mapping.get(key, 0) + amount

    owed_keys = {Purpose.PLATFORM_REVENUE.value: "platform_revenue",
                 Purpose.TAX_PAYABLE.value: "tax_payable",
                 Purpose.BUYER_PREPAID.value: "buyer_prepaid",
                 Purpose.BUYER_RECEIVABLE.value: "buyer_receivable"}
    for purpose, currency, kind, amount, organization_id, ref_type, ref_id in rows:
        figures = of(currency)
        if purpose == Purpose.PLATFORM_CLEARING.value:
            if kind in COLLECTED and amount > 0:
                figures["gross_collected"] += amount
                figures["collected_by_kind"][kind] = \
                    figures["collected_by_kind"].get(kind, 0) + amount
            elif kind == "refund" and amount < 0:
                figures["refunds"] -= amount
            elif kind == "payout" and amount < 0:
                figures["payouts"] -= amount
            else:
                figures["other_clearing"] += amount
        elif purpose == Purpose.PARTICIPANT_PAYABLE.value:
            if kind != "payout":
                figures["participants"] -= amount
                figures["participants_by_kind"][kind] = \
                    figures["participants_by_kind"].get(kind, 0) - amount
                add(figures["participants_by_organization"], organization_id, -amount)
            else:
                add(figures["payouts_by_organization"], organization_id, amount)
        elif purpose in owed_keys:
            figures[owed_keys[purpose]] -= amount
            if purpose in (Purpose.BUYER_PREPAID.value, Purpose.BUYER_RECEIVABLE.value):
                parts = figures["buyer_credit"].setdefault(
                    organization_id, dict.fromkeys(BUYER_CREDIT_PARTS, 0))
                for part, share in credit_part(purpose, kind, amount, ref_type, ref_id):
                    parts[part] -= share
        else:  # payout_clearing: payouts in flight count as still owed by the platform
            figures["other_clearing"] -= amount
    for figures in report.values():
        figures["difference"] = (
            figures["participants"] + figures["platform_revenue"] + figures["tax_payable"]
            + figures["buyer_prepaid"] + figures["buyer_receivable"]
            - (figures["gross_collected"] - figures["refunds"]))
    if gateway is not None:
        ours = _card_payments(session, start, end)
        theirs = _processor_totals(gateway, {str(pid) for pid in ours["ids"]})
        for currency in set(ours["totals"]) | set(theirs):
            of(currency)["processor_difference"] = \
                ours["totals"].get(currency, 0) - theirs.get(currency, 0)
    return {"period": period, "from": start.isoformat(), "to": end.isoformat(),
            "currencies": report}


BUYER_CREDIT_PARTS = ("wallet", "overpaid", "underpaid", "other", "receivable")


def _buyer_credit_classifier(session: Session, rows: Iterable[Any]):
    """What each buyer-credit posting is: a function of (purpose, kind, amount, reference)
    giving the parts of ``BUYER_CREDIT_PARTS`` it moves, in debit-positive minor units.

    A bank receipt is money held against its invoice (``underpaid`` until the invoice is
    covered, when the payment out of that credit takes it back) except its ``excess_minor``,
    which was ``overpaid``. A refund out of prepaid credit returns a token pack (``wallet``) or
    a payment that was never applied to its order (``overpaid``)."""
    receipt_ids = {int(ref_id) for _, _, kind, _, _, ref_type, ref_id in rows
                   if kind == "bank_receipt" and ref_type == "bank_receipt"}
    refund_ids = {int(ref_id) for purpose, _, kind, _, _, ref_type, ref_id in rows
                  if kind == "refund" and ref_type == "refund"
                  and purpose == Purpose.BUYER_PREPAID.value}
    excess = dict(session.execute(select(BankReceipt.id, BankReceipt.excess_minor).where(
        BankReceipt.id.in_(receipt_ids))).all()) if receipt_ids else {}
    unapplied = set(session.scalars(
        select(Refund.id).join(Payment, Payment.id == Refund.payment_id)
        .where(Refund.id.in_(refund_ids), Payment.applied.is_(False)))) if refund_ids else set()

    def parts(purpose: str, kind: str, amount: int, ref_type: str | None,
              ref_id: str | None) -> list[tuple[str, int]]:
        if purpose == Purpose.BUYER_RECEIVABLE.value:
            return [("receivable", amount)]
        if kind == "usage" or (kind == "payment" and amount < 0):
            return [("wallet", amount)]  # tokens used from, or bought into, the wallet
        if kind == "payment":
            return [("underpaid", amount)]  # held bank money paying its invoice
        if kind == "bank_receipt" and ref_type == "bank_receipt":
            over = min(excess.get(int(ref_id), 0), -amount)
            return [("overpaid", -over), ("underpaid", amount + over)]
        if kind == "payment_unapplied":
            return [("overpaid", amount)]
        if kind == "refund":
            refund_id = int(ref_id) if ref_type == "refund" else None
            return [("overpaid" if refund_id in unapplied else "wallet", amount)]
        return [("other", amount)]

    return parts


def _card_payments(session: Session, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    payments = session.scalars(select(Payment).where(
        Payment.method == "card", Payment.status == "succeeded",
        Payment.succeeded_at >= start, Payment.succeeded_at < end)).all()
    totals: dict[str, int] = defaultdict(int)
    for payment in payments:
        totals[payment.currency] += payment.amount_minor
    # Matched by the tag our payments carry at the processor (order number / payment id).
    return {"ids": [payment_tag(payment.order.number, payment.id) for payment in payments],
            "totals": dict(totals)}


def _processor_totals(gateway: Any, payment_ids: set[str]) -> dict[str, int]:
    """The processor's succeeded PaymentIntents for our payments, summed per currency."""
    totals: dict[str, int] = defaultdict(int)
    page = gateway.client.v1.payment_intents.list(params={"limit": 100})
    for intent in page.auto_paging_iter():
        intent = intent.to_dict() if hasattr(intent, "to_dict") else intent
        metadata = intent.get("metadata") or {}
        if intent.get("status") == "succeeded" and \
                str(metadata.get("payment")) in payment_ids:
            totals[str(intent.get("currency")).upper()] += int(intent.get("amount"))
    return dict(totals)


# The scheduled close ----------------------------------------------------------------------------

def _close_job(ctx) -> dict:
    """Close the period, then sign a checkpoint of the audit chain, the ledger and the period's
    statements (in a transaction of its own: the checkpoint briefly holds posting back, which
    the close, however long, does not)."""
    signing_key = signing_key_from_settings(ctx.settings)
    with ctx.db.session() as session, session.begin():
        if is_closed(session, ctx.period):
            ctx.progress(f"statements of {ctx.period} are already closed; nothing done")
            return {"statements": 0, "already_closed": True}
        made = close_period(session, ctx.period, actor=None, review_days=int(
            ctx.settings.get("STATEMENT_REVIEW_DAYS", REVIEW_DAYS)))
        ctx.progress(f"statements of {ctx.period}: {len(made)} written")
        hashes = {statement.number: statement.content_hash for statement in made}
    with ctx.db.session() as session, session.begin():
        checkpoint = sign_checkpoint(session, signing_key, reason=f"close {ctx.period}",
                                     statements=hashes)
        number = checkpoint.number
    ctx.progress(f"checkpoint #{number} signed")
    return {"statements": len(made), "already_closed": False, "checkpoint": number}


def _register() -> None:
    from billing.jobs import MONTHLY, Job, monthly_previous, register

    register(Job(name="close-statements",
                 description="Close last month's settlement statements (drafts for review)",
                 run=_close_job,
                 trigger={"day": STATEMENT_CLOSE_DAY, "hour": 2, "minute": 0},
                 period_of=monthly_previous, period_pattern=MONTHLY, closes_period=True))


_register()
