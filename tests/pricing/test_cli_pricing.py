"""``flask pricing count-tokens``, on a tiny Flask app (no database, no market app)."""

from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

import flask
import pytest

from market.web.cli.pricing import pricing_cli
from pricing.tokens import canonical_json, count_record, count_text

ROOT = Path(__file__).resolve().parents[2]

RECORDS = [
    {"id": 1, "text": "数据市场为人工智能提供行业数据集。", "label": "正面"},
    {"id": 2, "text": "The quick brown fox jumps over the lazy dog.", "tags": ["en", "demo"]},
    {"id": 3, "text": "混合 text with 12345 numbers\nand a newline"},
]


@pytest.fixture()
def app():
    app = flask.Flask(__name__)
    app.cli.add_command(pricing_cli)
    return app


def run(app, *args):
    result = app.test_cli_runner().invoke(args=["pricing", "count-tokens", *map(str, args)])
    fields = dict(
        line.split(": ", 1) for line in result.output.splitlines() if ": " in line and result.exit_code == 0
    )
    return result, fields


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_jsonl(app, tmp_path, encoding):
    path = tmp_path / "data.jsonl"
    # Written with spaces and unsorted keys: the count is of the canonical form.
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n", encoding="utf-8")
    result, out = run(app, path, "--encoding", encoding)
    assert result.exit_code == 0, result.output
    assert out["records"] == "3"
    assert int(out["tokens"]) == sum(count_record(r, encoding) for r in RECORDS)
    assert out["bytes"] == str(path.stat().st_size)
    assert out["encoding"] == encoding and out["format"] == "jsonl"
    assert float(out["seconds"]) >= 0


def test_csv_rows_are_records_of_strings(app, tmp_path):
    path = tmp_path / "data.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        for r in RECORDS:
            writer.writerow({"id": r["id"], "text": r["text"]})
    result, out = run(app, path, "--encoding", "o200k_base")
    assert result.exit_code == 0, result.output
    expected = sum(count_record({"id": str(r["id"]), "text": r["text"]}, "o200k_base") for r in RECORDS)
    assert out["records"] == "3" and int(out["tokens"]) == expected


def test_plain_text_is_one_document(app, tmp_path):
    text = "第一段：数据市场。\r\nSecond paragraph, in English.\n" * 5000
    path = tmp_path / "book.txt"
    path.write_bytes(text.encode("utf-8"))
    result, out = run(app, path, "--encoding", "cl100k_base")
    assert result.exit_code == 0, result.output
    assert out["format"] == "text" and out["records"] == "1"
    assert int(out["tokens"]) == count_text(text, "cl100k_base")


def test_default_encoding_comes_from_the_app_config(app, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(canonical_json(RECORDS[0]) + "\n", encoding="utf-8")
    _, out = run(app, path)
    assert out["encoding"] == "o200k_base"
    app.config["TOKEN_ENCODING"] = "cl100k_base"
    _, out = run(app, path)
    assert out["encoding"] == "cl100k_base"
    assert int(out["tokens"]) == count_record(RECORDS[0], "cl100k_base")


def test_unknown_encoding_is_a_usage_error(app, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    result, _ = run(app, path, "--encoding", "gpt2")
    assert result.exit_code == 2
    assert "--encoding" in result.output and "gpt2" in result.output


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"ok": 1}\n{"broken": \n', "line 2: not valid JSON"),
        ("nan.jsonl", '{"x": NaN}\n', "not canonical JSON"),
        ("extra.csv", "a,b\n1,2,3\n", "line 2: more fields than the header"),
        ("latin1.txt", b"caf\xe9", "not UTF-8"),
    ],
)
def test_bad_files_fail_with_a_message(app, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    result, _ = run(app, path)
    assert result.exit_code == 1
    assert message in result.output


def test_cli_module_imports_only_flask_click_pricing_and_the_stdlib():
    tree = ast.parse((ROOT / "market" / "web" / "cli" / "pricing.py").read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    allowed = {"flask", "click", "pricing", "__future__"}
    assert roots - allowed <= set(sys.stdlib_module_names), roots
