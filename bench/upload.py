"""A large resumable upload through the object store, beside the same file's raw boto3 upload.

    python bench/upload.py                     # 5 GB, moto's S3 on loopback
    python bench/upload.py --size-gb 1         # a quicker run
    python bench/upload.py --endpoint-url http://127.0.0.1:9000 --bucket b   # an S3 of your own

A file of ``--size-gb`` deterministic pseudo-random bytes (one random block, each copy of it
stamped with its number, so no two parts are alike) is written to a temporary directory, its
SHA-256 taken on the way. Then, against one S3 server (moto in a subprocess unless
``--endpoint-url``):

- the store's resumable path: ``start_upload``, parts sent by ``--workers`` threads through
  ``upload_part``; after about half the parts have arrived the client "crashes" (the parts not
  under way are dropped, and the store object with them); a new store resumes from
  ``list_parts``, sends the rest, and ``complete_upload`` with the expected SHA-256, whose answer
  (SHA-256 and size) is checked;
- raw boto3: ``upload_file`` of the same file, with a ``TransferConfig`` of the same part size and
  concurrency and the store's client configuration (no extra checksums).

It prints MB/s of each (wall clock around the whole path, completion included; the store's
path also reads the object back to hash it and copies it under its address), the ratio
store / raw (target >= 0.8), and the memory of this process during the store's path: the RSS
high-water mark (``getrusage``, which covers the whole process life so far) and the tracemalloc
peak. Target: under 300 MB. The local store's path is timed the same way, beside a plain file
copy. Memory is traced during every timed path, so each pays tracemalloc's cost alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from market.core.objects import (  # noqa: E402
    MiB,
    LocalObjectStore,
    ObjectStore,
    S3Credentials,
    S3ObjectStore,
)

GB = 10**9
TARGET_RATIO = 0.8
TARGET_PEAK_MB = 300
BLOCK = 64 * MiB
KEY_ID, SECRET, REGION = "bench-key-id", "bench-secret", "us-east-1"

# moto's server on a socket bound here and inherited, as tests/s3_server.py starts it.
MOTO = """
import socket, sys
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
app = DomainDispatcherApplication(create_backend_app)
make_server("127.0.0.1", int(sys.argv[2]), app, threaded=True,
            request_handler=MotoRequestHandler, fd=int(sys.argv[1])).serve_forever()
