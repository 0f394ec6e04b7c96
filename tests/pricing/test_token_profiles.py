"""Token profiles: each count equals the vendor's published rule, worked out here independently.

The reference computations below are written from the published rules (with exact fractions
and ``math``), not from the code's helpers; the tables hold counts worked out by hand, the
vendors' own examples among them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.errors import InvalidMeasure, PricingError, UnknownTokenProfile
from pricing.token_profiles import (
    MAX_BYTES,
    MAX_IMAGE_SIDE,
    MAX_MICROSECONDS,
    PROFILES,
    TiktokenText,
    TokenCount,
    profile,
)
from pricing.tokens import count_text, get_encoding

OPENAI = profile("openai-image-tiles/2024-11")
OPENAI_LOW = profile("openai-image-low/2024-11")
GEMINI = profile("gemini-image-tiles/2025-01")
AUDIO = profile("gemini-audio/2025-01")
VIDEO = profile("gemini-video/2025-01")
BYTES = profile("bytes-per-token/4")

sides = st.integers(min_value=1, max_value=MAX_IMAGE_SIDE)
small_sides = st.integers(min_value=1, max_value=5000)


def openai_reference(width: int, height: int) -> int:
    """OpenAI's high-detail rule: fit in 2048², shortest side to 768, 85 + 170 per 512² tile.

    A resized side keeps its whole pixels (rounded down, at least one).
    """
    if max(width, height) > 2048:
        factor = Fraction(2048, max(width, height))
        width, height = max(1, math.floor(width * factor)), max(1, math.floor(height * factor))
    if min(width, height) > 768:
        factor = Fraction(768, min(width, height))
        width, height = max(1, math.floor(width * factor)), max(1, math.floor(height * factor))
    return 85 + 170 * math.ceil(Fraction(width, 512)) * math.ceil(Fraction(height, 512))


def gemini_reference(width: int, height: int) -> int:
    """Gemini's rule: 258 when both sides are ≤ 384, else 258 per 768² tile of the image as given."""
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(Fraction(width, 768)) * math.ceil(Fraction(height, 768))


def per_second_reference(rate: int, microseconds: int) -> int:
    return rate * math.ceil(Fraction(microseconds, 1_000_000))


OPENAI_TABLE = [
    ((1024, 1024), 765),     # OpenAI's example: 768×768, 4 tiles
    ((2048, 4096), 1105),    # OpenAI's example: 1024×2048, then 768×1536, 6 tiles
    ((4096, 8192), 1105),    # fitted to 1024×2048 first
    ((2048, 2048), 765),     # exactly the box: not fitted, shortest side 2048 → 768
    ((2049, 2049), 765),
    ((768, 768), 765),       # shortest side exactly 768: not scaled
    ((769, 769), 765),
    ((512, 512), 255),
    ((513, 512), 425),
    ((1, 1), 255),           # never scaled up
    ((768, 2048), 1445),     # 2 × 4 tiles
    ((1024, 2048), 1105),    # wider, but scaled to 768×1536: fewer tiles
    ((10000, 1000), 765),    # panorama: 2048×204, 4 × 1 tiles
    ((1000, 10000), 765),
    ((100000, 1), 765),      # a line: 2048×1 (the short side never below one pixel)
    ((2049, 1), 765),
    ((1500, 700), 1105),     # 3 × 2 tiles, no resize
]

GEMINI_TABLE = [
    ((384, 384), 258),
    ((1, 1), 258),
    ((385, 384), 258),       # larger than 384: one 768 tile
    ((384, 385), 258),
    ((768, 768), 258),
    ((769, 768), 516),
    ((1536, 1536), 1032),
    ((1537, 1536), 1548),
    ((2000, 1000), 1548),    # 3 × 2 tiles
    ((10000, 300), 3612),    # panorama: 14 × 1 tiles
    ((2048, 2048), 2322),    # 3 × 3 tiles
]


