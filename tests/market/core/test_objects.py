"""The object store keeps its rules on both backends: a local directory, and S3 through boto3
against a real S3 server on loopback (moto). Large contents are generated while they are read,
never held whole, so the tests also show that memory stays bounded by a chunk or a part."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
import tracemalloc
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import pytest

from market.core.errors import InvalidInput
from market.core.objects import (
    MAX_URL_SECONDS,
    MIN_PART_SIZE,
    MiB,
    ContentMismatch,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    PartTooSmall,
    RangeNotSatisfiable,
    S3Credentials,
    S3ObjectStore,
    UploadNotFound,
    object_key,
    store_from_settings,
)
from market.core.settings import load_config


class Generated(io.RawIOBase):
    """``size`` pseudo-random bytes, made as they are read (the same for the same seed)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self._left = size
        self._random = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self._left, MiB)
        buffer[:count] = self._random.randbytes(count)
        self._left -= count
        return count


def generated(size: int, seed: int = 0) -> io.BufferedReader:
    return io.BufferedReader(Generated(size, seed), MiB)


def sha256_of(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Backend:
    """A store, a fresh handle on the same storage (a restarted app), and what a test needs to
    see behind the store's back."""

    store: ObjectStore
    reopen: Callable[[], ObjectStore]
    tamper: Callable[[str, bytes], None]
    leftovers: Callable[[], list[str]]


def local_backend(tmp_path) -> Backend:
    root = tmp_path / "objects"
    settings = {"OBJECT_STORE": "local", "OBJECT_STORE_ROOT": str(root)}

    def tamper(key: str, data: bytes) -> None:
        path = root / key
        path.chmod(0o644)
        path.write_bytes(data)

    def leftovers() -> list[str]:
        files = [str(p.relative_to(root)).removeprefix("staging/uploads/")
                 for p in root.rglob("*") if p.is_file()]
        uploads = [f"upload:{p.name}" for p in (root / "staging" / "uploads").iterdir()]
        return sorted(files + uploads)

    return Backend(store_from_settings(settings), lambda: store_from_settings(settings), tamper,
                   leftovers)


def s3_backend(server, bucket: str) -> Backend:
    settings = {"OBJECT_STORE": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": server.url,
                "S3_REGION": server.region, "S3_ACCESS_KEY_ID": server.access_key_id,
                "S3_SECRET_ACCESS_KEY": server.secret_access_key,
                "S3_ADDRESSING_STYLE": "path"}
    raw = server.client()

    def tamper(key: str, data: bytes) -> None:
        raw.put_object(Bucket=bucket, Key=key, Body=data)

    def leftovers() -> list[str]:
        keys = [item["Key"] for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for item in page.get("Contents", ())]
        uploads = [f"upload:{upload['Key']}"
                   for upload in raw.list_multipart_uploads(Bucket=bucket).get("Uploads", ())]
        return sorted(keys + uploads)

    return Backend(store_from_settings(settings), lambda: store_from_settings(settings), tamper,
                   leftovers)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))


@pytest.fixture
def store(backend) -> ObjectStore:
    return backend.store


def test_a_content_is_stored_under_its_sha256_and_read_back(store):
    content = b"record 1\nrecord 2\n"
    sha256 = hashlib.sha256(content).hexdigest()

    stored = store.put_stream(io.BytesIO(content))

    assert stored.key == f"sha256/{sha256[:2]}/{sha256}" == object_key(sha256)
    assert (stored.size, stored.sha256) == (len(content), sha256)
    assert store.exists(stored.key) and store.size(stored.key) == len(content)
    with store.open(stored.key) as handle:
        assert handle.read() == content
    assert store.verify(stored.key)


def test_an_empty_content_is_an_object_too(store):
    stored = store.put_stream(io.BytesIO(b""))
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    with store.open(stored.key) as handle:
        assert handle.read() == b""


def test_the_same_content_twice_is_one_object_never_overwritten(backend):
    store = backend.store
    first = store.put_stream(io.BytesIO(b"the same bytes"))
    # Changed behind the store's back: writing the content again must not touch the object.
    backend.tamper(first.key, b"changed")

    again = store.put_stream(io.BytesIO(b"the same bytes"))

    assert again == first
    with store.open(first.key) as handle:
        assert handle.read() == b"changed"
    assert backend.leftovers() == [first.key]


