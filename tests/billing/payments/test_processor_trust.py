"""What the card processor says is applied only when it is about what we asked for, through the
real stripe SDK against localstripe: a stranger's intent naming our payment is refused and kept
as an anomaly; a refund whose answer is lost (a proxy carries the call out and drops the answer)
is asked about before it is retried and ends as one refund at the processor and the same in the
ledger; refund.failed gives the money back to what can be refunded; refunds made in the
processor's dashboard are booked or flagged by reconciliation; and simultaneous first deliveries
of one event never answer 500."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from billing.payments import card as payments, refunds
from billing.settlement import ledger
from billing.payments.gateway import StripeGateway
from billing.settlement.ledger import LedgerAccount, LedgerEntry, LedgerTransaction, Purpose
from billing.models import Order, Payment, PaymentAnomaly, Refund, WebhookEvent
from tests.billing.shop import listed_dataset
from tests.concurrency import at_once, postgresql_only
from tests.factories import english_client
from tests.lossy_proxy import LossyProxy
from tests.stripe_server import WEBHOOK_SECRET, authenticate, card, stripe_signature

GOOD, THREE_DS = "4242424242424242", "4000002760003184"
ZERO = dt.timedelta(0)


# Card payments on, for every test here: the gateway points at the local Stripe server.
pytestmark = pytest.mark.usefixtures("card_app")


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, package_price="100.00")


@pytest.fixture()
def proxy(stripe_server, card_app, monkeypatch):
    """The app's processor reached through a lossy proxy."""
    proxy = LossyProxy(stripe_server.url)
    lossy = StripeGateway(stripe_server.secret_key, api_base=proxy.url,
                          webhook_secret=WEBHOOK_SECRET)
    monkeypatch.setitem(card_app.extensions, "market.gateway", lossy)
    yield proxy
    proxy.close()


def _paid(buyer_client, shop, stripe_gateway, number=GOOD):
    order = buyer_client.post("/api/v1/orders", headers=buyer_client.csrf, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "card"}).get_json()
    paid = buyer_client.post(f"/api/v1/orders/{order['id']}/pay", headers=buyer_client.csrf,
                             json={"method": "card",
                                   "payment_method": card(stripe_gateway, number)})
    assert paid.status_code == 200, paid.get_json()
    return order, paid.get_json()["payment"]


def _signed(event: dict) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    return body, stripe_signature(body, WEBHOOK_SECRET)


def _deliver(client, event: dict):
    body, signature = _signed(event)
    return client.post("/webhooks/stripe", data=body, content_type="application/json",
                       headers={"Stripe-Signature": signature})


def _at_processor(stripe_gateway, intent_ref):
    listed = stripe_gateway.client.v1.refunds.list(params={"payment_intent": intent_ref})
    return sorted(r.amount for r in listed.auto_paging_iter())


def _clearing(session, refund_id) -> int:
    """What the ledger paid back for a refund: the platform clearing account's credit."""
    rows = session.scalars(select(LedgerEntry.amount_minor)
                           .join(LedgerTransaction,
                                 LedgerTransaction.id == LedgerEntry.transaction_id)
                           .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
                           .where(LedgerTransaction.kind == "refund",
                                  LedgerTransaction.reference_id == str(refund_id),
                                  LedgerAccount.purpose == Purpose.PLATFORM_CLEARING.value))
    return -sum(rows)


# The stranger's intent ------------------------------------------------------------------------

