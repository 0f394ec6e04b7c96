"""Time series as files: the CSV the marketplace reads, for counting and for the quality report.

A time-series file has the media type ``TIME_SERIES_MEDIA_TYPE``
(``application/vnd.market.time-series+csv``) and is CSV (RFC 4180) in UTF-8, a byte-order mark
allowed: a header row naming the columns, then one row per reading. The first column is the
reading's time, an ISO 8601 date and time (``2026-01-01T08:00:00Z``,
``2026-01-01 08:00:00.250+08:00``, or a date alone, which is its midnight; a time without an
offset is read as UTC). Every other column holds a number (``12``, ``-0.5``, ``1e-3``) or
nothing (a missing reading). Blank lines are not rows.

Counting (``count_time_series``) needs only the CSV: the rows are counted by the file's token
profile (``pricing.token_profiles.CanonicalCsvRows``); whether the times and numbers are
well formed is the quality report's question (``market.catalog.file_quality``), so a file with
a bad row is still counted, and the report names the row.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import BinaryIO

from market.catalog.media import UnreadableMedia
from pricing.token_profiles import CanonicalCsvRows, TokenCount, profile

TIME_SERIES_MEDIA_TYPE = "application/vnd.market.time-series+csv"
# The largest field the CSV reader accepts (csv's own default): a longer one is not a reading.
MAX_FIELD_CHARS = 131_072
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def rows(stream: BinaryIO, field: str = "file") -> Iterator[tuple[int, list[str]]]:
    """The file's rows with the line each starts on (1-based), blank lines skipped.

    Rule: text that is not UTF-8, or CSV the reader cannot split (a quote left open, a field
    longer than ``MAX_FIELD_CHARS``), raises ``UnreadableMedia`` naming ``field``.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
    reader = csv.reader(text, strict=True)
    line = 1
    try:
        for row in reader:
            if row:
                yield line, row
            line = reader.line_num + 1
    except UnicodeDecodeError:
        raise UnreadableMedia(f"The time series is not UTF-8 text (near line {line}).",
                              field=field) from None
    except csv.Error as exc:
        raise UnreadableMedia(f"The time series is not CSV at line {line}: {exc}.",
                              field=field) from None
    finally:
        text.detach()  # the caller's stream stays open


def parse_time(value: str) -> datetime | None:
    """A reading's time as an aware datetime (UTC when it has no offset); None if it is not ISO
    8601."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def is_reading(value: str) -> bool:
    """Whether a value cell holds a number or nothing (a missing reading)."""
    value = value.strip()
    return not value or _NUMBER.fullmatch(value) is not None


def count_time_series(stream: BinaryIO, profile_name: str, field: str = "file") -> TokenCount:
    """The tokens of a time-series file by the profile ``profile_name`` (a ``CanonicalCsvRows``)."""
    rule = profile(profile_name)
    if not isinstance(rule, CanonicalCsvRows):
        raise UnreadableMedia(f"The profile {profile_name} does not count CSV rows.", field=field)
    return rule.count_rows(row for _, row in rows(stream, field))


def utf8_text(head: bytes) -> bool:
    """Whether the first bytes of a file read as UTF-8 text (no NUL; a character cut at the end
    of ``head`` is allowed)."""
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True
