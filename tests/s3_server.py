"""A local S3 for the tests: moto's server in a subprocess, one per test session.

`s3_server` starts it on a loopback port and yields its address and the keys it accepts; `s3_bucket`
makes a bucket of its own for one test. Tests talk to it through the real boto3, over HTTP.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from tests.loopback import serve_on_loopback

# moto_server's own command line takes a port number, and another process could take that port
# between choosing it and binding it. The listening socket is bound here instead and inherited
# by the server (tests.loopback), as for localstripe.
_SERVER_PROGRAM = """
import socket, sys
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
app = DomainDispatcherApplication(create_backend_app)
make_server("127.0.0.1", int(sys.argv[2]), app, threaded=True,
            request_handler=MotoRequestHandler, fd=int(sys.argv[1])).serve_forever()
"""


@dataclass
class S3Server:
    """A running moto S3: its URL, and keys it accepts (moto accepts any)."""

    url: str
    region: str = "us-east-1"
    access_key_id: str = "testing-key-id"
    secret_access_key: str = "testing-secret"

    def client(self):
        """A raw boto3 client of the server, for what the marketplace never does itself."""
        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """moto's S3 on a free 127.0.0.1 port for the whole session."""
    with serve_on_loopback("moto", _SERVER_PROGRAM, tmp_path_factory.mktemp("moto"),
                           lambda url: S3Server(url).answers()) as url:
        yield S3Server(url=url)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's server."""
    name = f"market-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name
