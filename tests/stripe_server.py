"""A local Stripe for the tests: localstripe in a subprocess, one per test session.

`stripe_server` starts it on a loopback port and yields its address and keys; `stripe_gateway`
is a real `StripeGateway` pointed at it. Tests talk to it through the real Stripe SDK, over HTTP.
`card`, `authenticate` and `stripe_signature` play the buyer's browser, the buyer's bank and
Stripe's webhook signer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from billing.payments.gateway import IntentResult, StripeGateway
from tests.loopback import serve_on_loopback

WEBHOOK_SECRET = "whsec_test_secret"

# localstripe pickles its whole store to the fixed path /tmp/localstripe.pickle after every
# write (and reloads it when started through its CLI). Several checkouts run tests on this
# machine at once, so the server here keeps its state in memory only. The listening socket is
# bound by the parent and inherited (tests.loopback).
_SERVER_PROGRAM = """
import socket, sys
import localstripe.resources
localstripe.resources.Store.dump_to_disk = lambda self: None
from aiohttp import web
from localstripe.server import app
web.run_app(app, sock=socket.socket(fileno=int(sys.argv[1])), print=None)
"""

# localstripe can register webhooks but not remove them; a webhook is switched off by
# re-registering it for an event type that never happens.
_NO_EVENTS = "localstripe.never"


@dataclass
class StripeServer:
    """A running localstripe: its base URL and keys it accepts."""

    url: str
    secret_key: str = "sk_test_marketplace"
    publishable_key: str = "pk_test_marketplace"

    def _post(self, path: str, fields: list[tuple[str, str]]) -> None:
        request = urllib.request.Request(
            self.url + path, data=urllib.parse.urlencode(fields).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def register_webhook(self, url: str, secret: str, *, events: list[str] | None = None) -> str:
        """Have localstripe POST signed events to `url`; returns the webhook's id."""
        webhook_id = "wh_" + uuid.uuid4().hex[:12]
        fields = [("url", url), ("secret", secret)]
        fields += [("events[]", event_type) for event_type in events or ()]
        self._post(f"/_config/webhooks/{webhook_id}", fields)
        return webhook_id

    def disable_webhook(self, webhook_id: str) -> None:
        """Stop delivering events to a webhook registered by `register_webhook`."""
        self._post(
            f"/_config/webhooks/{webhook_id}",
            [("url", self.url), ("secret", "disabled"), ("events[]", _NO_EVENTS)],
        )

    def answers(self) -> bool:
        request = urllib.request.Request(
            self.url + "/v1/customers?limit=1",
            headers={"Authorization": f"Bearer {self.secret_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.load(response).get("object") == "list"
        except (urllib.error.URLError, OSError, ValueError):
            return False


@pytest.fixture(scope="session")
def stripe_server(tmp_path_factory) -> Iterator[StripeServer]:
    """localstripe on a free 127.0.0.1 port for the whole session."""
    with serve_on_loopback("localstripe", _SERVER_PROGRAM, tmp_path_factory.mktemp("localstripe"),
                           lambda url: StripeServer(url).answers()) as url:
        yield StripeServer(url=url)


@pytest.fixture
def stripe_gateway(stripe_server: StripeServer) -> StripeGateway:
    """A StripeGateway on the session's localstripe; webhooks are signed with WEBHOOK_SECRET."""
    return StripeGateway(
        stripe_server.secret_key, api_base=stripe_server.url, webhook_secret=WEBHOOK_SECRET
    )


def card(gateway: StripeGateway, number: str) -> str:
    """A card PaymentMethod, created as Stripe.js would from the numbers the buyer typed."""
    return gateway.client.v1.payment_methods.create(params={
        "type": "card",
        "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}}).id


def authenticate(server: StripeServer, intent: IntentResult, *, success: bool) -> None:
    """What the buyer's bank page does for 3-D Secure, in localstripe's own endpoint."""
    data = urllib.parse.urlencode({
        "key": server.publishable_key, "client_secret": intent.client_secret,
        "success": "true" if success else "false"}).encode()
    url = f"{server.url}/v1/payment_intents/{intent.ref}/_authenticate"
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        response.read()


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe sends: t=<unix time>,v1=HMAC-SHA256(secret, "t.body")."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
