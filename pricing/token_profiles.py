"""Token profiles: the named, versioned rules that turn a file into a token count.

Text and records are counted by a tokenizer; an image, a recording or a point cloud is not
text, so the marketplace counts it by a rule a model vendor publishes (or, where none does, a
rule it states itself), applied to facts measured from the file: an image's width and height, a
recording's duration, a file's size. Every rule here is a profile with a name that carries its
version (``openai-image-tiles/2024-11``): when a vendor changes its rule, a new profile is added
beside the old one and counts already made keep the name they were made by.

A count is a ``TokenCount``: the profile's name, the tokens, and the basis (the measured facts
the rule used, e.g. ``{"width": 1024, "height": 768}``), so anyone can recompute it from the
published rule without this code. Arithmetic is on integers only; a resize that lands between
two pixels keeps the whole pixels (rounds down), and a duration is counted in whole seconds
rounded up. A fact that is missing, not an integer, not positive or beyond any real file
raises ``InvalidMeasure`` naming the fact; an unknown profile name raises
``UnknownTokenProfile``.

Profiles
--------
=============================  ========  ==================================================
``openai-image-tiles/2024-11``  image     high detail: fit in 2048×2048, shortest side to 768,
                                          85 + 170 per 512-px tile
``openai-image-low/2024-11``    image     low detail: 85 whatever the size
``gemini-image-tiles/2025-01``  image     258 if both sides ≤ 384, else 258 per 768-px tile
``gemini-audio/2025-01``        audio     32 per second
``gemini-video/2025-01``        video     263 per second
``bytes-per-token/4``           bytes     one token per 4 bytes of the file, rounded up
``time-series-csv/o200k_base``  time      a time series' canonical CSV text: each row's line
                                series    counted by tiktoken's o200k_base, summed
``tiktoken/o200k_base``         text      tiktoken's o200k_base (``pricing.tokens``)
``tiktoken/cl100k_base``        text      tiktoken's cl100k_base (``pricing.tokens``)
=============================  ========  ==================================================

Measured facts are integers: ``width`` and ``height`` in pixels, ``microseconds`` of duration
(the unit FFmpeg, and so PyAV, keeps a container's duration in), ``bytes`` of file size.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Iterable, Mapping, Sequence, Union

from .errors import InvalidMeasure, UnknownTokenProfile
from .tokens import ENCODING_NAMES, canonical_json, count_text

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_MICROSECONDS",
    "MAX_BYTES",
    "TokenCount",
    "OpenAIImageTiles",
    "OpenAIImageLow",
    "GeminiImageTiles",
    "PerSecond",
    "BytesPerToken",
    "TiktokenText",
    "CanonicalCsvRows",
    "MeasuredProfile",
    "TokenProfile",
    "PROFILES",
    "profile",
]

# Beyond these no real file lies: a side of a million pixels is past any camera or scanner's
# output (a gigapixel panorama is some 100,000 px wide), a month is past any single recording,
# and a pebibyte is past any one file of a dataset.
MAX_IMAGE_SIDE = 1 << 20
MAX_MICROSECONDS = 31 * 24 * 3600 * 1_000_000
MAX_BYTES = 1 << 50

MICROSECONDS_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class TokenCount:
    """A token count, the profile that made it, and the measured facts it was made from."""

    profile: str
    tokens: int
    basis: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "basis", dict(self.basis))  # a copy the caller cannot change

    def __hash__(self) -> int:
        return hash((self.profile, self.tokens, tuple(sorted(self.basis.items()))))

    def as_dict(self) -> dict[str, Any]:
        """The count as JSON: ``{"profile": ..., "tokens": ..., "basis": {...}}``."""
        return {"profile": self.profile, "tokens": self.tokens, "basis": dict(self.basis)}


def _fact(facts: Mapping[str, Any], name: str, *, maximum: int, minimum: int = 1) -> int:
    """The integer fact ``name`` of ``facts``, checked to lie in [minimum, maximum]."""
    if name not in facts:
        raise InvalidMeasure(f"The {name} was not measured.", field=name)
    value = facts[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMeasure(f"The {name} must be a whole number, not {value!r}.", field=name)
    if value < minimum:
        raise InvalidMeasure(f"The {name} must be at least {minimum}, not {value}.", field=name)
    if value > maximum:
        raise InvalidMeasure(f"The {name} {value} is larger than any real file ({maximum}).",
                             field=name)
    return value


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _dimensions(facts: Mapping[str, Any]) -> tuple[int, int]:
    return (_fact(facts, "width", maximum=MAX_IMAGE_SIDE),
            _fact(facts, "height", maximum=MAX_IMAGE_SIDE))


def _scaled(width: int, height: int, side: int, target: int) -> tuple[int, int]:
    """Scale (width, height) by target/side, in whole pixels rounded down, never below 1."""
    return max(1, width * target // side), max(1, height * target // side)


@dataclass(frozen=True)
class OpenAIImageTiles:
    """OpenAI's vision tiles at high detail (GPT-4o, GPT-4.1, o-series 512-px tile models).

    The rule OpenAI publishes ("Calculating costs", platform.openai.com/docs/guides/images-vision,
    as of November 2024): the image is scaled to fit within 2048×2048, keeping its aspect ratio
    (never scaled up); then scaled so that its shortest side is 768 px (only if it is longer);
    then the 512-px squares it spans are counted, each 170 tokens, plus 85 for every image. So
    1024×1024 is 765 tokens (768×768, 4 tiles) and 2048×4096 is 1105 (768×1536, 6 tiles).

    OpenAI does not say how a resize rounds; here each scaled side keeps its whole pixels
    (rounds down, never below 1 px), so the side being fitted lands exactly on 2048 or 768.
    """

    name: str = "openai-image-tiles/2024-11"
    modality: ClassVar[str] = "image"
    facts: ClassVar[tuple[str, ...]] = ("width", "height")
    BASE_TOKENS: ClassVar[int] = 85
    TILE_TOKENS: ClassVar[int] = 170
    TILE: ClassVar[int] = 512
    FIT: ClassVar[int] = 2048
    SHORTEST: ClassVar[int] = 768

    def tiles(self, width: int, height: int) -> tuple[int, int]:
        """The 512-px tiles across and down, after the two resizes."""
        if max(width, height) > self.FIT:
            width, height = _scaled(width, height, max(width, height), self.FIT)
        if min(width, height) > self.SHORTEST:
            width, height = _scaled(width, height, min(width, height), self.SHORTEST)
        return _ceil_div(width, self.TILE), _ceil_div(height, self.TILE)

    def count(self, facts: Mapping[str, Any]) -> TokenCount:
        width, height = _dimensions(facts)
        across, down = self.tiles(width, height)
        tokens = self.BASE_TOKENS + self.TILE_TOKENS * across * down
        return TokenCount(self.name, tokens, {"width": width, "height": height})


@dataclass(frozen=True)
class OpenAIImageLow:
    """OpenAI's vision at low detail: 85 tokens for any image (same page as the tiles)."""

    name: str = "openai-image-low/2024-11"
    modality: ClassVar[str] = "image"
    facts: ClassVar[tuple[str, ...]] = ("width", "height")
    TOKENS: ClassVar[int] = 85

    def count(self, facts: Mapping[str, Any]) -> TokenCount:
        width, height = _dimensions(facts)
        return TokenCount(self.name, self.TOKENS, {"width": width, "height": height})


