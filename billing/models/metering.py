"""Counters the metered API keeps exact under concurrency: a key's tokens per month, and each
organization's rated usage per dataset and month (for graduated prices charged call by call)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from market.core.db import Base, UTCDateTime, utcnow


class KeyUsageMonth(Base):
    """Tokens charged to one API key in one month; its monthly cap is checked against this row
    by a conditional update, so racing calls can never take it past the cap."""

    __tablename__ = "key_usage_months"
    __table_args__ = (
        UniqueConstraint("api_key_id", "period"),
        CheckConstraint("tokens >= 0", name="tokens_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class UsageCounter(Base):
    """An organization's rated tokens of one dataset and kind in one month.

    A graduated or volume price depends on the month's total, so each call is charged the
    difference between the rating of the total after it and before it: the month's charges then
    add up exactly to the rating of its total, however the calls are spread.
    """

    __tablename__ = "usage_counters"
    __table_args__ = (
        UniqueConstraint("organization_id", "dataset_id", "kind", "period"),
        CheckConstraint("tokens >= 0", name="tokens_not_negative"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(10))  # data | overage | royalty | wallet
    period: Mapped[str] = mapped_column(String(7))
    currency: Mapped[str] = mapped_column(String(3))
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