def test_a_tampered_object_fails_verification(backend):
    stored = backend.store.put_stream(generated(3 * MiB))
    assert backend.store.verify(stored.key)

    backend.tamper(stored.key, b"x" + b"\0" * (3 * MiB - 1))

    assert not backend.store.verify(stored.key)


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["one part", "multipart"])
def test_a_content_whose_sha256_is_not_the_declared_one_is_refused(backend, size):
    declared = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(ContentMismatch):
        backend.store.put_stream(generated(size), expected_sha256=declared)

    assert backend.leftovers() == []
    assert not backend.store.exists(object_key(declared))


def test_the_declared_sha256_is_accepted_in_either_case(store):
    content = b"declared"
    stored = store.put_stream(io.BytesIO(content),
                              expected_sha256=hashlib.sha256(content).hexdigest().upper())
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    with pytest.raises(InvalidInput):
        store.put_stream(io.BytesIO(content), expected_sha256="not a digest")


def test_byte_ranges_are_half_open_and_cut_at_the_end(store):
    content = bytes(range(256)) * 400
    key = store.put_stream(io.BytesIO(content)).key

    def read(start, end):
        with store.open(key, start, end) as handle:
            return handle.read()

    assert read(0, 10) == content[:10]
    assert read(1000, 5000) == content[1000:5000]
    assert read(None, 7) == content[:7]
    assert read(len(content) - 5, None) == content[-5:]
    assert read(len(content) - 5, len(content) + 100) == content[-5:]
    assert read(len(content), None) == b""
    assert read(10, 10) == b""
    with pytest.raises(RangeNotSatisfiable):
        read(len(content) + 1, None)
    with pytest.raises(RangeNotSatisfiable):
        read(10, 5)


def test_a_range_of_a_large_object_streams_in_chunks(store):
    stored = store.put_stream(generated(20 * MiB, seed=3))
    start, end = 7 * MiB + 11, 15 * MiB + 3
    expected = generated(20 * MiB, seed=3).read(end)[start:]
    with store.open(stored.key, start, end) as handle:
        got = b"".join(iter(lambda: handle.read(MiB), b""))
    assert got == expected


@pytest.mark.parametrize("key", ["sha256/00/" + "1" * 64, "sha256/ab/" + "ab" + "0" * 62,
                                 "sha256/../../etc/passwd", "../" + "a" * 64])
def test_a_missing_or_malformed_key_names_no_object(store, key):
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.open(key)
    with pytest.raises(ObjectNotFound):
        store.size(key)
    with pytest.raises(ObjectNotFound):
        store.verify(key)


def test_a_large_content_is_written_in_bounded_memory(backend):
    size = 40 * MiB
    expected = sha256_of(generated(size, seed=7))

    tracemalloc.start()
    try:
        stored = backend.store.put_stream(generated(size, seed=7), expected_sha256=expected)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (stored.sha256, stored.size) == (expected, size)
    # A chunk (local), or the part just sent and the one being read (S3, 8 MiB parts): never
    # the content.
    assert peak < 3 * 8 * MiB, peak
    with backend.store.open(stored.key) as handle:
        assert sha256_of(handle) == expected
    assert backend.leftovers() == [stored.key]


def _put_part(url: str, data: bytes) -> str:
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["ETag"].strip('"')