@dataclass(frozen=True)
class GeminiImageTiles:
    """Gemini's image tokens (Gemini 2.0 and later).

    The rule Google publishes ("Multimodal tokens", ai.google.dev/gemini-api/docs/tokens, as of
    January 2025): an image with both dimensions at most 384 px counts 258 tokens; a larger one
    is cropped and scaled as needed into tiles of 768×768 px, each 258 tokens. Google does not
    publish how it crops, so this profile states the tiling it applies: the image as given
    (not rescaled) is covered by ceil(width / 768) × ceil(height / 768) tiles. So 384×384 is
    258 tokens, 385×384 is 258 (one tile), 769×768 is 516 and 2000×1000 is 1548 (3 × 2 tiles).
    """

    name: str = "gemini-image-tiles/2025-01"
    modality: ClassVar[str] = "image"
    facts: ClassVar[tuple[str, ...]] = ("width", "height")
    TILE_TOKENS: ClassVar[int] = 258
    SMALL: ClassVar[int] = 384
    TILE: ClassVar[int] = 768

    def count(self, facts: Mapping[str, Any]) -> TokenCount:
        width, height = _dimensions(facts)
        if width <= self.SMALL and height <= self.SMALL:
            tiles = 1
        else:
            tiles = _ceil_div(width, self.TILE) * _ceil_div(height, self.TILE)
        return TokenCount(self.name, self.TILE_TOKENS * tiles, {"width": width, "height": height})


@dataclass(frozen=True)
class PerSecond:
    """A fixed number of tokens per second of a recording, the seconds rounded up.

    Gemini's rates ("Multimodal tokens", ai.google.dev/gemini-api/docs/tokens, as of January
    2025): audio at 32 tokens per second, video at 263 tokens per second. The duration is
    measured in microseconds and counted in whole seconds rounded up (2.000001 s is 3 s), so a
    recording of any length costs at least one second.
    """

    name: str
    modality: str
    tokens_per_second: int
    facts: ClassVar[tuple[str, ...]] = ("microseconds",)

    def seconds(self, microseconds: int) -> int:
        return _ceil_div(microseconds, MICROSECONDS_PER_SECOND)

    def count(self, facts: Mapping[str, Any]) -> TokenCount:
        microseconds = _fact(facts, "microseconds", maximum=MAX_MICROSECONDS)
        tokens = self.tokens_per_second * self.seconds(microseconds)
        return TokenCount(self.name, tokens, {"microseconds": microseconds})