@pytest.mark.parametrize("size, tokens", OPENAI_TABLE)
def test_openai_high_detail_counts_match_the_published_rule(size, tokens):
    width, height = size
    assert openai_reference(width, height) == tokens
    count = OPENAI.count({"width": width, "height": height})
    assert count == TokenCount("openai-image-tiles/2024-11", tokens, {"width": width, "height": height})


@pytest.mark.parametrize("size", [size for size, _ in OPENAI_TABLE])
def test_openai_low_detail_is_85_for_any_image(size):
    width, height = size
    assert OPENAI_LOW.count({"width": width, "height": height}).tokens == 85


@pytest.mark.parametrize("size, tokens", GEMINI_TABLE)
def test_gemini_image_counts_match_the_published_rule(size, tokens):
    width, height = size
    assert gemini_reference(width, height) == tokens
    assert GEMINI.count({"width": width, "height": height}).tokens == tokens


@pytest.mark.parametrize("microseconds, audio, video", [
    (1, 32, 263),                      # any recording costs at least one second
    (999_999, 32, 263),
    (1_000_000, 32, 263),
    (1_000_001, 64, 526),              # seconds rounded up
    (2_500_000, 96, 789),
    (60_000_000, 1920, 15780),
    (3_600_000_000, 115_200, 946_800),
])
def test_per_second_counts_round_the_seconds_up(microseconds, audio, video):
    assert AUDIO.count({"microseconds": microseconds}) == TokenCount(
        "gemini-audio/2025-01", audio, {"microseconds": microseconds})
    assert VIDEO.count({"microseconds": microseconds}).tokens == video
    assert per_second_reference(32, microseconds) == audio
    assert per_second_reference(263, microseconds) == video


