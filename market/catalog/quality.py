"""The quality report of a dataset version: streamed, bounded in memory, deterministic.

``QualityAccumulator.add(record, tokens)`` is called once per record in file order;
``report()`` returns a JSON-serializable dict with no floats anywhere — counts are ints, rates are
strings of decimals with 4 places rounded half up (``"0.9731"``), scores are ints 0–100 — so the
same records always give a byte-identical ``json.dumps(report, sort_keys=True,
ensure_ascii=False)``. Every score is computed from the rates *as printed in the report*
(Decimal arithmetic, then rounded half up to an integer), so a reader can recompute it.

Record text
    The text of a record is its string values joined with ``"\\n"``: the values of
    ``text_fields`` when given, otherwise of every field except ``id_field`` and
    ``label_field``; strings nested in objects and arrays count too (down to 16 levels).

1. ``structural_integrity``
    - ``schema_conformance_rate`` C: over the non-null values of the tracked top-level fields
      (the first 512 fields, as in ``market.catalog.profile``), the share whose JSON type is the
      field's dominant type (an integer conforms to a ``number`` field). 1 when no value is
      typed. It is a per-value rate, not per record: it needs only per-field type counts.
    - per required field, the records where it is present — the key exists and the value is not
      null, not a blank string (CSV gives ``""`` for an empty cell), not an empty array or
      object — and
      ``required_present_rate`` R: records with *every* required field present / records
      (1 when no field is required).
    - **score = round(100 × C × R)**.
2. ``content_diversity``
    - ``exact_duplicate_rate`` E: records whose canonical JSON (sorted keys, UTF-8 unescaped,
      compact separators) has the 64-bit BLAKE2b digest of an earlier record / records.
    - ``near_duplicate_rate`` N, over a sample: the records among the first 10,000 of the file
      that have text and are not exact duplicates. Each one's text (its first 4,000
      characters) is lower-cased, whitespace-collapsed and cut to 1,000 characters; its
      character 5-shingles are hashed with CRC-32 and summarised by a one-permutation MinHash
      of 64 values (bin = hash mod 64, the smallest hash per bin, empty bins filled from the
      next non-empty bin).
      LSH splits the 64 values in 16 bands of 4; a record is a near-duplicate when an earlier
      sampled record sharing a band (each band bucket remembers its first record) agrees on
      at least 52 of the 64 values (estimated Jaccard ≥ 0.8). N = near-duplicates / sampled.
    - ``distinct_bigram_ratio`` G: distinct bigrams / bigrams over the first 100,000 bigrams of
      the file (non-duplicate records in file order, each its first 1,000 characters of text,
      lower-cased). Tokens are single CJK ideographs and runs of other letters and digits, so
      Chinese text gives character bigrams and Latin text word bigrams. G = 1 when no bigram
      was seen.
    - ``language_mix`` over all records, from the first 2,000 characters of each text, counted
      by UTF-8 lead byte: Han = U+4000–U+9FFF (CJK ideographs); Latin = ASCII letters and
      U+00C0–U+027F, U+1E00–U+1EFF; other letters = U+0340–U+1FFF (Greek, Cyrillic, Arabic,
      Indic, …), kana, U+A000–U+DFFF (Yi, Hangul). A record is ``zh`` when Han is ≥ 70 % of
      these letters, ``en`` when Latin is, ``other`` when other letters are or there is no
      letter at all, and ``mixed`` otherwise.
    - ``label_balance`` (with ``label_field``): the label distribution (a label is its string,
      or compact JSON for other values; null, missing or blank is unlabelled; at most 256
      distinct labels are tracked, the rest pooled into one class) and its normalized entropy
      L = H / ln k over the k classes seen (0 when k < 2). Without a label field L = 1.
    - **score = round(100 × (1 − E) × (1 − N) × (0.6 + 0.2 × G + 0.2 × L))**.
3. ``annotation_accuracy`` (with ``expert_labels``, ``label_field`` and ``id_field``): each
    record whose id (``record[id_field]``, or its label text) is a key of ``expert_labels`` is
    covered; it agrees when its label equals the expert's (compared as label text).
    A = agreements / coverage; **score = round(100 × A)**. Without expert labels the dimension
    is ``{"status": "not_assessed"}``, and with no covered record it is not assessed either;
    then it has no score and is left out of the overall grade.
4. ``model_adaptability``
    - token lengths: exact min, max, mean (2 places) and the shares fitting context windows of
      4,096 / 8,192 / 32,768 / 131,072 tokens (exact counts, ``tokens ≤ window``). p50/p90/p99
      are nearest-rank percentiles read from a log-bucketed histogram: counts below 32 have a
      bucket each, above that a bucket spans 1/16 of a power of two; a percentile is its
      bucket's upper bound clamped to [min, max] — exact below 32, otherwise at most 6.25 %
      above the true value. W = mean of the four window shares.
    - stage fit F: share of records that have, non-empty (not null, not blank, not an empty
      array or object; field names case-insensitive), one field of every group of one of the
      stage's alternatives (see ``STAGE_RULES``): instruction tuning — instruction|prompt|
      question|input and response|output|answer|completion, or a messages|conversations list;
      reinforcement learning — chosen and rejected, or prompt|instruction|question|input|query
      and reward|score|rating|preference; pre-training — text|content|body|document|passage;
      evaluation — question|prompt|input|query and answer|label|target|reference|output;
      knowledge base — text|content|body|passage|document|chunk and id|doc_id|document_id|
      title|source|url.
    - **score = round(100 × (0.5 × F + 0.5 × W))**, or round(100 × W) when the AI stage is
      not one of these five.
5. ``overall``: **score = round(Σ wᵢ × scoreᵢ / Σ wᵢ)** over the assessed dimensions with
    weights structural 30, diversity 25, accuracy 20, adaptability 25 (so 80 when accuracy is
    not assessed); grade A ≥ 90, B ≥ 75, C ≥ 60, D otherwise. A report of no records scores 0.

Memory: everything is fixed-size or sampled except the exact-duplicate digests: 8-byte
digests (a zero digest is stored as 1) in an open-addressing table of a power-of-two size kept
under 70 % full — 12 to 23 bytes per distinct record; 3 million distinct records take a 64 MB
table (96 MB for a moment while it doubles). Other bounds: 512 fields, 256 labels, ~1,000
histogram buckets, 100,000 bigrams, 10,000 MinHash signatures (~20 MB with their LSH buckets).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext
from operator import eq, methodcaller
from typing import Any

from market.catalog.profile import (
    INTEGER, JSON_TYPES, NULL, SchemaProfiler, dominant_type, rate,
)

VERSION = "quality-report/1"
WEIGHTS = {"structural_integrity": 30, "content_diversity": 25, "annotation_accuracy": 20,
           "model_adaptability": 25}
_SHORT_NAMES = {"structural_integrity": "structural", "content_diversity": "diversity",
                "annotation_accuracy": "accuracy", "model_adaptability": "adaptability"}
GRADES = ((90, "A"), (75, "B"), (60, "C"), (0, "D"))
CONTEXT_WINDOWS = (4096, 8192, 32768, 131072)

NEAR_DUP_SAMPLE = 10_000      # the first records of the file considered for near-duplicates
SHINGLE_CHARS = 1_000         # characters of normalized text shingled per record
SHINGLE = 5
MINHASH_BINS = 64
LSH_BANDS = 16
LSH_ROWS = MINHASH_BINS // LSH_BANDS
NEAR_DUP_MATCHES = 52         # of 64 MinHash values: estimated Jaccard >= 0.8
BIGRAM_BUDGET = 100_000
BIGRAM_CHARS = 1_000
LANGUAGE_CHARS = 2_000
MAX_LABELS = 256
MAX_NONCONFORMING_LISTED = 20
TEXT_DEPTH = 16
DOMINANCE = (7, 10)           # a script dominates with >= 7/10 of the letters
HISTOGRAM_EXACT_BITS = 5      # counts below 2**5 get a bucket each; then 16 buckets per octave

STAGE_RULES: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "instruction_tuning": (
        (("instruction", "prompt", "question", "input"),
         ("response", "output", "answer", "completion")),
        (("messages", "conversations"),),
    ),
    "reinforcement_learning": (
        (("chosen",), ("rejected",)),
        (("prompt", "instruction", "question", "input", "query"),
         ("reward", "score", "rating", "preference")),
    ),
    "pretraining": (
        (("text", "content", "body", "document", "passage"),),
    ),
    "evaluation": (
        (("question", "prompt", "input", "query"),
         ("answer", "label", "target", "reference", "output")),
    ),
    "knowledge_base": (
        (("text", "content", "body", "passage", "document", "chunk"),
         ("id", "doc_id", "document_id", "title", "source", "url")),
    ),
}

_PLACES = Decimal("0.0001")
_ONE = Decimal(1)
_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_SHINGLES = re.compile(r"(?=(.{%d}))" % SHINGLE, re.S)
_encode_lenient = methodcaller("encode", "utf-8", "surrogatepass")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKENS = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def _script_table() -> tuple[bytes, bytes]:
    """Maps UTF-8 bytes to h (Han), l (Latin), o (other letters); all other bytes are deleted."""
    table = bytearray(range(256))
    classes = {}
    for byte in list(range(0x41, 0x5B)) + list(range(0x61, 0x7B)) + list(range(0xC3, 0xCA)):
        classes[byte] = ord("l")         # ASCII letters; U+00C0-U+027F
    for byte in range(0xE4, 0xEA):
        classes[byte] = ord("h")         # U+4000-U+9FFF
    for byte in list(range(0xCD, 0xE2)) + list(range(0xEA, 0xEE)):
        classes[byte] = ord("o")         # U+0340-U+1FFF; U+A000-U+DFFF
    for byte, cls in classes.items():
        table[byte] = cls
    return bytes(table), bytes(b for b in range(256) if b not in classes)


_SCRIPT_TABLE, _SCRIPT_DELETE = _script_table()
_LATIN_EXTENDED_ADDITIONAL = (b"\xe1\xb8", b"\xe1\xb9", b"\xe1\xba", b"\xe1\xbb")
_KANA = (b"\xe3\x81", b"\xe3\x82", b"\xe3\x83")


def script_counts(text: str) -> tuple[int, int, int]:
    """(Han, Latin, other letters) in ``text`` by UTF-8 lead byte (see the module docstring)."""
    if text.isascii():
        data = text.encode("ascii").translate(_SCRIPT_TABLE, _SCRIPT_DELETE)
        return 0, len(data), 0
    data = text.encode("utf-8", "surrogatepass")
    classes = data.translate(_SCRIPT_TABLE, _SCRIPT_DELETE)
    han = classes.count(b"h")
    latin = classes.count(b"l")
    other = len(classes) - han - latin
    if other and b"\xe1" in data:
        extended = sum(map(data.count, _LATIN_EXTENDED_ADDITIONAL))
        latin += extended
        other -= extended
    if b"\xe3" in data:
        other += sum(map(data.count, _KANA))
    return han, latin, other


def classify_language(text: str) -> str:
    """``zh``, ``en``, ``mixed`` or ``other`` for a text (see the module docstring)."""
    han, latin, other = script_counts(text[:LANGUAGE_CHARS])
    total = han + latin + other
    share, whole = DOMINANCE
    if total == 0:
        return "other"
    if han * whole >= share * total:
        return "zh"
    if latin * whole >= share * total:
        return "en"
    if other * whole >= share * total:
        return "other"
    return "mixed"


def _collect_strings(value: Any, out: list[str], depth: int) -> None:
    if isinstance(value, str):
        out.append(value)
    elif depth < TEXT_DEPTH:
        if isinstance(value, Mapping):
            for item in value.values():
                _collect_strings(item, out, depth + 1)
        elif isinstance(value, (list, tuple)):
            for item in value:
                _collect_strings(item, out, depth + 1)


def record_text(record: Mapping, text_fields: Sequence[str] | None,
                skip: Sequence[str | None] = ()) -> str:
    """The text of a record: its string values joined with newlines (module docstring)."""
    strings: list[str] = []
    if text_fields is not None:
        for name in text_fields:
            value = record.get(name)
            if value is not None:
                _collect_strings(value, strings, 1)
    else:
        for name, value in record.items():
            if type(value) is str:
                if name not in skip:
                    strings.append(value)
            elif isinstance(value, (Mapping, list, tuple, str)) and name not in skip:
                _collect_strings(value, strings, 1)
    return "\n".join(strings)


def minhash(text: str) -> array:
    """The 64-value one-permutation MinHash of a normalized text's character 5-shingles."""
    shingles = set(_SHINGLES.findall(text)) if len(text) >= SHINGLE else {text}
    try:
        hashes = sorted(map(zlib.crc32, map(str.encode, shingles)))
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        hashes = sorted(map(zlib.crc32, map(_encode_lenient, shingles)))
    bins = MINHASH_BINS
    low = bins - 1
    shift = bins.bit_length() - 1
    mins = [-1] * bins
    missing = bins
    for value in hashes:
        slot = value & low
        if mins[slot] < 0:
            mins[slot] = value >> shift
            missing -= 1
            if not missing:
                break
    if missing:  # densify: an empty bin takes the next non-empty bin's value, marked by distance
        filled = mins[:]
        for slot in range(bins):
            if filled[slot] < 0:
                for distance in range(1, bins):
                    value = filled[(slot + distance) % bins]
                    if value >= 0:
                        mins[slot] = value + (distance << (32 - shift))
                        break
    return array("I", mins)


