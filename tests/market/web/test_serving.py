"""gunicorn, as the app is served: requests it refuses before the app runs are problem+json."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app under gunicorn with the repository's gunicorn.conf.py, on a free port."""
    port = _free_port()
    instance = tmp_path_factory.mktemp("served")
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{instance / 'market.db'}",
               SECRET_KEY="served-test")
    log = instance / "gunicorn.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "wsgi:app"], cwd=ROOT, env=env, stdout=output, stderr=output)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("request_, status, code", [
    (b"GET /api/v1/datasets?q=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     414, "uri_too_long"),
    (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n",
     431, "headers_too_large"),
    (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431, "headers_too_large"),
    (b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_request"),
])
def test_what_gunicorn_refuses_is_a_problem(served, request_, status, code):
    got, headers, body = _raw(served, request_)
    assert got == status
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["code"] == code
    assert problem["request_id"] == headers["x-request-id"]


def test_an_ordinary_answer_carries_its_request_id(served):
    got, headers, body = _raw(served, b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n"
                                      b"X-Request-Id: client-chosen.42\r\nConnection: close"
                                      b"\r\n\r\n")
    assert got == 200 and headers["x-request-id"] == "client-chosen.42"
