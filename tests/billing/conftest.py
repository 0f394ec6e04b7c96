"""Billing fixtures: a listed dataset with a supply chain and offers, a buyer, platform finance,
settings, and a saved card at the local Stripe server. Everything goes through the services."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from billing.context import BillingSettings
from tests.billing import shop
from tests.fixtures import csrf_token
from tests.factories import SINGLE_PERSON_THRESHOLD


def plan_terms(code: str, price: str, *, period: str = "month", tokens: int = 1_000_000,
               rollover: bool = False) -> dict:
    return {"kind": "subscription", "code": code, "period": period,
            "price": {"amount": price, "currency": "CNY"}, "included_tokens": tokens,
            "overage_per_million": {"amount": "10", "currency": "CNY"}, "rollover": rollover}


PLANS = {"basic": plan_terms("basic", "99.00", rollover=True),
         "pro": plan_terms("pro", "199.00", tokens=3_000_000)}

METERED = {"kind": "metered", "code": "api",
           "tiers": [{"from_tokens": 0, "up_to": None,
                      "price_per_million": {"amount": "12.50", "currency": "CNY"}}]}


def billing_settings(**changes) -> BillingSettings:
    """Settings as the app would build them, with ``changes`` on top (one person may record
    money of any size here, as in the suite's app; tests of dual control lower the
    threshold)."""
    base = BillingSettings.from_settings({"SECRET_KEY": "test-secret-key",
                                          "DUAL_CONTROL_THRESHOLD": SINGLE_PERSON_THRESHOLD})
    return BillingSettings(**{**base.__dict__, **changes})


@pytest.fixture()
def settings() -> BillingSettings:
    return billing_settings()


@pytest.fixture()
def db(app, connection):
    """The app's Database, bound to the test's transaction (its commits are savepoints)."""
    return app.extensions["market.db"]


@pytest.fixture()
def listed(session, passwords):
    """A supplier's dataset with one version, a supply chain of supplier (60%) and processor
    (40%), two monthly plans (basic, pro), a metered rate card, and an approved listing."""
    made = shop.listed_dataset(session, passwords, records=shop.RECORDS[:2],
                               package_price=None, extra_offers=[*PLANS.values(), METERED])
    session.commit()
    *plans, metered = made["offers"]
    return {"dataset": made["dataset"], "plans": dict(zip(PLANS, plans)), "metered": metered,
            "chain": made["chain"], "supplier": made["supplier"],
            "processor": made["processor"], "exchange": made["exchange"],
            "owner": made["owner"], "listing": made["listing"]}


@pytest.fixture()
def buyer(session, passwords) -> shop.Member:
    """A buyer organization and its owner."""
    member = shop.buyer(session, passwords)
    session.commit()
    return member


@pytest.fixture()
def finance(session, passwords) -> shop.Member:
    """A finance person of the platform organization."""
    member = shop.platform_finance(session, passwords)
    session.commit()
    return member


@pytest.fixture()
def buyer_client(session, passwords, sign_in_as):
    """A buyer organization's owner, signed in, with the CSRF header for API writes."""
    org, _, _ = shop.buyer(session, passwords)
    session.commit()
    client = sign_in_as(org, "owner")
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    client.org = org
    return client


@pytest.fixture()
def finance_client(session, passwords, sign_in_as):
    """The platform's finance person, signed in, with the CSRF header for API writes."""
    platform, _, _ = shop.platform_finance(session, passwords)
    session.commit()
    client = sign_in_as(platform, "finance")
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    return client


def free_port() -> int:
    """A loopback port nobody listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def webhook_receiver():
    """A real HTTP receiver on a free loopback port: what it received (headers, body), and the
    status it answers, which a test may change."""
    received: list[tuple[dict, bytes]] = []
    answer = {"status": 200}

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(answer["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/hooks/budget",
           "port": server.server_address[1], "received": received, "answer": answer}
    server.shutdown()
    server.server_close()


@pytest.fixture()
def card_app(app, stripe_gateway, monkeypatch):
    """The app with card payments on: the gateway points at the local Stripe server."""
    monkeypatch.setitem(app.extensions, "market.gateway", stripe_gateway)
    return app
