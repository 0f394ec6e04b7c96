"""The file-version API on both object stores: an upload sent in parts, interrupted, resumed and
completed; a version of uploads whose manifest pages and whose proof the buyer's tool checks;
drafts seen by their supplier alone; refusals that answer problem+json naming the field and
write nothing."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select

from market.catalog.manifest import ManifestEntry, merkle_root
from market.catalog.models import DatasetVersion, Upload, VersionFile
from market.core.objects import MIN_PART_SIZE, LocalObjectStore
from tests.factories import make_org
from tests.fixtures import csrf_token
from tests.market.catalog.conftest import DATASET
from tests.market.catalog.test_media import make_image
from tests.market.core.test_objects import local_backend, s3_backend

TOOL = Path(__file__).resolve().parents[3] / "tools" / "verify_manifest.py"


@pytest.fixture(params=["local", "s3"])
def backend(request, app, tmp_path, monkeypatch):
    """The app's object store, for one test: a fresh directory, or a fresh bucket."""
    if request.param == "local":
        chosen = local_backend(tmp_path)
    else:
        chosen = s3_backend(request.getfixturevalue("s3_server"),
                            request.getfixturevalue("s3_bucket"))
    monkeypatch.setitem(app.extensions, "market.objects", chosen.store)
    return chosen


def _client(sign_in_as, org):
    client = sign_in_as(org, "owner")
    client.csrf = {"X-CSRFToken": csrf_token(client)}
    return client


@pytest.fixture()
def supplier(session):
    org = make_org(session, "supplier", name="Files Supplier")
    session.commit()
    return org


@pytest.fixture()
def supplier_client(sign_in_as, supplier):
    return _client(sign_in_as, supplier)


@pytest.fixture()
def stranger_client(session, sign_in_as):
    org = make_org(session, "supplier", "buyer", name="Stranger Co")
    session.commit()
    return _client(sign_in_as, org)


@pytest.fixture()
def dataset(supplier_client):
    response = supplier_client.post("/api/v1/datasets", json=DATASET,
                                    headers=supplier_client.csrf)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start(client, dataset_id, data: bytes, path: str, media_type="application/octet-stream",
          **extra):
    return client.post(f"/api/v1/datasets/{dataset_id}/uploads", headers=client.csrf, json={
        "path": path, "media_type": media_type, "size": len(data), "sha256": sha256(data),
        **extra})


def put_part(client, upload_id, number, data: bytes, content_type="application/octet-stream"):
    return client.put(f"/api/v1/uploads/{upload_id}/parts/{number}", data=data,
                      content_type=content_type, headers=client.csrf)


def put_part_at(url: str, data: bytes) -> str:
    """PUT a part to a presigned URL, as a client does, straight to the bucket; its ETag."""
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["ETag"].strip('"')


def uploaded(client, dataset_id, data: bytes, path: str, media_type="text/plain") -> dict:
    started = start(client, dataset_id, data, path, media_type)
    assert started.status_code == 201, started.get_json()
    upload_id = started.get_json()["id"]
    assert put_part(client, upload_id, 1, data).status_code == 200
    completed = client.post(f"/api/v1/uploads/{upload_id}/complete", headers=client.csrf)
    assert completed.status_code == 200, completed.get_json()
    return completed.get_json()


def make_version(client, dataset_id, upload_ids):
    return client.post(f"/api/v1/datasets/{dataset_id}/file-versions", headers=client.csrf,
                       json={"upload_ids": upload_ids, "notes": "files"})


def counts(session):
    return tuple(session.scalar(select(func.count()).select_from(model))
                 for model in (Upload, DatasetVersion, VersionFile))