@pytest.mark.parametrize("size, tokens", [(0, 0), (1, 1), (4, 1), (5, 2), (1 << 20, 1 << 18), (MAX_BYTES, MAX_BYTES // 4)])
def test_bytes_per_token_rounds_up(size, tokens):
    assert BYTES.count({"bytes": size}) == TokenCount("bytes-per-token/4", tokens, {"bytes": size})


@given(sides, sides)
def test_openai_high_detail_equals_the_reference_for_any_size(width, height):
    assert OPENAI.count({"width": width, "height": height}).tokens == openai_reference(width, height)


@given(sides, sides)
def test_openai_high_detail_is_at_most_8_tiles_and_does_not_depend_on_orientation(width, height):
    tokens = OPENAI.count({"width": width, "height": height}).tokens
    assert 85 + 170 <= tokens <= 85 + 170 * 8
    assert OPENAI.count({"width": height, "height": width}).tokens == tokens


@given(st.integers(1, 768), st.integers(1, 2048), st.integers(0, 600), st.integers(0, 600))
def test_openai_high_detail_is_monotone_while_no_resize_applies(width, height, more_w, more_h):
    wider, taller = min(768, width + more_w), min(2048, height + more_h)
    smaller = OPENAI.count({"width": width, "height": height}).tokens
    assert OPENAI.count({"width": wider, "height": taller}).tokens >= smaller


@given(sides, sides)
def test_gemini_image_equals_the_reference_for_any_size(width, height):
    assert GEMINI.count({"width": width, "height": height}).tokens == gemini_reference(width, height)


@given(small_sides, small_sides, st.integers(0, 2000), st.integers(0, 2000))
def test_gemini_image_is_monotone_in_each_side(width, height, more_w, more_h):
    smaller = GEMINI.count({"width": width, "height": height}).tokens
    assert GEMINI.count({"width": width + more_w, "height": height}).tokens >= smaller
    assert GEMINI.count({"width": width, "height": height + more_h}).tokens >= smaller


@given(st.integers(1, MAX_MICROSECONDS - 10**7), st.integers(0, 10**7))
def test_per_second_counts_are_monotone_and_match_the_reference(microseconds, more):
    for rule, rate in ((AUDIO, 32), (VIDEO, 263)):
        shorter = rule.count({"microseconds": microseconds}).tokens
        assert shorter == per_second_reference(rate, microseconds)
        assert rule.count({"microseconds": microseconds + more}).tokens >= shorter


@given(st.integers(0, MAX_BYTES - 1000), st.integers(0, 1000))
def test_bytes_per_token_is_monotone_and_matches_the_reference(size, more):
    tokens = BYTES.count({"bytes": size}).tokens
    assert tokens == math.ceil(Fraction(size, 4))
    assert BYTES.count({"bytes": size + more}).tokens >= tokens


def test_a_count_is_recomputed_from_its_basis_and_survives_json():
    facts = {"width": 4032, "height": 3024, "microseconds": 5_000_000, "bytes": 123_456}
    for name in ("openai-image-tiles/2024-11", "gemini-image-tiles/2025-01", "gemini-video/2025-01",
                 "bytes-per-token/4"):
        count = profile(name).count(facts)
        assert set(count.basis) == set(profile(name).facts)  # only the facts the rule used
        again = json.loads(json.dumps(count.as_dict()))
        assert profile(again["profile"]).count(again["basis"]) == count
        assert TokenCount(**again) == count and hash(TokenCount(**again)) == hash(count)


def test_a_count_keeps_its_own_copy_of_the_basis():
    facts = {"width": 10, "height": 10}
    count = GEMINI.count(facts)
    facts["width"] = 99999
    assert count.basis == {"width": 10, "height": 10}
    with pytest.raises(dataclasses.FrozenInstanceError):
        count.tokens = 1


@pytest.mark.parametrize("name, facts, field", [
    ("openai-image-tiles/2024-11", {"width": 0, "height": 10}, "width"),
    ("openai-image-tiles/2024-11", {"width": 10, "height": -1}, "height"),
    ("openai-image-low/2024-11", {"width": 10}, "height"),
    ("gemini-image-tiles/2025-01", {"width": 10.0, "height": 10}, "width"),
    ("gemini-image-tiles/2025-01", {"width": True, "height": 10}, "width"),
    ("gemini-image-tiles/2025-01", {"width": "10", "height": 10}, "width"),
    ("gemini-image-tiles/2025-01", {"width": MAX_IMAGE_SIDE + 1, "height": 10}, "width"),
    ("gemini-audio/2025-01", {"microseconds": 0}, "microseconds"),
    ("gemini-video/2025-01", {"seconds": 3}, "microseconds"),
    ("gemini-video/2025-01", {"microseconds": MAX_MICROSECONDS + 1}, "microseconds"),
    ("bytes-per-token/4", {"bytes": -1}, "bytes"),
    ("bytes-per-token/4", {"bytes": MAX_BYTES + 1}, "bytes"),
])
def test_bad_facts_are_refused_naming_the_fact(name, facts, field):
    with pytest.raises(InvalidMeasure) as caught:
        profile(name).count(facts)
    assert caught.value.field == field
    assert isinstance(caught.value, PricingError)


@pytest.mark.parametrize("name", ["openai-image-tiles", "openai-image-tiles/2023-01", "", None, 3])
def test_an_unknown_profile_is_a_pricing_error(name):
    with pytest.raises(UnknownTokenProfile) as caught:
        profile(name)
    assert caught.value.field == "profile"


def test_every_profile_is_named_with_a_version_and_says_its_rule():
    assert {"openai-image-tiles/2024-11", "openai-image-low/2024-11", "gemini-image-tiles/2025-01",
            "gemini-audio/2025-01", "gemini-video/2025-01", "bytes-per-token/4",
            "tiktoken/o200k_base", "tiktoken/cl100k_base",
            "time-series-csv/o200k_base"} <= set(PROFILES)
    for name, rule in PROFILES.items():
        assert rule.name == name and "/" in name
        assert dataclasses.is_dataclass(rule) and type(rule).__dataclass_params__.frozen
        assert (type(rule).__doc__ or "").strip()
        assert rule.modality in {"text", "image", "audio", "video", "bytes", "time_series"}
    with pytest.raises(TypeError):
        PROFILES["mine/1"] = BYTES


def test_text_profiles_count_with_their_encoding():
    cl100k = profile("tiktoken/cl100k_base")
    assert isinstance(cl100k, TiktokenText) and cl100k.encoding == "cl100k_base"
    # tiktoken's own test: "tiktoken is great!" is 6 tokens in cl100k_base.
    assert cl100k.count_text("tiktoken is great!") == TokenCount(
        "tiktoken/cl100k_base", 6, {"characters": 18})
    o200k = profile("tiktoken/o200k_base")
    record = {"b": 1, "a": "数据"}
    canonical = '{"a":"数据","b":1}'
    assert o200k.count_record(record) == TokenCount(
        "tiktoken/o200k_base", count_text(canonical, "o200k_base"), {"characters": len(canonical)})


# Time series: the canonical CSV text, recomputed with the csv module and tiktoken directly.

def canonical_csv_tokens(text: str) -> tuple[int, int, int]:
    """The published rule from scratch: read with csv.reader, strip each field, write each row
    with csv.writer (QUOTE_MINIMAL, RFC 4180's line end, then "\\n" in its place), count each
    line with tiktoken's o200k_base."""
    encoding = get_encoding("o200k_base")
    tokens = rows = characters = 0
    for row in csv.reader(io.StringIO(text, newline="")):
        if not row:
            continue
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow([field.strip() for field in row])
        line = out.getvalue().removesuffix("\r\n") + "\n"
        tokens += len(encoding.encode_ordinary(line))
        rows += 1
        characters += len(line)
    return tokens, rows, characters


def csv_rows(text: str):
    return csv.reader(io.StringIO(text, newline=""))


SERIES = profile("time-series-csv/o200k_base")


def test_a_time_series_counts_its_canonical_lines():
    text = ("timestamp , temperature_c,humidity\r\n"
            "2026-01-01T00:00:00Z, 21.5 ,40\r\n"
            "\r\n"
            '2026-01-01T00:01:00Z,"21,6",\r\n')
    counted = SERIES.count_rows(csv_rows(text))
    lines = ["timestamp,temperature_c,humidity\n", "2026-01-01T00:00:00Z,21.5,40\n",
             '2026-01-01T00:01:00Z,"21,6",\n']
    assert counted == TokenCount("time-series-csv/o200k_base",
                                 sum(count_text(line) for line in lines),
                                 {"rows": 3, "characters": sum(map(len, lines))})
    assert (counted.tokens, 3, counted.basis["characters"]) == canonical_csv_tokens(text)
    assert SERIES.modality == "time_series"


def test_a_blank_file_counts_nothing():
    assert SERIES.count_rows(csv_rows("\n\n")) == TokenCount(SERIES.name, 0,
                                                             {"rows": 0, "characters": 0})


_FIELD = st.text(alphabet=st.sampled_from(list('ab 1.,"\n\r\t数')), max_size=6)


@given(st.lists(st.lists(_FIELD, min_size=1, max_size=4), max_size=5))
def test_the_canonical_line_is_what_csv_writer_writes(rows):
    for row in rows:
        # With RFC 4180's line end the writer quotes a field holding either \r or \n (with
        # "\n" alone, some Pythons leave a \r bare); the canonical line then ends in \n.
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow([field.strip() for field in row])
        assert SERIES.canonical_line(row) == out.getvalue().removesuffix("\r\n") + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    text = buffer.getvalue()
    counted = SERIES.count_rows(csv_rows(text))
    assert (counted.tokens, counted.basis["rows"], counted.basis["characters"]) \
        == canonical_csv_tokens(text)
