"""Custom data (定制模式): a buyer's demand, suppliers' quotes, and the deal one quote becomes."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, Date, ForeignKey, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.core.db import Base, UTCDateTime, one_of, utcnow


class DemandStatus(enum.StrEnum):
    OPEN = "open"
    AWARDED = "awarded"
    CANCELLED = "cancelled"


class QuoteStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


class DealStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    DISPUTED = "disputed"


class Demand(Base):
    __tablename__ = "demands"
    __table_args__ = (
        CheckConstraint(one_of("status", DemandStatus), name="status_known"),
        CheckConstraint("budget_minor > 0", name="budget_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    sector: Mapped[str] = mapped_column(String(40))
    modality: Mapped[str] = mapped_column(String(40))
    volume: Mapped[str] = mapped_column(String(200))  # e.g. "50,000 records" or "200M tokens"
    # Minimum quality-report scores the delivery must reach, per dimension (0-100).
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    budget_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    deadline: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    quotes: Mapped[list[DealQuote]] = relationship(back_populates="demand",
                                                   order_by="DealQuote.id")


class DealQuote(Base):
    """A supplier's answer to a demand: milestones with amounts and acceptance criteria."""

    __tablename__ = "deal_quotes"
    __table_args__ = (
        UniqueConstraint("demand_id", "organization_id"),
        CheckConstraint(one_of("status", QuoteStatus), name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    demand_id: Mapped[int] = mapped_column(ForeignKey("demands.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    # The dataset the delivery will be a version of; its supply chain shares the payments.
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    # A ``pricing.CustomQuote`` in its to_dict form (milestones and their amounts).
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Quality-report dimension -> minimum score, checked on delivery.
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    demand: Mapped[Demand] = relationship(back_populates="quotes")


class Deal(Base):
    """An accepted quote: milestone orders, the delivered version and the acceptance check."""

    __tablename__ = "deals"
    __table_args__ = (
        CheckConstraint(one_of("status", DealStatus), name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    demand_id: Mapped[int] = mapped_column(ForeignKey("demands.id"), unique=True)
    quote_id: Mapped[int] = mapped_column(ForeignKey("deal_quotes.id"), unique=True)
    buyer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    supplier_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    status: Mapped[str] = mapped_column(String(20))
    delivered_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    # Per criterion: {"dimension": {"threshold": n, "score": m, "passed": bool}}.
    acceptance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dispute_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    demand: Mapped[Demand] = relationship()
    quote: Mapped[DealQuote] = relationship()
