"""A test server in a subprocess on a loopback port the parent binds and the child inherits, so no
other process can take the port between choosing it and binding it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serve_on_loopback(name: str, program: str, workdir: Path,
                      answers: Callable[[str], bool]) -> Iterator[str]:
    """Run ``program`` (Python source given the socket's file descriptor and port as argv[1]
    and argv[2]) until it ``answers`` at its URL; yield the URL, then stop it. Its output goes
    to ``<name>.log`` in ``workdir``, shown when it does not start."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", program, str(listener.fileno()), str(port)],
            pass_fds=[listener.fileno()],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
