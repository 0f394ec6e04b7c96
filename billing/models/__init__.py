"""Billing's tables, one module per area; import from here."""

from billing.models.budgets import Budget, BudgetAlert, BudgetAmendment, BudgetLine, BudgetRecord
from billing.models.deals import Deal, DealQuote, DealStatus, Demand, DemandStatus, QuoteStatus
from billing.models.metering import KeyUsageMonth, UsageCounter
from billing.models.operations import (
    IntegrityCheckpoint, JobRun, JobRunStatus, PaymentAnomaly, PaymentProfile, WebhookEvent,
)
from billing.models.orders import (
    LIVE_PAYMENT_STATUSES, BankReceipt, Invoice, InvoiceStatus, Order, OrderLine, OrderStatus,
    Payment, PaymentStatus, ReceiptStatus, Refund, RefundStatus,
)
from billing.models.rights import (
    Certificate, CreditLine, CreditLineChange, CreditLineChangeStatus, Entitlement, TokenWallet,
    UsageEvent, WalletEntry,
)
from billing.models.statements import (
    AdjustmentStatus, SettlementStatement, StatementAdjustment, StatementLine, StatementStatus,
)
from billing.models.subscriptions import Subscription, SubscriptionPeriod, SubscriptionStatus

__all__ = [
    "AdjustmentStatus", "BankReceipt", "Budget", "BudgetAlert", "BudgetAmendment", "BudgetLine",
    "BudgetRecord", "Certificate", "CreditLine", "CreditLineChange", "CreditLineChangeStatus",
    "Deal", "DealQuote", "DealStatus", "Demand", "DemandStatus", "Entitlement",
    "IntegrityCheckpoint", "Invoice", "InvoiceStatus", "JobRun", "JobRunStatus",
    "KeyUsageMonth", "LIVE_PAYMENT_STATUSES", "Order", "OrderLine", "OrderStatus", "Payment",
    "PaymentAnomaly", "PaymentProfile", "PaymentStatus", "QuoteStatus", "ReceiptStatus",
    "Refund", "RefundStatus", "SettlementStatement", "StatementAdjustment", "StatementLine",
    "StatementStatus", "Subscription", "SubscriptionPeriod", "SubscriptionStatus",
    "TokenWallet", "UsageCounter", "UsageEvent", "WalletEntry", "WebhookEvent",
]
