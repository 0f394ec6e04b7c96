"""Schema inference over a stream of records, in bounded memory, with deterministic output.

``SchemaProfiler.add(record)`` is called once per record in file order; ``result()`` describes
every top-level field:

- ``types``: how many values of each JSON type were seen (``string``, ``integer``, ``number``,
  ``boolean``, ``object``, ``array``, ``null``; only the types seen are listed). ``null`` counts
  explicit nulls; a missing field is not a value.
- ``present``: records that carry the field (null included); ``non_null``: values not null.
- ``null_rate``: (records − non_null) / records over *all* records — a field missing from a
  record counts as null there, also in the records read before the field first appeared.
- ``dominant_type``: the most frequent non-null type. Whole numbers and decimals are one family:
  when a field holds any ``number`` (decimal) value, its ``integer`` values are counted as
  ``number`` too, so a price column of ``10`` and ``9.99`` is ``number``. Ties go to the first
  in the order string, integer, number, boolean, object, array. A field whose values are all
  null has dominant type ``null``.
- ``example``: the field's first non-null value, as text: a string as is, anything else as
  compact JSON; cut to 80 characters.

Memory is bounded whatever the record count: at most ``MAX_FIELDS`` (512) fields are tracked,
the first ones to appear; each value of any further field only adds one to ``other_fields``.

The output holds no floats: counts are ints and rates are strings of decimals with 4 places
(``"0.1250"``, rounded half up), and fields are listed in order of first appearance, so
``json.dumps(result, sort_keys=True)`` is byte-identical for the same records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

FORMAT = "schema-profile/1"
MAX_FIELDS = 512
EXAMPLE_CHARS = 80

JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")
STRING, INTEGER, NUMBER, BOOLEAN, OBJECT, ARRAY, NULL = range(7)
_TYPE_INDEX = {str: STRING, int: INTEGER, float: NUMBER, bool: BOOLEAN, dict: OBJECT,
               list: ARRAY, type(None): NULL}
_FOUR_PLACES = Decimal("0.0001")
_example_encoder = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                    default=str)


def json_type_index(value: Any) -> int:
    """The index in ``JSON_TYPES`` of a value's JSON type (subclasses map to their base)."""
    index = _TYPE_INDEX.get(type(value))
    if index is not None:
        return index
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, (float, Decimal)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, Mapping):
        return OBJECT
    if isinstance(value, (list, tuple)):
        return ARRAY
    return STRING


def rate(numerator: int, denominator: int, places: Decimal = _FOUR_PLACES) -> str:
    """``numerator / denominator`` as a decimal string, rounded half up ("0.0000" for 0/0)."""
    if denominator <= 0:
        return str(Decimal(0).quantize(places))
    return str((Decimal(numerator) / Decimal(denominator)).quantize(places, ROUND_HALF_UP))


def dominant_type(counts: list[int]) -> str:
    """The dominant type of a field from its per-type counts (see the module docstring)."""
    effective = list(counts[:NULL])
    if effective[NUMBER]:
        effective[NUMBER] += effective[INTEGER]
        effective[INTEGER] = 0
    best = max(range(NULL), key=lambda index: (effective[index], -index))
    return JSON_TYPES[best] if effective[best] else "null"


def example_text(value: Any) -> str:
    text = value if isinstance(value, str) else _example_encoder.encode(value)
    return text[:EXAMPLE_CHARS]


class _Field:
    __slots__ = ("name", "counts", "example")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts = [0] * len(JSON_TYPES)
        self.example: str | None = None


class SchemaProfiler:
    """Infers the top-level schema of a stream of records (see the module docstring)."""

    def __init__(self, max_fields: int = MAX_FIELDS) -> None:
        self.max_fields = max_fields
        self.records = 0
        self.other_fields = 0
        self._fields: dict[str, _Field] = {}

    def add(self, record: dict) -> None:
        if not isinstance(record, Mapping):
            raise TypeError(f"a record is a JSON object, not {type(record).__name__}")
        self.records += 1
        fields = self._fields
        types = _TYPE_INDEX
        for name, value in record.items():
            field = fields.get(name)
            if field is None:
                if len(fields) >= self.max_fields:
                    self.other_fields += 1
                    continue
                field = fields[name] = _Field(name if isinstance(name, str) else str(name))
            index = types.get(type(value))
            if index is None:
                index = json_type_index(value)
            field.counts[index] += 1
            if field.example is None and index != NULL:
                field.example = example_text(value)

    def field_counts(self) -> list[tuple[str, list[int]]]:
        """(name, per-type counts in ``JSON_TYPES`` order) of each tracked field, in order."""
        return [(field.name, list(field.counts)) for field in self._fields.values()]

    def result(self) -> dict:
        records = self.records
        fields = []
        for field in self._fields.values():
            counts = field.counts
            present = sum(counts)
            non_null = present - counts[NULL]
            fields.append({
                "name": field.name,
                "types": {JSON_TYPES[i]: count for i, count in enumerate(counts) if count},
                "dominant_type": dominant_type(counts),
                "present": present,
                "non_null": non_null,
                "null_rate": rate(records - non_null, records),
                "example": field.example,
            })
        return {
            "format": FORMAT,
            "records": records,
            "fields": fields,
            "max_fields": self.max_fields,
            "other_fields": self.other_fields,
        }