@pytest.mark.parametrize("declared", [False, True], ids=["hash-at-the-end", "hash-declared"])
def test_an_interrupted_upload_resumes_from_the_parts_that_arrived(backend, declared):
    sizes = [MIN_PART_SIZE, MIN_PART_SIZE + 1, 6 * MiB, 2 * MiB + 5]
    source = generated(sum(sizes), seed=11)
    parts = [source.read(size) for size in sizes]
    whole = hashlib.sha256(b"".join(parts)).hexdigest()

    # Declared at the start, S3 assembles the parts at the content's address (no copy).
    upload_id = backend.store.start_upload(whole if declared else None)
    backend.store.upload_part(upload_id, 1, parts[0])
    backend.store.upload_part(upload_id, 2, io.BytesIO(b"a part sent wrongly"))
    backend.store.upload_part(upload_id, 2, io.BytesIO(parts[1]))  # sent again, replacing it

    # The client and the app go away; a new app and the client ask what arrived.
    store = backend.reopen()
    arrived = store.list_parts(upload_id)
    assert [(p.number, p.size, p.etag) for p in arrived] == [
        (number, len(data), hashlib.md5(data).hexdigest())
        for number, data in enumerate(parts[:2], start=1)]
    for number, data in enumerate(parts[2:], start=3):
        url = store.presigned_part_url(upload_id, number, expires=60)
        if url is None:  # the local store: through the app
            store.upload_part(upload_id, number, io.BytesIO(data))
        else:  # S3: the client sends the part straight to the bucket
            assert _put_part(url, data) == hashlib.md5(data).hexdigest()
    assert [p.number for p in store.list_parts(upload_id)] == [1, 2, 3, 4]

    stored = store.complete_upload(upload_id, expected_sha256=whole)

    assert (stored.sha256, stored.size) == (whole, sum(sizes))
    with store.open(stored.key) as handle:
        assert sha256_of(handle) == whole
    assert backend.leftovers() == [stored.key]
    with pytest.raises(UploadNotFound):
        store.list_parts(upload_id)


def test_two_uploads_of_one_new_content_one_completes_the_other_is_refused(backend):
    data = generated(MIN_PART_SIZE + 3, seed=5).read()
    whole = hashlib.sha256(data).hexdigest()
    first, second = backend.store.start_upload(whole), backend.store.start_upload(whole)
    backend.store.upload_part(first, 1, data)
    backend.store.upload_part(second, 1, b"not the content at all")

    stored = backend.store.complete_upload(first, whole)
    assert stored.sha256 == whole
    # The second's bytes were never checked: however they compare, it does not count as an
    # upload of that content (on S3 it is refused before assembly, locally by its hash).
    with pytest.raises(ContentMismatch):
        backend.store.complete_upload(second, whole)
    assert backend.leftovers() == [stored.key]
    with backend.store.open(stored.key) as handle:
        assert handle.read() == data


def test_an_upload_started_for_one_sha256_is_not_completed_as_another(s3_server, s3_bucket):
    store = s3_backend(s3_server, s3_bucket).store
    data = generated(1000, seed=6).read()
    upload_id = store.start_upload(hashlib.sha256(data).hexdigest())
    store.upload_part(upload_id, 1, data)
    with pytest.raises(ContentMismatch):
        store.complete_upload(upload_id, hashlib.sha256(b"other").hexdigest())
    assert store.complete_upload(upload_id, hashlib.sha256(data).hexdigest()).size == 1000


def test_an_upload_of_content_already_stored_is_a_no_op(backend):
    content = generated(MIN_PART_SIZE + 100, seed=5).read()
    existing = backend.store.put_stream(io.BytesIO(content))
    upload_id = backend.store.start_upload()
    backend.store.upload_part(upload_id, 1, content[:MIN_PART_SIZE])
    backend.store.upload_part(upload_id, 2, content[MIN_PART_SIZE:])

    assert backend.store.complete_upload(upload_id) == existing
    assert backend.leftovers() == [existing.key]


def test_an_upload_whose_sha256_is_not_the_declared_one_leaves_nothing(backend):
    upload_id = backend.store.start_upload()
    backend.store.upload_part(upload_id, 1, generated(MIN_PART_SIZE).read())
    backend.store.upload_part(upload_id, 2, b"tail")

    with pytest.raises(ContentMismatch):
        backend.store.complete_upload(upload_id, expected_sha256="0" * 64)

    assert backend.leftovers() == []
    with pytest.raises(UploadNotFound):
        backend.store.list_parts(upload_id)


def test_a_small_part_before_the_last_is_refused_and_the_upload_kept(backend):
    upload_id = backend.store.start_upload()
    backend.store.upload_part(upload_id, 1, b"too small to be followed")
    backend.store.upload_part(upload_id, 2, b"last")

    with pytest.raises(PartTooSmall):
        backend.store.complete_upload(upload_id)

    assert [p.number for p in backend.store.list_parts(upload_id)] == [1, 2]
    backend.store.upload_part(upload_id, 1, generated(MIN_PART_SIZE).read())
    stored = backend.store.complete_upload(upload_id)
    assert stored.size == MIN_PART_SIZE + 4


