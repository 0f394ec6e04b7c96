"""Schema inference: types and counts, null rates, dominant types, examples, bounds, determinism."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.catalog.profile import MAX_FIELDS, SchemaProfiler, dominant_type, rate


def profile(records, **kwargs) -> dict:
    profiler = SchemaProfiler(**kwargs)
    for record in records:
        profiler.add(record)
    return profiler.result()


def by_name(result: dict) -> dict:
    return {field["name"]: field for field in result["fields"]}


def floats_in(value, path="$"):
    if isinstance(value, float):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in floats_in(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in floats_in(item, f"{path}[{index}]")]
    return []


MIXED = [
    {"a": 1, "b": "x", "c": None},
    {"a": 2.5, "b": None},
    {"a": 3, "b": "y", "d": [1]},
    {"a": "four"},
]


def test_mixed_types_and_nulls_are_counted_per_field():
    result = profile(MIXED)
    assert result["records"] == 4
    assert [f["name"] for f in result["fields"]] == ["a", "b", "c", "d"]
    fields = by_name(result)
    assert fields["a"] == {"name": "a", "types": {"integer": 2, "number": 1, "string": 1},
                           "dominant_type": "number", "present": 4, "non_null": 4,
                           "null_rate": "0.0000", "example": "1"}
    assert fields["b"] == {"name": "b", "types": {"string": 2, "null": 1},
                           "dominant_type": "string", "present": 3, "non_null": 2,
                           "null_rate": "0.5000", "example": "x"}
    # Only ever null: dominant type null, no example, null in every record (3 of them missing).
    assert fields["c"] == {"name": "c", "types": {"null": 1}, "dominant_type": "null",
                           "present": 1, "non_null": 0, "null_rate": "1.0000", "example": None}
    # First seen in the third record: the two records before it count as null too.
    assert fields["d"]["null_rate"] == "0.7500"
    assert fields["d"]["example"] == "[1]"
    assert fields["d"]["dominant_type"] == "array"


@pytest.mark.parametrize("values, expected", [
    (["s", True], "string"),                       # a tie goes to the first type in order
    ([True, 1, 2], "integer"),                     # booleans are not integers
    ([1, 2, 3], "integer"),                        # no decimal: stays integer
    ([1, 2, 3.5], "number"),                       # integers join a decimal field
    ([1, 2, 3.5, "a", "b"], "number"),             # 3 numbers (2 whole) beat 2 strings
    ([1, 2, 3.5, "a", "b", "c"], "string"),        # 3 = 3: string comes first
    ([1, "a", "b"], "string"),
    ([{"k": 1}, {"k": 2}, [1]], "object"),
    ([None, None], "null"),
])
def test_dominant_type(values, expected):
    result = profile([{"f": value} for value in values])
    assert result["fields"][0]["dominant_type"] == expected


def test_dominant_type_counts_directly():
    # string, integer, number, boolean, object, array, null
    assert dominant_type([0, 5, 0, 6, 0, 0, 9]) == "boolean"
    assert dominant_type([0, 0, 0, 0, 0, 0, 9]) == "null"
    assert dominant_type([3, 3, 1, 0, 0, 0, 0]) == "number"   # 3 whole + 1 decimal = 4 > 3
    assert dominant_type([4, 3, 1, 0, 0, 0, 0]) == "string"   # 4 = 4: string comes first
    assert dominant_type([0, 3, 0, 0, 0, 0, 0]) == "integer"


@pytest.mark.parametrize("numerator, denominator, expected", [
    (1, 3, "0.3333"), (2, 3, "0.6667"), (1, 8, "0.1250"), (0, 5, "0.0000"), (5, 5, "1.0000"),
    (1, 0, "0.0000"), (1, 20000, "0.0001"), (1, 20001, "0.0000"),  # half up at the 5th place
])
def test_rates_are_four_place_decimal_strings(numerator, denominator, expected):
    assert rate(numerator, denominator) == expected


def test_examples_are_the_first_non_null_value_as_text_cut_to_80_characters():
    long = "长" * 100
    result = by_name(profile([
        {"s": None, "o": {"b": 1, "a": [1, 2]}, "n": 0.5, "t": True},
        {"s": long, "o": {"z": 0}, "n": 7, "t": False},
        {"s": "later"},
    ]))
    assert result["s"]["example"] == "长" * 80
    assert result["o"]["example"] == '{"a":[1,2],"b":1}'
    assert result["n"]["example"] == "0.5"       # text, never a float
    assert result["t"]["example"] == "true"


def test_fields_beyond_the_limit_only_count_in_other_fields():
    records = [{f"f{i}": i for i in range(5)}, {"f4": 1, "f0": 2, "g": 3}]
    result = profile(records, max_fields=3)
    assert [f["name"] for f in result["fields"]] == ["f0", "f1", "f2"]
    assert result["other_fields"] == 2 + 2   # f3, f4 in the first record; f4, g in the second
    assert by_name(result)["f0"]["non_null"] == 2
    assert result["max_fields"] == 3
    assert MAX_FIELDS == 512
    many = profile([{f"k{i}": i for i in range(600)}])
    assert len(many["fields"]) == 512 and many["other_fields"] == 88


def test_fields_keep_first_appearance_order():
    result = profile([{"z": 1}, {"a": 1, "z": 2}, {"m": 1, "a": 2}])
    assert [f["name"] for f in result["fields"]] == ["z", "a", "m"]


def test_empty_profile():
    assert profile([]) == {"format": "schema-profile/1", "records": 0, "fields": [],
                           "max_fields": 512, "other_fields": 0}


def test_a_record_must_be_an_object():
    with pytest.raises(TypeError):
        SchemaProfiler().add([1, 2])


def test_same_records_give_byte_identical_json_without_floats():
    records = MIXED + [{"a": 0.1, "e": {"x": 1.5}, "中文": "值"}] * 3
    first = json.dumps(profile(records), sort_keys=True, ensure_ascii=False)
    second = json.dumps(profile([dict(r) for r in records]), sort_keys=True, ensure_ascii=False)
    assert first == second
    assert floats_in(profile(records)) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abcdef"), json_values, max_size=4), max_size=8))
def test_any_records_profile_consistently(records):
    result = profile(records)
    assert floats_in(result) == []
    assert result["records"] == len(records)
    for field in result["fields"]:
        name = field["name"]
        assert field["present"] == sum(1 for r in records if name in r)
        assert field["non_null"] == sum(1 for r in records if r.get(name) is not None)
        assert field["null_rate"] == rate(len(records) - field["non_null"], len(records))
        assert sum(field["types"].values()) == field["present"]
    assert json.dumps(result, sort_keys=True) == json.dumps(profile(records), sort_keys=True)