"""


def make_file(path: Path, size: int) -> str:
    """Write ``size`` deterministic bytes to ``path``; their SHA-256."""
    block = bytearray(hashlib.shake_256(b"bench/upload.py").digest(BLOCK))
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for number, offset in enumerate(range(0, size, BLOCK)):
            block[:8] = number.to_bytes(8, "big")
            piece = memoryview(block)[: min(BLOCK, size - offset)]
            digest.update(piece)
            out.write(piece)
    return digest.hexdigest()


def start_moto(workdir: Path) -> tuple[subprocess.Popen, str]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    with open(workdir / "moto.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", MOTO, str(listener.fileno()), str(port)],
            pass_fds=[listener.fileno()], cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
    listener.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2):
                return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "moto.log").read_text()) from None
            time.sleep(0.05)


def send_parts(store: ObjectStore, upload_id: str, path: Path, size: int, part_size: int,
               numbers: list[int], workers: int, stop_after: int | None = None) -> int:
    """Send parts ``numbers`` of the file on ``workers`` threads, each reading its own part;
    with ``stop_after``, the client stops once that many have arrived (the sends under way
    finish, the rest are never made). The number of parts sent."""
    arrived, lock, crashed = [0], threading.Lock(), threading.Event()

    def send(number: int) -> None:
        if crashed.is_set():
            return
        offset = (number - 1) * part_size
        with open(path, "rb") as handle:
            data = os.pread(handle.fileno(), min(part_size, size - offset), offset)
        store.upload_part(upload_id, number, data)
        with lock:
            arrived[0] += 1
            if stop_after is not None and arrived[0] >= stop_after:
                crashed.set()

    with ThreadPoolExecutor(workers) as pool:
        for sent in [pool.submit(send, number) for number in numbers]:
            sent.result()
    return arrived[0]


def resumable_upload(make_store, path: Path, size: int, sha256: str, part_size: int,
                     workers: int) -> dict:
    """The store's path, interrupted after about half the parts and resumed by a new store."""
    count = -(-size // part_size)
    store = make_store()
    started = time.perf_counter()
    upload_id = store.start_upload()
    first = send_parts(store, upload_id, path, size, part_size, list(range(1, count + 1)),
                       workers, stop_after=count // 2)
    del store  # the client crashed; a new one starts from what the store says arrived

    store = make_store()
    arrived = {part.number for part in store.list_parts(upload_id)}
    assert len(arrived) == first, (len(arrived), first)
    rest = [number for number in range(1, count + 1) if number not in arrived]
    send_parts(store, upload_id, path, size, part_size, rest, workers)
    parts_done = time.perf_counter()
    stored = store.complete_upload(upload_id, expected_sha256=sha256)
    finished = time.perf_counter()
    assert (stored.sha256, stored.size) == (sha256, size), stored
    return {"seconds": finished - started, "parts_seconds": parts_done - started,
            "complete_seconds": finished - parts_done, "before_crash": first,
            "after_crash": len(rest), "parts": count}


def traced(run):
    """Run ``run()`` under tracemalloc: its answer and the traced peak in bytes."""
    tracemalloc.start()
    try:
        answer = run()
        return answer, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def rss_high_water() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def rate(size: int, seconds: float) -> float:
    return size / 10**6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=5.0)
    parser.add_argument("--part-mb", type=int, default=16, help="part size in MiB")
    parser.add_argument("--workers", type=int, default=4, help="parts sent at once")
    parser.add_argument("--endpoint-url", help="an S3 server to use instead of moto")
    parser.add_argument("--bucket", help="an existing bucket (with --endpoint-url)")
    parser.add_argument("--skip-local", action="store_true", help="only the S3 paths")
    parser.add_argument("--tmp", help="where the file and the local store go")
    args = parser.parse_args()
    size, part_size = int(args.size_gb * GB), args.part_mb * MiB

    with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=args.tmp) as workdir:
        workdir = Path(workdir)
        path = workdir / "upload.bin"
        started = time.perf_counter()
        sha256 = make_file(path, size)
        print(f"file: {size / GB:.2f} GB ({size} bytes), {-(-size // part_size)} parts of "
              f"{args.part_mb} MiB, {args.workers} at once; written and hashed in "
              f"{time.perf_counter() - started:.1f} s; sha256 {sha256}")

        moto = None
        if args.endpoint_url:
            url = args.endpoint_url
        else:
            moto, url = start_moto(workdir)
        try:
            s3 = dict(endpoint_url=url, credentials=S3Credentials(KEY_ID, SECRET), region=REGION,
                      addressing_style="path", part_size=part_size, workers=args.workers)
            bucket = args.bucket or f"bench-{uuid.uuid4().hex[:12]}"
            probe = S3ObjectStore(bucket, **s3)
            if not args.bucket:
                probe.client.create_bucket(Bucket=bucket)

            store_run, store_peak = traced(lambda: resumable_upload(
                lambda: S3ObjectStore(bucket, **s3), path, size, sha256, part_size,
                args.workers))
            store_rss = rss_high_water()
            # Printed before the raw upload, so a server that fails it leaves these figures.
            store_rate = rate(size, store_run["seconds"])
            print(f"S3 store, resumable: {store_rate:8.1f} MB/s  ({store_run['seconds']:.1f} s: "
                  f"parts {store_run['parts_seconds']:.1f} s, {store_run['before_crash']} before "
                  f"the crash and {store_run['after_crash']} after it; complete "
                  f"{store_run['complete_seconds']:.1f} s) sha256 and size checked", flush=True)
            print(f"peak memory during the store's path: RSS high-water {store_rss / MiB:.0f} "
                  f"MiB, tracemalloc {store_peak / MiB:.0f} MiB", flush=True)

            # The raw client is configured as the store's own is (same retries, no CRC32).
            raw = boto3.session.Session().client(
                "s3", endpoint_url=url, config=probe.client.meta.config,
                aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
            transfer = TransferConfig(multipart_threshold=part_size,
                                      multipart_chunksize=part_size,
                                      max_concurrency=args.workers, use_threads=True)
            raw_key = f"raw/{uuid.uuid4().hex}"

            def raw_upload() -> float:
                began = time.perf_counter()
                raw.upload_file(str(path), bucket, raw_key, Config=transfer)
                return time.perf_counter() - began

            raw_seconds, raw_peak = traced(raw_upload)
            assert raw.head_object(Bucket=bucket, Key=raw_key)["ContentLength"] == size
        finally:
            if moto is not None:
                moto.terminate()
                moto.wait(timeout=30)

        raw_rate = rate(size, raw_seconds)
        print(f"raw boto3 upload_file: {raw_rate:6.1f} MB/s  ({raw_seconds:.1f} s)")
        ratio = store_rate / raw_rate
        print(f"ratio store / raw: {ratio:.2f}  (target >= {TARGET_RATIO}: "
              f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
        print(f"  store's parts alone / raw: {raw_seconds / store_run['parts_seconds']:.2f}")
        peak_mb = max(store_rss, store_peak) / MiB
        print(f"peak memory during the store's path: RSS high-water {store_rss / MiB:.0f} MiB, "
              f"tracemalloc {store_peak / MiB:.0f} MiB  (target < {TARGET_PEAK_MB} MB: "
              f"{'met' if peak_mb < TARGET_PEAK_MB else 'NOT met'}); raw upload_file "
              f"tracemalloc {raw_peak / MiB:.0f} MiB")

        if not args.skip_local:
            local_root = workdir / "objects"
            local_run, local_peak = traced(lambda: resumable_upload(
                lambda: LocalObjectStore(local_root), path, size, sha256, part_size,
                args.workers))
            began = time.perf_counter()
            shutil.copyfile(path, workdir / "copy.bin")
            copy_seconds = time.perf_counter() - began
            print(f"local store, resumable: {rate(size, local_run['seconds']):8.1f} MB/s  "
                  f"({local_run['seconds']:.1f} s: parts {local_run['parts_seconds']:.1f} s, "
                  f"complete {local_run['complete_seconds']:.1f} s), tracemalloc "
                  f"{local_peak / MiB:.0f} MiB; a plain file copy: "
                  f"{rate(size, copy_seconds):.1f} MB/s")
            print(f"RSS high-water of the whole run: {rss_high_water() / MiB:.0f} MiB")


if __name__ == "__main__":
    main()