def test_an_aborted_upload_is_gone(backend):
    upload_id = backend.store.start_upload()
    backend.store.upload_part(upload_id, 1, b"some bytes")

    backend.store.abort_upload(upload_id)
    backend.store.abort_upload(upload_id)

    assert backend.leftovers() == []
    with pytest.raises(UploadNotFound):
        backend.store.list_parts(upload_id)


@pytest.mark.parametrize("upload_id", ["", "../../etc", "0" * 32, "not.an-upload"])
def test_an_unknown_upload_is_not_found(store, upload_id):
    with pytest.raises(UploadNotFound):
        store.list_parts(upload_id)
    with pytest.raises(UploadNotFound):
        store.complete_upload(upload_id)


def test_part_numbers_and_url_lifetimes_are_bounded(store):
    upload_id = store.start_upload()
    for number in (0, 10_001):
        with pytest.raises(InvalidInput):
            store.upload_part(upload_id, number, b"x")
    key = store.put_stream(io.BytesIO(b"x")).key
    for expires in (0, MAX_URL_SECONDS + 1):
        with pytest.raises(InvalidInput):
            store.presigned_url(key, expires)
        with pytest.raises(InvalidInput):
            store.presigned_part_url(upload_id, 1, expires)


def test_the_local_store_leaves_serving_to_the_app(tmp_path):
    store = LocalObjectStore(tmp_path)
    key = store.put_stream(io.BytesIO(b"x")).key
    assert store.presigned_url(key, 60) is None
    assert store.presigned_part_url(store.start_upload(), 1) is None


def test_an_s3_object_is_fetched_through_a_short_lived_url(s3_server, s3_bucket):
    store = s3_backend(s3_server, s3_bucket).store
    content = generated(2 * MiB, seed=2).read()
    key = store.put_stream(io.BytesIO(content)).key

    url = store.presigned_url(key, expires=60)

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"]
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == content
    request = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 206 and response.read() == content[10:20]


def test_s3_refuses_a_second_write_of_a_key_that_exists(s3_server, s3_bucket):
    """The guard against two writers racing past the HEAD: ``If-None-Match: *``."""
    store = s3_backend(s3_server, s3_bucket).store
    key = store.put_stream(io.BytesIO(b"first")).key

    assert not store._write_once(store.client.put_object, Key=key, Body=b"second")

    with store.open(key) as handle:
        assert handle.read() == b"first"


def test_an_s3_object_larger_than_one_copy_is_copied_in_parts(s3_server, s3_bucket):
    backend = s3_backend(s3_server, s3_bucket)
    store = S3ObjectStore(
        s3_bucket, s3_server.url,
        S3Credentials(s3_server.access_key_id, s3_server.secret_access_key), s3_server.region,
        addressing_style="path", single_copy_limit=8 * MiB, copy_part_size=MIN_PART_SIZE)
    expected = sha256_of(generated(17 * MiB, seed=9))

    stored = store.put_stream(generated(17 * MiB, seed=9))

    assert stored.sha256 == expected
    assert store.verify(stored.key)
    assert backend.leftovers() == [stored.key]


