"""Settlement statements: what the marketplace owes each supply-chain participant per period.

A statement is computed from the ledger alone (the participant's payable account up to the
period's cutoff), reviewed by the exchange under maker-checker, and frozen by a content hash
once approved. Corrections are adjustments posted in a later period, never edits.

Frozen means frozen wherever the statement is flushed from: the models refuse, at flush, any
change to an approved or paid statement other than recording an approved one paid, its
deletion, and any line added to, changed on or removed from it (``Conflict``). Rows written
behind the ORM (raw SQL) are what ``verify_statements`` and the content hash catch.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, Date, ForeignKey, Integer, String, Text,
    UniqueConstraint, event, inspect,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from market.core.db import Base, UTCDateTime, one_of, utcnow
from market.core.errors import Conflict


class StatementStatus(enum.StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    DISPUTED = "disputed"
    PAID = "paid"


# The statuses in which a statement, and its lines, never change again.
FROZEN = (StatementStatus.APPROVED, StatementStatus.PAID)
# What may still change on an approved statement: it being paid.
_PAYMENT_FIELDS = frozenset({"status", "paid_at", "payout_method", "payout_reference"})


class SettlementStatement(Base):
    __tablename__ = "settlement_statements"
    __table_args__ = (
        UniqueConstraint("organization_id", "currency", "period"),
        CheckConstraint(one_of("status", StatementStatus), name="status_known"),
        CheckConstraint("closing_minor = opening_minor + activity_minor",
                        name="closing_adds_up"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    # The exchange that reviews it (the participant's datasets are listed through it).
    exchange_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    period: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)  # exclusive
    cutoff: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Owed to the participant (positive) before the period, in it, and after it.
    opening_minor: Mapped[int] = mapped_column(BigInteger)
    activity_minor: Mapped[int] = mapped_column(BigInteger)
    closing_minor: Mapped[int] = mapped_column(BigInteger)
    # Sums by kind of line, for the statement's summary: {"sale": "12.00", ...}.
    totals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    generated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    generated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    review_due_on: Mapped[dt.date | None] = mapped_column(Date)
    issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    disputed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    disputed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dispute_reason: Mapped[str | None] = mapped_column(Text)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    payout_method: Mapped[str | None] = mapped_column(String(20))  # bank_transfer | connect
    payout_reference: Mapped[str | None] = mapped_column(String(100))

    lines: Mapped[list[StatementLine]] = relationship(
        back_populates="statement", order_by="StatementLine.position",
        cascade="all, delete-orphan")


class StatementLine(Base):
    """One movement on the participant's payable account, traced to what caused it."""

    __tablename__ = "statement_lines"
    __table_args__ = (UniqueConstraint("statement_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    statement_id: Mapped[int] = mapped_column(
        ForeignKey("settlement_statements.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    # sale | subscription | custom | usage | royalty | refund | adjustment | payout | other
    kind: Mapped[str] = mapped_column(String(20))
    occurred_on: Mapped[dt.date] = mapped_column(Date)
    ledger_transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"))
    order_number: Mapped[str | None] = mapped_column(String(32))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    description: Mapped[str] = mapped_column(String(300))
    # The gross the share was taken from (the payment or usage it came from), and the share.
    gross_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # owed to the participant: +

    statement: Mapped[SettlementStatement] = relationship(back_populates="lines")


def _status_before(statement: SettlementStatement) -> str | None:
    """The status the statement had before the changes being flushed."""
    history = inspect(statement).attrs.status.history
    return history.deleted[0] if history.deleted else statement.status


def _of_frozen_statement(line: StatementLine) -> bool:
    statement = line.statement
    if statement is None and line.statement_id is not None:
        statement = Session.object_session(line).get(SettlementStatement, line.statement_id)
    return statement is not None and _status_before(statement) in FROZEN


@event.listens_for(SettlementStatement, "before_update")
def _frozen_statement_unchanged(_mapper, _connection, statement: SettlementStatement) -> None:
    before = _status_before(statement)
    if before not in FROZEN:
        return
    changed = {attr.key for attr in inspect(statement).attrs if attr.history.has_changes()}
    if changed and not (before == StatementStatus.APPROVED
                        and statement.status == StatementStatus.PAID
                        and changed <= _PAYMENT_FIELDS):
        raise Conflict("An approved statement never changes; corrections are adjustments in "
                       "a later period.", field="statement")


@event.listens_for(SettlementStatement, "before_delete")
def _frozen_statement_kept(_mapper, _connection, statement: SettlementStatement) -> None:
    if _status_before(statement) in FROZEN:
        raise Conflict("An approved statement is never deleted.", field="statement")


@event.listens_for(StatementLine, "before_update")
def _frozen_line_unchanged(_mapper, _connection, line: StatementLine) -> None:
    if Session.object_session(line).is_modified(line) and _of_frozen_statement(line):
        raise Conflict("The lines of an approved statement never change.", field="lines")


@event.listens_for(StatementLine, "before_insert")
@event.listens_for(StatementLine, "before_delete")
def _frozen_lines_kept(_mapper, _connection, line: StatementLine) -> None:
    if _of_frozen_statement(line):
        raise Conflict("The lines of an approved statement never change.", field="lines")


class AdjustmentStatus(enum.StrEnum):
    """``pending_approval`` at or above the dual-control threshold, then ``posted`` (with its
    ledger transaction) or ``rejected``."""

    PENDING_APPROVAL = "pending_approval"
    POSTED = "posted"
    REJECTED = "rejected"


class StatementAdjustment(Base):
    """A correction of a disputed statement, posted to the ledger in a later period."""

    __tablename__ = "statement_adjustments"
    __table_args__ = (
        CheckConstraint("amount_minor <> 0", name="amount_not_zero"),
        CheckConstraint(one_of("status", AdjustmentStatus), name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("settlement_statements.id"),
                                              index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # + owed more to the participant
    reason: Mapped[str] = mapped_column(Text)
    # Why, from a fixed list (ADJUSTMENT_REASON_CODES), and the evidence: the statement lines
    # it corrects (their amounts bound it) and a reference to the supporting document.
    reason_code: Mapped[str] = mapped_column(String(40), default="other")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=AdjustmentStatus.POSTED)
    ledger_transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transactions.id"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by_org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    created_by_role: Mapped[str | None] = mapped_column(String(20))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