def test_a_strangers_intent_naming_our_payment_is_refused_and_kept_as_an_anomaly(
        buyer_client, finance_client, client, shop, stripe_gateway, stripe_server, card_app,
        session):
    order = buyer_client.post("/api/v1/orders", headers=buyer_client.csrf, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "card"}).get_json()
    pending = buyer_client.post(f"/api/v1/orders/{order['id']}/pay", headers=buyer_client.csrf,
                                json={"method": "card", "payment_method": card(
                                    stripe_gateway, THREE_DS)}).get_json()["payment"]
    assert pending["status"] == "requires_action"
    payment = session.get(Payment, pending["id"])
    ours = payment.gateway_ref
    # Anyone with the account's key: 0.01, our customer, our metadata, confirmed.
    stranger = stripe_gateway.client.v1.payment_intents.create(params={
        "amount": 1, "currency": "cny", "customer": stripe_gateway.client.v1.payment_intents
        .retrieve(ours).customer, "payment_method": card(stripe_gateway, GOOD),
        "payment_method_types": ["card"], "confirm": True,
        "metadata": {"payment_id": str(payment.id), "order": order["number"],
                     "payment": payments.payment_tag(order["number"], payment.id)}})
    assert stranger.status == "succeeded"
    event = {"id": "evt_stranger_1", "type": "payment_intent.succeeded",
             "data": {"object": stranger.to_dict()}}
    response = _deliver(client, event)
    assert response.status_code == 200 and response.get_json()["outcome"] == \
        "no payment of ours"
    session.refresh(payment)
    assert payment.status == "requires_action" and payment.gateway_ref == ours
    assert session.get(Order, order["id"]).status == "awaiting_payment"
    assert session.scalar(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.kind == "payment")) == 0
    anomaly = session.scalar(select(PaymentAnomaly))
    assert (anomaly.kind, anomaly.object_ref, anomaly.payment_id, anomaly.amount_minor) == \
        ("stranger_intent", stranger.id, payment.id, 1)

    # Before our intent id is recorded (a crash), reconciliation finds both by the tag: ours
    # is taken by its amount, the stranger's is not.
    payment.gateway_ref = None
    session.commit()
    db, settings = card_app.extensions["market.db"], card_app.extensions["market.billing"]
    counts = payments.reconcile(db, stripe_gateway, settings, older_than=ZERO)
    assert counts["anomalies"] == 1 and counts["succeeded"] == 0
    session.refresh(payment)
    assert payment.gateway_ref == ours and payment.status == "requires_action"
    # Our own intent, paid, is applied.
    authenticate(stripe_server, stripe_gateway.retrieve_payment_intent(ours), success=True)
    assert payments.reconcile(db, stripe_gateway, settings, older_than=ZERO)["succeeded"] == 1
    session.refresh(payment)
    assert payment.status == "succeeded" and payment.amount_minor == 10_600

    listed = finance_client.get("/api/v1/finance/payment-anomalies")
    assert listed.status_code == 200
    assert [(a["kind"], a["object_ref"]) for a in listed.get_json()["items"]] == [
        ("stranger_intent", stranger.id)]
    page = finance_client.get("/reconciliation")
    assert page.status_code == 200 and stranger.id in page.get_data(as_text=True)


def test_our_intent_with_another_amount_is_not_applied(buyer_client, client, shop,
                                                      stripe_gateway, session):
    order = buyer_client.post("/api/v1/orders", headers=buyer_client.csrf, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "card"}).get_json()
    pending = buyer_client.post(f"/api/v1/orders/{order['id']}/pay", headers=buyer_client.csrf,
                                json={"method": "card", "payment_method": card(
                                    stripe_gateway, THREE_DS)}).get_json()["payment"]
    payment = session.get(Payment, pending["id"])
    intent = stripe_gateway.client.v1.payment_intents.retrieve(payment.gateway_ref).to_dict()
    event = {"id": "evt_changed_1", "type": "payment_intent.succeeded",
             "data": {"object": intent | {"amount": 1, "status": "succeeded"}}}
    assert _deliver(client, event).get_json()["outcome"] == "no payment of ours"
    session.refresh(payment)
    assert payment.status == "requires_action"
    assert session.scalar(select(PaymentAnomaly.kind)) == "intent_mismatch"


# Refunds ----------------------------------------------------------------------------------------

def test_a_refund_whose_answer_is_lost_is_asked_about_before_the_retry(
        buyer_client, finance_client, shop, stripe_gateway, proxy, session):
    order, paid = _paid(buyer_client, shop, stripe_gateway)
    intent_ref = session.get(Payment, paid["id"]).gateway_ref
    proxy.lose_answer("POST", "/v1/refunds")
    path = f"/api/v1/payments/{paid['id']}/refunds"
    lost = finance_client.post(path, headers=finance_client.csrf, json={
        "amount": {"amount": "50.00", "currency": "CNY"}, "reason": "half"})
    assert lost.status_code == 502 and "pending" in lost.get_json()["detail"]
    assert ("POST", "/v1/refunds", "answer lost") in proxy.seen
    refund = session.scalar(select(Refund).where(Refund.payment_id == paid["id"]))
    payment = session.get(Payment, paid["id"])
    assert refund.status == "pending" and payment.refunded_minor == 5_000  # still reserved
    assert _at_processor(stripe_gateway, intent_ref) == [5_000]  # the processor did it
    # The reservation holds: what remains is 56.00, not 106.00.
    over = finance_client.post(path, headers=finance_client.csrf, json={
        "amount": {"amount": "56.01", "currency": "CNY"}})
    assert over.status_code == 422 and "56.00" in over.get_json()["errors"]["amount"][0]

    retried = finance_client.post(f"/api/v1/refunds/{refund.id}/retry",
                                  headers=finance_client.csrf)
    assert retried.status_code == 200 and retried.get_json()["status"] == "succeeded"
    again = finance_client.post(f"/api/v1/refunds/{refund.id}/retry",
                                headers=finance_client.csrf)
    assert again.get_json()["status"] == "succeeded"
    assert _at_processor(stripe_gateway, intent_ref) == [5_000]  # exactly one refund
    session.refresh(refund)
    session.refresh(payment)
    assert refund.gateway_ref and payment.refunded_minor == 5_000
    assert _clearing(session, refund.id) == 5_000
    assert session.get(Order, order["id"]).refunded_minor == 5_000
    assert ledger.trial_balance(session) == {"CNY": 0}