def test_the_store_comes_from_the_settings(tmp_path):
    config = load_config(tmp_path, environ={})
    store = store_from_settings(config)
    assert isinstance(store, LocalObjectStore) and store.root == tmp_path / "objects"

    with pytest.raises(RuntimeError, match="OBJECT_STORE"):
        load_config(tmp_path, environ={"OBJECT_STORE": "ftp"})
    with pytest.raises(RuntimeError, match="S3_BUCKET"):
        store_from_settings({"OBJECT_STORE": "s3"})
    with pytest.raises(RuntimeError, match="S3_SECRET_ACCESS_KEY"):
        store_from_settings({"OBJECT_STORE": "s3", "S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "k"})
    s3 = store_from_settings(load_config(tmp_path, environ={
        "OBJECT_STORE": "S3", "S3_BUCKET": "datasets", "S3_REGION": "cn-beijing",
        "S3_ENDPOINT_URL": "https://oss-cn-beijing.aliyuncs.com",
        "S3_ADDRESSING_STYLE": "virtual", "S3_ACCESS_KEY_ID": "LTAI-example",
        "S3_SECRET_ACCESS_KEY": "secret"}))
    assert isinstance(s3, S3ObjectStore) and s3.bucket == "datasets"
    url = s3.presigned_url(object_key("a" * 64), 60)
    assert url.startswith("https://datasets.oss-cn-beijing.aliyuncs.com/sha256/aa/")


def parallel_s3_store(server, bucket: str, workers: int) -> S3ObjectStore:
    return S3ObjectStore(
        bucket, server.url, S3Credentials(server.access_key_id, server.secret_access_key),
        server.region, addressing_style="path", part_size=MIN_PART_SIZE, workers=workers)


def watch_parts(store: S3ObjectStore, delay: Callable[[int], float]) -> dict:
    """Wrap the store's part sends: each waits ``delay(number)`` seconds first; what is seen
    (the order the sends finish in, the most under way at once) is recorded."""
    seen = {"finished": [], "under_way": 0, "most": 0}
    lock = threading.Lock()
    upload_part = store.client.upload_part

    def watched(**params):
        with lock:
            seen["under_way"] += 1
            seen["most"] = max(seen["most"], seen["under_way"])
        try:
            time.sleep(delay(params["PartNumber"]))
            return upload_part(**params)
        finally:
            with lock:
                seen["under_way"] -= 1
                seen["finished"].append(params["PartNumber"])

    store.client.upload_part = watched
    return seen


def test_parts_sent_in_parallel_are_assembled_in_the_stream_order(s3_server, s3_bucket):
    store = parallel_s3_store(s3_server, s3_bucket, workers=4)
    # The first part is the last to arrive.
    seen = watch_parts(store, lambda number: 0.5 if number == 1 else 0)
    size = 4 * MIN_PART_SIZE + 123
    expected = sha256_of(generated(size, seed=13))

    stored = store.put_stream(generated(size, seed=13))

    assert seen["finished"][-1] == 1 and sorted(seen["finished"]) == [1, 2, 3, 4, 5]
    assert (stored.sha256, stored.size) == (expected, size)
    with store.open(stored.key) as handle:
        assert sha256_of(handle) == expected
    assert store.verify(stored.key)


def test_parts_sent_in_parallel_hold_at_most_workers_parts_in_memory(s3_server, s3_bucket):
    workers = 3
    store = parallel_s3_store(s3_server, s3_bucket, workers)
    seen = watch_parts(store, lambda number: 0.05)
    size = 12 * MIN_PART_SIZE
    expected = sha256_of(generated(size, seed=17))

    tracemalloc.start()
    try:
        stored = store.put_stream(generated(size, seed=17), expected_sha256=expected)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert stored.sha256 == expected
    assert seen["most"] == workers
    # The parts held (a block grows in chunks, so a little past its size) and a chunk read.
    assert peak < workers * MIN_PART_SIZE * 1.25 + 2 * MiB, peak


def test_a_failed_part_stops_the_upload_and_leaves_nothing(s3_server, s3_bucket):
    backend = s3_backend(s3_server, s3_bucket)
    store = parallel_s3_store(s3_server, s3_bucket, workers=2)
    upload_part = store.client.upload_part

    def failing(**params):
        if params["PartNumber"] == 2:
            raise ConnectionError("the link went down")
        return upload_part(**params)

    store.client.upload_part = failing
    source = generated(40 * MIN_PART_SIZE, seed=19)

    with pytest.raises(ConnectionError):
        store.put_stream(source)

    assert backend.leftovers() == []
    assert source.raw._left > 30 * MIN_PART_SIZE  # the rest of the stream was never read


def test_parts_that_arrive_at_once_and_out_of_order_are_assembled_by_number(backend):
    sizes = [MIN_PART_SIZE] * 5 + [MiB + 7]
    source = generated(sum(sizes), seed=23)
    parts = [source.read(size) for size in sizes]
    whole = hashlib.sha256(b"".join(parts)).hexdigest()
    upload_id = backend.store.start_upload()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda number: backend.store.upload_part(upload_id, number,
                                                                 parts[number - 1]),
                      reversed(range(1, len(parts) + 1))))
    stored = backend.store.complete_upload(upload_id, expected_sha256=whole)

    assert (stored.sha256, stored.size) == (whole, sum(sizes))
    assert backend.leftovers() == [stored.key]
