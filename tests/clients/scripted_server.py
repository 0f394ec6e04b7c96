"""An HTTP server on a loopback port that answers from a script, for the client's retry and
error tests: each request takes the next answer (a status, headers and a JSON body, or a dropped
connection with no answer at all) and is recorded as it arrived."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)  # JSON, or str sent as text/html
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without a byte of answer

    @classmethod
    def problem(cls, status: int, code: str, **members: Any) -> Answer:
        headers = members.pop("headers", {})
        body = {"type": f"/api/v1/docs#problems-{code}", "title": code.replace("_", " "),
                "status": status, "code": code, "detail": f"A {code} problem.",
                "request_id": f"req_{code}", **members}
        return cls(status, body, {"Content-Type": "application/problem+json", **headers})


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class ScriptedServer:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                server.seen.append(Seen(self.command, url.path, dict(parse_qsl(url.query)),
                                        dict(self.headers.items()),
                                        json.loads(raw) if raw else None))
                answer = server.answers.pop(0) if server.answers else Answer(
                    599, {"detail": "The script has no answer left."})
                if answer.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(answer.body, str):
                    payload, kind = answer.body.encode(), "text/html"
                else:
                    payload, kind = json.dumps(answer.body).encode(), "application/json"
                self.send_response(answer.status)
                headers = {"Content-Type": kind, "X-Request-Id": "req_header", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll: each test's server shuts down at once rather than in half a second.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