def test_a_refund_that_never_reached_the_processor_is_sent_on_retry(
        buyer_client, finance_client, shop, stripe_gateway, proxy, session):
    _, paid = _paid(buyer_client, shop, stripe_gateway)
    intent_ref = session.get(Payment, paid["id"]).gateway_ref
    proxy.lose_request("POST", "/v1/refunds")
    lost = finance_client.post(f"/api/v1/payments/{paid['id']}/refunds",
                               headers=finance_client.csrf, json={})
    assert lost.status_code == 502
    refund = session.scalar(select(Refund).where(Refund.payment_id == paid["id"]))
    assert refund.status == "pending" and _at_processor(stripe_gateway, intent_ref) == []
    retried = finance_client.post(f"/api/v1/refunds/{refund.id}/retry",
                                  headers=finance_client.csrf)
    assert retried.get_json()["status"] == "succeeded"
    assert _at_processor(stripe_gateway, intent_ref) == [10_600]
    assert _clearing(session, refund.id) == 10_600


def test_a_lost_refund_answer_is_settled_by_reconciliation(
        buyer_client, finance_client, shop, stripe_gateway, proxy, card_app, session):
    _, paid = _paid(buyer_client, shop, stripe_gateway)
    proxy.lose_answer("POST", "/v1/refunds")
    finance_client.post(f"/api/v1/payments/{paid['id']}/refunds", headers=finance_client.csrf,
                        json={"amount": {"amount": "10.00", "currency": "CNY"}})
    db = card_app.extensions["market.db"]
    counts = refunds.reconcile_refunds(db, stripe_gateway, older_than=ZERO)
    assert counts["succeeded"] == 1 and counts["booked"] == 0
    refund = session.scalar(select(Refund).where(Refund.payment_id == paid["id"]))
    assert refund.status == "succeeded" and _clearing(session, refund.id) == 1_000


def test_refund_failed_gives_back_what_can_be_refunded(
        buyer_client, finance_client, client, shop, stripe_gateway, proxy, session):
    _, paid = _paid(buyer_client, shop, stripe_gateway)
    # A processor that answers "pending" (as Stripe does for some banks).
    proxy.rewrite("POST", "/v1/refunds", lambda refund: refund | {"status": "pending"})
    path = f"/api/v1/payments/{paid['id']}/refunds"
    made = finance_client.post(path, headers=finance_client.csrf, json={
        "amount": {"amount": "106.00", "currency": "CNY"}})
    assert made.status_code == 201 and made.get_json()["status"] == "pending"
    refund = session.scalar(select(Refund).where(Refund.payment_id == paid["id"]))
    payment = session.get(Payment, paid["id"])
    assert payment.refunded_minor == 10_600 and _clearing(session, refund.id) == 0
    at_processor = stripe_gateway.client.v1.refunds.retrieve(refund.gateway_ref).to_dict()
    event = {"id": "evt_refund_failed_1", "type": "refund.failed", "data": {
        "object": at_processor | {"status": "failed", "failure_reason": "expired_or_canceled_card"}}}
    response = _deliver(client, event)
    assert response.status_code == 200, response.get_json()
    session.refresh(refund)
    session.refresh(payment)
    assert refund.status == "failed" and "expired_or_canceled_card" in refund.failure_message
    assert payment.refunded_minor == 0 and _clearing(session, refund.id) == 0
    # The whole amount can be refunded again.
    again = finance_client.post(path, headers=finance_client.csrf, json={})
    assert again.status_code == 201 and again.get_json()["amount"]["amount"] == "106.00"
    assert ledger.trial_balance(session) == {"CNY": 0}


