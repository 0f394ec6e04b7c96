"""The quality report: worked numbers per dimension, the overall grade, bounds and determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from operator import eq
from pathlib import Path

import pytest

from market.catalog import quality
from market.catalog.quality import (
    QualityAccumulator, bigram_tokens, bucket_upper_bound, classify_language, grade,
    histogram_bucket, minhash, normalized_entropy, script_counts,
)

ROOT = Path(__file__).resolve().parents[3]


def build(records, tokens=None, **kwargs) -> dict:
    accumulator = QualityAccumulator(**kwargs)
    for index, record in enumerate(records):
        accumulator.add(record, 10 if tokens is None else tokens[index])
    return accumulator.report()


def floats_in(value, path="$"):
    if isinstance(value, float):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in floats_in(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in floats_in(item, f"{path}[{index}]")]
    return []


def dump(report: dict) -> str:
    return json.dumps(report, sort_keys=True, ensure_ascii=False)


BASE = ("The quick brown fox jumps over the lazy dog near the riverbank while the farmer watches "
        "his cattle graze in the green summer meadow under a bright blue sky.")
EDITED = BASE.replace("farmer", "farmers")  # one letter more: a near-duplicate
OTHER = ("Completely unrelated content about power grid dispatch and substation maintenance "
         "schedules for the winter season in northern provinces.")
ZH_BASE = ("国家电网调度中心发布了今年夏季用电高峰期间的负荷预测报告，报告指出华东地区最高负荷将同比增长"
           "百分之八，需要提前做好跨区电力互济准备。")
ZH_EDITED = ZH_BASE.replace("百分之八", "百分之九")
ZH_OTHER = "农业农村部发布病虫害防控指导意见，要求各地加强小麦条锈病监测预警，及时组织开展统防统治，确保粮食生产安全。"


# -- content diversity: duplicates -------------------------------------------------------------

def test_exact_duplicates_hash_the_canonical_json():
    records = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"b": "x", "a": 1}, {"a": 1, "b": "x"},
               {"a": 1, "b": "x", "c": None}]  # key order does not matter; an extra key does
    diversity = build(records)["content_diversity"]
    assert diversity["exact_duplicates"] == 2
    assert diversity["exact_duplicate_rate"] == "0.4000"


def test_minhash_agrees_on_near_duplicates_and_not_on_unrelated_text():
    normalize = lambda text: " ".join(text.lower().split())  # noqa: E731
    assert list(minhash(normalize(BASE))) == list(minhash(normalize(BASE)))
    assert len(minhash("abc")) == 64
    similar = sum(map(eq, minhash(normalize(BASE)), minhash(normalize(EDITED))))
    unrelated = sum(map(eq, minhash(normalize(BASE)), minhash(normalize(OTHER))))
    assert similar >= quality.NEAR_DUP_MATCHES > unrelated
    zh_similar = sum(map(eq, minhash(ZH_BASE), minhash(ZH_EDITED)))
    zh_unrelated = sum(map(eq, minhash(ZH_BASE), minhash(ZH_OTHER)))
    assert zh_similar >= quality.NEAR_DUP_MATCHES > zh_unrelated


@pytest.mark.parametrize("texts, sampled, near, near_rate, exact", [
    ([BASE, EDITED, OTHER], 3, 1, "0.3333", 0),
    ([BASE, OTHER, ZH_BASE, ZH_OTHER], 4, 0, "0.0000", 0),
    ([ZH_BASE, ZH_EDITED, ZH_OTHER, EDITED], 4, 1, "0.2500", 0),  # EDITED has no BASE before it
    ([BASE, BASE, EDITED], 2, 1, "0.5000", 1),       # an exact duplicate is not sampled again
    ([BASE, EDITED, BASE.upper()], 3, 2, "0.6667", 0),  # case and spacing are normalized away
    ([OTHER, "  ".join(OTHER.split())], 2, 1, "0.5000", 0),
])
def test_near_duplicates(texts, sampled, near, near_rate, exact):
    diversity = build([{"text": text} for text in texts])["content_diversity"]
    assert diversity["near_duplicate_sample"] == sampled
    assert diversity["near_duplicates"] == near
    assert diversity["near_duplicate_rate"] == near_rate
    assert diversity["exact_duplicates"] == exact


def test_records_differing_only_in_id_are_near_duplicates():
    records = [{"id": 1, "text": OTHER}, {"id": 2, "text": OTHER}]
    assert build(records, id_field="id")["content_diversity"]["near_duplicates"] == 1
    # Without id_field a string id is part of the text; the texts still share most shingles.
    string_ids = [{"id": "rec-0001", "text": OTHER}, {"id": "rec-0002", "text": OTHER}]
    assert build(string_ids)["content_diversity"]["near_duplicates"] == 1
    assert build(string_ids)["content_diversity"]["exact_duplicates"] == 0


def test_near_duplicates_are_only_looked_for_in_the_first_records(monkeypatch):
    monkeypatch.setattr(quality, "NEAR_DUP_SAMPLE", 2)
    records = [{"text": BASE}, {"text": OTHER}, {"text": EDITED}]
    diversity = build(records)["content_diversity"]
    assert diversity["near_duplicate_sample"] == 2 and diversity["near_duplicates"] == 0
    accumulator = QualityAccumulator()
    for record in records * 5:
        accumulator.add(record, 1)
    assert len(accumulator._signatures) == 2


def test_records_without_text_are_not_sampled_for_near_duplicates():
    diversity = build([{"n": 1}, {"n": 2}, {"text": BASE}])["content_diversity"]
    assert diversity["near_duplicate_sample"] == 1
    assert diversity["bigrams_sampled"] == len(bigram_tokens(BASE)) - 1


# -- content diversity: bigrams ----------------------------------------------------------------

def test_bigram_tokens_are_cjk_characters_and_latin_words():
    assert bigram_tokens("今天 Good day, 2024年!") == ["今", "天", "good", "day", "2024", "年"]


@pytest.mark.parametrize("texts, total, distinct, ratio", [
    (["a b c", "a b d"], 4, 3, "0.7500"),           # word bigrams: (a,b) twice
    (["天气很好", "天气不好"], 6, 5, "0.8333"),       # character bigrams: 天气 twice
    (["the cat", "the cat sat"], 3, 2, "0.6667"),
    (["single", "字"], 0, 0, "1.0000"),              # no bigram at all: G = 1
])
def test_distinct_bigram_ratio(texts, total, distinct, ratio):
    diversity = build([{"text": text} for text in texts])["content_diversity"]
    assert (diversity["bigrams_sampled"], diversity["distinct_bigrams"],
            diversity["distinct_bigram_ratio"]) == (total, distinct, ratio)


def test_bigrams_stop_at_the_budget(monkeypatch):
    monkeypatch.setattr(quality, "BIGRAM_BUDGET", 5)
    diversity = build([{"text": "a b c d"}, {"text": "a b e f g h"}])["content_diversity"]
    # 3 bigrams from the first record, then only 2 of the second's 5: (a,b) again and (b,e).
    assert diversity["bigrams_sampled"] == 5
    assert diversity["distinct_bigrams"] == 4
    assert diversity["distinct_bigram_ratio"] == "0.8000"


# -- content diversity: languages --------------------------------------------------------------

@pytest.mark.parametrize("text, counts, language", [
    ("今天天气很好，我们去公园散步。", (13, 0, 0), "zh"),
    ("总结这份CT报告", (6, 2, 0), "zh"),                  # 6 of 8 letters = 75 % Han
    ("CT和MRI报告", (3, 5, 0), "mixed"),
    ("混合 mixed 文本 text", (4, 9, 0), "mixed"),          # 9 of 13 = 69 % Latin: just short
    ("The weather is nice today.", (0, 21, 0), "en"),
    ("Tiếng Việt có dấu", (0, 14, 0), "en"),
    ("Привет мир", (0, 0, 9), "other"),
    ("これはペンです", (0, 0, 7), "other"),                  # kana is not Han
    ("12345 !?", (0, 0, 0), "other"),
    ("", (0, 0, 0), "other"),
])
def test_language_of_a_text(text, counts, language):
    assert script_counts(text) == counts
    assert classify_language(text) == language


def test_language_mix_counts_records():
    records = [{"q": "今天天气很好", "a": "是的"}, {"q": "总结这份CT报告", "a": "正常"},
               {"q": "Summarize the report.", "a": "Normal."}, {"q": "混合 mixed 文本 text"},
               {"q": "Привет"}, {"n": 5}, {"q": "Summarize the report.", "a": "Normal."}]
    mix = build(records)["content_diversity"]["language_mix"]
    assert mix == {"zh": {"records": 2, "share": "0.2857"}, "en": {"records": 2, "share": "0.2857"},
                   "mixed": {"records": 1, "share": "0.1429"},
                   "other": {"records": 2, "share": "0.2857"}}


def test_text_fields_choose_the_text_and_labels_and_ids_are_not_text():
    record = {"id": "identifier-abc", "body": "中文内容很长的一段话", "meta": "English words here",
              "label": "positive"}
    mix = build([record])["content_diversity"]["language_mix"]
    assert mix["en"]["records"] == 1  # 10 Han, 37 Latin letters (id and label are text here)
    assert build([record], text_fields=["body"])["content_diversity"]["language_mix"]["zh"] == {
        "records": 1, "share": "1.0000"}
    only_meta = {"id": "x", "body": "中文", "meta": "English words here", "label": "中文标签"}
    assert build([only_meta], text_fields=["meta"], label_field="label", id_field="id")[
        "content_diversity"]["language_mix"]["en"]["records"] == 1
    # label_field and id_field are left out of the text when no text_fields are given.
    labelled = {"id": "abcdefghijklmnop", "text": "今天天气很好", "label": "positive sentiment"}
    assert build([labelled], label_field="label", id_field="id")[
        "content_diversity"]["language_mix"]["zh"]["records"] == 1
    nested = {"messages": [{"role": "用户", "content": "今天天气很好"}]}
    assert build([nested])["content_diversity"]["language_mix"]["zh"]["records"] == 1


# -- content diversity: labels -----------------------------------------------------------------

@pytest.mark.parametrize("labels, entropy", [
    (["a", "b", "a", "b"], "1.0000"),
    (["a", "a", "a", "b"], "0.8113"),     # -(.75 ln .75 + .25 ln .25) / ln 2
    (["a", "b", "c"], "1.0000"),
    (["a", "a", "b", "c"], "0.9464"),     # 1.5 ln 2 / ln 3
    (["a", "a"], "0.0000"),               # one class: nothing to balance
    ([], "0.0000"),
])
def test_label_entropy(labels, entropy):
    report = build([{"label": label} for label in labels], label_field="label")
    assert report["content_diversity"]["label_balance"]["normalized_entropy"] == entropy


def test_label_distribution():
    records = [{"y": "b"}, {"y": "a"}, {"y": "b"}, {"y": None}, {"y": " "}, {}, {"y": 1},
               {"y": True}, {"y": "1"}]
    balance = build(records, label_field="y")["content_diversity"]["label_balance"]
    assert balance == {
        "field": "y", "labelled": 6, "unlabelled": 3, "distinct": 4, "pooled_labels": 0,
        "labels": [{"label": "1", "count": 2, "share": "0.3333"},   # 1 and "1" read alike
                   {"label": "b", "count": 2, "share": "0.3333"},
                   {"label": "a", "count": 1, "share": "0.1667"},
                   {"label": "true", "count": 1, "share": "0.1667"}],
        "normalized_entropy": str(normalized_entropy([2, 2, 1, 1])),
    }
    assert balance["normalized_entropy"] == "0.9591"
    assert build(records)["content_diversity"]["label_balance"] == {"status": "not_assessed"}


def test_labels_beyond_the_limit_are_pooled(monkeypatch):
    monkeypatch.setattr(quality, "MAX_LABELS", 2)
    balance = build([{"y": y} for y in "abcd"], label_field="y")[
        "content_diversity"]["label_balance"]
    assert balance["distinct"] == 2 and balance["pooled_labels"] == 2
    assert balance["normalized_entropy"] == "0.9464"  # classes 1, 1, 2


# -- content diversity: score ------------------------------------------------------------------

DIVERSE = [{"text": "alpha beta gamma", "y": "x"}, {"text": "delta epsilon zeta", "y": "x"},
           {"text": "eta theta iota", "y": "y"}, {"text": "alpha beta gamma", "y": "x"}]


def test_diversity_score_worked_numbers():
    diversity = build(DIVERSE)["content_diversity"]
    # E = 1/4, N = 0 over 3 sampled, G = 9/9 (y's value is text here: "gamma x" is a bigram),
    # L = 1 (no label field): 100 * .75 * 1 * 1 = 75
    assert (diversity["exact_duplicate_rate"], diversity["near_duplicate_rate"],
            diversity["distinct_bigram_ratio"]) == ("0.2500", "0.0000", "1.0000")
    assert diversity["score"] == 75
    # With labels x, x, y, x: L = 0.8113; 100 * .75 * (.6 + .2 + .2 * .8113) = 72.17 -> 72
    assert build(DIVERSE, label_field="y")["content_diversity"]["score"] == 72
    # A near-duplicate too. Bigrams (words): BASE 28, EDITED 28 of which 26 repeat BASE's,
    # OTHER 17; the second BASE is an exact duplicate and not sampled: G = 47/73 = 0.6438.
    # 100 * (1 - .25) * (1 - .3333) * (.6 + .2 * .6438 + .2) = 46.44 -> 46
    near = [{"text": BASE}, {"text": EDITED}, {"text": OTHER}, {"text": BASE}]
    report = build(near)["content_diversity"]
    assert (report["exact_duplicate_rate"], report["near_duplicate_rate"],
            report["bigrams_sampled"], report["distinct_bigrams"],
            report["distinct_bigram_ratio"]) == ("0.2500", "0.3333", 73, 47, "0.6438")
    assert report["score"] == 46


# -- annotation accuracy -----------------------------------------------------------------------

LABELLED = [{"id": 1, "y": "a"}, {"id": 2, "y": "a"}, {"id": 3, "y": "a"}, {"id": 4, "y": "b"},
            {"y": "b"}, {"id": 5}]


def test_expert_agreement():
    experts = {"1": "a", "2": "b", "3": "a", "5": "c", "9": "z"}
    accuracy = build(LABELLED, label_field="y", id_field="id", expert_labels=experts)[
        "annotation_accuracy"]
    # Covered: ids 1, 2, 3 and 5 (int ids found by their text); agree: 1 and 3; 5 has no label.
    assert accuracy == {"status": "assessed", "id_field": "id", "label_field": "y",
                        "expert_labels": 5, "coverage": 4, "agreements": 2,
                        "agreement_rate": "0.5000", "score": 50}
    two_of_three = build(LABELLED[:3], label_field="y", id_field="id",
                         expert_labels={1: "a", 2: "b", 3: "a"})["annotation_accuracy"]
    assert (two_of_three["agreement_rate"], two_of_three["score"]) == ("0.6667", 67)


def test_accuracy_not_assessed_without_experts_or_overlap():
    report = build(LABELLED, label_field="y", id_field="id")
    assert report["annotation_accuracy"] == {"status": "not_assessed"}
    assert "annotation_accuracy" not in report["overall"]["weights"]
    no_overlap = build(LABELLED, label_field="y", id_field="id", expert_labels={"77": "a"})
    assert no_overlap["annotation_accuracy"] == {"status": "not_assessed", "expert_labels": 1,
                                                 "coverage": 0}
    assert "score" not in no_overlap["annotation_accuracy"]
    with pytest.raises(ValueError):
        QualityAccumulator(label_field="y", expert_labels={"1": "a"})


# -- model adaptability ------------------------------------------------------------------------

def test_context_window_shares_and_token_statistics():
    tokens = [10, 4096, 4097, 8192, 8193, 32768, 32769, 131072, 131073, 0]
    report = build([{"i": i} for i in range(10)], tokens=tokens)["model_adaptability"]
    assert report["context_windows"] == [
        {"tokens": 4096, "records": 3, "share": "0.3000"},
        {"tokens": 8192, "records": 5, "share": "0.5000"},
        {"tokens": 32768, "records": 7, "share": "0.7000"},
        {"tokens": 131072, "records": 9, "share": "0.9000"}]
    assert report["mean_window_share"] == "0.6000"
    stats = report["tokens"]
    assert (stats["total"], stats["min"], stats["max"], stats["mean"]) == (
        352270, 0, 131073, "35227.00")
    assert report["stage_fit"] == {"stage": None, "status": "not_assessed"}
    assert report["score"] == 60  # no stage rule: 100 * W


@pytest.mark.parametrize("tokens, p50, p90, p99", [
    ([5] * 10, 5, 5, 5),
    (list(range(1, 101)), 51, 91, 99),       # true 50, 90, 99: buckets 50-51, 88-91, 96-99
    (list(range(1, 32)), 16, 28, 31),         # exact below 32
    ([1000], 1000, 1000, 1000),               # bucket 992-1023, clamped to the maximum
    ([3] * 98 + [5000, 6000], 3, 3, 5119),    # rank 99 is 5000, in the bucket 4864-5119
])
def test_percentiles_from_the_log_histogram(tokens, p50, p90, p99):
    stats = build([{"i": i} for i in range(len(tokens))], tokens=tokens)["model_adaptability"][
        "tokens"]
    assert (stats["p50"], stats["p90"], stats["p99"]) == (p50, p90, p99)


@pytest.mark.parametrize("count", [0, 1, 31, 32, 33, 63, 64, 100, 999, 4096, 131073, 10**12])
def test_histogram_buckets_bound_the_count_within_a_sixteenth(count):
    upper = bucket_upper_bound(histogram_bucket(count))
    assert count <= upper
    assert (upper - count) * 16 <= count  # within 6.25 %
    if count < 32:
        assert upper == count


STAGE_CASES = [
    ("instruction_tuning", {"instruction": "do", "output": "done"}, True),
    ("instruction_tuning", {"Prompt": "do", "Completion": "done"}, True),  # case-insensitive
    ("instruction_tuning", {"question": "q?", "answer": ""}, False),      # blank answer
    ("instruction_tuning", {"messages": [{"role": "user"}, {"role": "assistant"}]}, True),
    ("instruction_tuning", {"text": "plain"}, False),
    ("reinforcement_learning", {"prompt": "p", "chosen": "a", "rejected": "b"}, True),
    ("reinforcement_learning", {"query": "p", "reward": 0}, True),
    ("reinforcement_learning", {"chosen": "a"}, False),
    ("pretraining", {"text": "a document"}, True),
    ("pretraining", {"content": "a document", "id": 1}, True),
    ("pretraining", {"instruction": "x", "response": "y"}, False),
    ("evaluation", {"question": "q", "label": "A"}, True),
    ("evaluation", {"input": "q", "target": "t"}, True),
    ("evaluation", {"question": "q"}, False),
    ("knowledge_base", {"doc_id": "d1", "content": "text"}, True),
    ("knowledge_base", {"title": "T", "text": "body"}, True),
    ("knowledge_base", {"text": "body"}, False),
    ("knowledge_base", {"title": "T", "text": None}, False),
]


@pytest.mark.parametrize("stage, record, fits", STAGE_CASES)
def test_stage_format_fit(stage, record, fits):
    report = build([record], ai_stage=stage)["model_adaptability"]
    assert report["stage_fit"]["records"] == (1 if fits else 0)
    assert report["stage_fit"]["share"] == ("1.0000" if fits else "0.0000")
    # score = 100 * (.5 F + .5 W), W = 1 for a 10-token record
    assert report["score"] == (100 if fits else 50)


def test_stage_fit_share_and_score():
    records = [{"instruction": "a", "response": "b"}] * 3 + [{"text": "c"}]
    report = build(records, ai_stage="instruction_tuning")["model_adaptability"]
    assert report["stage_fit"]["share"] == "0.7500"
    assert report["stage_fit"]["rule"].startswith("instruction|prompt|question|input + response")
    assert report["score"] == 88  # 100 * (.5 * .75 + .5 * 1) = 87.5, half up
    unknown = build(records, ai_stage="astrology")["model_adaptability"]
    assert unknown["stage_fit"] == {"stage": "astrology", "status": "not_assessed"}
    assert unknown["score"] == 100


# -- structural integrity ----------------------------------------------------------------------

def test_required_fields():
    records = [{"q": "a", "r": "b"}, {"q": "", "r": "x"}, {"q": "c"}, {"q": None, "r": "y"}]
    report = build(records, required_fields=["q", "r", "q"])["structural_integrity"]
    assert report["required_fields"] == [{"field": "q", "present": 2, "rate": "0.5000"},
                                         {"field": "r", "present": 3, "rate": "0.7500"}]
    assert report["records_with_all_required"] == 1
    assert report["required_present_rate"] == "0.2500"
    assert report["schema_conformance_rate"] == "1.0000"
    assert report["score"] == 25  # 100 * 1 * .25
    assert build(records)["structural_integrity"]["required_present_rate"] == "1.0000"
    assert build(records, required_fields=None)["structural_integrity"]["score"] == 100
    five_of_eight = [{"q": "x"}] * 5 + [{"q": " "}] * 3
    # 100 * 1 * .625 = 62.5: rounded half up to 63 (half to even would give 62)
    assert build(five_of_eight, required_fields=["q"])["structural_integrity"]["score"] == 63


def test_schema_conformance_counts_values_of_the_dominant_type():
    records = [{"n": 1, "t": "a"}, {"n": 2, "t": "b"}, {"n": "three", "t": "c"},
               {"n": 4.5, "t": "d", "z": None}]
    report = build(records)["structural_integrity"]
    # n: 2 whole + 1 decimal = number (3 conform), 1 string does not; t: 4 strings; z: only null.
    assert (report["typed_values"], report["conforming_values"]) == (8, 7)
    assert report["schema_conformance_rate"] == "0.8750"
    assert report["nonconforming_fields"] == [
        {"field": "n", "dominant_type": "number", "nonconforming": 1}]
    assert report["score"] == 88  # 87.5 half up
    with_required = build(records, required_fields=["t", "z"])["structural_integrity"]
    assert with_required["score"] == 0  # z is never present


# -- overall -----------------------------------------------------------------------------------

@pytest.mark.parametrize("score, letter", [
    (100, "A"), (90, "A"), (89, "B"), (75, "B"), (74, "C"), (60, "C"), (59, "D"), (0, "D")])
def test_grade_boundaries(score, letter):
    assert grade(score) == letter


def test_overall_weights_and_formula():
    report = build(DIVERSE)
    # structural 100, diversity 75, adaptability 100 (no stage, all fit); accuracy not assessed:
    # (30*100 + 25*75 + 25*100) / 80 = 92.1875 -> 92, A
    assert [report[k]["score"] for k in ("structural_integrity", "content_diversity",
                                         "model_adaptability")] == [100, 75, 100]
    assert report["overall"]["score"] == 92 and report["overall"]["grade"] == "A"
    assert report["overall"]["weights"] == {"structural_integrity": 30, "content_diversity": 25,
                                            "model_adaptability": 25}
    assert "/ 80" in report["overall"]["formula"] and "accuracy" in report["overall"]["formula"]
    assert report["overall"]["version"] == report["version"] == "quality-report/1"

    records = [dict(record, id=i) for i, record in enumerate(DIVERSE)]
    experts = {"0": "x", "1": "y"}  # one of two agrees: accuracy 50
    assessed = build(records, label_field="y", id_field="id", expert_labels=experts)
    assert assessed["annotation_accuracy"]["score"] == 50
    # With ids the 4th record is no exact duplicate but a near one: E = 0, N = 1/4, G = 6/8,
    # L = 0.8113: 100 * .75 * (.6 + .2 * .75 + .2 * .8113) = 68.42 -> 68
    assert assessed["content_diversity"]["score"] == 68
    # (30*100 + 25*68 + 20*50 + 25*100) / 100 = 82 -> B
    assert assessed["overall"]["score"] == 82 and assessed["overall"]["grade"] == "B"
    assert "/ 100" in assessed["overall"]["formula"]


def test_an_empty_report_scores_zero():
    report = QualityAccumulator(required_fields=["a"], label_field="y",
                                ai_stage="pretraining").report()
    assert report["records"] == 0
    assert report["overall"]["score"] == 0 and report["overall"]["grade"] == "D"
    assert floats_in(report) == []


def test_bad_input_is_refused():
    accumulator = QualityAccumulator()
    with pytest.raises(ValueError):
        accumulator.add({"a": 1}, -1)
    with pytest.raises(ValueError):
        accumulator.add({"a": 1}, 1.5)
    with pytest.raises(TypeError):
        accumulator.add(["a"], 1)


# -- determinism and bounds --------------------------------------------------------------------

MIXED_RECORDS = (
    [{"id": i, "instruction": f"问题{i % 7}：电网负荷如何预测？", "response": ZH_BASE,
      "label": "ab"[i % 2], "score": i / 3} for i in range(30)]
    + [{"id": 100 + i, "prompt": OTHER if i % 3 else EDITED, "output": BASE, "label": None,
        "extra": {"nested": [1.5, "嵌套 text"]}} for i in range(30)]
    + [{"id": 200, "text": "Привет мир"}, {"id": 200, "text": "Привет мир"}]
)
MIXED_KWARGS = dict(required_fields=["id", "label"], label_field="label",
                    ai_stage="instruction_tuning", id_field="id",
                    expert_labels={"0": "a", "1": "a", "101": "b"})


def test_the_same_records_twice_give_byte_identical_reports_without_floats():
    tokens = [len(json.dumps(record)) for record in MIXED_RECORDS]
    first = build(MIXED_RECORDS, tokens=tokens, **MIXED_KWARGS)
    second = build([json.loads(json.dumps(r)) for r in MIXED_RECORDS], tokens=tokens,
                   **MIXED_KWARGS)
    assert dump(first) == dump(second)
    assert floats_in(first) == []
    assert first["content_diversity"]["exact_duplicates"] == 1
    assert first["annotation_accuracy"]["coverage"] == 3


SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tests.market.catalog.test_quality import MIXED_RECORDS, MIXED_KWARGS, build, dump
print(dump(build(MIXED_RECORDS, **MIXED_KWARGS)))
"""


def test_reports_do_not_depend_on_the_hash_seed():
    outputs = set()
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))],
                                capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert dump(build(MIXED_RECORDS, **MIXED_KWARGS)) + "\n" in outputs


def test_the_digest_table_grows_and_still_finds_duplicates():
    accumulator = QualityAccumulator()
    for i in range(6000):
        accumulator.add({"i": i}, 1)
    for i in range(0, 6000, 60):
        accumulator.add({"i": i}, 1)
    report = accumulator.report()
    assert report["content_diversity"]["exact_duplicates"] == 100
    table = accumulator._digests.table
    assert len(table) == 16384 and sum(1 for digest in table if digest) == 6000
