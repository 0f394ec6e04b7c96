"""The fulfilment table names every kind of order, and an order whose card payment is under way
is not invoiced for bank transfer (whoever asks: the API, the storefront, a job)."""

from __future__ import annotations

import pytest

from billing.errors import CardPaymentInFlight
from billing.fulfilment import FULFILMENT
from billing.models import Payment
from billing.models.orders import ORDER_KINDS
from billing.orders import CartItem, place_mall_order
from billing import invoices
from tests.billing import shop as shopping


def test_every_kind_of_order_is_fulfilled_somehow():
    assert set(FULFILMENT) == set(ORDER_KINDS)


@pytest.mark.parametrize("status", ["created", "processing", "requires_action"])
def test_no_invoice_while_a_card_payment_is_in_flight(session, passwords, settings, status):
    shop = shopping.listed_dataset(session, passwords)
    _, _, shopper = shopping.buyer(session, passwords)
    order = place_mall_order(session, shopper, [CartItem(shop["package"].id)],
                             payment_method="card")
    session.add(Payment(order=order, organization_id=order.organization_id, method="card",
                        status=status, amount_minor=order.total_minor, currency=order.currency,
                        idempotency_key=f"order:{order.id}:payment:1"))
    session.flush()

    with pytest.raises(CardPaymentInFlight, match="in progress") as refused:
        invoices.issue_invoice(session, order, settings)
    assert (refused.value.status, refused.value.field, refused.value.code) == (
        409, "order", "conflict")
    assert order.invoice is None
