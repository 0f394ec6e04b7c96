"""How gunicorn serves the app: the answers it gives itself are problem+json too.

gunicorn refuses some requests before the app sees them: a request line longer than
``limit_request_line`` (414), too many or too large headers (431), a malformed request line or
header (400). Its own answer is an HTML page; a client of the API reads every other error as
application/problem+json with a ``code`` and a request id, so ``ProblemWorker`` writes these the
same way (``gunicorn.conf.py`` names it). The limits themselves stay gunicorn's: nothing larger
is read into memory.
"""

from __future__ import annotations

import json
import uuid

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

from market.web.http import PROBLEM_DOCS, PROBLEM_MIMETYPE, STATUS_CODES


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP response: the problem+json of a request refused before the app ran."""
    code = STATUS_CODES.get(status, "malformed_request")
    request_id = f"req_{uuid.uuid4().hex}"
    body = json.dumps({"type": f"{PROBLEM_DOCS}-{code}", "title": reason, "status": status,
                       "code": code, "detail": detail, "request_id": request_id}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: {PROBLEM_MIMETYPE}\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-Id: {request_id}\r\n\r\n")
    return head.encode("latin-1") + body


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, problem_bytes(status_int, reason, mesg))


class ProblemWorker(SyncWorker):
    """gunicorn's sync worker, answering the requests it refuses itself as problem+json."""

    def init_process(self) -> None:
        # gunicorn's error path looks ``util.write_error`` up on each refusal; in this worker
        # process it writes a problem instead of an HTML page.
        util.write_error = write_problem
        super().init_process()
