"""Billing's tables, one module per area; import from here."""

from billing.models.budgets import Budget, BudgetAlert, BudgetAmendment, BudgetLine, BudgetRecord
from billing.models.deals import Deal, DealQuote, Demand
from billing.models.metering import KeyUsageMonth, UsageCounter
from billing.models.operations import (
    IntegrityCheckpoint, JobRun, PaymentAnomaly, PaymentProfile, WebhookEvent,
)
from billing.models.orders import (
    LIVE_PAYMENT_STATUSES, BankReceipt, Invoice, Order, OrderLine, Payment, Refund,
)
from billing.models.rights import (
    Certificate, CreditLine, CreditLineChange, Entitlement, TokenWallet, UsageEvent, WalletEntry,
)
from billing.models.statements import SettlementStatement, StatementAdjustment, StatementLine
from billing.models.subscriptions import Subscription, SubscriptionPeriod

__all__ = [
    "BankReceipt", "Budget", "BudgetAlert", "BudgetAmendment", "BudgetLine", "BudgetRecord", "Certificate", "CreditLine", "CreditLineChange", "Deal", "DealQuote", "Demand", "Entitlement",
    "IntegrityCheckpoint", "Invoice", "JobRun", "KeyUsageMonth", "UsageCounter", "LIVE_PAYMENT_STATUSES", "Order", "OrderLine", "Payment",
    "PaymentAnomaly", "PaymentProfile", "Refund", "SettlementStatement", "StatementAdjustment", "StatementLine", "Subscription", "SubscriptionPeriod", "TokenWallet",
    "UsageEvent", "WalletEntry", "WebhookEvent",
]
