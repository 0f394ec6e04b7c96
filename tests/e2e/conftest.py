"""Fixtures for the browser journeys: one really-committed database for the session, the app
served over HTTP on a loopback port, the local Stripe server wired to it, demo data built through
the real services, and Playwright pages on Debian's Chromium (never a downloaded browser).

Unlike the rest of the suite nothing here is rolled back: the browser talks to the app over a
socket, in other threads, so every request commits for real. The journeys therefore make their
own organizations and datasets where they change state, and share only the read-mostly demo.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import make_server
from werkzeug.wsgi import FileWrapper

from market.web.app import create_app
from market.web.cli.demo import DEMO_PASSWORD, seed_demo, seed_demo_catalog, seed_demo_purchases
from tests.concurrency import fresh_database
from tests.stripe_server import WEBHOOK_SECRET, StripeServer

CHROMIUM = Path("/usr/bin/chromium")
SKIP_REASON = ("browser tests (tests/e2e) skipped: Debian's Chromium is not installed at "
               "/usr/bin/chromium (apt-get install -y chromium)")
ARTIFACTS = Path(__file__).parent / "artifacts"
_skipped_for_chromium: list[str] = []


# Chromium from Debian's package, headless, with nothing that calls home.
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "headless": True,
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run"]}


# The served app -------------------------------------------------------------------------------

@dataclass
class ServedApp:
    """The marketplace on a loopback port, with the app object for arranging data."""

    url: str
    app: object

    def session(self):
        return self.app.extensions["market.db"].session()


@pytest.fixture(scope="session")
def e2e_database_url(database_url, tmp_path_factory) -> Iterator[str]:
    """A fresh, migrated database of the suite's kind whose commits are real."""
    with fresh_database(database_url, tmp_path_factory.mktemp("e2e")) as url:
        yield url


@pytest.fixture(scope="session")
def served(e2e_database_url, stripe_server: StripeServer, tmp_path_factory) -> Iterator[ServedApp]:
    """The app under werkzeug's threaded server on 127.0.0.1, card payments on localstripe."""
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": e2e_database_url,
        "SECRET_KEY": "e2e-secret-key",
        "MARKET_ENV": "test",
        "PASSWORD_TIME_COST": 1,  # Argon2id at its minimum: the journeys sign in many times
        "PASSWORD_MEMORY_KIB": 8,
        "API_KEY_MODE": "test",
        "SESSION_COOKIE_SECURE": False,  # plain HTTP on loopback
        "STRIPE_SECRET_KEY": stripe_server.secret_key,
        "STRIPE_PUBLISHABLE_KEY": stripe_server.publishable_key,
        "STRIPE_API_BASE": stripe_server.url,
        "STRIPE_JS_URL": f"{stripe_server.url}/js.stripe.com/v3/",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    })
    app.instance_path = str(tmp_path_factory.mktemp("e2e-instance"))
    server = make_server("127.0.0.1", 0, _files_read_whole(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="e2e-app", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    webhook = stripe_server.register_webhook(f"{url}/webhooks/stripe", WEBHOOK_SECRET)
    try:
        yield ServedApp(url=url, app=app)
    finally:
        stripe_server.disable_webhook(webhook)
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["market.db"].dispose()


def _files_read_whole(app):
    """The app with static files answered from memory, their file closed before the server writes.

    werkzeug's development server closes a response's iterable only after draining the socket;
    when the browser drops a connection mid-file (a page left while a script still loads), that
    drain raises and the file handle is left open, which this suite's warnings-as-errors turns
    into a failure of whichever test happens to be running. gunicorn, which serves production
    and the demo, closes it in every path, so only this test server needs the wrapper.
    """
    def wsgi(environ, start_response):
        body = app(environ, start_response)
        if not isinstance(body, FileWrapper):
            return body
        try:
            return [b"".join(body)]
        finally:
            body.close()
    return wsgi


@pytest.fixture(scope="session")
def demo(served) -> dict:
    """The demo marketplace (market/web/cli/demo.py), committed: people, listings, purchases."""
    app = served.app
    with served.session() as session, session.begin():
        seed_demo(session, app.extensions["market.passwords"])
        session.flush()  # the catalogue acts as the people just created
        seed_demo_catalog(session, app.config["TOKEN_ENCODING"])
        session.flush()  # the purchases buy what was just listed
        seed_demo_purchases(session, app.extensions["market.billing"])
    return {"password": DEMO_PASSWORD}


# Browser pages --------------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


_unique = itertools.count(1)


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid.split("::", 1)[-1]).strip("-")[:120]


@pytest.fixture()
def open_page(request, browser, served) -> Iterator[Callable]:
    """open_page(locale="en") -> a Playwright page in a context of its own (its own cookies),
    asking for that language; pages are screenshotted into tests/e2e/artifacts on failure.
    bypass_csp=True lets a test inject a script of its own (axe-core) despite the site's CSP."""
    contexts = []

    def open_(locale: str = "en", *, bypass_csp: bool = False):
        language = "zh-CN,zh;q=0.9" if locale.startswith("zh") else "en"
        context = browser.new_context(base_url=served.url, locale=locale,
                                      extra_http_headers={"Accept-Language": language},
                                      viewport={"width": 1280, "height": 900},
                                      bypass_csp=bypass_csp)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = _artifact_name(request.node.nodeid)
        for context in contexts:
            for page in context.pages:
                page.screenshot(path=ARTIFACTS / f"{name}-{next(_unique)}.png", full_page=True)
    for context in contexts:
        context.close()


def sign_in(page, email: str, password: str = DEMO_PASSWORD):
    page.goto("/login")
    page.locator("input[name=email]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, page.locator("main").inner_text()
    return page


@pytest.fixture()
def signed_in(open_page, demo):
    """signed_in(email, locale="en") -> a page signed in as that person."""
    def sign(email: str, locale: str = "en", password: str = DEMO_PASSWORD, **options):
        return sign_in(open_page(locale, **options), email, password)
    return sign


# Reporting ------------------------------------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    if not CHROMIUM.exists():
        for item in items:
            if "tests/e2e/" in item.nodeid.replace(os.sep, "/"):
                _skipped_for_chromium.append(item.nodeid)
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_terminal_summary(terminalreporter):
    if _skipped_for_chromium:
        terminalreporter.write_line(f"{len(_skipped_for_chromium)} {SKIP_REASON}", yellow=True)
