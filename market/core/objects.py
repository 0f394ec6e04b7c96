"""Object storage: the bytes of dataset versions, written once under their SHA-256.

An object's key is its content's address, ``sha256/<first two hex digits>/<64 hex digits>``:
a key names exactly one content, writing the same content twice is a no-op, and no object is
ever overwritten. Every write hashes the bytes as they pass, in chunks, so memory is bounded by
one chunk (or the few multipart parts under way), never by the object; a write given the SHA-256 it expects
refuses any other content and leaves nothing behind. ``verify`` re-hashes an object, so a byte
changed in the store behind the marketplace's back shows.

One interface, ``ObjectStore``, and two stores behind it:

- ``LocalObjectStore``: a directory, the embedded default (``make demo`` needs nothing). A
  content is written to a temporary file in the store's staging directory (the same file
  system), flushed to disk, and then hard-linked under its key. The final name is known only
  once the last byte is hashed, and a link, unlike a rename, fails when the name exists: an
  object, once there, is never replaced.
- ``S3ObjectStore``: any S3-compatible server through boto3 (AWS S3, Aliyun OSS, MinIO, Ceph
  RGW). A content of one part is hashed, then put under its key after a HEAD, with
  ``If-None-Match: *`` while the server accepts it; a longer one goes up as a multipart upload
  to a staging key, a few parts in parallel, and is copied server-side under its address once
  its hash is known. Buyers
  fetch objects through short-lived presigned URLs.

Large files arrive through a resumable multipart upload: ``start_upload`` gives an id; parts
are sent by number (through the app with ``upload_part``, or for S3 straight to the bucket
through ``presigned_part_url``); ``list_parts`` says what has arrived, so an interrupted client
sends only the rest; ``complete_upload`` assembles the parts in their numbers' order, hashes
the whole in one streaming pass and stores it under its address. On S3 that pass reads the
assembled object back, in one GET hashed as it arrives: the parts go from the client straight
to the bucket, in any order, possibly more than once and from a client that has restarted, so
no process sees them all in order, and a SHA-256 cannot be made from the parts' digests. One
GET rather than ranges, because the hash takes the bytes in order anyway, and some servers (moto
among them) read a whole object to answer any range of it. Every part but the last is at
least ``MIN_PART_SIZE``, S3's own rule, which the local store keeps too so that an upload that
works on one store works on the other. A completed upload, or one refused for its SHA-256, is
gone; an abandoned one stays until ``abort_upload``.

Byte ranges are half-open, as in slicing: ``open(key, start, end)`` reads bytes ``start`` up
to but not including ``end``; an ``end`` past the object is cut to its size, a ``start`` past
it is refused (416).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import itertools
import tempfile
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from market.core.errors import InvalidInput, MarketError, NotFound
from market.core.settings import SETTINGS

MiB = 1024 * 1024
# What one read, hash and write step holds in memory.
CHUNK_SIZE = MiB
# Reads of an object being hashed: large, so the hash, not the requests, sets the pace.
_HASH_READ = 8 * MiB
# S3's limits on a multipart upload, kept by both stores.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
# Presigned URLs are for one fetch or one part, soon after they are handed out.
DEFAULT_URL_SECONDS = 300
MAX_URL_SECONDS = 3600

_KEY = re.compile(r"sha256/([0-9a-f]{2})/(\1[0-9a-f]{62})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UPLOAD_TOKEN = re.compile(r"[0-9a-f]{32}")

T = TypeVar("T")


class ObjectNotFound(NotFound):
    default_code = "object_not_found"


class UploadNotFound(NotFound):
    default_code = "upload_not_found"


class ContentMismatch(InvalidInput):
    """The content's SHA-256 is not the one its sender declared."""

    default_code = "sha256_mismatch"


class PartTooSmall(InvalidInput):
    default_code = "part_too_small"


class RangeNotSatisfiable(MarketError):
    status = 416
    title = "Range not satisfiable"
    default_code = "range_not_satisfiable"


