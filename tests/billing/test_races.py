"""Money movements racing on really committed data (PostgreSQL): two refunds of one payment, eight
card payments of one order, eight bank receipts for one invoice. Each request comes from its own
client and connection, lined up on a barrier; exactly as much money moves as the rules allow,
and the ledger balances afterwards.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from billing import invoices, orders
from billing.payments import bank_transfer, card as payments
from billing.settlement import ledger
from billing.payments.gateway import StripeGateway
from billing.settlement.ledger import LedgerTransaction, Purpose
from billing.models import BankReceipt, Order, Payment, Refund
from market.accounts.models import User
from pricing.money import Money
from tests.billing.shop import buyer, listed_dataset, platform_finance
from tests.concurrency import at_once, fresh_app, postgresql_only
from tests.factories import english_client, make_key
from tests.fixtures import csrf_token, signed_in_session
from tests.stripe_server import WEBHOOK_SECRET

VISA = "4242424242424242"

pytestmark = postgresql_only(
    "row locks and concurrent money movements only mean something on PostgreSQL")


@pytest.fixture(scope="module")
def racing_app(database_url, tmp_path_factory):
    """One fresh, really committed database for the module; each test builds its own shop."""
    with fresh_app(database_url, tmp_path_factory.mktemp("races")) as app:
        yield app


@pytest.fixture()
def gateway(racing_app, stripe_server):
    """The app's card processor: a real StripeGateway on the session's localstripe."""
    gateway = StripeGateway(stripe_server.secret_key, api_base=stripe_server.url,
                            webhook_secret=WEBHOOK_SECRET)
    racing_app.extensions["market.gateway"] = gateway
    yield gateway
    racing_app.extensions["market.gateway"] = None


@pytest.fixture()
def shop(racing_app):
    """A listed dataset (supplier 60%, processor 40%), a buyer, platform finance; committed."""
    database = racing_app.extensions["market.db"]
    passwords = racing_app.extensions["market.passwords"]
    with database.session() as session, session.begin():
        made = listed_dataset(session, passwords, package_price="9800.00")
        buyer_org, _, buyer_principal = buyer(session, passwords)
        platform, finance_user, finance_principal = platform_finance(session, passwords)
        secrets = [make_key(session, buyer_org, scopes=("billing:read", "billing:write"))[1]
                   for _ in range(8)]
        return {"offer_id": made["package"].id, "supplier_id": made["supplier"].id,
                "processor_id": made["processor"].id, "buyer_id": buyer_org.id,
                "buyer": buyer_principal, "buyer_keys": secrets,
                "finance": finance_principal,
                "finance_ids": (finance_user.id, platform.id)}


def _finance_client(app, shop):
    """A platform finance person signed in on a client of their own (cookie and CSRF token)."""
    user_id, org_id = shop["finance_ids"]
    client = english_client(app)
    with app.extensions["market.db"].session() as session:
        signed_in_session(client, session, session.get(User, user_id), org_id)
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    return client


def _place_order(app, shop) -> int:
    with app.extensions["market.db"].session() as session, session.begin():
        order = orders.place_mall_order(session, shop["buyer"], [orders.CartItem(shop["offer_id"])],
                                        payment_method="bank_transfer")
        return order.id


def _pay_by_bank(app, shop, order_id) -> int:
    """Invoice the order and record the whole amount received; the payment's id."""
    settings = app.extensions["market.billing"]
    with app.extensions["market.db"].session() as session, session.begin():
        order = session.get(Order, order_id)
        invoice = invoices.issue_invoice(session, order, settings)
        bank_transfer.record_bank_receipt(session, shop["finance"], invoice, amount=order.total,
                                          received_on=dt.date.today(),
                                          bank_reference=f"IN-{order.number}", settings=settings)
        return order.payments[0].id


def _sound_ledger(session) -> None:
    assert ledger.unbalanced_transactions(session) == []
    assert ledger.trial_balance(session) == {"CNY": 0}


def _payable(session, organization_id) -> int:
    return ledger.balance(session, ledger.get_account(
        session, Purpose.PARTICIPANT_PAYABLE, "CNY", organization_id)).minor


def _prepaid(session, organization_id) -> int:
    return ledger.balance(session, ledger.get_account(
        session, Purpose.BUYER_PREPAID, "CNY", organization_id)).minor


def _two_full_refunds(app, shop, payment_id, amount: str):
    clients = [_finance_client(app, shop) for _ in range(2)]

    def refund(client, reference):
        return lambda: client.post(f"/api/v1/payments/{payment_id}/refunds", headers=client.csrf,
                                   json={"amount": {"amount": amount, "currency": "CNY"},
                                         "reason": "race", "bank_reference": reference})

    return at_once([refund(clients[0], "OUT-A"), refund(clients[1], "OUT-B")])


def _assert_refunded_once(app, shop, payment_id, responses):
    assert sorted(r.status_code for r in responses) == [201, 422], \
        [r.get_json() for r in responses]
    loser = next(r for r in responses if r.status_code == 422).get_json()
    assert "more" in loser["errors"]["amount"][0] and "remains" in loser["errors"]["amount"][0]
    with app.extensions["market.db"].session() as session:
        payment = session.get(Payment, payment_id)
        order = session.get(Order, payment.order_id)
        refunds = session.scalars(select(Refund).where(Refund.payment_id == payment_id)).all()
        assert [r.status for r in refunds] == ["succeeded"]
        assert payment.refunded_minor == payment.amount_minor == refunds[0].amount_minor
        assert order.status == "refunded" and order.refunded_minor == order.paid_minor
        # The split is mirrored exactly: every participant's payable is back to zero.
        assert _payable(session, shop["supplier_id"]) == 0
        assert _payable(session, shop["processor_id"]) == 0
        _sound_ledger(session)


