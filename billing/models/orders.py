"""Orders, their lines, payments, refunds, bank-transfer invoices and receipts.

An order is what a buyer owes for one purchase; its lines snapshot the offer's terms, the tax
and the supply-chain revision in force, so later price or share changes never rewrite it.
Amounts are integer minor units with the currency beside them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.core.db import Base, UTCDateTime, one_of, utcnow
from pricing.money import Money

ORDER_KINDS = ("mall", "subscription", "renewal", "plan_change", "custom", "token_pack", "usage")


class OrderStatus(enum.StrEnum):
    """``scheduled``: a later milestone of a deal, not payable until the deal reaches it."""

    SCHEDULED = "scheduled"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class PaymentStatus(enum.StrEnum):
    """``canceled`` as the card processor spells it (an order is ``cancelled``)."""

    CREATED = "created"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# A payment in one of these may still take the buyer's money: the order takes no other.
LIVE_PAYMENT_STATUSES = (PaymentStatus.CREATED, PaymentStatus.PROCESSING,
                         PaymentStatus.REQUIRES_ACTION, PaymentStatus.SUCCEEDED)


class RefundStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class InvoiceStatus(enum.StrEnum):
    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"


class ReceiptStatus(enum.StrEnum):
    """``pending_approval`` at or above the dual-control threshold (nothing is posted until a
    second person confirms it), then ``confirmed`` or ``rejected``."""

    PENDING_APPROVAL = "pending_approval"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


# One live receipt per bank transfer; a rejected one frees its reference for the corrected
# record.
_LIVE_RECEIPT = f"status <> '{ReceiptStatus.REJECTED}'"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(one_of("kind", ORDER_KINDS), name="kind_known"),
        CheckConstraint(one_of("status", OrderStatus), name="status_known"),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total_adds_up"),
        CheckConstraint("refunded_minor >= 0 AND refunded_minor <= paid_minor",
                        name="refund_within_paid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    paid_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # card | bank_transfer | wallet (postpaid usage settled from prepaid credit)
    payment_method: Mapped[str] = mapped_column(String(20))
    # A natural key for orders that jobs create (a renewal period, a month's usage), so that a
    # job run twice creates nothing twice.
    billing_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"),
                                                        index=True)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id"), index=True)
    milestone: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    # The buyer's budget line the order is charged to, and its purchase-order number.
    budget_line_id: Mapped[int | None] = mapped_column(ForeignKey("budget_lines.id"),
                                                       index=True)
    purchase_order_number: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    payable_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.position", cascade="all, delete-orphan",
        lazy="selectin")
    payments: Mapped[list[Payment]] = relationship(back_populates="order",
                                                   order_by="Payment.id")
    invoice: Mapped[Invoice | None] = relationship(back_populates="order", uselist=False)

    @property
    def total(self) -> Money:
        return Money.from_minor(self.total_minor, self.currency)


class OrderLine(Base):
    """One thing bought, with the terms, tax and supply chain it was sold under."""

    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total_adds_up"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"),
                                          index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(300))
    offer_id: Mapped[int | None] = mapped_column(ForeignKey("offers.id"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    # Tokens the line grants (a package's API tokens, a token pack, a period's allowance).
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    tax_rate: Mapped[str] = mapped_column(String(12))
    # The offer's terms as sold (``pricing`` to_dict form) and the quote's line items.
    terms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    supply_chain_revision_id: Mapped[int | None] = mapped_column(
        ForeignKey("supply_chain_revisions.id"))
    # [[participant_key, bps], ...] of that revision; empty: all of the net is platform revenue.
    shares: Mapped[list[Any]] = mapped_column(JSON, default=list)

    order: Mapped[Order] = relationship(back_populates="lines")

    @property
    def currency(self) -> str:
        return self.order.currency


class Payment(Base):
    """One attempt to collect an order's total, by card (Stripe) or bank transfer.

    The row is written before the gateway is called and its outcome after, each in its own
    transaction; ``idempotency_key`` (derived from our id) makes a retried gateway call safe.
    """

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(one_of("status", PaymentStatus), name="status_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("refunded_minor >= 0 AND refunded_minor <= amount_minor",
                        name="refund_within_amount"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))  # card | bank_transfer
    status: Mapped[str] = mapped_column(String(20), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    gateway_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    off_session: Mapped[bool] = mapped_column(default=False)
    # Whether this payment paid its order (False for a late duplicate kept as buyer credit).
    applied: Mapped[bool] = mapped_column(default=False)
    failure_code: Mapped[str | None] = mapped_column(String(100))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    # How the gross was split when it succeeded: {participant_key|tax|platform: "amount"}.
    split: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Refunded or reserved by a refund in flight; never more than the amount.
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    succeeded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    order: Mapped[Order] = relationship(back_populates="payments")
    refunds: Mapped[list[Refund]] = relationship(back_populates="payment", order_by="Refund.id")

    @property
    def amount(self) -> Money:
        return Money.from_minor(self.amount_minor, self.currency)


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint(one_of("status", RefundStatus), name="status_known"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500), default="")
    gateway_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    # What each part of the split gave back: {participant_key|tax|platform: "amount"}.
    parts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    failure_message: Mapped[str | None] = mapped_column(String(500))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    payment: Mapped[Payment] = relationship(back_populates="refunds")


class Invoice(Base):
    """A bill for one order, paid by bank transfer against its payment reference (对公转账)."""

    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(one_of("status", InvoiceStatus), name="status_known"),
        CheckConstraint("amount_received_minor >= 0", name="received_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_due_minor: Mapped[int] = mapped_column(BigInteger)
    amount_received_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the buyer writes on the transfer, so finance can match it (with a check character).
    payment_reference: Mapped[str] = mapped_column(String(32), unique=True)
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_on: Mapped[dt.date] = mapped_column(Date)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    order: Mapped[Order] = relationship(back_populates="invoice")
    receipts: Mapped[list[BankReceipt]] = relationship(back_populates="invoice",
                                                       order_by="BankReceipt.id")

    @property
    def outstanding_minor(self) -> int:
        return max(self.amount_due_minor - self.amount_received_minor, 0)


class BankReceipt(Base):
    """Money seen on the platform's bank account against an invoice, recorded by finance."""

    __tablename__ = "bank_receipts"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(one_of("status", ReceiptStatus), name="status_known"),
        Index("uq_bank_receipts_live_reference", "bank_reference", unique=True,
              sqlite_where=text(_LIVE_RECEIPT), postgresql_where=text(_LIVE_RECEIPT)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    received_on: Mapped[dt.date] = mapped_column(Date)
    bank_reference: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=ReceiptStatus.CONFIRMED)
    # What went beyond the amount due: kept as the buyer's prepaid credit.
    excess_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The maker's organization and member role when recorded, for the checker rule.
    recorded_by_org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    recorded_by_role: Mapped[str | None] = mapped_column(String(20))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="receipts")
