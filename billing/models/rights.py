"""What a buyer holds after paying: entitlements, token wallets, transaction certificates."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.core.db import Base, UTCDateTime, one_of, utcnow


class Entitlement(Base):
    """A right to download a dataset version or call its records through the API, until when."""

    __tablename__ = "entitlements"
    __table_args__ = (
        CheckConstraint("kind IN ('download', 'api')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    # Which versions it covers: one (pinned), or None: every version that passed the exchange's
    # review (``market.catalog.listings.reviewed_version_ids``), so a subscription follows new
    # versions once they are reviewed, and never a draft.
    version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    kind: Mapped[str] = mapped_column(String(10))
    order_line_id: Mapped[int | None] = mapped_column(ForeignKey("order_lines.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"),
                                                        index=True)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # None: perpetual
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def covers(self) -> str:
        """``pinned`` (``version_id`` only) or ``reviewed`` (every reviewed version)."""
        return "pinned" if self.version_id is not None else "reviewed"

    def active_at(self, moment: dt.datetime) -> bool:
        return (self.revoked_at is None and self.valid_from <= moment
                and (self.valid_until is None or moment < self.valid_until))


class TokenWallet(Base):
    """Prepaid tokens of one organization, for one dataset or (scope ``platform``) any."""

    __tablename__ = "token_wallets"
    __table_args__ = (
        UniqueConstraint("organization_id", "scope"),
        CheckConstraint("balance_tokens >= 0", name="balance_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    scope: Mapped[str] = mapped_column(String(40))  # "platform" or "dataset:<id>"
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    balance_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    entries: Mapped[list[WalletEntry]] = relationship(back_populates="wallet",
                                                      order_by="WalletEntry.id")


class WalletEntry(Base):
    """Every change of a wallet's balance, append-only: grants, debits, revocations."""

    __tablename__ = "wallet_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('grant', 'debit', 'revoke', 'adjust')", name="kind_known"),
        CheckConstraint("delta_tokens <> 0", name="delta_not_zero"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("token_wallets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    delta_tokens: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    order_line_id: Mapped[int | None] = mapped_column(ForeignKey("order_lines.id"), index=True)
    # A usage event's request id, or another natural key, so the same change is applied once.
    reference: Mapped[str | None] = mapped_column(String(200), unique=True)
    note: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    wallet: Mapped[TokenWallet] = relationship(back_populates="entries")


class Certificate(Base):
    """A transaction certificate (数据交易凭证) for one purchased line, verifiable by anyone.

    ``payload`` is what the certificate states; ``digest`` is the SHA-256 of its canonical JSON
    and ``signature`` an HMAC of the digest under the platform's key, so the verification page
    can tell a genuine certificate from an edited one.
    """

    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id"), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditLine(Base):
    """Postpaid pay-as-you-go for an organization: usage up to the limit, invoiced monthly."""

    __tablename__ = "credit_lines"
    __table_args__ = (
        UniqueConstraint("organization_id", "currency"),
        CheckConstraint("limit_minor >= 0", name="limit_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    # Charged and not yet invoiced-and-paid; a metered call may not take it past the limit.
    used_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    payment_method: Mapped[str] = mapped_column(String(20), default="bank_transfer")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when platform finance closes the line: no further calls on credit; what was used is
    # still invoiced. Reopening the line clears it.
    suspended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class CreditLineChangeStatus(enum.StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"


class CreditLineChange(Base):
    """A request by platform finance to open, change or close a credit line (maker-checker).

    Applied at once unless it raises the limit by more than the approval threshold; then it is
    ``pending`` until a second finance person (never its maker) approves or rejects it.
    ``limit_before_minor`` is the limit the maker saw: an approval applies only if it still
    holds, so an approver never signs off a change made against a line that moved since.
    """

    __tablename__ = "credit_line_changes"
    __table_args__ = (
        CheckConstraint("kind IN ('open', 'change', 'close')", name="kind_known"),
        CheckConstraint(one_of("status", CreditLineChangeStatus), name="status_known"),
        CheckConstraint("limit_minor >= 0", name="limit_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    credit_line_id: Mapped[int | None] = mapped_column(ForeignKey("credit_lines.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    limit_before_minor: Mapped[int | None] = mapped_column(BigInteger)
    payment_method: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(10), index=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(String(500))


class UsageEvent(Base):
    """One charged call or ingested usage report; append-only, accepted once per request id."""

    __tablename__ = "usage_events"
    __table_args__ = (
        CheckConstraint("tokens >= 0", name="tokens_not_negative"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint("paid_by IN ('subscription', 'wallet', 'postpaid', 'free')",
                        name="paid_by_known"),
        # Only the indexes a query filters by: every ingested event updates each of them. The
        # usage report and page read an organization's events by occurrence, monthly
        # invoicing an organization's month, recognition and budgets a span of recording
        # time. Keys, datasets and orders are joined from events, never searched for them.
        Index("ix_usage_events_organization_time", "organization_id", "occurred_at"),
        Index("ix_usage_events_organization_period", "organization_id", "period"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Compared byte by byte on PostgreSQL ("C" collation): an opaque id, never sorted for a
    # person, and a batch looks up and inserts a thousand of them (2-3x faster than the
    # database's linguistic collation).
    request_id: Mapped[str] = mapped_column(
        String(200).with_variant(String(200, collation="C"), "postgresql"), unique=True)
    # What a metered call asked (method, path, query), so a retry under the same
    # Idempotency-Key is told apart from a different request reusing the key. None for a
    # royalty report: its own columns hold what was reported.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The references written with the event carry no foreign-key constraints: checking them
    # was more than half the cost of inserting a batch of a thousand events. The metering
    # services take them from rows read in the same transaction (the caller's key, its
    # organization, the dataset and version served, the revision in force), none of those rows
    # is ever deleted, and recognition refuses a day whose events point at a missing one
    # (``billing.metering.recognition.dangling_references``).
    organization_id: Mapped[int] = mapped_column(Integer)
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    dataset_id: Mapped[int] = mapped_column(Integer)
    version_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # data | royalty
    # A royalty event's model, as the reporter names it (the evidence behind the charge).
    model: Mapped[str | None] = mapped_column(String(200))
    tokens: Mapped[int] = mapped_column(BigInteger)
    # Price per million tokens as a decimal string (sub-minor precision).
    unit_price: Mapped[str] = mapped_column(String(40))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # What the tokens are worth at list price, whatever paid (``billing.metering.charge``'s notes), in
    # millionths of the minor unit: a few dozen tokens are worth a fraction of a fen.
    list_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    paid_by: Mapped[str] = mapped_column(String(12))
    supply_chain_revision_id: Mapped[int | None] = mapped_column(Integer)
    # The billing month the event counts in (YYYY-MM): late events land in the open one.
    period: Mapped[str] = mapped_column(String(7))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # The postpaid usage order that billed it, once invoiced.
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
