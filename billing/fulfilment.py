"""What paying, refunding or failing to collect an order does, by the order's kind.

``FULFILMENT`` is the one table: for each kind of order, what a succeeded payment grants
(``paid``, in the payment's transaction, after the ledger posting), what a full refund takes
back (``refunded``) and what a failed card payment sets going (``payment_failed``). The
payments code (``billing.payments.settle``, ``card``, ``refunds``) calls it and knows nothing
of subscriptions, deals or credit lines; those know nothing of how they were paid.

=============  ==========================================  ============================
kind           paid                                        refunded
=============  ==========================================  ============================
mall           entitlements, a certificate per package     entitlements revoked
token_pack     tokens in the wallet                        unspent tokens taken back
subscription,  the subscription activated, renewed or      the subscription ends if the
renewal,       changed (``billing.subscriptions``)         refund paid its current period
plan_change
custom         the final milestone delivers                entitlements revoked
usage          the credit line's used amount released      entitlements revoked
=============  ==========================================  ============================

A failed renewal charge is the next step of dunning; other kinds wait for another payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from sqlalchemy.orm import Session

from billing import certificates, deals, entitlements, subscriptions
from billing.context import BillingSettings
from billing.metering.credit_lines import release_paid_usage
from billing.models import Order, Payment


@dataclass(frozen=True)
class Fulfilment:
    paid: Callable[[Session, Order, BillingSettings], None]
    refunded: Callable[[Session, Order, str], None] = entitlements.revoke_order
    payment_failed: Callable[[Session, Order, Payment | None, BillingSettings], None] = (
        lambda session, order, payment, settings: None)


def _grant_purchase(session: Session, order: Order, settings: BillingSettings) -> None:
    """A mall or token-pack order: its entitlements, and a certificate per data package."""
    entitlements.grant_order(session, order)
    session.flush()  # certificates name the lines, whose ids must exist
    for line in order.lines:
        if line.kind == "mall_package":
            certificates.issue(session, order, line, settings.certificate_key)


def _subscription_paid(session: Session, order: Order, settings: BillingSettings) -> None:
    subscriptions.on_paid(session, order)


def _subscription_refunded(session: Session, order: Order, reason: str) -> None:
    subscriptions.on_refunded(session, order)


def _usage_paid(session: Session, order: Order, settings: BillingSettings) -> None:
    release_paid_usage(session, order)


_PURCHASE = Fulfilment(paid=_grant_purchase)
_SUBSCRIPTION = Fulfilment(paid=_subscription_paid, refunded=_subscription_refunded)

FULFILMENT: Mapping[str, Fulfilment] = MappingProxyType({
    "mall": _PURCHASE,
    "token_pack": _PURCHASE,
    "subscription": _SUBSCRIPTION,
    "renewal": Fulfilment(paid=_subscription_paid, refunded=_subscription_refunded,
                          payment_failed=subscriptions.on_renewal_failed),
    "plan_change": _SUBSCRIPTION,
    "custom": Fulfilment(paid=deals.on_milestone_paid),
    "usage": Fulfilment(paid=_usage_paid),
})