@dataclass(frozen=True)
class StoredObject:
    """An object as stored: its key, its size in bytes and the SHA-256 its key is made of."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class UploadedPart:
    """A part of an upload that has arrived. ``etag`` is the hex MD5 of its bytes (what S3
    answers for a plain part), so a resuming client can tell its own part from another."""

    number: int
    size: int
    etag: str


class ObjectStore(Protocol):
    """Content-addressed, write-once storage of large byte strings."""

    def put_stream(self, stream: BinaryIO, expected_sha256: str | None = None) -> StoredObject:
        """Store what ``stream`` reads up to its end under its SHA-256."""

    def open(self, key: str, start: int | None = None, end: int | None = None) -> BinaryIO:
        """Read bytes ``start`` to ``end`` (half-open) of an object, as a stream."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def presigned_url(self, key: str, expires: int = DEFAULT_URL_SECONDS) -> str | None:
        """A URL that fetches the object for ``expires`` seconds, or None where the app must
        stream it itself."""

    def verify(self, key: str) -> bool:
        """Whether the object's bytes still hash to its key."""

    def start_upload(self, expected_sha256: str | None = None) -> str:
        """An id for a new multipart upload. ``expected_sha256``, when the content's hash is
        known before its bytes, lets a store assemble the parts at its address at once."""

    def upload_part(self, upload_id: str, number: int, data: bytes | BinaryIO) -> UploadedPart:
        """Store part ``number`` (1 to ``MAX_PARTS``), replacing one sent before."""

    def presigned_part_url(self, upload_id: str, number: int,
                           expires: int = DEFAULT_URL_SECONDS) -> str | None:
        """A URL the client PUTs part ``number`` to itself, or None where it goes through the
        app."""

    def list_parts(self, upload_id: str) -> list[UploadedPart]: ...

    def complete_upload(self, upload_id: str, expected_sha256: str | None = None) -> StoredObject:
        """Assemble the parts in order and store the result under its SHA-256."""

    def abort_upload(self, upload_id: str) -> None:
        """Discard an upload and its parts; an upload already gone is no error."""


def object_key(sha256: str) -> str:
    """The key of the content with this SHA-256 (hex)."""
    return f"sha256/{sha256[:2]}/{sha256}"


