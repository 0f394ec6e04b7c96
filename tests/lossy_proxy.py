"""A broken network between the Stripe SDK and the local Stripe server, on a loopback port.

`LossyProxy` forwards every request to the server and relays its answer, except those a test
told it to lose: ``lose_answer`` has the server carry the request out and then drops the
connection without a byte of the answer (what a timeout or a reset after the processor acted
looks like to the caller); ``lose_request`` drops the connection before forwarding (the
processor never hears of it). ``rewrite`` changes an answer's JSON on its way back (a processor
that answers differently, e.g. a refund left ``pending``).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
              "accept-encoding"}


@dataclass
class _Rule:
    method: str
    path: str
    times: int
    action: str  # lose_answer | lose_request | rewrite
    rewrite: Callable[[dict], dict] | None = None


@dataclass
class LossyProxy:
    upstream: str
    rules: list[_Rule] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, what)

    def __post_init__(self) -> None:
        proxy = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                rule = proxy._take(self.command, self.path.split("?")[0])
                if rule is not None and rule.action == "lose_request":
                    proxy.seen.append((self.command, self.path, "request lost"))
                    self._drop()
                    return
                status, headers, answer = proxy._forward(self.command, self.path,
                                                         self.headers, body)
                if rule is not None and rule.action == "lose_answer":
                    proxy.seen.append((self.command, self.path, "answer lost"))
                    self._drop()
                    return
                if rule is not None and rule.action == "rewrite":
                    answer = json.dumps(rule.rewrite(json.loads(answer))).encode()
                proxy.seen.append((self.command, self.path, str(status)))
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def lose_answer(self, method: str, path: str, times: int = 1) -> None:
        self.rules.append(_Rule(method, path, times, "lose_answer"))

    def lose_request(self, method: str, path: str, times: int = 1) -> None:
        self.rules.append(_Rule(method, path, times, "lose_request"))

    def rewrite(self, method: str, path: str, change: Callable[[dict], dict],
                times: int = 1) -> None:
        self.rules.append(_Rule(method, path, times, "rewrite", change))

    def _take(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path == path and rule.times > 0:
                    rule.times -= 1
                    return rule
        return None

    def _forward(self, method, path, headers, body):
        request = urllib.request.Request(self.upstream + path, data=body, method=method)
        for name, value in headers.items():
            if name.lower() not in HOP_BY_HOP:
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, list(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            return error.code, list(error.headers.items()), error.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
