"""``flask pricing``: operator commands backed by the pure ``pricing`` package.

``flask pricing count-tokens FILE [--encoding o200k_base] [--format auto]``
counts the tokens of a file exactly as the marketplace charges for them and
prints records, tokens, bytes and seconds:

* JSONL (``.jsonl``, ``.ndjson``): one JSON record per line (blank lines are
  skipped); each record is counted in its canonical serialization
  (``pricing.tokens.canonical_json``);
* CSV (``.csv``): a header row, then one record per row, a JSON object of
  strings keyed by the header;
* anything else is plain text, counted as one document.

The file is streamed in batches, so memory stays bounded whatever its size.
Imports nothing from the project but ``pricing`` (layer contract).
"""

from __future__ import annotations

import csv
import json
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import click
from flask import current_app
from flask.cli import AppGroup

from pricing.errors import InvalidRecord, UnknownEncoding
from pricing.tokens import count_records, count_text_stream, get_encoding

pricing_cli = AppGroup("pricing", help="Prices and tokens (the pricing package).")

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
# Records per batch handed to the token counter: large enough to keep every
# core busy, small enough that memory does not grow with the file.
_BATCH = 2048


class _BadRecord(click.ClickException):
    exit_code = 1


def _jsonl_records(path: Path) -> Iterator[Any]:
    # utf-8-sig: tolerate a byte-order mark, which some exporters write.
    with path.open("r", encoding="utf-8-sig", newline="") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise _BadRecord(f"{path.name}, line {number}: not valid JSON ({exc.msg})") from None


def _csv_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:
                raise _BadRecord(
                    f"{path.name}, line {reader.line_num}: more fields than the header has"
                )
            yield row


def _batches(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def _text_pieces(path: Path) -> Iterator[str]:
    # newline="" keeps "\r\n" as written: it is part of what is counted.
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        while piece := handle.read(1 << 20):
            yield piece


@pricing_cli.command("count-tokens")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option(
    "--encoding",
    default=None,
    help="cl100k_base or o200k_base (default: the app's TOKEN_ENCODING, else o200k_base).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["auto", "jsonl", "csv", "text"]),
    default="auto",
    show_default=True,
    help="How to read FILE; auto goes by its extension.",
)
def count_tokens(file: Path, encoding: str | None, file_format: str) -> None:
    """Count the tokens of FILE as the marketplace charges for them."""
    name = encoding or current_app.config.get("TOKEN_ENCODING", "o200k_base")
    try:
        get_encoding(name)  # fail before reading the file; also loads it outside the timing
    except UnknownEncoding as exc:
        raise click.BadParameter(str(exc), param_hint="--encoding") from None
    if file_format == "auto":
        file_format = _FORMATS.get(file.suffix.lower(), "text")

    started = time.perf_counter()
    try:
        if file_format == "text":
            tokens = count_text_stream(_text_pieces(file), name)
            records = 1 if file.stat().st_size else 0
        else:
            source = _jsonl_records(file) if file_format == "jsonl" else _csv_records(file)
            records = tokens = 0
            for batch in _batches(source, _BATCH):
                tokens += sum(count_records(batch, name))
                records += len(batch)
    except InvalidRecord as exc:
        raise _BadRecord(f"{file.name}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise _BadRecord(f"{file.name}: not UTF-8 text ({exc.reason})") from None
    seconds = time.perf_counter() - started

    click.echo(f"file: {file}")
    click.echo(f"format: {file_format}")
    click.echo(f"encoding: {name}")
    click.echo(f"records: {records}")
    click.echo(f"tokens: {tokens}")
    click.echo(f"bytes: {file.stat().st_size}")
    click.echo(f"seconds: {seconds:.3f}")
