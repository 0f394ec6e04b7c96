"""What a settlement statement holds: a pure function of the participant's ledger.

A statement is one participant's ``participant_payable`` account in one currency over a window
ending at the period's cutoff: the opening is what was owed before the window, each ledger
entry in the window is one line traced to the payment, refund, usage day, adjustment or payout
that caused it, and the closing is what is owed at the cutoff. The window starts where the
previous close's cutoff ended (the period's first instant on the business calendar when no
earlier period was closed), so every entry lands in exactly one statement whatever cutoff an
operator chose; lines are dated by business day.

A statement's ``content_hash`` is SHA-256 over the canonical JSON of ``statement_content``;
``verify_statements`` (``flask billing verify-statements``) finds any statement whose stored
content no longer matches its hash or, once approved (``FROZEN``), the ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import IntegrityCheckpoint, Order, OrderLine, Payment, Refund
from billing.models.statements import FROZEN, SettlementStatement
from billing.settlement.checkpoints import signed_bodies
from billing.settlement.ledger import LedgerAccount, LedgerEntry, LedgerTransaction, Purpose
from market.catalog.models import Dataset
from market.core.db import business_calendar
from market.core.errors import InvalidInput
from pricing.money import Money
from pricing.periods import month_days

# What a payment's order kind is called on a statement line.
_ORDER_LINE_KINDS = {"mall": "sale", "token_pack": "sale", "subscription": "subscription",
                     "renewal": "subscription", "plan_change": "subscription",
                     "custom": "custom", "usage": "usage"}


# Periods and windows ----------------------------------------------------------------------------

def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    """The first day of the period and the first day after it."""
    try:
        return month_days(period)
    except ValueError:
        raise InvalidInput("A period is a month written YYYY-MM.", field="period") from None


def window_start(session: Session, period: str) -> dt.datetime:
    """Where a period's statements begin: the cutoff of the latest earlier close, else the
    period's first instant."""
    previous = session.scalar(select(func.max(SettlementStatement.cutoff))
                              .where(SettlementStatement.period < period))
    return previous if previous is not None else \
        business_calendar(session).start_of_day(period_bounds(period)[0])


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


def compute_all(session: Session, start: dt.datetime, cutoff: dt.datetime, *,
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
    return compute_all(session, start, cutoff, account_id=account.id).get(
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


def computed_content(computed: dict[str, Any], *, number: str, organization_id: int,
                     currency: str, period: str, cutoff: dt.datetime) -> dict[str, Any]:
    """What a statement with these ``compute_all`` figures says (the input of its hash)."""
    return _content(number=number, organization_id=organization_id, currency=currency,
                    period=period, cutoff=cutoff, opening=computed["opening"],
                    lines=computed["lines"], totals=computed["totals"],
                    closing=computed["closing"])


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


def mismatch(session: Session, statement: SettlementStatement) -> str | None:
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
    computed = _compute(session, account, window_start(session, statement.period),
                        statement.cutoff)
    return computed_content(computed, number=statement.number,
                            organization_id=statement.organization_id,
                            currency=statement.currency, period=statement.period,
                            cutoff=statement.cutoff)


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
            problem = mismatch(session, statement)
            if problem is not None:
                problems.append((statement.id, f"{statement.number}: {problem}"))
    return problems