def bigram_tokens(text: str) -> list[str]:
    """Tokens for bigrams: single CJK ideographs and runs of other letters/digits."""
    return _TOKENS.findall(text.lower())


def normalized_entropy(counts: Sequence[int]) -> Decimal:
    """H / ln k of a distribution of counts, k = number of non-zero classes (0 when k < 2)."""
    counts = [count for count in counts if count > 0]
    if len(counts) < 2:
        return Decimal(0)
    with localcontext() as context:
        context.prec = 28
        total = Decimal(sum(counts))
        entropy = -sum((Decimal(c) / total) * (Decimal(c) / total).ln() for c in counts)
        return (entropy / Decimal(len(counts)).ln()).quantize(_PLACES, ROUND_HALF_UP)


def histogram_bucket(tokens: int) -> int:
    """The log bucket of a token count: exact below 32, then 16 buckets per power of two."""
    shift = tokens.bit_length() - HISTOGRAM_EXACT_BITS
    if shift <= 0:
        return tokens
    return (shift << (HISTOGRAM_EXACT_BITS - 1)) + (tokens >> shift)


def bucket_upper_bound(bucket: int) -> int:
    half = 1 << (HISTOGRAM_EXACT_BITS - 1)
    if bucket < 2 * half:
        return bucket
    shift = (bucket >> (HISTOGRAM_EXACT_BITS - 1)) - 1
    top = bucket - (shift << (HISTOGRAM_EXACT_BITS - 1))
    return ((top + 1) << shift) - 1