def key_sha256(key: str) -> str:
    """The SHA-256 a key names; a string that is no object key names no object."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise ObjectNotFound(f"{key!r} is not an object key", field="key")
    return match.group(2)


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str


def store_from_settings(settings: Mapping[str, Any]) -> ObjectStore:
    """The object store the settings name (``OBJECT_STORE`` and the ``S3_`` settings)."""
    defaults = {setting.name: setting.default for setting in SETTINGS}

    def setting(name: str) -> Any:
        value = settings.get(name)
        return defaults[name] if value is None else value

    kind = setting("OBJECT_STORE")
    if kind == "local":
        root = setting("OBJECT_STORE_ROOT")
        if not root:
            raise RuntimeError("OBJECT_STORE=local needs OBJECT_STORE_ROOT")
        return LocalObjectStore(root)
    if kind != "s3":
        raise RuntimeError(f"setting OBJECT_STORE: `local` or `s3`, not {kind!r}")
    bucket = setting("S3_BUCKET")
    if not bucket:
        raise RuntimeError("OBJECT_STORE=s3 needs S3_BUCKET")
    key_id, secret = setting("S3_ACCESS_KEY_ID"), setting("S3_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        raise RuntimeError("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY are set together or not "
                           "at all")
    return S3ObjectStore(
        bucket, endpoint_url=setting("S3_ENDPOINT_URL") or None,
        credentials=S3Credentials(key_id, secret) if key_id else None,
        region=setting("S3_REGION") or None, addressing_style=setting("S3_ADDRESSING_STYLE"))


class LocalObjectStore:
    """Objects in a directory: ``<root>/sha256/ab/ab…``, uploads in ``<root>/staging``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._staging = self.root / "staging"
        self._uploads = self._staging / "uploads"
        self._uploads.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        sha256 = key_sha256(key)
        return self.root / "sha256" / sha256[:2] / sha256

    def put_stream(self, stream: BinaryIO, expected_sha256: str | None = None) -> StoredObject:
        return self._store(_chunks(stream), _expected(expected_sha256))

    def _store(self, chunks: Iterable[bytes], expected: str | None) -> StoredObject:
        digest, size = hashlib.sha256(), 0
        descriptor, temporary = tempfile.mkstemp(dir=self._staging, prefix="object-")
        try:
            with os.fdopen(descriptor, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            _refuse_mismatch(expected, sha256)
            key = object_key(sha256)
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temporary, 0o444)
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # the same content is already there: the write is a no-op
            else:
                _fsync_directory(path.parent)
        finally:
            os.unlink(temporary)
        return StoredObject(key, size, sha256)

    def open(self, key: str, start: int | None = None, end: int | None = None) -> BinaryIO:
        path = self._path(key)
        first, stop = _range(start, end)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}", field="key") from None
        size = os.fstat(handle.fileno()).st_size
        if first > size:
            handle.close()
            raise RangeNotSatisfiable(f"the object has {size} bytes; none from {first}",
                                      field="start")
        stop = size if stop is None else min(stop, size)
        handle.seek(first)
        return io.BufferedReader(_Window(handle, stop - first), CHUNK_SIZE)

    def exists(self, key: str) -> bool:
        return _KEY.fullmatch(key) is not None and self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}", field="key") from None

    def presigned_url(self, key: str, expires: int = DEFAULT_URL_SECONDS) -> str | None:
        _check_expires(expires)
        return None

    def verify(self, key: str) -> bool:
        return _rehash(self, key)

    def start_upload(self, expected_sha256: str | None = None) -> str:
        _expected(expected_sha256)
        upload_id = uuid.uuid4().hex
        (self._uploads / upload_id).mkdir()
        return upload_id

    def _upload_directory(self, upload_id: str) -> Path:
        directory = self._uploads / upload_id
        if _UPLOAD_TOKEN.fullmatch(upload_id) is None or not directory.is_dir():
            raise UploadNotFound(f"no upload {upload_id!r}", field="upload_id")
        return directory

    def upload_part(self, upload_id: str, number: int, data: bytes | BinaryIO) -> UploadedPart:
        _check_part_number(number)
        directory = self._upload_directory(upload_id)
        chunks = [bytes(data)] if isinstance(data, (bytes, bytearray, memoryview)) else _chunks(data)
        md5, size = hashlib.md5(usedforsecurity=False), 0
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix="incoming-")
        try:
            with os.fdopen(descriptor, "wb") as out:
                for chunk in chunks:
                    md5.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            part = UploadedPart(number, size, md5.hexdigest())
            # The part's MD5 is in its file name, so listing the parts reads no part.
            final = directory / f"{number:05d}.{part.etag}.part"
            os.replace(temporary, final)
        except BaseException:
            os.unlink(temporary)
            raise
        for earlier in directory.glob(f"{number:05d}.*.part"):
            if earlier != final:
                earlier.unlink(missing_ok=True)
        _fsync_directory(directory)
        return part

    def presigned_part_url(self, upload_id: str, number: int,
                           expires: int = DEFAULT_URL_SECONDS) -> str | None:
        _check_part_number(number)
        _check_expires(expires)
        self._upload_directory(upload_id)
        return None

    def _parts(self, directory: Path) -> list[tuple[UploadedPart, Path]]:
        parts = {}
        for path in sorted(directory.glob("*.part"), key=lambda p: p.stat().st_mtime_ns):
            number, etag, _ = path.name.split(".")
            parts[int(number)] = (UploadedPart(int(number), path.stat().st_size, etag), path)
        return [parts[number] for number in sorted(parts)]

    def list_parts(self, upload_id: str) -> list[UploadedPart]:
        return [part for part, _ in self._parts(self._upload_directory(upload_id))]

    def complete_upload(self, upload_id: str, expected_sha256: str | None = None) -> StoredObject:
        expected = _expected(expected_sha256)
        directory = self._upload_directory(upload_id)
        parts = self._parts(directory)
        _check_part_sizes([part for part, _ in parts])

        def chunks() -> Iterator[bytes]:
            for _, path in parts:
                with open(path, "rb") as handle:
                    yield from _chunks(handle)

        try:
            stored = self._store(chunks(), expected)
        except ContentMismatch:
            shutil.rmtree(directory)
            raise
        shutil.rmtree(directory)
        return stored

    def abort_upload(self, upload_id: str) -> None:
        if _UPLOAD_TOKEN.fullmatch(upload_id) is not None:
            shutil.rmtree(self._uploads / upload_id, ignore_errors=True)


