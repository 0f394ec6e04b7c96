"""Billing fixtures: a listed dataset with a supply chain and offers, a buyer, platform finance,
settings, and a saved card at the local Stripe server. Everything goes through the services."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading

import pytest

from billing.context import BillingSettings
from market.accounts import services as accounts
from market.catalog import importer, listings, offers
from market.catalog import services as catalog
from tests.billing import shop
from tests.fixtures import csrf_token
from tests.factories import SINGLE_PERSON_THRESHOLD, make_org, make_user

DATASET = {
    "title_zh": "电网负荷数据", "title_en": "Grid load series", "sector": "smart_energy",
    "modality": "text", "ai_stage": "pretraining", "licence": "commercial_standard",
    "personal_information": "none",
    "rights": {"holding": "Grid Co", "usage": "Grid Co", "operation": "Grid Co"}}

RECORDS = [
    {"instruction": "总结这份CT报告。", "response": "双肺未见明显异常。"},
    {"instruction": "Summarize the MRI report.", "response": "No acute findings."},
]


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


def principal_of(user, org):
    return accounts.principal_for_user(user, org.id)


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
    supplier = make_org(session, "supplier", name="Grid Data Co")
    processor = make_org(session, "processor", name="Label Works")
    exchange = make_org(session, "exchange", name="Shanghai Data Exchange")
    owner = principal_of(make_user(session, passwords, supplier, "owner"), supplier)
    reviewer = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    dataset = catalog.create_dataset(session, owner, DATASET)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode()
    importer.import_version(session, owner, dataset, io.BytesIO(body), source_format="jsonl",
                            encoding="o200k_base")
    chain = catalog.set_supply_chain(session, owner, dataset, [
        {"organization_id": supplier.id, "role": "supplier", "share_bps": 6_000},
        {"organization_id": processor.id, "role": "processor", "share_bps": 4_000}])
    plans = {code: offers.add_offer(session, owner, dataset, terms)
             for code, terms in PLANS.items()}
    metered = offers.add_offer(session, owner, dataset, METERED)
    listing = listings.submit(session, owner, dataset, version_id=dataset.versions[0].id,
                              exchange_id=exchange.id, review_days=5)
    listings.approve(session, reviewer, listing)
    session.commit()
    return {"dataset": dataset, "plans": plans, "metered": metered, "chain": chain,
            "supplier": supplier, "processor": processor, "exchange": exchange,
            "owner": owner, "listing": listing}


@pytest.fixture()
def buyer(session, passwords):
    """A buyer organization and its owner's principal."""
    org = make_org(session, "buyer", name="City Health Commission")
    user = make_user(session, passwords, org, "owner")
    session.commit()
    return {"org": org, "user": user, "principal": principal_of(user, org)}


@pytest.fixture()
def finance(session, passwords):
    """A finance person of the platform organization."""
    platform = make_org(session, "platform", name="Marketplace Platform")
    user = make_user(session, passwords, platform, "finance")
    session.commit()
    return {"org": platform, "user": user, "principal": principal_of(user, platform)}


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