def test_two_full_refunds_of_a_bank_transfer_one_wins(racing_app, shop):
    order_id = _place_order(racing_app, shop)
    payment_id = _pay_by_bank(racing_app, shop, order_id)

    responses = _two_full_refunds(racing_app, shop, payment_id, "10388.00")

    _assert_refunded_once(racing_app, shop, payment_id, responses)


def test_two_full_refunds_of_a_card_payment_only_one_reaches_the_processor(
        racing_app, shop, gateway):
    database = racing_app.extensions["market.db"]
    settings = racing_app.extensions["market.billing"]
    order_id = _place_order(racing_app, shop)
    payment = payments.pay_by_card(database, gateway, settings, order_id,
                                   principal=shop["buyer"], payment_method_ref=_card(gateway))
    assert payment.status == "succeeded"

    responses = _two_full_refunds(racing_app, shop, payment.id, "10388.00")

    _assert_refunded_once(racing_app, shop, payment.id, responses)
    at_processor = gateway.client.v1.refunds.list(params={"payment_intent": payment.gateway_ref})
    assert [r.amount for r in at_processor.data] == [1_038_800]
    # The processor itself would have taken a second full refund: the line is ours to hold.
    again = gateway.refund(payment_ref=payment.gateway_ref, amount_minor=1_038_800,
                           idempotency_key=f"over-refund-{payment.id}", metadata={})
    assert again.status == "succeeded"


def _card(gateway) -> str:
    """A card PaymentMethod, created as Stripe.js would from the numbers the buyer typed."""
    return gateway.client.v1.payment_methods.create(params={
        "type": "card",
        "card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": "123"}}).id


def test_eight_card_payments_of_one_order_charge_once(racing_app, shop, gateway):
    database = racing_app.extensions["market.db"]
    method = _card(gateway)
    payments.save_card(database, gateway, shop["buyer"], method)
    order_id = _place_order(racing_app, shop)
    clients = [english_client(racing_app) for _ in shop["buyer_keys"]]

    def pay(client, secret):
        return lambda: client.post(f"/api/v1/orders/{order_id}/pay",
                                   headers={"Authorization": f"Bearer {secret}"},
                                   json={"method": "card", "payment_method": method})

    responses = at_once([pay(c, s) for c, s in zip(clients, shop["buyer_keys"])])

    assert sorted(r.status_code for r in responses) == [200] + [409] * 7, \
        [r.get_json() for r in responses]
    with database.session() as session:
        order = session.get(Order, order_id)
        assert order.status == "paid" and order.paid_minor == order.total_minor
        assert [p.status for p in order.payments] == ["succeeded"]
        payment = order.payments[0]
        assert session.scalar(select(func.count()).select_from(LedgerTransaction).where(
            LedgerTransaction.kind == "payment",
            LedgerTransaction.reference_id == str(payment.id))) == 1
        _sound_ledger(session)
    # localstripe cannot filter intents by customer: list them all, keep this order's.
    intents = [i for i in gateway.client.v1.payment_intents.list(
                   params={"limit": 100}).auto_paging_iter()
               if i.to_dict().get("metadata", {}).get("order") == order.number]
    assert [(i.status, i.amount) for i in intents] == [("succeeded", order.total_minor)]


@pytest.mark.parametrize("share, paid_by", [(1, 1), (0.6, 2)], ids=["full-each", "60pct-each"])
def test_eight_bank_receipts_for_one_invoice_pay_it_once(racing_app, shop, share, paid_by):
    """Receipts are serialized on the invoice: those needed to cover it are recorded (the last
    one's excess is the buyer's credit); once it is paid, the rest are 409, recorded nowhere."""
    database = racing_app.extensions["market.db"]
    settings = racing_app.extensions["market.billing"]
    order_id = _place_order(racing_app, shop)
    with database.session() as session, session.begin():
        order = session.get(Order, order_id)
        invoice_id = invoices.issue_invoice(session, order, settings).id
        total = order.total_minor
    each = Money.from_minor(int(total * share), "CNY")
    clients = [_finance_client(racing_app, shop) for _ in range(8)]

    def receipt(client, i):
        return lambda: client.post(f"/api/v1/invoices/{invoice_id}/receipts", headers=client.csrf,
                                   json={"amount": {"amount": str(each.amount), "currency": "CNY"},
                                         "received_on": dt.date.today().isoformat(),
                                         "bank_reference": f"RACE-{invoice_id}-{i}"})

    responses = at_once([receipt(c, i) for i, c in enumerate(clients)])

    assert sorted(r.status_code for r in responses) == [200] * paid_by + [409] * (8 - paid_by), \
        [r.get_json() for r in responses]
    with database.session() as session:
        order = session.get(Order, order_id)
        assert order.status == "paid" and order.paid_minor == total
        assert [(p.status, p.amount_minor) for p in order.payments] == [("succeeded", total)]
        received = session.scalars(select(BankReceipt).where(
            BankReceipt.invoice_id == invoice_id)).all()
        assert len(received) == paid_by
        assert order.invoice.amount_received_minor == paid_by * each.minor
        excess = paid_by * each.minor - total
        assert sum(r.excess_minor for r in received) == excess
        # What was received beyond the invoice stays as the buyer's credit (a credit balance).
        assert _prepaid(session, shop["buyer_id"]) == -excess
        assert session.scalar(select(func.count()).select_from(LedgerTransaction).where(
            LedgerTransaction.kind == "payment",
            LedgerTransaction.reference_id == str(order.payments[0].id))) == 1
        _sound_ledger(session)