class S3ObjectStore:
    """Objects in an S3 bucket under their keys; staging objects and uploads under ``staging/``.

    ``credentials`` None: boto3's own chain (environment, instance role). ``addressing_style``
    ``path`` suits MinIO and Ceph on a bare host name, ``virtual`` Aliyun OSS, which refuses
    path-style requests. ``workers`` parts of a ``put_stream`` are in memory at once, read or
    being sent, so it holds at most ``workers * part_size`` bytes of content; two already keep
    the link busy while the next part is read, more pay off against a distant server.
    """

    def __init__(self, bucket: str, endpoint_url: str | None = None,
                 credentials: S3Credentials | None = None, region: str | None = None, *,
                 addressing_style: str = "auto", part_size: int = 8 * MiB,
                 single_copy_limit: int = 5 * 1024 * MiB, copy_part_size: int = 512 * MiB,
                 workers: int = 2) -> None:
        if part_size < MIN_PART_SIZE or copy_part_size < MIN_PART_SIZE:
            raise ValueError(f"parts are at least {MIN_PART_SIZE} bytes")
        if workers < 1:
            raise ValueError("at least one part is sent at a time")
        self.bucket = bucket
        self.part_size = part_size
        self.workers = workers
        # S3 copies at most 5 GiB in one request; a larger object is copied in ranged parts.
        self.single_copy_limit = single_copy_limit
        self.copy_part_size = copy_part_size
        config = Config(
            region_name=region, signature_version="s3v4",
            s3={"addressing_style": addressing_style}, retries={"mode": "standard"},
            # boto3 otherwise adds a CRC32 to every upload, which several S3-compatible servers
            # refuse or store wrongly; the SHA-256 of every object is checked here instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required")
        keys = ({} if credentials is None else
                {"aws_access_key_id": credentials.access_key_id,
                 "aws_secret_access_key": credentials.secret_access_key})
        # A session of its own: boto3's default session is global state, and not thread-safe.
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url,
                                                      config=config, **keys)
        # Servers that do not know conditional writes answer NotImplemented; from then on the
        # HEAD before every write is the only guard.
        self._if_none_match = True

    def put_stream(self, stream: BinaryIO, expected_sha256: str | None = None) -> StoredObject:
        expected = _expected(expected_sha256)
        # One byte past a part tells a one-part content from a longer one (whose first part is
        # that byte longer), without holding a second part.
        head = next(_blocks(stream, self.part_size + 1), bytearray())
        if len(head) <= self.part_size:
            sha256 = hashlib.sha256(head).hexdigest()
            _refuse_mismatch(expected, sha256)
            stored = StoredObject(object_key(sha256), len(head), sha256)
            if not self.exists(stored.key):
                self._write_once(self.client.put_object, Key=stored.key, Body=head)
            return stored
        parts = _blocks(stream, self.part_size, head)
        del head  # held by `parts` alone from here, which drops it once it is sent
        return self._put_parts(parts, expected)

    def _put_parts(self, blocks: Iterator[bytearray], expected: str | None) -> StoredObject:
        staging = _staging_key()
        upload = {"Bucket": self.bucket, "Key": staging}
        upload["UploadId"] = self.client.create_multipart_upload(**upload)["UploadId"]
        digest = hashlib.sha256()

        def send(number: int, block: bytearray) -> dict[str, Any]:
            answer = self.client.upload_part(PartNumber=number, Body=block, **upload)
            return {"PartNumber": number, "ETag": answer["ETag"]}

        try:
            parts, size = _send_parts(blocks, send, self.workers, digest)
            sha256 = digest.hexdigest()
            _refuse_mismatch(expected, sha256)
            self.client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **upload)
        except BaseException:
            self._abort(staging, upload["UploadId"])
            raise
        return self._promote(staging, StoredObject(object_key(sha256), size, sha256))

    def _promote(self, staging: str, stored: StoredObject) -> StoredObject:
        """Copy a hashed staging object under its address (unless it is there) and drop it."""
        if not self.exists(stored.key):
            self._copy(staging, stored.key, stored.size)
        self.client.delete_object(Bucket=self.bucket, Key=staging)
        return stored

    def _copy(self, source: str, key: str, size: int) -> None:
        copy_source = {"Bucket": self.bucket, "Key": source}
        if size <= self.single_copy_limit:
            self._write_once(self.client.copy_object, Key=key, CopySource=copy_source)
            return
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        def copy_part(number: int, offset: int) -> dict[str, Any]:
            last = min(offset + self.copy_part_size, size) - 1
            answer = self.client.upload_part_copy(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                CopySource=copy_source, CopySourceRange=f"bytes={offset}-{last}")
            return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

        offsets = range(0, size, self.copy_part_size)
        try:
            # A copied part holds no bytes here, so all of them may be under way at once.
            with ThreadPoolExecutor(self.workers, thread_name_prefix="s3-copy") as pool:
                parts = list(pool.map(copy_part, range(1, len(offsets) + 1), offsets))
            written = self._write_once(self.client.complete_multipart_upload, Key=key,
                                       UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self._abort(key, upload_id)
            raise
        if not written:
            self._abort(key, upload_id)

    def _write_once(self, write, **params: Any) -> bool:
        """Call an S3 write that creates ``Key``, conditionally where the server can; False
        when the key turned out to exist (same key, same content: nothing is lost)."""
        if self._if_none_match:
            try:
                write(Bucket=self.bucket, IfNoneMatch="*", **params)
                return True
            except ClientError as error:
                if _code(error) == "PreconditionFailed":
                    return False
                if _code(error) != "NotImplemented":
                    raise
                self._if_none_match = False
        write(Bucket=self.bucket, **params)
        return True

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if _code(error) != "NoSuchUpload":
                raise

    def open(self, key: str, start: int | None = None, end: int | None = None) -> BinaryIO:
        key_sha256(key)
        first, stop = _range(start, end)
        params: dict[str, Any] = {}
        if first == stop:
            self._refuse_range(key, first)
            return io.BytesIO(b"")
        if first or stop is not None:
            params["Range"] = f"bytes={first}-{'' if stop is None else stop - 1}"
        try:
            return self._body(key, **params)
        except ClientError as error:
            if _code(error) == "InvalidRange":
                # S3 refuses a range that starts at the end; an empty read there is no error.
                self._refuse_range(key, first)
                return io.BytesIO(b"")
            raise _missing(error, key) from None

    def _body(self, key: str, **params: Any) -> BinaryIO:
        body = self.client.get_object(Bucket=self.bucket, Key=key, **params)["Body"]
        return io.BufferedReader(_Body(body), CHUNK_SIZE)

    def _refuse_range(self, key: str, start: int) -> None:
        size = self.size(key)
        if start > size:
            raise RangeNotSatisfiable(f"the object has {size} bytes; none from {start}",
                                      field="start")

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        key_sha256(key)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as error:
            raise _missing(error, key) from None

    def presigned_url(self, key: str, expires: int = DEFAULT_URL_SECONDS) -> str | None:
        key_sha256(key)
        _check_expires(expires)
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires)

    def verify(self, key: str) -> bool:
        return _rehash(self, key)

    # An upload id is ``<token>.<S3's upload id>``: the token names the key the parts are
    # assembled under, which S3 needs beside its own id in every call. It is the content's
    # SHA-256 when that was declared and no object has it yet: the parts are then assembled at
    # the content's address itself, conditionally (never over an object), and read back and
    # hashed before the upload counts as complete; so a large file is never copied. Otherwise
    # (no hash declared, or the content already stored) it is a random token naming a staging
    # key, whose assembled object is hashed and then copied under its address if need be.
    def start_upload(self, expected_sha256: str | None = None) -> str:
        expected = _expected(expected_sha256)
        token = uuid.uuid4().hex
        if expected is not None and not self.exists(object_key(expected)):
            token = expected
        answer = self.client.create_multipart_upload(Bucket=self.bucket,
                                                     Key=self._assembly_key(token))
        return f"{token}.{answer['UploadId']}"

    @staticmethod
    def _assembly_key(token: str) -> str:
        return object_key(token) if _SHA256.fullmatch(token) else _upload_key(token)

    def _upload(self, upload_id: str) -> dict[str, str]:
        token, _, s3_upload_id = upload_id.partition(".")
        if (_UPLOAD_TOKEN.fullmatch(token) is None and _SHA256.fullmatch(token) is None
                or not s3_upload_id):
            raise UploadNotFound(f"no upload {upload_id!r}", field="upload_id")
        return {"Bucket": self.bucket, "Key": self._assembly_key(token),
                "UploadId": s3_upload_id}

    def upload_part(self, upload_id: str, number: int, data: bytes | BinaryIO) -> UploadedPart:
        _check_part_number(number)
        upload = self._upload(upload_id)
        if isinstance(data, (bytes, bytearray, memoryview)):
            body: Any = bytes(data)
            size = len(body)
        else:
            # boto3 sends a part with its length, so a stream is spooled first (to disk past
            # one chunk) rather than read into memory.
            body = tempfile.SpooledTemporaryFile(max_size=CHUNK_SIZE)
            for chunk in _chunks(data):
                body.write(chunk)
            size = body.tell()
            body.seek(0)
        try:
            answer = self.client.upload_part(PartNumber=number, Body=body, **upload)
        except ClientError as error:
            raise _unknown_upload(error, upload_id) from None
        finally:
            if not isinstance(body, bytes):
                body.close()
        return UploadedPart(number, size, answer["ETag"].strip('"'))

    def presigned_part_url(self, upload_id: str, number: int,
                           expires: int = DEFAULT_URL_SECONDS) -> str | None:
        _check_part_number(number)
        _check_expires(expires)
        return self.client.generate_presigned_url(
            "upload_part", Params={**self._upload(upload_id), "PartNumber": number},
            ExpiresIn=expires)

    def list_parts(self, upload_id: str) -> list[UploadedPart]:
        upload = self._upload(upload_id)
        try:
            return [UploadedPart(part["PartNumber"], part["Size"], part["ETag"].strip('"'))
                    for page in self.client.get_paginator("list_parts").paginate(**upload)
                    for part in page.get("Parts", ())]
        except ClientError as error:
            raise _unknown_upload(error, upload_id) from None

    def complete_upload(self, upload_id: str, expected_sha256: str | None = None) -> StoredObject:
        expected = _expected(expected_sha256)
        upload = self._upload(upload_id)
        assembly = upload["Key"]
        at_address = assembly.startswith("sha256/")
        if at_address and expected != key_sha256(assembly):
            raise ContentMismatch("the upload was started for another SHA-256",
                                  field="sha256")
        try:
            parts = self.list_parts(upload_id)
        except UploadNotFound:
            # A completion interrupted after S3 assembled the parts left them under the
            # assembly key: a retry carries on from there.
            if not self._staged(assembly):
                raise
        else:
            _check_part_sizes(parts)
            assembled = {"Parts": [{"PartNumber": part.number, "ETag": f'"{part.etag}"'}
                                   for part in parts]}
            try:
                if at_address:
                    # The HEAD guards servers that ignore a conditional completion.
                    written = not self.exists(assembly) and self._write_once(self.client.complete_multipart_upload,
                                               Key=assembly, UploadId=upload["UploadId"],
                                               MultipartUpload=assembled)
                else:
                    written = True
                    self.client.complete_multipart_upload(MultipartUpload=assembled, **upload)
            except ClientError as error:
                raise _unknown_upload(error, upload_id) from None
            if not written:
                # The same content was completed by another upload since this one started.
                # These parts are never assembled, so this upload's bytes are unchecked: it
                # is refused, and its client starts again (and is then told the content is
                # there).
                self._abort(assembly, upload["UploadId"])
                raise ContentMismatch("the same content was stored by another upload while "
                                      "this one was under way; start the upload again",
                                      field="sha256")
        digest, size = hashlib.sha256(), 0
        with self._body(assembly) as body:
            for chunk in _chunks(body, _HASH_READ):
                digest.update(chunk)
                size += len(chunk)
        sha256 = digest.hexdigest()
        try:
            _refuse_mismatch(expected, sha256)
        except ContentMismatch:
            # Under its address it was written by this upload alone (conditionally), so
            # deleting it loses nothing that was there before.
            self.client.delete_object(Bucket=self.bucket, Key=assembly)
            raise
        stored = StoredObject(object_key(sha256), size, sha256)
        return stored if at_address else self._promote(assembly, stored)

    def _staged(self, staging: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=staging)
        except ClientError as error:
            if isinstance(_missing(error, staging), ObjectNotFound):
                return False
            raise
        return True

    def abort_upload(self, upload_id: str) -> None:
        upload = self._upload(upload_id)
        self._abort(upload["Key"], upload["UploadId"])


