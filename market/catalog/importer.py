"""Importing a dataset version from JSONL or CSV, streamed, in one transaction.

For each record, in file order:

1. it is parsed (JSONL: one JSON object per line, blank lines skipped; CSV: a header row, then
   one record per row with every value a string) and checked;
2. it is written in its canonical serialization, ``pricing.tokens.canonical_json`` — JSON with
   sorted keys, UTF-8 without escapes, compact separators — which is also what the metered API
   serves and charges;
3. its tokens are counted over that canonical text with the configured tiktoken encoding;
4. the canonical text and a newline are fed to the version's SHA-256.

So ``content_sha256`` is the SHA-256 of the canonical JSONL export (each canonical record
followed by ``\\n``), which a buyer can recompute from a download. Any bad record aborts the whole
import, naming its line: the caller's transaction rolls back and no version or record is left
behind.

Bounded work per record
-----------------------
No single record may cost more than a bounded amount of memory or time, whatever the upload:

- a line longer than ``max_record_bytes`` (the ``IMPORT_MAX_RECORD_BYTES`` setting, 1 MiB) is
  refused while the file is read, before it is parsed: the file is read in chunks of at most
  that size and a line is never held beyond it, so one 200 MB line costs two chunks;
- so is a CSV record whose lines together (a quoted value may span lines) pass the limit, and
  a record whose canonical JSON does (a CSV row repeats its header's names in it);
- a JSON record nested deeper than ``max_depth`` (``IMPORT_MAX_JSON_DEPTH``, 64) is refused,
  and so is text no database can store (NUL, or a lone surrogate from a ``\\ud800`` escape;
  ``market.core.inputs``);
- a record tiktoken cannot count (it panics on a very long run of whitespace) is refused,
  naming its line; long texts are counted in pieces (``pricing.tokens``), so counting memory
  stays flat.

Memory is thus bounded by one batch of records whatever the file size.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.core import audit
from market.accounts.authz import Principal
from market.catalog.models import Dataset, DatasetRecord, DatasetVersion
from market.catalog.quality import QualityAccumulator
from market.core.errors import InvalidInput
from market.core.inputs import json_problem, text_problem
from pricing.errors import UncountableText
from pricing.tokens import canonical_json, count_texts, get_encoding

FORMATS = ("jsonl", "csv")
SAMPLE_SIZE = 5
BATCH_SIZE = 2000
MAX_RECORD_BYTES = 1 << 20
MAX_JSON_DEPTH = 64
_READ_CHUNK = 1 << 20


def limits(config: dict[str, Any]) -> dict[str, int]:
    """The import's per-record limits from the app's settings, as ``import_version`` takes them."""
    return {"max_record_bytes": config["IMPORT_MAX_RECORD_BYTES"],
            "max_depth": config["IMPORT_MAX_JSON_DEPTH"]}


@dataclass(frozen=True)
class ParsedRecord:
    line: int
    record: dict[str, Any]


def _too_long(line: int, limit: int) -> InvalidInput:
    return InvalidInput(f"Line {line} is longer than {limit:,} bytes, the most one record may "
                        f"hold.", field="file")


def _decoded_lines(stream: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, str]]:
    """Lines of a UTF-8 byte stream, numbered from 1; a byte that is not UTF-8 names its line,
    and so does a line longer than ``max_line_bytes``, found before more of it is read."""
    # Reading at most the limit at a time, only the first line of a read can be over the
    # limit (it carries what the previous read left); any other line fits in the read.
    read_size = max(1, min(_READ_CHUNK, max_line_bytes))
    pending = b""
    number = 0
    while True:
        chunk = stream.read(read_size)
        final = not chunk
        data = pending + chunk if pending else chunk
        end = len(data) if final else data.rfind(b"\n") + 1
        complete, pending = data[:end], data[end:]
        if len(pending) > max_line_bytes:
            raise _too_long(number + 1 + complete.count(b"\n"), max_line_bytes)
        if complete:
            first = complete.find(b"\n")
            if (first if first != -1 else len(complete)) > max_line_bytes:
                raise _too_long(number + 1, max_line_bytes)
            try:
                text = complete.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = number + 1 + complete[:exc.start].count(b"\n")
                raise InvalidInput(f"Line {line} is not UTF-8 text.", field="file") from None
            lines = text.split("\n")
            if not final:
                lines.pop()  # the empty text after the read's last newline
            for line in lines:
                number += 1
                yield number, line
        if final:
            return


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _too_deep(line: int, max_depth: int) -> InvalidInput:
    return InvalidInput(f"Line {line} nests arrays and objects more than {max_depth} levels "
                        f"deep.", field="file")


def read_jsonl(stream: IO[bytes], *, max_record_bytes: int = MAX_RECORD_BYTES,
               max_depth: int = MAX_JSON_DEPTH) -> Iterator[ParsedRecord]:
    for number, line in _decoded_lines(stream, max_record_bytes):
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise InvalidInput(f"Line {number} is not valid JSON: {exc}.", field="file") from None
        except RecursionError:
            raise _too_deep(number, max_depth) from None  # nested thousands deep
        # Fewer brackets than levels cannot nest too deep, and only an escape can put NUL or a
        # lone surrogate in a line of UTF-8: most records need no walk.
        if line.count("{") + line.count("[") > max_depth or "\\u" in line:
            found = json_problem(record, max_depth)
            if found is not None and found.too_deep:
                raise _too_deep(number, max_depth)
            if found is not None:
                raise InvalidInput(f"Line {number}, at {found.path or 'the record'}: "
                                   f"{found.message}", field="file")
        if not isinstance(record, dict):
            raise InvalidInput(f"Line {number} is not a JSON object.", field="file")
        yield ParsedRecord(number, record)


def read_csv(stream: IO[bytes], *, max_record_bytes: int = MAX_RECORD_BYTES,
             max_depth: int = MAX_JSON_DEPTH) -> Iterator[ParsedRecord]:
    held = 0  # characters read since the last record ended (a quoted value may span lines)

    def lines() -> Iterator[str]:
        nonlocal held
        for number, line in _decoded_lines(stream, max_record_bytes):
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            held += len(line) + 1
            if "\x00" in line:
                raise InvalidInput(f"Line {number}: {text_problem(line)}", field="file")
            if held > max_record_bytes:
                # characters, each at least a byte: the record is over the byte limit too
                raise InvalidInput(f"The record that ends on line {number} or later is longer "
                                   f"than {max_record_bytes:,} bytes, the most one record may "
                                   f"hold.", field="file")
            yield line + "\n"

    reader = csv.reader(lines(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        held = 0
        if len(set(header)) != len(header) or any(not name.strip() for name in header):
            raise InvalidInput("The CSV header must name every column once.", field="file")
        for row in reader:
            held = 0
            if not row:
                continue
            if len(row) != len(header):
                raise InvalidInput(f"Line {reader.line_num} has {len(row)} fields; the header "
                                   f"has {len(header)}.", field="file")
            yield ParsedRecord(reader.line_num, dict(zip(header, row)))
    except csv.Error as exc:
        raise InvalidInput(f"Line {reader.line_num} is not valid CSV: {exc}.",
                           field="file") from None


def _batches(records: Iterator[ParsedRecord], size: int) -> Iterator[list[ParsedRecord]]:
    batch: list[ParsedRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_version(session: Session, principal: Principal, dataset: Dataset,
                   stream: IO[bytes], *, source_format: str, encoding: str,
                   filename: str | None = None, notes: str = "",
                   batch_size: int = BATCH_SIZE,
                   expected_bytes: int | None = None,
                   max_record_bytes: int = MAX_RECORD_BYTES,
                   max_depth: int = MAX_JSON_DEPTH) -> DatasetVersion:
    """Import records as the dataset's next version; see the module docstring for the rules.

    ``expected_bytes`` (the upload's length, when known) chooses where tokens are counted.
    """
    if source_format not in FORMATS:
        raise InvalidInput(f"Import JSONL or CSV, not {source_format!r}.", field="format")
    reader = read_jsonl if source_format == "jsonl" else read_csv
    counting = _ByteCounter(stream)
    parsed_records = reader(counting, max_record_bytes=max_record_bytes, max_depth=max_depth)

    number = (session.scalar(select(func.max(DatasetVersion.number))
                             .where(DatasetVersion.dataset_id == dataset.id)) or 0) + 1
    version = DatasetVersion(
        dataset_id=dataset.id, number=number, notes=notes, source_format=source_format,
        source_filename=filename, source_bytes=0, record_count=0, canonical_bytes=0,
        token_count=0, encoding=encoding, content_sha256="", schema={}, samples=[],
        quality={}, quality_score=0, quality_grade="-", created_by_id=principal.user_id)
    session.add(version)
    session.flush()  # the records need the version's id

    digest = hashlib.sha256()
    quality = QualityAccumulator(required_fields=dataset.required_fields,
                                 label_field=dataset.label_field, ai_stage=dataset.ai_stage,
                                 id_field=dataset.id_field,
                                 expert_labels=dataset.expert_labels or None)
    samples: list[dict[str, Any]] = []
    seq = records = canonical_bytes = tokens_total = 0

    # Counting runs beside parsing and storing: in a thread for small files, and for large ones
    # in a child process, where the tokenizer's threads never wait for this process's GIL.
    # Up to two batches are in flight, so neither side waits for the other.
    in_flight: deque = deque()
    with _token_counter(encoding, expected_bytes) as submit:
        for batch in _batches(parsed_records, batch_size):
            texts = _canonical_texts(batch, max_record_bytes)
            in_flight.append((batch, texts, submit(texts)))
            if len(in_flight) > 2:
                batch_, texts_, counts = in_flight.popleft()
                seq, stats = _store(session, version, batch_, texts_, _counts(batch_, counts),
                                    seq, digest, quality, samples)
                records += stats[0]
                canonical_bytes += stats[1]
                tokens_total += stats[2]
        while in_flight:
            batch_, texts_, counts = in_flight.popleft()
            seq, stats = _store(session, version, batch_, texts_, _counts(batch_, counts), seq,
                                digest, quality, samples)
            records += stats[0]
            canonical_bytes += stats[1]
            tokens_total += stats[2]

    if records == 0:
        raise InvalidInput("The file holds no records.", field="file")
    report = quality.report()
    version.source_bytes = counting.count
    version.record_count = records
    version.canonical_bytes = canonical_bytes
    version.token_count = tokens_total
    version.content_sha256 = digest.hexdigest()
    version.schema = quality.schema_profile()
    version.samples = samples
    version.quality = report
    version.quality_score = report["overall"]["score"]
    version.quality_grade = report["overall"]["grade"]
    audit.record(session, "dataset_version.imported", actor=principal.actor,
                 organization_id=dataset.organization_id, object_type="dataset_version",
                 object_id=version.id, data={
                     "dataset_id": dataset.id, "number": number, "records": records,
                     "tokens": tokens_total, "sha256": version.content_sha256,
                     "encoding": encoding})
    return version


def _canonical_texts(batch: list[ParsedRecord], max_record_bytes: int) -> list[str]:
    texts = [canonical_json(parsed.record) for parsed in batch]
    for parsed, text in zip(batch, texts):
        # a character is at most 4 bytes: only a long text needs encoding to measure
        if len(text) * 4 > max_record_bytes and len(text.encode("utf-8")) > max_record_bytes:
            raise InvalidInput(f"The record on line {parsed.line} is longer than "
                               f"{max_record_bytes:,} bytes as canonical JSON, the most one "
                               f"record may hold.", field="file")
    return texts


def _counts(batch: list[ParsedRecord], counts: Future) -> list[int]:
    """A batch's token counts; a record tiktoken cannot count is refused by its line."""
    try:
        return counts.result()
    except UncountableText as exc:
        index = int(exc.field.removeprefix("texts[").removesuffix("]"))
        raise InvalidInput(f"The tokenizer cannot count the record on line "
                           f"{batch[index].line} (it gives up on runs of hundreds of thousands "
                           f"of spaces or other whitespace); break the run up.",
                           field="file") from None


PROCESS_COUNTING_BYTES = 64 * 1024 * 1024


@contextmanager
def _token_counter(encoding: str, expected_bytes: int | None) -> Iterator[Callable]:
    """A function that starts counting a batch of texts and returns the future of its counts."""
    if expected_bytes is not None and expected_bytes >= PROCESS_COUNTING_BYTES:
        # spawn, not fork: the web worker has threads and open database connections. The child
        # imports only pricing.tokens, so it holds little beyond the encoding.
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=get_encoding, initargs=(encoding,))
    else:
        pool = ThreadPoolExecutor(max_workers=1)
    try:
        yield lambda texts: pool.submit(count_texts, texts, encoding)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _store(session, version, batch, texts, counts, seq, digest, quality, samples):
    rows = []
    size = 0
    for parsed, text, tokens in zip(batch, texts, counts):
        encoded = text.encode("utf-8")
        digest.update(encoded)
        digest.update(b"\n")
        size += len(encoded) + 1
        quality.add(parsed.record, tokens, text)
        if len(samples) < SAMPLE_SIZE:
            samples.append(parsed.record)
        rows.append({"version_id": version.id, "seq": seq, "data": text, "tokens": tokens})
        seq += 1
    # Core executemany, not the ORM's bulk insert: these rows need no identity map.
    session.connection().execute(DatasetRecord.__table__.insert(), rows)
    return seq, (len(rows), size, sum(counts))


class _ByteCounter:
    """Counts the bytes read from the upload, for the version's source size."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def export_lines(session: Session, version: DatasetVersion,
                 page_size: int = 5000) -> Iterator[bytes]:
    """The canonical JSONL of a version, in order; its SHA-256 is the version's content hash."""
    after = -1
    while True:
        rows = session.execute(
            select(DatasetRecord.seq, DatasetRecord.data)
            .where(DatasetRecord.version_id == version.id, DatasetRecord.seq > after)
            .order_by(DatasetRecord.seq).limit(page_size)).all()
        if not rows:
            return
        yield "".join(f"{row.data}\n" for row in rows).encode("utf-8")
        after = rows[-1].seq
