"""Card payments through the real stripe SDK against a local Stripe server (localstripe):
paid, declined, 3-D Secure, refunds; signed webhooks delivered by the server and verified;
duplicate and reordered events with exactly one effect; a forged signature; and a crash between
the processor's answer and our record of it, repaired by reconciliation with no double charge."""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from billing.payments import card as payments
from billing.settlement import ledger, reconciliation
from billing.settlement.ledger import LedgerTransaction
from billing.models import Order, Payment, WebhookEvent
from tests.billing.shop import listed_dataset
from tests.stripe_server import WEBHOOK_SECRET, authenticate, card, stripe_signature

GOOD, DECLINED, THREE_DS = "4242424242424242", "4000000000000341", "4000002760003184"


# Card payments on, for every test here: the gateway points at the local Stripe server.
pytestmark = pytest.mark.usefixtures("card_app")


@pytest.fixture()
def shop(session, passwords):
    return listed_dataset(session, passwords, package_price="100.00")



class Relay:
    """Receives the local Stripe server's webhook deliveries on a loopback port and queues them
    (raw body and signature) for the test to hand to the app's webhook view."""

    def __init__(self):
        deliveries = self.deliveries = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                deliveries.put((body, self.headers.get("Stripe-Signature", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/"

    def wait_for(self, event_type: str, intent_ref: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                body, signature = self.deliveries.get(timeout=0.2)
            except queue.Empty:
                continue
            event = json.loads(body)
            if event["type"] == event_type and event["data"]["object"]["id"] == intent_ref:
                return body, signature
        raise AssertionError(f"no {event_type} for {intent_ref} within {timeout} s")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def relay(stripe_server):
    relay = Relay()
    webhook_id = stripe_server.register_webhook(relay.url, WEBHOOK_SECRET)
    yield relay
    stripe_server.disable_webhook(webhook_id)
    relay.close()


def _order(client, shop):
    response = client.post("/api/v1/orders", headers=client.csrf, json={
        "items": [{"offer_id": shop["package"].id}], "payment_method": "card"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _pay(client, order_id, payment_method):
    return client.post(f"/api/v1/orders/{order_id}/pay", headers=client.csrf,
                       json={"method": "card", "payment_method": payment_method})


def _deliver(client, body: bytes, signature: str):
    return client.post("/webhooks/stripe", data=body, content_type="application/json",
                       headers={"Stripe-Signature": signature})


def _signed(event: dict) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    return body, stripe_signature(body, WEBHOOK_SECRET)


def _payment_postings(session, payment_id):
    return session.scalar(select(func.count()).select_from(LedgerTransaction).where(
        LedgerTransaction.kind == "payment",
        LedgerTransaction.reference_id == str(payment_id)))


def test_a_good_card_pays_and_the_signed_webhook_changes_nothing_more(
        buyer_client, shop, stripe_gateway, relay, client, session):
    order = _order(buyer_client, shop)
    response = _pay(buyer_client, order["id"], card(stripe_gateway, GOOD))
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert result["payment"]["status"] == "succeeded"
    assert result["order"]["status"] == "paid"
    payment_id = result["payment"]["id"]
    intent_ref = session.get(Payment, payment_id).gateway_ref

    # The server's own signed delivery, verified by the view: already applied, so no effect.
    body, signature = relay.wait_for("payment_intent.succeeded", intent_ref)
    first = _deliver(client, body, signature)
    assert first.status_code == 200 and first.get_json()["outcome"].endswith("stays succeeded")
    again = _deliver(client, body, signature)  # the same event delivered twice
    assert again.get_json()["outcome"] == "duplicate"
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
    assert _payment_postings(session, payment_id) == 1
    assert ledger.trial_balance(session) == {"CNY": 0}


def test_a_declined_card_fails_and_the_order_can_be_paid_again(buyer_client, shop,
                                                              stripe_gateway, session):
    order = _order(buyer_client, shop)
    declined = _pay(buyer_client, order["id"], card(stripe_gateway, DECLINED)).get_json()
    assert declined["payment"]["status"] == "failed"
    assert declined["payment"]["failure_code"] == "card_declined"
    assert declined["order"]["status"] == "awaiting_payment"
    paid = _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).get_json()
    assert paid["order"]["status"] == "paid"
    assert [p["status"] for p in paid["order"]["payments"]] == ["failed", "succeeded"]


def test_3d_secure_requires_action_and_the_webhook_completes_it(
        buyer_client, shop, stripe_gateway, stripe_server, relay, client, session):
    order = _order(buyer_client, shop)
    pending = _pay(buyer_client, order["id"], card(stripe_gateway, THREE_DS)).get_json()
    assert pending["payment"]["status"] == "requires_action"
    assert pending["client_secret"]  # for Stripe.js to run the 3-D Secure check
    assert pending["order"]["status"] == "awaiting_payment"
    # Another payment while this one waits for the buyer: refused, nothing sent.
    assert _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).status_code == 409

    payment = session.get(Payment, pending["payment"]["id"])
    authenticate(stripe_server, stripe_gateway.retrieve_payment_intent(payment.gateway_ref),
                 success=True)
    body, signature = relay.wait_for("payment_intent.succeeded", payment.gateway_ref)
    assert _deliver(client, body, signature).status_code == 200
    order = buyer_client.get(f"/api/v1/orders/{order['id']}").get_json()
    assert order["status"] == "paid" and order["payments"][0]["status"] == "succeeded"

    # A stale event arriving after the success (Stripe does not order them) changes nothing.
    stale = {"id": "evt_stale_1", "type": "payment_intent.payment_failed", "data": {"object": {
        "id": payment.gateway_ref, "metadata": {"payment_id": str(payment.id)},
        "last_payment_error": {"code": "card_declined", "message": "late"}}}}
    outcome = _deliver(client, *_signed(stale)).get_json()["outcome"]
    assert outcome.endswith("stays succeeded")
    session.refresh(payment)
    assert payment.status == "succeeded" and _payment_postings(session, payment.id) == 1


def test_reordered_events_apply_once(buyer_client, shop, stripe_gateway, client, session):
    """succeeded arrives before processing: the late processing is ignored."""
    order = _order(buyer_client, shop)
    pending = _pay(buyer_client, order["id"], card(stripe_gateway, THREE_DS)).get_json()
    payment = session.get(Payment, pending["payment"]["id"])
    obj = {"id": payment.gateway_ref, "metadata": {"payment_id": str(payment.id)}}
    succeeded = {"id": "evt_r_2", "type": "payment_intent.succeeded", "data": {"object": obj}}
    processing = {"id": "evt_r_1", "type": "payment_intent.processing", "data": {"object": obj}}
    assert "succeeded" in _deliver(client, *_signed(succeeded)).get_json()["outcome"]
    assert _deliver(client, *_signed(processing)).get_json()["outcome"].endswith(
        "stays succeeded")
    assert _deliver(client, *_signed(succeeded)).get_json()["outcome"] == "duplicate"
    session.refresh(payment)
    assert payment.status == "succeeded" and _payment_postings(session, payment.id) == 1
    assert session.get(Order, order["id"]).status == "paid"


@pytest.mark.parametrize("signature", ["", "t=1,v1=deadbeef", None])
def test_a_forged_signature_is_400_and_records_nothing(buyer_client, shop, stripe_gateway,
                                                       client, session, signature):
    order = _order(buyer_client, shop)
    pending = _pay(buyer_client, order["id"], card(stripe_gateway, THREE_DS)).get_json()
    payment = session.get(Payment, pending["payment"]["id"])
    event = {"id": "evt_forged", "type": "payment_intent.succeeded", "data": {"object": {
        "id": payment.gateway_ref, "metadata": {"payment_id": str(payment.id)}}}}
    body = json.dumps(event).encode()
    if signature is None:  # signed, but with another secret
        signature = stripe_signature(body, "whsec_someone_else")
    response = _deliver(client, body, signature)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    session.refresh(payment)
    assert payment.status == "requires_action"


def test_card_refunds_are_held_to_what_remains(buyer_client, finance_client, shop,
                                              stripe_gateway, session):
    order = _order(buyer_client, shop)
    payment = _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).get_json()["payment"]
    path = f"/api/v1/payments/{payment['id']}/refunds"
    partial = finance_client.post(path, headers=finance_client.csrf, json={
        "amount": {"amount": "6.00", "currency": "CNY"}, "reason": "goodwill"})
    assert partial.status_code == 201 and partial.get_json()["status"] == "succeeded"
    # The local Stripe server would refund this; we refuse it before it is asked.
    over = finance_client.post(path, headers=finance_client.csrf, json={
        "amount": {"amount": "100.01", "currency": "CNY"}})
    assert over.status_code == 422 and "amount" in over.get_json()["errors"]
    rest = finance_client.post(path, headers=finance_client.csrf, json={})
    assert rest.get_json()["amount"]["amount"] == "100.00"
    refunds = stripe_gateway.client.v1.refunds.list(params={"limit": 100})
    ours = [r for r in refunds.auto_paging_iter() if r.payment_intent == session.get(
        Payment, payment["id"]).gateway_ref]
    assert sorted(r.amount for r in ours) == [600, 10000]
    assert session.get(Order, order["id"]).status == "refunded"
    assert ledger.trial_balance(session) == {"CNY": 0}


def test_a_crash_after_the_processor_answers_is_repaired_by_reconciliation(
        buyer_client, shop, stripe_gateway, card_app, session, monkeypatch):
    order = _order(buyer_client, shop)

    def crash(*_args, **_kwargs):
        raise RuntimeError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(payments, "record_intent_outcome", crash)
        response = _pay(buyer_client, order["id"], card(stripe_gateway, GOOD))
    assert response.status_code == 500
    payment = session.scalar(select(Payment).where(Payment.order_id == order["id"]))
    assert payment.status == "created" and payment.gateway_ref is None  # charged, unrecorded
    # Meanwhile the buyer cannot pay again and be charged twice.
    assert _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).status_code == 409

    db, settings = card_app.extensions["market.db"], card_app.extensions["market.billing"]
    counts = payments.reconcile(db, stripe_gateway, settings, older_than=_zero())
    assert counts["succeeded"] == 1
    session.refresh(payment)
    assert payment.status == "succeeded" and payment.gateway_ref
    assert session.get(Order, order["id"]).status == "paid"
    # One intent at the processor for this payment, and reconciling again changes nothing.
    listed = stripe_gateway.client.v1.payment_intents.list(params={"limit": 100})
    intents = [i for i in listed.auto_paging_iter()
               if i.to_dict().get("metadata", {}).get("payment") ==
               payments.payment_tag(order["number"], payment.id)]
    assert len(intents) == 1
    assert payments.reconcile(db, stripe_gateway, settings, older_than=_zero())["checked"] == 0
    assert _payment_postings(session, payment.id) == 1


def test_a_payment_that_never_reached_the_processor_fails_on_reconciliation(
        buyer_client, shop, stripe_gateway, card_app, session, monkeypatch):
    order = _order(buyer_client, shop)

    def unreachable(*_args, **_kwargs):
        raise RuntimeError("connection reset before the request was sent")

    with monkeypatch.context() as patch:
        patch.setattr(stripe_gateway, "create_payment_intent", unreachable)
        assert _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).status_code == 500
    db, settings = card_app.extensions["market.db"], card_app.extensions["market.billing"]
    assert payments.reconcile(db, stripe_gateway, settings, older_than=_zero())["failed"] == 1
    assert _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).get_json()[
        "order"]["status"] == "paid"


def _zero():
    import datetime as dt
    return dt.timedelta(0)


def test_the_reconciliation_agrees_with_the_card_processor(buyer_client, shop, stripe_gateway,
                                                          session):
    from market.core.db import utcnow

    order = _order(buyer_client, shop)
    assert _pay(buyer_client, order["id"], card(stripe_gateway, GOOD)).get_json()[
        "order"]["status"] == "paid"
    figures = reconciliation.reconcile(session, f"{utcnow():%Y-%m}", actor=None,
                                       gateway=stripe_gateway)
    cny = figures["currencies"]["CNY"]
    assert cny["processor_difference"] == 0 and cny["difference"] == 0
    assert cny["gross_collected"] >= 10_600