def _staging_key() -> str:
    return f"staging/objects/{uuid.uuid4().hex}"


def _upload_key(token: str) -> str:
    return f"staging/uploads/{token}"


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _missing(error: ClientError, key: str) -> Exception:
    if _code(error) in {"404", "NoSuchKey", "NotFound"}:
        return ObjectNotFound(f"no object {key}", field="key")
    return error


def _unknown_upload(error: ClientError, upload_id: str) -> Exception:
    if _code(error) == "NoSuchUpload":
        return UploadNotFound(f"no upload {upload_id!r}", field="upload_id")
    if _code(error) == "EntityTooSmall":
        return PartTooSmall(f"every part but the last must have at least {MIN_PART_SIZE} bytes",
                            field="parts")
    return error


class _Window(io.RawIOBase):
    """At most ``length`` bytes of an open file, from where it stands."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self._handle = handle
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        count = self._handle.readinto(view)
        self._left -= count
        return count

    def close(self) -> None:
        self._handle.close()
        super().close()


class _Body(io.RawIOBase):
    """An S3 response body as a file (botocore's own hands out its raw stream on ``with``)."""

    def __init__(self, body) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def _chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def _blocks(stream: BinaryIO, size: int, head: bytearray | None = None) -> Iterator[bytearray]:
    """``head`` (taken as it is) and then ``stream``, ``size`` bytes at a time (the last block
    shorter), however little each read returns."""
    while True:
        block, head = (bytearray() if head is None else head), None
        while len(block) < size and (chunk := stream.read(min(size - len(block), CHUNK_SIZE))):
            block += chunk
        if not block:
            return
        yield block


def _send_parts(blocks: Iterator[bytearray], send: Callable[[int, bytearray], T],
                workers: int, digest: Any) -> tuple[list[T], int]:
    """Send ``blocks`` as parts 1, 2, … through ``send`` on ``workers`` threads, hashing them
    into ``digest`` in their order as they are read; the answers come back in the parts' order,
    with the size of the whole.

    A block is read only once fewer than ``workers`` blocks are held (being sent), so memory is
    bounded by ``workers`` blocks whatever the length of the stream. The first failed send
    stops the reading, and the parts not yet under way are not sent.
    """
    room, failed = threading.Semaphore(workers), threading.Event()
    sends: list[Future[T]] = []
    size = 0

    def finished(sent: Future[T]) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            failed.set()
        room.release()

    with ThreadPoolExecutor(workers, thread_name_prefix="s3-part") as pool:
        try:
            for number in itertools.count(1):
                room.acquire()
                if failed.is_set():
                    break
                block = next(blocks, None)
                if block is None:
                    break
                digest.update(block)
                size += len(block)
                sends.append(pool.submit(send, number, block))
                sends[-1].add_done_callback(finished)
                del block  # held by the send alone, which drops it once it is done
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        return [sent.result() for sent in sends], size


def _rehash(store: ObjectStore, key: str) -> bool:
    digest = hashlib.sha256()
    with store.open(key) as handle:
        for chunk in _chunks(handle):
            digest.update(chunk)
    return digest.hexdigest() == key_sha256(key)


def _expected(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    normalized = sha256.strip().lower()
    if _SHA256.fullmatch(normalized) is None:
        raise InvalidInput("a SHA-256 is 64 hexadecimal digits", field="sha256")
    return normalized


def _refuse_mismatch(expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise ContentMismatch(f"the content's SHA-256 is {actual}, not the declared {expected}",
                              field="sha256")


def _range(start: int | None, end: int | None) -> tuple[int, int | None]:
    first = 0 if start is None else start
    if first < 0 or (end is not None and end < first):
        raise RangeNotSatisfiable(f"no bytes from {start} to {end}", field="start")
    return first, end


def _check_part_number(number: int) -> None:
    if not 1 <= number <= MAX_PARTS:
        raise InvalidInput(f"a part number is from 1 to {MAX_PARTS}", field="number")


def _check_part_sizes(parts: list[UploadedPart]) -> None:
    if not parts:
        raise InvalidInput("the upload has no parts", field="parts")
    small = [part.number for part in parts[:-1] if part.size < MIN_PART_SIZE]
    if small:
        raise PartTooSmall(f"every part but the last must have at least {MIN_PART_SIZE} bytes; "
                           f"parts {small} have fewer", field="parts")


def _check_expires(expires: int) -> None:
    if not 1 <= expires <= MAX_URL_SECONDS:
        raise InvalidInput(f"a URL expires within 1 to {MAX_URL_SECONDS} seconds",
                           field="expires")


def _fsync_directory(path: Path) -> None:
    """Make a new name in ``path`` survive a crash, as the file's own fsync does its bytes."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
