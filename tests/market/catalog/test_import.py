"""Importing versions: token inventory, content hash, quality report, and bad files."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from sqlalchemy import func, select

from market.catalog.models import DatasetRecord, DatasetVersion
from pricing.tokens import canonical_json, get_encoding
from tests.market.catalog.conftest import RECORDS, create_dataset, import_file, jsonl


def test_token_total_is_the_sum_of_tiktoken_counts_and_the_hash_matches_the_export(
        app, supplier_client):
    dataset = create_dataset(supplier_client)
    records = RECORDS * 40 + [{"text": "混合 mixed 文本 " * 50, "n": 7, "ok": True, "x": None}]
    response = import_file(supplier_client, dataset["id"], jsonl(records), filename="a.jsonl")
    assert response.status_code == 201, response.get_json()
    version = response.get_json()

    encoding = get_encoding(app.config["TOKEN_ENCODING"])
    expected = sum(len(encoding.encode(canonical_json(r))) for r in records)
    assert version["tokens"] == expected
    assert version["records"] == len(records)
    assert version["encoding"] == app.config["TOKEN_ENCODING"]

    export = supplier_client.get(f"/api/v1/datasets/{dataset['id']}/versions/1/export")
    assert export.status_code == 200
    body = export.get_data()
    assert hashlib.sha256(body).hexdigest() == version["content_sha256"]
    assert export.headers["X-Content-SHA256"] == version["content_sha256"]
    assert body.decode().splitlines()[0] == canonical_json(records[0])
    assert version["bytes"] == len(body)


def test_csv_import_keeps_values_as_text(supplier_client):
    dataset = create_dataset(supplier_client, required_fields=[])
    body = "question,answer\n电网负荷如何预测？,\"使用历史数据, 天气\"\nWhat is SCADA?,A control system\n"
    response = import_file(supplier_client, dataset["id"], body.encode(), "text/csv")
    assert response.status_code == 201, response.get_json()
    version = supplier_client.get(f"/api/v1/datasets/{dataset['id']}/versions/1").get_json()
    assert version["records"] == 2
    assert version["samples"][0] == {"question": "电网负荷如何预测？", "answer": "使用历史数据, 天气"}
    assert [f["name"] for f in version["schema"]["fields"]] == ["question", "answer"]


BAD_FILES = [
    (b'{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n', "application/x-ndjson", "Line 3"),
    (b'{"a": 1}\n[1, 2]\n', "application/x-ndjson", "Line 2 is not a JSON object"),
    (b'{"a": "ok"}\n{"a": "\xff\xfe"}\n', "application/x-ndjson", "Line 2 is not UTF-8"),
    (b"", "application/x-ndjson", "no records"),
    (b"\n\n", "application/x-ndjson", "no records"),
    (b"a,b\n1,2\n3,4,5\n", "text/csv", "Line 3 has 3 fields"),
    (b"a,a\n1,2\n", "text/csv", "header"),
]


@pytest.mark.parametrize("body, content_type, message", BAD_FILES)
def test_bad_files_name_the_problem_and_leave_nothing(supplier_client, session, body,
                                                      content_type, message):
    dataset = create_dataset(supplier_client)
    response = import_file(supplier_client, dataset["id"], body, content_type)
    assert response.status_code == 422
    problem = response.get_json()
    assert message in problem["errors"]["file"][0]
    assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 0
    assert session.scalar(select(func.count()).select_from(DatasetRecord)) == 0


def test_a_late_bad_line_rolls_back_the_records_already_stored(supplier_client, session):
    dataset = create_dataset(supplier_client)
    body = jsonl([{"i": i} for i in range(5000)]) + b"not json\n"
    response = import_file(supplier_client, dataset["id"], body)
    assert response.status_code == 422 and "Line 5001" in response.get_json()["errors"]["file"][0]
    assert session.scalar(select(func.count()).select_from(DatasetRecord)) == 0


def test_oversized_upload_is_413(app, supplier_client, session):
    dataset = create_dataset(supplier_client)
    app.config["IMPORT_MAX_BYTES"], before = 1000, app.config["IMPORT_MAX_BYTES"]
    try:
        response = import_file(supplier_client, dataset["id"], jsonl(RECORDS * 30))
    finally:
        app.config["IMPORT_MAX_BYTES"] = before
    assert response.status_code == 413
    assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 0


def test_upload_needs_a_dataset_media_type(supplier_client):
    dataset = create_dataset(supplier_client)
    response = import_file(supplier_client, dataset["id"], jsonl(RECORDS), "text/plain")
    assert response.status_code == 415 and "Content-Type" in response.get_json()["errors"]


def test_the_same_file_twice_gives_byte_identical_quality_reports(supplier_client):
    dataset = create_dataset(supplier_client)
    body = jsonl(RECORDS * 20)
    for _ in range(2):
        assert import_file(supplier_client, dataset["id"], body).status_code == 201
    first, second = (supplier_client.get(f"/api/v1/datasets/{dataset['id']}/versions/{n}")
                     .get_json() for n in (1, 2))
    dump = lambda report: json.dumps(report, sort_keys=True, ensure_ascii=False)  # noqa: E731
    assert dump(first["quality"]) == dump(second["quality"])
    assert first["content_sha256"] == second["content_sha256"]


def test_import_is_audited(supplier_client, session):
    from market.core.audit import AuditEntry

    dataset = create_dataset(supplier_client)
    import_file(supplier_client, dataset["id"], jsonl(RECORDS))
    entry = session.scalar(select(AuditEntry).where(
        AuditEntry.action == "dataset_version.imported"))
    assert entry.data["records"] == 3 and len(entry.data["sha256"]) == 64


@pytest.mark.parametrize("changes, field", [
    ({"sector": "astrology"}, "sector"),
    ({"modality": "smell"}, "modality"),
    ({"rights": {"ownership": "me"}}, "rights"),
    ({"title_en": ""}, "title_en"),
])
def test_bad_datasets_name_the_field(supplier_client, changes, field):
    from tests.market.catalog.conftest import DATASET

    response = supplier_client.post("/api/v1/datasets", json=DATASET | changes,
                                    headers=supplier_client.csrf)
    assert response.status_code == 422 and field in response.get_json()["errors"]


def test_buyers_cannot_create_datasets(sign_in_as, org):
    from tests.fixtures import csrf_token
    from tests.market.catalog.conftest import DATASET

    client = sign_in_as(org, "owner")  # a buyer organization
    response = client.post("/api/v1/datasets", json=DATASET,
                           headers={"X-CSRFToken": csrf_token(client)})
    assert response.status_code == 403


def test_expert_labels_give_annotation_accuracy(supplier_client):
    records = [{"id": f"r{i}", "text": f"第{i}条", "label": "pos" if i % 2 else "neg"}
               for i in range(10)]
    experts = {"r1": "pos", "r2": "neg", "r3": "neg", "r4": "neg"}  # r3 disagrees
    dataset = create_dataset(supplier_client, ai_stage="pretraining", required_fields=[],
                             label_field="label", id_field="id", expert_labels=experts)
    import_file(supplier_client, dataset["id"], jsonl(records))
    quality = supplier_client.get(f"/api/v1/datasets/{dataset['id']}/versions/1").get_json()[
        "quality"]["annotation_accuracy"]
    assert (quality["coverage"], quality["agreements"], quality["score"]) == (4, 3, 75)


def test_expert_labels_need_their_fields(supplier_client):
    from tests.market.catalog.conftest import DATASET

    response = supplier_client.post("/api/v1/datasets", headers=supplier_client.csrf,
                                    json=DATASET | {"expert_labels": {"a": "b"}})
    assert response.status_code == 422 and "expert_labels" in response.get_json()["errors"]


def test_large_imports_count_in_a_child_process_with_the_same_result(app, supplier_client,
                                                                     monkeypatch):
    from market.catalog import importer

    monkeypatch.setattr(importer, "PROCESS_COUNTING_BYTES", 0)
    dataset = create_dataset(supplier_client)
    records = RECORDS * 700  # several batches, so that batches are in flight together
    response = import_file(supplier_client, dataset["id"], jsonl(records))
    assert response.status_code == 201, response.get_json()
    encoding = get_encoding(app.config["TOKEN_ENCODING"])
    assert response.get_json()["tokens"] == sum(
        len(encoding.encode(canonical_json(r))) for r in records)


def test_import_through_the_form(supplier_client, session):
    import io

    from tests.fixtures import csrf_token

    dataset = create_dataset(supplier_client)
    page = f"/supplier/datasets/{dataset['id']}"
    response = supplier_client.post(f"{page}/versions", content_type="multipart/form-data", data={
        "csrf_token": csrf_token(supplier_client, page), "notes": "first cut",
        "file": (io.BytesIO(jsonl(RECORDS)), "reports.jsonl")})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    version = session.scalar(select(DatasetVersion))
    assert (version.record_count, version.source_filename, version.notes) == (
        3, "reports.jsonl", "first cut")

    bad = supplier_client.post(f"{page}/versions", content_type="multipart/form-data", data={
        "csrf_token": csrf_token(supplier_client, page),
        "file": (io.BytesIO(b'{"a": 1}\nbroken\n'), "bad.jsonl")})
    assert bad.status_code == 422 and "Line 2" in bad.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 1


class _UnreadBody:
    """A request body that records whether anyone read it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = b"x" * (65536 if size is None or size < 0 else min(size, 65536))
        self.read_bytes += len(chunk)
        return chunk

    readline = read


