"""Bounded work per imported record: line and record size while the file is read, JSON depth,
and records tiktoken cannot count; each refused with a 422 naming the line, nothing written."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from market.catalog import importer
from market.catalog.models import DatasetRecord, DatasetVersion
from market.core.errors import InvalidInput
from market.core.inputs import json_problem
from tests.market.catalog.conftest import RECORDS, create_dataset, import_file, jsonl

MiB = 1 << 20


def _nothing_written(session) -> bool:
    return (session.scalar(select(func.count()).select_from(DatasetVersion)) == 0
            and session.scalar(select(func.count()).select_from(DatasetRecord)) == 0)


def _refused(response, message: str) -> str:
    assert response.status_code == 422, response.get_data()[:300]
    assert response.mimetype == "application/problem+json"
    detail = response.get_json()["errors"]["file"][0]
    assert message in detail, detail
    return detail


def nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("body, content_type, message", [
    # one line over the 1 MiB default, after good records
    (jsonl(RECORDS) + b'{"text": "' + b"x" * (2 * MiB) + b'"}\n', "application/x-ndjson",
     "Line 4 is longer than 1,048,576 bytes"),
    # the same without a newline at the end of the file
    (jsonl(RECORDS) + b'{"text": "' + b"x" * (2 * MiB) + b'"}', "application/x-ndjson",
     "Line 4 is longer than 1,048,576 bytes"),
    # a record of 1.1 million spaces: over the limit, refused before tiktoken sees it
    (b'{"text": "' + b" " * 1_100_000 + b'"}\n', "application/x-ndjson", "Line 1 is longer"),
    # a record of a million spaces fits the limit, but tiktoken gives up on it (a panic)
    (jsonl(RECORDS) + b'{"text": "' + b" " * 1_000_000 + b'"}\n', "application/x-ndjson",
     "cannot count the record on line 4"),
    (jsonl([nested(65)]), "application/x-ndjson", "Line 1 nests arrays and objects more than 64"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "application/x-ndjson",
     "more than 64 levels"),
    (b"a,b\n1,2\n" + b"3," + b"y" * (2 * MiB) + b"\n", "text/csv", "Line 3 is longer"),
])
def test_a_record_beyond_the_limits_is_refused_and_nothing_is_written(
        supplier_client, session, body, content_type, message):
    dataset = create_dataset(supplier_client, required_fields=[])
    _refused(import_file(supplier_client, dataset["id"], body, content_type), message)
    assert _nothing_written(session)


def test_the_limits_are_settings(app, supplier_client, session, monkeypatch):
    dataset = create_dataset(supplier_client, required_fields=[])
    monkeypatch.setitem(app.config, "IMPORT_MAX_RECORD_BYTES", 200)
    monkeypatch.setitem(app.config, "IMPORT_MAX_JSON_DEPTH", 3)
    _refused(import_file(supplier_client, dataset["id"], jsonl([{"t": "x" * 200}])),
             "Line 1 is longer than 200 bytes")
    _refused(import_file(supplier_client, dataset["id"], jsonl([nested(4)])), "more than 3 levels")
    # a quoted CSV value over several short lines, together over the limit
    body = b'q,a\n1,"' + b"line\n" * 60 + b'"\n'
    _refused(import_file(supplier_client, dataset["id"], body, "text/csv"),
             "longer than 200 bytes")
    # short in the file, long as canonical JSON: each value carries its column's name
    header = ",".join(f"c_{i:03}" for i in range(15))  # 90 bytes, and so is the row
    body = f"{header}\n{','.join(['xxxxx'] * 15)}\n".encode()  # canonical: 240 bytes
    _refused(import_file(supplier_client, dataset["id"], body, "text/csv"),
             "on line 2 is longer than 200 bytes as canonical JSON")
    assert _nothing_written(session)

    accepted = import_file(supplier_client, dataset["id"], jsonl([nested(3), {"t": "x" * 150}]))
    assert accepted.status_code == 201, accepted.get_json()
    assert accepted.get_json()["records"] == 2


class EndlessLine(io.RawIOBase):
    """A 200 MB upload that is one line, produced as it is read; counts what was read."""

    def __init__(self, size: int) -> None:
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.read_bytes if n < 0 else min(n, self.size - self.read_bytes)
        self.read_bytes += n
        return (b'{"t":"' + b"x" * (n - 6)) if self.read_bytes == n else b"x" * n


def test_a_long_line_is_refused_after_reading_no_more_than_twice_the_limit():
    stream = EndlessLine(200 * 1_000_000)
    with pytest.raises(InvalidInput, match="Line 1 is longer than 1,048,576 bytes"):
        list(importer.read_jsonl(stream))
    assert stream.read_bytes <= 2 * MiB


@pytest.mark.parametrize("limit", [8, 9, 64, 1000])
def test_lines_are_the_same_whatever_the_read_size(limit, monkeypatch):
    records = [{"t": "数据" * (i % 3), "i": i} for i in range(40)]
    body = b"\n" + jsonl(records) + b"\n\n" + jsonl(records[:2]).rstrip(b"\n")
    expected = [(p.line, p.record) for p in importer.read_jsonl(io.BytesIO(body))]
    assert len(expected) == 42
    monkeypatch.setattr(importer, "_READ_CHUNK", limit)  # reads smaller than a line
    got = [(p.line, p.record) for p in importer.read_jsonl(io.BytesIO(body))]
    assert got == expected
    bad = body.replace("数".encode(), b"\xff", 1)
    with pytest.raises(InvalidInput, match="Line 3 is not UTF-8"):
        list(importer.read_jsonl(io.BytesIO(bad)))


def test_depth_is_counted_in_levels():
    def deeper_than(value, limit):
        found = json_problem(value, limit)
        return found is not None and found.too_deep

    assert not deeper_than({"a": 1}, 1)
    assert deeper_than({"a": {}}, 1)
    assert not deeper_than(nested(64), 64)
    assert deeper_than(nested(65), 64)
    assert deeper_than({"a": [1, {"b": [[]]}]}, 3)
    assert json.dumps(nested(2)) == '{"a": [1]}'
