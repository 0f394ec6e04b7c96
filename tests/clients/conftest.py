"""Fixtures for the Python client's tests: the client's source on the path, and the app served
over HTTP on a loopback port.

The tests import the client from ``clients/python/src`` in this checkout, not whatever copy a
virtualenv holds, so they always test the code beside them (``requirements.txt`` installs it
editable for everyone else). The served app has a database of its own whose commits are real:
the client talks to it over a socket, from other threads, as a model company would, so nothing
can be rolled back; each test module makes its own organizations and datasets.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

CLIENT_SOURCE = Path(__file__).resolve().parents[2] / "clients" / "python" / "src"
if str(CLIENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLIENT_SOURCE))

from market_client import MarketClient  # noqa: E402  (found through the path set just above)

from tests.clients.scripted_server import ScriptedServer  # noqa: E402
from tests.concurrency import fresh_app  # noqa: E402


@pytest.fixture()
def server():
    """A loopback HTTP server answering what each test scripts (retries, errors)."""
    server = ScriptedServer()
    yield server
    server.close()


@dataclass
class LiveApp:
    """The marketplace on a loopback port, and the app object for arranging what other parties
    (suppliers, the exchange, platform finance) do."""

    url: str
    app: Flask

    def session(self):
        return self.app.extensions["market.db"].session()

    def client(self, secret: str, url: str | None = None) -> MarketClient:
        # Retries wait for real: the live tests never meet a long Retry-After.
        return MarketClient(secret, url or self.url)


@pytest.fixture(scope="session")
def live_app(database_url, tmp_path_factory) -> Iterator[LiveApp]:
    with fresh_app(database_url, tmp_path_factory.mktemp("client-db")) as app:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="client-app", daemon=True)
        thread.start()
        try:
            yield LiveApp(f"http://127.0.0.1:{server.server_port}", app)
        finally:
            server.shutdown()
            thread.join(timeout=10)
            server.server_close()
