"""Who in finance may act on an order: platform finance on every one, an exchange's on the
orders for datasets listed through it, and nobody on an order their organization is a party
to. Anyone else is told the order does not exist."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import Order, Payment
from billing.orders import order_parties
from market.accounts.authz import Principal, refuse_party
from market.catalog.models import Listing
from market.core.errors import NotFound


def finance_may_act(session: Session, principal: Principal, order: Order) -> None:
    """Platform finance acts on every order; an exchange's finance on orders for datasets
    listed through it. Anyone else: the order does not exist for them."""
    if principal.is_platform:
        return
    if principal.is_exchange:
        dataset_ids = [line.dataset_id for line in order.lines if line.dataset_id]
        if dataset_ids and session.scalar(select(func.count()).select_from(Listing).where(
                Listing.dataset_id.in_(dataset_ids),
                Listing.exchange_id == principal.organization_id)):
            return
    raise NotFound("No such order.")


def finance_sees(session: Session, principal: Principal, order: Order) -> bool:
    """Whether ``finance_may_act`` lets the principal act on the order."""
    try:
        finance_may_act(session, principal, order)
    except NotFound:
        return False
    return True


def refuse_party_to_order(session: Session, principal: Principal, order: Order) -> None:
    """403 when the principal's organization is a party to the order (buyer, seller or
    supply-chain participant): it never moves money on it. Whether it may see the order at
    all (``finance_may_act``) is the caller's first check."""
    refuse_party(principal, order_parties(session, order), item="order",
                 action="confirm money for")


def get_payment_for_finance(session: Session, principal: Principal, payment_id: int, *,
                            for_update: bool = False) -> Payment:
    query = select(Payment).where(Payment.id == payment_id)
    payment = session.scalar(query.with_for_update() if for_update else query)
    if payment is None:
        raise NotFound("No such payment.")
    finance_may_act(session, principal, payment.order)
    return payment