def test_an_upload_is_interrupted_resumed_and_completed(supplier_client, dataset, backend):
    data = b"\x00\x01\x02\x03" * (MIN_PART_SIZE // 4) + b"tail of the file"
    started = start(supplier_client, dataset["id"], data, "raw/big.bin")
    assert started.status_code == 201, started.get_json()
    upload = started.get_json()
    assert (upload["status"], upload["token_profile"]) == ("pending", "bytes-per-token/4")
    assert started.headers["Location"].endswith(f"/uploads/{upload['id']}/parts")

    assert put_part(supplier_client, upload["id"], 1, data[:MIN_PART_SIZE]).status_code == 200
    # The connection drops; the client asks what arrived and sends the rest.
    parts = supplier_client.get(f"/api/v1/uploads/{upload['id']}/parts").get_json()
    assert [(p["number"], p["size"]) for p in parts["parts"]] == [(1, MIN_PART_SIZE)]
    early = supplier_client.post(f"/api/v1/uploads/{upload['id']}/complete",
                                 headers=supplier_client.csrf)
    assert early.status_code == 422 and "size" in early.get_json()["errors"]

    assert put_part(supplier_client, upload["id"], 2, data[MIN_PART_SIZE:]).status_code == 200
    done = supplier_client.post(f"/api/v1/uploads/{upload['id']}/complete",
                                headers=supplier_client.csrf)
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert (body["status"], body["sha256"]) == ("completed", sha256(data))
    assert body["tokens"] == math.ceil(len(data) / 4)
    with backend.store.open(body["object_key"]) as handle:
        assert sha256(handle.read()) == sha256(data)


def test_a_version_of_files_lists_its_manifest_and_proves_a_file(
        supplier_client, stranger_client, dataset, backend, tmp_path):
    image = make_image(tmp_path / "cover.png", 1024, 1024).read_bytes()
    contents = {"notes/a.txt": b"alpha\n", "notes/b.txt": b"beta\n", "notes/c.txt": b"gamma\n"}
    made = [uploaded(supplier_client, dataset["id"], data, path)
            for path, data in contents.items()]
    made.append(uploaded(supplier_client, dataset["id"], image, "cover.png", "image/png"))
    assert made[-1]["tokens"] == 765  # 1024² → 768², 4 tiles: 85 + 4 × 170

    created = make_version(supplier_client, dataset["id"], [u["id"] for u in made])
    assert created.status_code == 201, created.get_json()
    version = created.get_json()
    assert (version["source_format"], version["records"], version["number"]) == ("files", 4, 1)
    assert version["tokens"] == sum(u["tokens"] for u in made)
    report = version["quality"]  # read back from the store: the text matches, the image decodes
    assert (report["media_type"]["matching"], report["images"]["decodable"]) == (4, 1)
    assert (version["quality_score"], version["quality_grade"]) == (100, "A")

    entries, cursor = [], None
    while True:
        page = supplier_client.get(f"/api/v1/versions/{version['id']}/manifest",
                                   query_string={"limit": 3, **({"cursor": cursor} if cursor
                                                                 else {})}).get_json()
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["path"] for e in entries] == ["cover.png", *sorted(contents)]
    assert entries[0]["basis"] == {"width": 1024, "height": 1024}
    root = merkle_root(ManifestEntry(e["path"], e["media_type"], e["size"], e["sha256"],
                                     e["tokens"], e["token_profile"]) for e in entries)
    assert version["content_sha256"] == root

    proof = supplier_client.get(f"/api/v1/versions/{version['id']}/files/proof",
                                query_string={"path": "notes/b.txt"})
    assert proof.status_code == 200, proof.get_json()
    document = proof.get_json()
    assert document["root"] == root
    (tmp_path / "proof.json").write_text(json.dumps(document))
    (tmp_path / "b.txt").write_bytes(contents["notes/b.txt"])
    checked = subprocess.run([sys.executable, "-I", "-S", str(TOOL), "--root", root,
                              str(tmp_path / "proof.json"), str(tmp_path / "b.txt")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    missing = supplier_client.get(f"/api/v1/versions/{version['id']}/files/proof",
                                  query_string={"path": "notes/z.txt"})
    assert missing.status_code == 404
    # An unreviewed draft: another organization is not even told it exists.
    for path in (f"/api/v1/versions/{version['id']}/manifest",
                 f"/api/v1/versions/{version['id']}/files/proof?path=notes/b.txt"):
        assert stranger_client.get(path).status_code == 404


def test_refusals_name_their_field_and_write_nothing(session, supplier_client, stranger_client,
                                                     dataset, backend):
    first = uploaded(supplier_client, dataset["id"], b"one\n", "same.txt")
    second = uploaded(supplier_client, dataset["id"], b"two\n", "SAME.txt")
    before, leftovers = counts(session), backend.leftovers()

    twice = make_version(supplier_client, dataset["id"], [first["id"], second["id"]])
    assert twice.status_code == 422
    assert twice.mimetype == "application/problem+json"
    assert "upload_ids" in twice.get_json()["errors"]

    foreign = start(stranger_client, dataset["id"], b"x", "x.txt")
    assert foreign.status_code == 404
    assert make_version(stranger_client, dataset["id"], [first["id"]]).status_code == 404
    for method, path in (("GET", f"/api/v1/uploads/{first['id']}/parts"),
                         ("POST", f"/api/v1/uploads/{first['id']}/complete"),
                         ("DELETE", f"/api/v1/uploads/{first['id']}")):
        answer = stranger_client.open(path, method=method, headers=stranger_client.csrf)
        assert answer.status_code == 404, (method, path)

    assert counts(session) == before and backend.leftovers() == leftovers

    wrong = start(supplier_client, dataset["id"], b"declared", "w.bin").get_json()
    assert put_part(supplier_client, wrong["id"], 1, b"sent bad").status_code == 200
    refused = supplier_client.post(f"/api/v1/uploads/{wrong['id']}/complete",
                                   headers=supplier_client.csrf)
    assert refused.status_code == 422 and "sha256" in refused.get_json()["errors"]
    assert backend.leftovers() == leftovers
    gone = supplier_client.post(f"/api/v1/uploads/{wrong['id']}/complete",
                                headers=supplier_client.csrf)
    assert gone.status_code == 409 and gone.get_json()["code"] == "upload_failed"
    seen = supplier_client.get(f"/api/v1/uploads/{wrong['id']}/parts").get_json()
    assert seen["upload"]["status"] == "failed" and "SHA-256" in seen["upload"]["failure"]


def test_a_part_is_bounded_and_sent_as_bytes(app, supplier_client, dataset, backend,
                                             monkeypatch):
    upload = start(supplier_client, dataset["id"], b"0123456789", "p.bin").get_json()
    monkeypatch.setitem(app.config, "UPLOAD_PART_MAX_BYTES", 8)
    assert put_part(supplier_client, upload["id"], 1, b"0123456789").status_code == 413
    wrong_type = put_part(supplier_client, upload["id"], 1, b"01234567", "application/json")
    assert wrong_type.status_code == 415
    assert put_part(supplier_client, upload["id"], 0, b"01234567").status_code == 422


def test_an_aborted_upload_takes_no_parts(supplier_client, dataset, backend):
    upload = start(supplier_client, dataset["id"], b"0123", "q.bin").get_json()
    assert put_part(supplier_client, upload["id"], 1, b"01").status_code == 200
    aborted = supplier_client.delete(f"/api/v1/uploads/{upload['id']}",
                                     headers=supplier_client.csrf)
    assert aborted.status_code == 200 and aborted.get_json()["status"] == "aborted"
    assert put_part(supplier_client, upload["id"], 1, b"01").status_code == 409
    assert supplier_client.get(f"/api/v1/uploads/{upload['id']}/parts").get_json()["parts"] == []
    assert backend.leftovers() == []


def test_on_s3_parts_go_straight_to_the_bucket(supplier_client, dataset, backend):
    data = b"\x07" * MIN_PART_SIZE + b"the rest"
    upload = start(supplier_client, dataset["id"], data, "direct.bin").get_json()
    urls = [supplier_client.get(f"/api/v1/uploads/{upload['id']}/parts/{number}/url",
                                query_string={"expires": 60}).get_json()
            for number in (1, 2)]
    if isinstance(backend.store, LocalObjectStore):
        assert [u["url"] for u in urls] == [None, None]
        return
    for answer, part in zip(urls, (data[:MIN_PART_SIZE], data[MIN_PART_SIZE:])):
        assert put_part_at(answer["url"], part) == hashlib.md5(part).hexdigest()
    parts = supplier_client.get(f"/api/v1/uploads/{upload['id']}/parts").get_json()["parts"]
    assert [p["size"] for p in parts] == [MIN_PART_SIZE, len(b"the rest")]
    done = supplier_client.post(f"/api/v1/uploads/{upload['id']}/complete",
                                headers=supplier_client.csrf)
    assert done.status_code == 200 and done.get_json()["sha256"] == sha256(data)
