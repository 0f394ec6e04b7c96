"""Subscriptions: the plan a buyer is on, its current period, allowance and dunning state."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger, CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.core.db import Base, UTCDateTime, one_of, utcnow


class SubscriptionStatus(enum.StrEnum):
    INCOMPLETE = "incomplete"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


class Subscription(Base):
    """One organization's subscription to one dataset's plan.

    ``incomplete`` until the first period is paid; ``past_due`` after a failed renewal, retried
    on the dunning schedule; ``suspended`` (no access) when the retries run out; ``cancelled``
    at last. The owning periods say what was billed for each stretch of time.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(one_of("status", SubscriptionStatus), name="status_known"),
        CheckConstraint("payment_method IN ('card', 'bank_transfer')", name="method_known"),
        CheckConstraint("tokens_used >= 0 AND tokens_used <= included_tokens + rollover_tokens",
                        name="allowance_not_exceeded"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))
    # A downgrade (or any change asked for at period end) waiting for the next renewal.
    pending_offer_id: Mapped[int | None] = mapped_column(ForeignKey("offers.id"))
    status: Mapped[str] = mapped_column(String(20), index=True)
    payment_method: Mapped[str] = mapped_column(String(20))
    current_period_start: Mapped[dt.date] = mapped_column(Date)
    current_period_end: Mapped[dt.date] = mapped_column(Date, index=True)  # exclusive
    included_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    rollover_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_used: Mapped[int] = mapped_column(BigInteger, default=0)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    dunning_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    periods: Mapped[list[SubscriptionPeriod]] = relationship(
        back_populates="subscription", order_by="SubscriptionPeriod.period_start")

    @property
    def tokens_remaining(self) -> int:
        return self.included_tokens + self.rollover_tokens - self.tokens_used


class SubscriptionPeriod(Base):
    """One billed stretch of a subscription; unique per start day, so a renewal runs once."""

    __tablename__ = "subscription_periods"
    __table_args__ = (UniqueConstraint("subscription_id", "period_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscription: Mapped[Subscription] = relationship(back_populates="periods")