@dataclass(frozen=True)
class BytesPerToken:
    """One token per ``bytes_per_token`` bytes of the file, rounded up.

    For what no vendor tokenizes and no text serialization fits (point clouds, time series,
    scientific arrays in their binary formats): a rule anyone can apply to the file's size
    alone. Four bytes a token is about what a BPE tokenizer averages on English text, so a
    binary file and its size in text weigh alike. An empty file counts 0 tokens: it holds
    nothing to price.
    """

    name: str
    bytes_per_token: int
    modality: ClassVar[str] = "bytes"
    facts: ClassVar[tuple[str, ...]] = ("bytes",)

    def count(self, facts: Mapping[str, Any]) -> TokenCount:
        size = _fact(facts, "bytes", minimum=0, maximum=MAX_BYTES)
        return TokenCount(self.name, _ceil_div(size, self.bytes_per_token), {"bytes": size})


@dataclass(frozen=True)
class TiktokenText:
    """Text and records counted by tiktoken with ``encoding``, exactly as ``pricing.tokens``.

    A record is counted as its canonical JSON (``pricing.tokens.canonical_json``). The basis is
    the number of characters counted; to recompute the tokens one needs the text itself (the
    file, identified by its SHA-256), not only the basis.
    """

    name: str
    encoding: str
    modality: ClassVar[str] = "text"
    facts: ClassVar[tuple[str, ...]] = ()

    def count_text(self, text: str) -> TokenCount:
        return TokenCount(self.name, count_text(text, self.encoding), {"characters": len(text)})

    def count_record(self, record: Any) -> TokenCount:
        return self.count_text(canonical_json(record))


@dataclass(frozen=True)
class CanonicalCsvRows:
    """A table of text rows (a time series' CSV) counted as its canonical text serialization.

    The rule, chosen so that a buyer recomputes it with Python's ``csv`` module and tiktoken
    alone: the file is read as CSV (RFC 4180: fields separated by commas, a field in double
    quotes may hold commas, quotes doubled and line breaks); a row with no field (a blank line)
    is not a row. Each row, the header included, is written as its canonical line: every field
    stripped of the whitespace around it, a field holding a comma, a double quote, a carriage
    return or a line feed put in double quotes with its quotes doubled (what ``csv.writer``
    does with ``QUOTE_MINIMAL`` and RFC 4180's ``\r\n`` line end), the fields joined by ``,`` and the line ended by one ``\n``
    (a row of one empty field is the line ``""``, as ``csv.writer`` writes it).
    The tokens are the sum, over the rows, of each canonical line's tokens by tiktoken's
    ``encoding`` (``encode_ordinary``). Counting line by line keeps a file of any length in
    bounded memory, and a timestamp or a reading costs the same wherever its row lies; it can
    differ by a few tokens from counting the whole text at once, where a token may span a line
    break. The basis is the rows and characters counted; the tokens need the file itself (its
    SHA-256 names it).

    So ``t , v\n2026-01-01T00:00:00Z,1.5\n`` is the lines ``t,v\n`` and
    ``2026-01-01T00:00:00Z,1.5\n``.
    """

    name: str
    encoding: str
    modality: ClassVar[str] = "time_series"
    facts: ClassVar[tuple[str, ...]] = ()
    _SPECIAL: ClassVar[frozenset[str]] = frozenset(',"\r\n')

    @classmethod
    def canonical_line(cls, fields: Sequence[str]) -> str:
        """One row's canonical line, ``\n`` included."""
        if len(fields) == 1 and not fields[0].strip():
            return '""\n'  # one empty field, quoted so that the line is not blank
        written = []
        for field in fields:
            field = field.strip()
            if cls._SPECIAL.intersection(field):
                field = '"' + field.replace('"', '""') + '"'
            written.append(field)
        return ",".join(written) + "\n"

    def count_rows(self, rows: Iterable[Sequence[str]]) -> TokenCount:
        """The tokens of rows as read from the CSV (lists of field strings, blank rows
        skipped)."""
        tokens = lines = characters = 0
        for fields in rows:
            if not fields:
                continue
            line = self.canonical_line(fields)
            tokens += count_text(line, self.encoding)
            lines += 1
            characters += len(line)
        return TokenCount(self.name, tokens, {"rows": lines, "characters": characters})


MeasuredProfile = Union[OpenAIImageTiles, OpenAIImageLow, GeminiImageTiles, PerSecond, BytesPerToken]
TokenProfile = Union[MeasuredProfile, TiktokenText, CanonicalCsvRows]

_ALL: tuple[TokenProfile, ...] = (
    OpenAIImageTiles(),
    OpenAIImageLow(),
    GeminiImageTiles(),
    PerSecond("gemini-audio/2025-01", "audio", 32),
    PerSecond("gemini-video/2025-01", "video", 263),
    BytesPerToken("bytes-per-token/4", 4),
    CanonicalCsvRows("time-series-csv/o200k_base", "o200k_base"),
    *(TiktokenText(f"tiktoken/{encoding}", encoding) for encoding in ENCODING_NAMES),
)

PROFILES: Mapping[str, TokenProfile] = MappingProxyType({p.name: p for p in _ALL})


def profile(name: str) -> TokenProfile:
    """The profile called ``name``; any other name raises ``UnknownTokenProfile``."""
    if not isinstance(name, str) or name not in PROFILES:
        raise UnknownTokenProfile(
            f"Unknown token profile {name!r}; use one of {', '.join(PROFILES)}.", field="profile")
    return PROFILES[name]
