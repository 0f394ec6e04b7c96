"""Budgets of buyer organizations (数据采买纳入预算编制): lines, amendments, the records every
purchase leaves on a line, and the threshold alerts they fire."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.db import Base, UTCDateTime, utcnow

BUDGET_CATEGORIES = ("data_purchase", "compute", "model_services", "other")
RECORD_KINDS = ("commitment", "release", "expenditure", "refund")


class Budget(Base):
    """One organization's budget for one fiscal year, in one currency, with its policy."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("organization_id", "fiscal_year", "currency"),
        CheckConstraint("enforcement IN ('block', 'warn')", name="enforcement_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    fiscal_year: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    name: Mapped[str] = mapped_column(String(200))
    # block: a purchase beyond a line's remaining amount is refused; warn: allowed, flagged.
    enforcement: Mapped[str] = mapped_column(String(8), default="block")
    require_purchase_order: Mapped[bool] = mapped_column(default=False)
    thresholds: Mapped[list[int]] = mapped_column(JSON, default=lambda: [50, 80, 90, 100])
    alert_email: Mapped[str | None] = mapped_column(String(254))
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    lines: Mapped[list[BudgetLine]] = relationship(back_populates="budget",
                                                   order_by="BudgetLine.code")


class BudgetLine(Base):
    """A line of a budget. ``approved_minor`` is always ``original_minor`` plus its amendments;
    ``committed_minor`` is ordered and not yet paid, ``spent_minor`` paid (net of refunds)."""

    __tablename__ = "budget_lines"
    __table_args__ = (
        UniqueConstraint("budget_id", "code"),
        CheckConstraint("original_minor >= 0", name="original_not_negative"),
        CheckConstraint("approved_minor >= 0", name="approved_not_negative"),
        CheckConstraint("committed_minor >= 0", name="committed_not_negative"),
        CheckConstraint("category IN ('data_purchase', 'compute', 'model_services', 'other')",
                        name="category_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))
    project: Mapped[str | None] = mapped_column(String(200))
    sector: Mapped[str | None] = mapped_column(String(40))
    original_minor: Mapped[int] = mapped_column(BigInteger)
    approved_minor: Mapped[int] = mapped_column(BigInteger)
    committed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    spent_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # The line metered API usage posts to (one per budget at most).
    default_for_api: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    budget: Mapped[Budget] = relationship(back_populates="lines")

    @property
    def remaining_minor(self) -> int:
        return self.approved_minor - self.committed_minor - self.spent_minor


class BudgetAmendment(Base):
    """An increase, decrease or transfer of a line's approved amount, with its reason."""

    __tablename__ = "budget_amendments"
    __table_args__ = (
        CheckConstraint("kind IN ('increase', 'decrease', 'transfer_in', 'transfer_out')",
                        name="kind_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("budget_lines.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    counterpart_line_id: Mapped[int | None] = mapped_column(ForeignKey("budget_lines.id"))
    reason: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class BudgetRecord(Base):
    """What one purchase did to a line: committed, released, spent, refunded.

    ``amount_minor`` is the amount of the movement (always positive); its kind says which way.
    The dimensions (supplier, sector, dataset, month) let every report figure drill down to the
    records behind it. ``reference`` is unique, so the same movement is never recorded twice.
    """

    __tablename__ = "budget_records"
    __table_args__ = (
        CheckConstraint("kind IN ('commitment', 'release', 'expenditure', 'refund')",
                        name="kind_known"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        # Drill-downs page through a month's or a line's records in time order.
        Index("ix_budget_records_month_time", "month", "occurred_at", "id"),
        Index("ix_budget_records_line_time", "line_id", "occurred_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("budget_lines.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    supplier_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    sector: Mapped[str | None] = mapped_column(String(40), index=True)
    month: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM
    source: Mapped[str] = mapped_column(String(20))  # order | renewal | usage | refund ...
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    note: Mapped[str] = mapped_column(String(300), default="")
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class BudgetAlert(Base):
    """A threshold of a line, crossed: fired once, ever (the unique pair), then delivered."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("line_id", "threshold"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("budget_lines.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    threshold: Mapped[int] = mapped_column(Integer)
    used_minor: Mapped[int] = mapped_column(BigInteger)
    approved_minor: Mapped[int] = mapped_column(BigInteger)
    fired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Delivery by e-mail and webhook happens after the transaction, by the alert job.
    emailed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    webhook_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivery_error: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