BIG = 300 * 1024 * 1024


@pytest.mark.parametrize("chunked", [False, True])
def test_an_anonymous_upload_is_refused_before_its_body_is_read(client, supplier_client,
                                                                chunked):
    """Finding 10: the 2 GB upload limit applied before sign-in, so an anonymous 300 MB body was
    read and spooled before the 400."""
    dataset = create_dataset(supplier_client)
    body = _UnreadBody()
    environ = {"wsgi.input": body, "CONTENT_TYPE": "multipart/form-data; boundary=x"}
    environ |= {"wsgi.input_terminated": True} if chunked else {"CONTENT_LENGTH": str(BIG)}
    response = client.post(f"/supplier/datasets/{dataset['id']}/versions",
                           environ_overrides=environ)
    assert response.status_code == 302 and "/login" in response.location
    assert body.read_bytes == 0


def test_a_large_upload_needs_the_csrf_header_before_its_body_is_read(supplier_client):
    """Finding 10: without a valid CSRF header a signed-in person keeps the ordinary limit (413
    on the Content-Length alone, unread); with it the import's limit applies."""
    from tests.fixtures import csrf_token

    dataset = create_dataset(supplier_client)
    url = f"/supplier/datasets/{dataset['id']}/versions"
    for headers in ({}, {"X-CSRFToken": "forged"}):
        body = _UnreadBody()
        response = supplier_client.post(url, headers=headers, environ_overrides={
            "wsgi.input": body, "CONTENT_LENGTH": str(BIG),
            "CONTENT_TYPE": "multipart/form-data; boundary=x"})
        assert response.status_code == 413 and body.read_bytes == 0, headers
    # With the header, the import limit applies: a small upload goes through as before.
    page = f"/supplier/datasets/{dataset['id']}"
    token = csrf_token(supplier_client, page)
    response = supplier_client.post(url, content_type="multipart/form-data",
                                    headers={"X-CSRFToken": token}, data={
                                        "csrf_token": token,
                                        "file": (io.BytesIO(jsonl(RECORDS)), "r.jsonl")})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
