"""The Stripe gateway against a real local Stripe (localstripe), through the real SDK.

Card numbers are localstripe's test cards (see its resources.py):
4242424242424242 pays; 4000000000000341 is refused when charged; 4000000000000002 is refused
when saved or attached; 4000002760003184 asks for 3-D Secure.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import math
import queue
import socket
import threading
import time
import uuid

import pytest

from billing.payments.gateway import (
    CardGateway,
    GatewayError,
    InvalidSignature,
    StripeGateway,
    gateway_from_settings,
)
from tests.billing.payments.fake_gateway import FakeGateway
from tests.stripe_server import WEBHOOK_SECRET, authenticate, card, stripe_signature

VISA = "4242424242424242"
DECLINED_ON_CHARGE = "4000000000000341"
DECLINED_ON_ATTACH = "4000000000000002"
THREE_D_SECURE = "4000002760003184"


def key() -> str:
    return uuid.uuid4().hex


def customer(gateway: StripeGateway, organization_id: int = 7) -> str:
    return gateway.create_customer(
        organization_id=organization_id, name="Provincial Grid Co.", idempotency_key=key()
    )


def saved_card(gateway: StripeGateway, number: str) -> tuple[str, str]:
    """(customer, payment method): a customer with the card attached."""
    customer_ref = customer(gateway)
    method_ref = card(gateway, number)
    gateway.attach_payment_method(customer_ref, method_ref)
    return customer_ref, method_ref


def pay(gateway: StripeGateway, number: str, *, amount_minor: int = 12_500, **metadata: str):
    customer_ref, method_ref = saved_card(gateway, number)
    return customer_ref, gateway.create_payment_intent(
        amount_minor=amount_minor,
        currency="EUR",
        customer_ref=customer_ref,
        payment_method_ref=method_ref,
        idempotency_key=key(),
        off_session=False,
        metadata=metadata or {"payment_id": key()},
    )


# -- customers and saved cards ------------------------------------------------------------------


def test_saving_a_card_through_a_setup_intent(stripe_gateway):
    customer_ref = stripe_gateway.create_customer(
        organization_id=42, name="City Health Bureau", idempotency_key=key()
    )
    assert customer_ref.startswith("cus_")
    stored = stripe_gateway.client.v1.customers.retrieve(customer_ref)
    assert stored.metadata["organization_id"] == "42"

    setup = stripe_gateway.create_setup_intent(customer_ref=customer_ref, idempotency_key=key())
    assert setup.ref.startswith("seti_")
    assert setup.client_secret
    assert setup.status == "requires_action"
    assert setup.payment_method_ref is None

    method_ref = card(stripe_gateway, VISA)
    confirmed = stripe_gateway.confirm_setup_intent(setup.ref, method_ref)
    assert confirmed.status == "succeeded"
    assert confirmed.payment_method_ref == method_ref
    assert confirmed.failure_code is None

    stripe_gateway.attach_payment_method(customer_ref, method_ref)
    stripe_gateway.attach_payment_method(customer_ref, method_ref)  # again: harmless
    assert stripe_gateway.card_details(method_ref) == ("visa", "4242")


def test_a_card_refused_while_being_saved_is_a_failed_setup(stripe_gateway):
    customer_ref = customer(stripe_gateway)
    setup = stripe_gateway.create_setup_intent(customer_ref=customer_ref, idempotency_key=key())

    declined_card = card(stripe_gateway, DECLINED_ON_ATTACH)

    result = stripe_gateway.confirm_setup_intent(setup.ref, declined_card)

    assert result.status == "failed"
    assert result.failure_code == "card_declined"
    assert result.failure_message


def test_saving_a_3d_secure_card_requires_action(stripe_gateway):
    customer_ref = customer(stripe_gateway)
    setup = stripe_gateway.create_setup_intent(customer_ref=customer_ref, idempotency_key=key())

    result = stripe_gateway.confirm_setup_intent(setup.ref, card(stripe_gateway, THREE_D_SECURE))

    assert result.status == "requires_action"
    assert result.client_secret == setup.client_secret


def test_attaching_a_refused_card_is_a_gateway_error(stripe_gateway):
    with pytest.raises(GatewayError) as raised:
        stripe_gateway.attach_payment_method(
            customer(stripe_gateway), card(stripe_gateway, DECLINED_ON_ATTACH)
        )
    assert raised.value.code == "card_declined"


# -- payments -----------------------------------------------------------------------------------


def test_a_good_card_pays(stripe_gateway):
    customer_ref, method_ref = saved_card(stripe_gateway, VISA)

    result = stripe_gateway.create_payment_intent(
        amount_minor=12_500,
        currency="EUR",
        customer_ref=customer_ref,
        payment_method_ref=method_ref,
        idempotency_key=key(),
        off_session=True,
        metadata={"payment_id": "17"},
    )

    assert result.status == "succeeded"
    assert result.ref.startswith("pi_")
    assert result.payment_method_ref == method_ref
    assert (result.failure_code, result.failure_message) == (None, None)
    stored = stripe_gateway.client.v1.payment_intents.retrieve(result.ref)
    assert (stored.amount, stored.currency, stored.customer) == (12_500, "eur", customer_ref)
    assert stored.metadata.to_dict() == {"payment_id": "17"}
    assert stripe_gateway.retrieve_payment_intent(result.ref) == result


def test_a_declined_card_is_a_failed_result_not_an_exception(stripe_gateway):
    _, result = pay(stripe_gateway, DECLINED_ON_CHARGE)

    assert result.ref.startswith("pi_")
    assert result.status == "failed"
    assert result.failure_code == "card_declined"
    assert result.failure_message == "Your card was declined."
    assert stripe_gateway.retrieve_payment_intent(result.ref).status == "failed"


def test_a_3d_secure_card_requires_action_until_the_buyer_authenticates(
    stripe_gateway, stripe_server
):
    _, result = pay(stripe_gateway, THREE_D_SECURE)

    assert result.status == "requires_action"
    assert result.client_secret and result.client_secret.startswith(result.ref)

    authenticate(stripe_server, result, success=True)
    assert stripe_gateway.retrieve_payment_intent(result.ref).status == "succeeded"


def test_a_failed_3d_secure_check_fails_the_payment(stripe_gateway, stripe_server):
    _, result = pay(stripe_gateway, THREE_D_SECURE)

    authenticate(stripe_server, result, success=False)

    failed = stripe_gateway.retrieve_payment_intent(result.ref)
    assert failed.status == "failed"
    assert failed.failure_code == "payment_intent_authentication_failure"


def test_retrieving_an_unknown_intent_is_a_gateway_error(stripe_gateway):
    with pytest.raises(GatewayError) as raised:
        stripe_gateway.retrieve_payment_intent("pi_doesnotexist")
    assert raised.value.code == "invalid_request_error"


def test_find_payment_intent_by_metadata(stripe_gateway):
    payment_id = key()
    customer_ref, wanted = pay(stripe_gateway, VISA, payment_id=payment_id)
    stripe_gateway.create_payment_intent(
        amount_minor=500,
        currency="eur",
        customer_ref=customer_ref,
        payment_method_ref=wanted.payment_method_ref,
        idempotency_key=key(),
        off_session=True,
        metadata={"payment_id": key()},
    )
    # Another customer's intent with the same metadata is not ours.
    pay(stripe_gateway, VISA, payment_id=payment_id)

    found = stripe_gateway.find_payment_intent(
        customer_ref=customer_ref, metadata_key="payment_id", metadata_value=payment_id
    )

    assert found == wanted
    assert (
        stripe_gateway.find_payment_intent(
            customer_ref=customer_ref, metadata_key="payment_id", metadata_value="missing"
        )
        is None
    )


def test_succeeded_intents_are_asked_for_by_their_creation_window(stripe_gateway, monkeypatch):
    sent = []
    listing = stripe_gateway.client.v1.payment_intents.list

    def recording(params=None, options=None):
        sent.append(params)
        return listing(params=params, options=options)

    monkeypatch.setattr(stripe_gateway.client.v1.payment_intents, "list", recording)
    _, paid = pay(stripe_gateway, VISA, amount_minor=4_321)
    _, declined = pay(stripe_gateway, DECLINED_ON_CHARGE)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=1, microseconds=500), now + dt.timedelta(minutes=1)

    found = stripe_gateway.list_succeeded_intents(start, end)

    assert sent[0] == {"created": {"gte": math.floor(start.timestamp()),
                                   "lt": math.ceil(end.timestamp())}, "limit": 100}
    refs = {intent.ref for intent in found}
    assert paid.ref in refs and declined.ref not in refs
    assert next(i for i in found if i.ref == paid.ref).amount_minor == 4_321
    assert all(intent.status == "succeeded" for intent in found)
    # Intents created before the window are not answered, on any page.
    assert paid.ref not in {intent.ref for intent in stripe_gateway.list_succeeded_intents(
        now - dt.timedelta(days=2), now - dt.timedelta(days=1))}


def test_listing_intents_at_an_unreachable_stripe_is_a_gateway_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = StripeGateway("sk_test_x", api_base=f"http://127.0.0.1:{port}")
    now = dt.datetime.now(dt.timezone.utc)

    with pytest.raises(GatewayError) as raised:
        gateway.list_succeeded_intents(now - dt.timedelta(days=1), now)

    assert raised.value.code == "api_connection_error"


def test_the_stripe_and_the_fake_gateway_are_card_gateways(stripe_gateway):
    assert isinstance(stripe_gateway, CardGateway)
    assert isinstance(FakeGateway(), CardGateway)


# -- refunds ------------------------------------------------------------------------------------


def test_partial_then_full_refund(stripe_gateway):
    _, payment = pay(stripe_gateway, VISA, amount_minor=10_000)

    partial = stripe_gateway.refund(
        payment_ref=payment.ref, amount_minor=2_500, idempotency_key=key(), metadata={"n": "1"}
    )
    rest = stripe_gateway.refund(
        payment_ref=payment.ref, amount_minor=7_500, idempotency_key=key(), metadata={"n": "2"}
    )

    assert partial.status == rest.status == "succeeded"
    assert partial.ref.startswith("re_") and rest.ref != partial.ref
    stored = stripe_gateway.client.v1.refunds.retrieve(partial.ref)
    assert (stored.amount, stored.payment_intent) == (2_500, payment.ref)


def test_full_refund(stripe_gateway):
    _, payment = pay(stripe_gateway, VISA, amount_minor=4_200)

    result = stripe_gateway.refund(
        payment_ref=payment.ref, amount_minor=4_200, idempotency_key=key(), metadata={}
    )

    assert result.status == "succeeded"


def test_refunding_a_failed_payment_is_a_gateway_error(stripe_gateway):
    _, payment = pay(stripe_gateway, DECLINED_ON_CHARGE)

    with pytest.raises(GatewayError):
        stripe_gateway.refund(
            payment_ref=payment.ref, amount_minor=100, idempotency_key=key(), metadata={}
        )


# -- webhooks -----------------------------------------------------------------------------------

EVENT = {
    "id": "evt_1",
    "object": "event",
    "type": "payment_intent.succeeded",
    "data": {"object": {"id": "pi_1", "object": "payment_intent", "status": "succeeded"}},
}


def test_parse_webhook_accepts_a_stripe_signature(stripe_gateway):
    payload = json.dumps(EVENT).encode()

    event = stripe_gateway.parse_webhook(payload, stripe_signature(payload, WEBHOOK_SECRET))

    assert event == EVENT
    assert type(event) is dict


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda payload: stripe_signature(payload, "whsec_forged"), id="other secret"),
        pytest.param(
            lambda payload: stripe_signature(payload + b" ", WEBHOOK_SECRET), id="other body"
        ),
        pytest.param(
            lambda payload: stripe_signature(payload, WEBHOOK_SECRET, int(time.time()) - 3600),
            id="stale",
        ),
        pytest.param(lambda payload: "", id="missing"),
        pytest.param(lambda payload: "garbage", id="malformed"),
    ],
)
def test_parse_webhook_rejects_a_bad_signature(stripe_gateway, header):
    payload = json.dumps(EVENT).encode()

    with pytest.raises(InvalidSignature):
        stripe_gateway.parse_webhook(payload, header(payload))


def test_parse_webhook_without_a_secret_trusts_nothing(stripe_server):
    gateway = StripeGateway(stripe_server.secret_key, api_base=stripe_server.url)
    payload = json.dumps(EVENT).encode()

    with pytest.raises(InvalidSignature):
        gateway.parse_webhook(payload, stripe_signature(payload, WEBHOOK_SECRET))


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: queue.Queue

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format, *args):
        pass


def test_localstripe_delivers_signed_events(stripe_gateway, stripe_server):
    received: queue.Queue = queue.Queue()
    handler = type("Receiver", (_Receiver,), {"received": received})
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    webhook_id = stripe_server.register_webhook(
        f"http://127.0.0.1:{receiver.server_port}/stripe/webhook",
        WEBHOOK_SECRET,
        events=["payment_intent.succeeded"],
    )
    try:
        _, payment = pay(stripe_gateway, VISA)
        deadline = time.monotonic() + 15
        while True:
            body, signature = received.get(timeout=max(0.1, deadline - time.monotonic()))
            event = stripe_gateway.parse_webhook(body, signature)
            if event["data"]["object"]["id"] == payment.ref:
                break
    finally:
        stripe_server.disable_webhook(webhook_id)
        receiver.shutdown()
        receiver.server_close()
        thread.join()

    assert event["type"] == "payment_intent.succeeded"
    assert event["id"].startswith("evt_")
    assert event["data"]["object"]["status"] == "succeeded"


# -- configuration ------------------------------------------------------------------------------


def test_no_secret_key_means_no_card_gateway():
    assert gateway_from_settings({"STRIPE_SECRET_KEY": "", "STRIPE_API_BASE": ""}) is None
    assert gateway_from_settings({}) is None


def test_gateway_from_settings_talks_to_the_configured_server(stripe_server):
    gateway = gateway_from_settings(
        {
            "STRIPE_SECRET_KEY": stripe_server.secret_key,
            "STRIPE_API_BASE": stripe_server.url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    )

    assert isinstance(gateway, StripeGateway) and gateway.name == "stripe"
    assert gateway.create_customer(organization_id=1, name="X", idempotency_key=key())
    assert gateway.webhook_secret == WEBHOOK_SECRET


def test_an_unreachable_stripe_is_a_gateway_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = StripeGateway("sk_test_x", api_base=f"http://127.0.0.1:{port}")

    with pytest.raises(GatewayError) as raised:
        gateway.retrieve_payment_intent("pi_x")

    assert raised.value.code == "api_connection_error"