def test_refunds_made_in_the_dashboard_are_booked_or_flagged(
        buyer_client, shop, stripe_gateway, card_app, session):
    _, paid = _paid(buyer_client, shop, stripe_gateway)
    payment = session.get(Payment, paid["id"])
    charge = stripe_gateway.client.v1.payment_intents.retrieve(payment.gateway_ref).latest_charge
    charge = charge if isinstance(charge, str) else charge.id
    # The dashboard: by charge, with no metadata of ours. The processor takes both, the second
    # beyond what was paid (localstripe never checks).
    fits = stripe_gateway.client.v1.refunds.create(params={"charge": charge, "amount": 1_000})
    beyond = stripe_gateway.client.v1.refunds.create(params={"charge": charge,
                                                             "amount": 10_000})
    db = card_app.extensions["market.db"]
    # (The processor also holds the refunds of earlier tests, whose records were rolled back:
    # those are anomalies too, so only this payment's are counted here.)
    assert refunds.reconcile_refunds(db, stripe_gateway, older_than=ZERO)["booked"] == 1
    booked = session.scalar(select(Refund).where(Refund.gateway_ref == fits.id))
    assert booked.status == "succeeded" and booked.amount_minor == 1_000
    assert _clearing(session, booked.id) == 1_000
    anomaly = session.scalar(select(PaymentAnomaly).where(PaymentAnomaly.object_ref == beyond.id))
    assert anomaly.kind == "outside_refund" and anomaly.payment_id == payment.id
    session.refresh(payment)
    assert payment.refunded_minor == 1_000
    # Reconciling again books and records nothing more.
    assert refunds.reconcile_refunds(db, stripe_gateway, older_than=ZERO)["booked"] == 0
    assert session.scalar(select(func.count()).select_from(PaymentAnomaly).where(
        PaymentAnomaly.kind == "outside_refund")) == 1
    assert session.scalar(select(func.count()).select_from(Refund).where(
        Refund.payment_id == payment.id)) == 1


# Webhook deliveries -----------------------------------------------------------------------------

def test_a_webhook_error_is_problem_json(client, session):
    body = b"{}"
    response = client.post("/webhooks/stripe", data=body, content_type="application/json",
                           headers={"Stripe-Signature": "t=1,v1=00"})
    assert response.status_code == 400 and response.mimetype == "application/problem+json"


@postgresql_only("simultaneous first deliveries race on row locks only on PostgreSQL")
def test_simultaneous_first_deliveries_of_one_event_never_answer_500(
        database_url, tmp_path, stripe_server, passwords):
    from tests.billing.shop import buyer
    from tests.concurrency import fresh_app

    with fresh_app(database_url, tmp_path) as app:
        gateway = StripeGateway(stripe_server.secret_key, api_base=stripe_server.url,
                                webhook_secret=WEBHOOK_SECRET)
        app.extensions["market.gateway"] = gateway
        db, settings = app.extensions["market.db"], app.extensions["market.billing"]
        with db.session() as session, session.begin():
            made = listed_dataset(session, app.extensions["market.passwords"],
                                  package_price="100.00")
            _, _, principal = buyer(session, app.extensions["market.passwords"])
            order = orders_place(session, principal, made["package"].id)
        payment = payments.pay_by_card(db, gateway, settings, order, principal=principal,
                                       payment_method_ref=card(gateway, THREE_DS))
        assert payment.status == "requires_action"
        authenticate(stripe_server, gateway.retrieve_payment_intent(payment.gateway_ref),
                     success=True)
        intent = gateway.client.v1.payment_intents.retrieve(payment.gateway_ref).to_dict()
        body, signature = _signed({"id": f"evt_race_{payment.id}",
                                   "type": "payment_intent.succeeded",
                                   "data": {"object": intent}})
        clients = [english_client(app) for _ in range(6)]
        responses = at_once([
            (lambda c=c: c.post("/webhooks/stripe", data=body, content_type="application/json",
                                headers={"Stripe-Signature": signature})) for c in clients])
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 409}, [r.get_data(as_text=True) for r in responses]
        outcomes = [r.get_json()["outcome"] for r in responses if r.status_code == 200]
        assert sum("-> succeeded" in o for o in outcomes) == 1
        with db.session() as session:
            assert session.get(Payment, payment.id).status == "succeeded"
            assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
            assert session.scalar(select(func.count()).select_from(LedgerTransaction).where(
                LedgerTransaction.kind == "payment")) == 1
            assert ledger.trial_balance(session) == {"CNY": 0}


def orders_place(session, principal, offer_id) -> int:
    from billing import orders

    return orders.place_mall_order(session, principal, [orders.CartItem(offer_id)],
                                   payment_method="card").id