def grade(score: int) -> str:
    for threshold, letter in GRADES:
        if score >= threshold:
            return letter
    return "D"


def _round(value: Decimal) -> int:
    return int(value.quantize(_ONE, ROUND_HALF_UP))


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value) and not value.isspace()
    if isinstance(value, (list, dict)):
        return bool(value)
    return True


def _label_text(value: Any) -> str:
    return value if isinstance(value, str) else _canonical.encode(value)


def _matches(record: Mapping, alternatives) -> bool:
    for groups in alternatives:
        for names in groups:
            for name in names:
                if name in record and _present(record[name]):
                    break
            else:
                break
        else:
            return True
    return False


def _fits_stage(record: Mapping, alternatives) -> bool:
    if _matches(record, alternatives):
        return True
    lowered = {name.lower(): value for name, value in record.items()
               if isinstance(name, str) and name != name.lower()}
    if not lowered:
        return False
    return _matches({**{k: v for k, v in record.items() if isinstance(k, str)}, **lowered},
                    alternatives)


def _rule_text(alternatives) -> str:
    return "; or ".join(" + ".join("|".join(names) for names in groups)
                        for groups in alternatives)


class _DigestSet:
    """64-bit digests in an open-addressing table (linear probing), kept under 70 % full."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        self.table = array("Q", bytes(8 * capacity))
        self.mask = capacity - 1
        self.used = 0
        self.limit = capacity * 7 // 10

    def add(self, digest: int) -> bool:
        """Adds a non-zero digest; True when it was already there."""
        table, mask = self.table, self.mask
        slot = digest & mask
        while True:
            held = table[slot]
            if held == 0:
                table[slot] = digest
                self.used += 1
                if self.used > self.limit:
                    self._grow()
                return False
            if held == digest:
                return True
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old = self.table
        capacity = 2 * len(old)
        self.table = table = array("Q", bytes(8 * capacity))
        self.mask = mask = capacity - 1
        self.limit = capacity * 7 // 10
        for digest in old:
            if digest:
                slot = digest & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = digest


class QualityAccumulator:
    """Accumulates the quality report of a stream of records (see the module docstring)."""

    def __init__(self, required_fields: Sequence[str] | None = (), label_field: str | None = None,
                 ai_stage: str | None = None, text_fields: Sequence[str] | None = None,
                 expert_labels: Mapping[str, Any] | None = None,
                 id_field: str | None = None) -> None:
        self.required_fields = tuple(dict.fromkeys(required_fields or ()))
        self.label_field = label_field or None
        self.ai_stage = ai_stage
        self.text_fields = tuple(text_fields) if text_fields is not None else None
        self.expert_labels = expert_labels
        self.id_field = id_field or None
        if expert_labels is not None and (self.label_field is None or self.id_field is None):
            raise ValueError("expert labels need both a label_field and an id_field")
        self._skip_text = (self.id_field, self.label_field)
        self._stage_rule = STAGE_RULES.get(ai_stage) if ai_stage else None

        self.records = 0
        self._schema = SchemaProfiler()
        self._required_present = [0] * len(self.required_fields)
        self._all_required = 0

        self._digests = _DigestSet()
        self._exact_duplicates = 0
        self._near_sample_limit = NEAR_DUP_SAMPLE
        self._near_sampled = 0
        self._near_duplicates = 0
        self._signatures: list[array] = []
        self._bands: list[dict[bytes, int]] = [{} for _ in range(LSH_BANDS)]
        self._bigrams: set[tuple[str, str]] = set()
        self._bigram_total = 0
        self._languages = {"zh": 0, "en": 0, "mixed": 0, "other": 0}
        self._labels: dict[str, int] = {}
        self._pooled_labels = 0
        self._unlabelled = 0

        self._covered = 0
        self._agreements = 0

        self._token_total = 0
        self._token_min: int | None = None
        self._token_max = 0
        self._histogram: dict[int, int] = {}
        # records by the smallest context window they fit (the last slot: none)
        self._smallest_window = [0] * (len(CONTEXT_WINDOWS) + 1)
        self._stage_fits = 0

    # -- streaming ---------------------------------------------------------------------------

    def add(self, record: dict, tokens: int, canonical: str | None = None) -> None:
        """Count one record; ``canonical`` is its canonical JSON when the caller already has it
        (the importer does), which saves serializing it again."""
        if type(record) is not dict and not isinstance(record, Mapping):
            raise TypeError(f"a record is a JSON object, not {type(record).__name__}")
        if type(tokens) is not int or tokens < 0:
            if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
                raise ValueError(f"tokens must be a non-negative integer, not {tokens!r}")
            tokens = int(tokens)
        self.records += 1
        self._schema.add(record)

        if self.required_fields:
            every = True
            present = self._required_present
            for index, name in enumerate(self.required_fields):
                if _present(record.get(name)):
                    present[index] += 1
                else:
                    every = False
            if every:
                self._all_required += 1

        self._token_total += tokens
        if self._token_min is None or tokens < self._token_min:
            self._token_min = tokens
        if tokens > self._token_max:
            self._token_max = tokens
        bucket = histogram_bucket(tokens)
        histogram = self._histogram
        histogram[bucket] = histogram.get(bucket, 0) + 1
        self._smallest_window[bisect_left(CONTEXT_WINDOWS, tokens)] += 1

        if self._stage_rule is not None and _fits_stage(record, self._stage_rule):
            self._stage_fits += 1
        if self.label_field is not None:
            self._label(record.get(self.label_field))
            if self.expert_labels is not None:
                self._expert(record)

        if canonical is None:
            canonical = _canonical.encode(record)
        digest = int.from_bytes(hashlib.blake2b(
            canonical.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") or 1
        duplicate = self._digests.add(digest)
        text = record_text(record, self.text_fields, self._skip_text)
        self._languages[classify_language(text)] += 1
        if duplicate:
            self._exact_duplicates += 1
            return
        if not text:
            return
        if self._bigram_total < BIGRAM_BUDGET:
            self._add_bigrams(text)
        if self.records <= self._near_sample_limit:
            self._near_duplicate(text)

    def schema_profile(self) -> dict:
        """The schema inferred from the same records (see ``market.catalog.profile``)."""
        return self._schema.result()

    def _label(self, value: Any) -> None:
        if not _present(value):
            self._unlabelled += 1
            return
        key = _label_text(value)
        labels = self._labels
        if key in labels:
            labels[key] += 1
        elif len(labels) < MAX_LABELS:
            labels[key] = 1
        else:
            self._pooled_labels += 1

    def _expert(self, record: Mapping) -> None:
        record_id = record.get(self.id_field)
        if record_id is None:
            return
        experts = self.expert_labels
        missing = object()
        expert = experts.get(record_id, missing) if isinstance(record_id, (str, int)) else missing
        if expert is missing and not isinstance(record_id, str):
            expert = experts.get(_label_text(record_id), missing)
        if expert is missing:
            return
        self._covered += 1
        value = record.get(self.label_field)
        if _present(value) and _label_text(value) == _label_text(expert):
            self._agreements += 1

    def _add_bigrams(self, text: str) -> None:
        tokens = bigram_tokens(text[:BIGRAM_CHARS])
        if len(tokens) < 2:
            return
        pairs = list(zip(tokens, tokens[1:]))
        room = BIGRAM_BUDGET - self._bigram_total
        if len(pairs) > room:
            pairs = pairs[:room]
        self._bigrams.update(pairs)
        self._bigram_total += len(pairs)

    def _near_duplicate(self, text: str) -> None:
        normalized = " ".join(text[:4 * SHINGLE_CHARS].lower().split())[:SHINGLE_CHARS]
        if not normalized:
            return
        signature = minhash(normalized)
        raw = signature.tobytes()
        width = LSH_ROWS * signature.itemsize
        index = len(self._signatures)
        self._near_sampled += 1
        near = False
        checked: set[int] = set()
        for band, bucket in enumerate(self._bands):
            key = raw[band * width:(band + 1) * width]
            first = bucket.setdefault(key, index)
            if first != index and not near and first not in checked:
                checked.add(first)
                if sum(map(eq, signature, self._signatures[first])) >= NEAR_DUP_MATCHES:
                    near = True
        if near:
            self._near_duplicates += 1
        self._signatures.append(signature)

    # -- the report --------------------------------------------------------------------------

    def report(self) -> dict:
        dimensions = {
            "structural_integrity": self._structural_report(),
            "content_diversity": self._diversity_report(),
            "annotation_accuracy": self._accuracy_report(),
            "model_adaptability": self._adaptability_report(),
        }
        if self.records == 0:
            for dimension in dimensions.values():
                if "score" in dimension:
                    dimension["score"] = 0
        weights = {name: WEIGHTS[name] for name, dimension in dimensions.items()
                   if "score" in dimension}
        weighted = sum(weights[name] * dimensions[name]["score"] for name in weights)
        total_weight = sum(weights.values())
        score = _round(Decimal(weighted) / Decimal(total_weight)) if self.records else 0
        terms = " + ".join(f"{weights[name]}*{_SHORT_NAMES[name]} {dimensions[name]['score']}"
                           for name in weights)
        skipped = [_SHORT_NAMES[name] for name in WEIGHTS if name not in weights]
        formula = f"({terms}) / {total_weight}, rounded half up = {score}"
        if skipped:
            formula += f"; not assessed: {', '.join(skipped)}"
        formula += "; grade A >= 90, B >= 75, C >= 60, else D"
        return {
            "version": VERSION,
            "records": self.records,
            **dimensions,
            "overall": {"score": score, "grade": grade(score), "formula": formula,
                        "weights": weights, "version": VERSION},
        }

    def _structural_report(self) -> dict:
        records = self.records
        typed = conforming = 0
        nonconforming = []
        for name, counts in self._schema.field_counts():
            dominant = dominant_type(counts)
            values = sum(counts) - counts[NULL]
            if dominant == "null":
                continue
            good = counts[JSON_TYPES.index(dominant)]
            if dominant == "number":
                good += counts[INTEGER]
            typed += values
            conforming += good
            if good < values and len(nonconforming) < MAX_NONCONFORMING_LISTED:
                nonconforming.append({"field": name, "dominant_type": dominant,
                                      "nonconforming": values - good})
        if typed:
            conformance = rate(conforming, typed)
        else:
            conformance = rate(1, 1) if records else rate(0, 0)
        if self.required_fields:
            required_rate = rate(self._all_required, records)
        else:
            required_rate = rate(1, 1) if records else rate(0, 0)
        score = _round(100 * Decimal(conformance) * Decimal(required_rate))
        return {
            "records": records,
            "fields_tracked": len(self._schema.field_counts()),
            "untracked_values": self._schema.other_fields,
            "typed_values": typed,
            "conforming_values": conforming,
            "schema_conformance_rate": conformance,
            "nonconforming_fields": nonconforming,
            "required_fields": [
                {"field": name, "present": present, "rate": rate(present, records)}
                for name, present in zip(self.required_fields, self._required_present)],
            "records_with_all_required": self._all_required if self.required_fields else records,
            "required_present_rate": required_rate,
            "score": score,
        }

    def _diversity_report(self) -> dict:
        records = self.records
        exact = rate(self._exact_duplicates, records)
        near = rate(self._near_duplicates, self._near_sampled)
        if self._bigram_total:
            bigram_ratio = rate(len(self._bigrams), self._bigram_total)
        else:
            bigram_ratio = rate(1, 1)
        labels = self._label_report()
        entropy = labels.get("normalized_entropy", rate(1, 1))
        score = _round(100 * (1 - Decimal(exact)) * (1 - Decimal(near))
                       * (Decimal("0.6") + Decimal("0.2") * Decimal(bigram_ratio)
                          + Decimal("0.2") * Decimal(entropy)))
        return {
            "exact_duplicates": self._exact_duplicates,
            "exact_duplicate_rate": exact,
            "near_duplicate_sample": self._near_sampled,
            "near_duplicates": self._near_duplicates,
            "near_duplicate_rate": near,
            "bigrams_sampled": self._bigram_total,
            "distinct_bigrams": len(self._bigrams),
            "distinct_bigram_ratio": bigram_ratio,
            "language_mix": {language: {"records": count, "share": rate(count, records)}
                             for language, count in self._languages.items()},
            "label_balance": labels,
            "score": score,
        }

    def _label_report(self) -> dict:
        if self.label_field is None:
            return {"status": "not_assessed"}
        labelled = sum(self._labels.values()) + self._pooled_labels
        ordered = sorted(self._labels.items(), key=lambda item: (-item[1], item[0]))
        classes = list(self._labels.values()) + ([self._pooled_labels]
                                                 if self._pooled_labels else [])
        return {
            "field": self.label_field,
            "labelled": labelled,
            "unlabelled": self._unlabelled,
            "distinct": len(self._labels),
            "labels": [{"label": label, "count": count, "share": rate(count, labelled)}
                       for label, count in ordered],
            "pooled_labels": self._pooled_labels,
            "normalized_entropy": str(normalized_entropy(classes).quantize(_PLACES)),
        }

    def _accuracy_report(self) -> dict:
        if self.expert_labels is None:
            return {"status": "not_assessed"}
        if not self._covered:
            return {"status": "not_assessed", "expert_labels": len(self.expert_labels),
                    "coverage": 0}
        agreement = rate(self._agreements, self._covered)
        return {
            "status": "assessed",
            "id_field": self.id_field,
            "label_field": self.label_field,
            "expert_labels": len(self.expert_labels),
            "coverage": self._covered,
            "agreements": self._agreements,
            "agreement_rate": agreement,
            "score": _round(100 * Decimal(agreement)),
        }

    def _percentile(self, percent: int) -> int | None:
        records = self.records
        if not records:
            return None
        rank = -(-percent * records // 100)  # nearest rank: ceil(p/100 * n)
        seen = 0
        for bucket in sorted(self._histogram):
            seen += self._histogram[bucket]
            if seen >= rank:
                upper = bucket_upper_bound(bucket)
                return max(self._token_min, min(upper, self._token_max))
        return self._token_max

    def _adaptability_report(self) -> dict:
        records = self.records
        fitting = [sum(self._smallest_window[:index + 1]) for index in range(len(CONTEXT_WINDOWS))]
        windows = [{"tokens": window, "records": count, "share": rate(count, records)}
                   for window, count in zip(CONTEXT_WINDOWS, fitting)]
        window_mean = (sum(Decimal(w["share"]) for w in windows)
                       / len(windows)).quantize(_PLACES, ROUND_HALF_UP)
        if self._stage_rule is not None:
            fit = rate(self._stage_fits, records)
            stage = {"stage": self.ai_stage, "records": self._stage_fits, "share": fit,
                     "rule": _rule_text(self._stage_rule)}
            score = _round(100 * (Decimal("0.5") * Decimal(fit)
                                  + Decimal("0.5") * window_mean))
        else:
            stage = {"stage": self.ai_stage, "status": "not_assessed"}
            score = _round(100 * window_mean)
        mean = (Decimal(self._token_total) / Decimal(records)).quantize(
            Decimal("0.01"), ROUND_HALF_UP) if records else None
        return {
            "tokens": {
                "total": self._token_total,
                "min": self._token_min,
                "max": self._token_max if records else None,
                "mean": str(mean) if mean is not None else None,
                "p50": self._percentile(50),
                "p90": self._percentile(90),
                "p99": self._percentile(99),
                "percentiles": "nearest rank from log buckets; exact below 32, else <= 6.25% high",
            },
            "context_windows": windows,
            "mean_window_share": str(window_mean),
            "stage_fit": stage,
            "score": score,
        }
