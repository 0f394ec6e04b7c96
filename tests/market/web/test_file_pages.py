"""The storefront page of a version made of files: its manifest, paged, with totals by modality
and each file's proof link, for its supplier and the buyers who may read it; a draft only for
its supplier, and nothing at all for a stranger. The upload page's JSON routes: an upload sent,
resumed and made a version through them, and their refusals answered as the API's."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from market.catalog import listings
from market.catalog import services as catalog
from market.catalog.models import Dataset, DatasetVersion, Upload
from market.core.objects import MIN_PART_SIZE
from tests.billing.shop import principal_of
from tests.factories import make_key, make_org, make_user
from tests.market.web.test_file_api import (  # noqa: F401  (fixtures)
    TOOL, _client, backend, dataset, make_version, stranger_client, supplier, supplier_client,
    uploaded,
)
from tests.market.catalog.test_media import make_image


@pytest.fixture()
def version(supplier_client, dataset, backend, tmp_path):
    ids = [uploaded(supplier_client, dataset["id"], b"hello %d" % i, f"text/{i:02}.txt")["id"]
           for i in range(3)]
    ids.append(uploaded(supplier_client, dataset["id"], make_image(tmp_path / "a.png", 64, 48).read_bytes(),
                        "images/a.png", "image/png")["id"])
    made = make_version(supplier_client, dataset["id"], ids)
    assert made.status_code == 201, made.get_json()
    return made.get_json()


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_the_supplier_sees_its_draft_manifest_with_totals_and_proofs(supplier_client, version):
    manage = supplier_client.get(f"/supplier/datasets/{version['dataset_id']}")
    assert f'href="/versions/{version["id"]}"' in manage.get_data(as_text=True)
    page = supplier_client.get(f"/versions/{version['id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert version["content_sha256"] in html
    assert "images/a.png" in html and "64×48" in html and "text/00.txt" in html
    assert f'href="/versions/{version["id"]}/files/proof?path=images/a.png"' in html
    # totals: one image row and three text files
    assert ">image</th><td>1</td>" in html and ">text</th><td>3</td>" in html


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_the_manifest_pages_by_cursor(supplier_client, version, monkeypatch):
    monkeypatch.setattr("market.web.storefront.file_views.MANIFEST_PAGE", 2)
    first = supplier_client.get(f"/versions/{version['id']}").get_data(as_text=True)
    assert "images/a.png" in first and "text/00.txt" in first and "text/01.txt" not in first
    start = first.index('rel="next"')
    href = first[first.rindex('href="', 0, start) + 6:first.index('"', first.rindex('href="', 0, start) + 6)]
    second = supplier_client.get(href.replace("&amp;", "&")).get_data(as_text=True)
    assert "text/01.txt" in second and "text/02.txt" in second and "images/a.png" not in second
    assert 'rel="next"' not in second
    assert supplier_client.get(f"/versions/{version['id']}?cursor=bogus").status_code == 422


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_a_draft_is_hidden_from_others_and_a_stranger_gets_404(
        client, stranger_client, version):
    assert stranger_client.get(f"/versions/{version['id']}").status_code == 404
    assert client.get(f"/versions/{version['id']}").status_code == 404


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_a_records_version_has_no_files_page(supplier_client, session, dataset, version):
    other = session.get(DatasetVersion, version["id"])
    other.source_format = "jsonl"
    session.commit()
    assert supplier_client.get(f"/versions/{version['id']}").status_code == 404


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_the_upload_page_is_the_owners(supplier_client, stranger_client, dataset, backend):
    page = supplier_client.get(f"/supplier/datasets/{dataset['id']}/files")
    assert page.status_code == 200
    assert 'webkitdirectory' in page.get_data(as_text=True)
    assert stranger_client.get(f"/supplier/datasets/{dataset['id']}/files").status_code == 404


def list_version(session, passwords, version_id: int) -> None:
    """Submit the version to an exchange and approve it, as a listing is made."""
    version = session.get(DatasetVersion, version_id)
    dataset = session.get(Dataset, version.dataset_id)
    owner_user = make_user(session, passwords, dataset.organization, "owner")
    owner = principal_of(owner_user, dataset.organization)
    exchange = make_org(session, "exchange", name="Files Exchange")
    reviewer = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    catalog.set_supply_chain(session, owner, dataset, [
        {"organization_id": dataset.organization_id, "role": "supplier", "share_bps": 10_000}])
    listing = listings.submit(session, owner, dataset, version_id=version.id,
                              exchange_id=exchange.id, review_days=5)
    listings.approve(session, reviewer, listing)
    session.commit()


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_a_listed_version_is_seen_by_buyers_with_the_apis_proof(
        session, passwords, client, stranger_client, version, tmp_path):
    list_version(session, passwords, version["id"])
    for viewer in (stranger_client, client):  # a buyer signed in, and a visitor
        page = viewer.get(f"/versions/{version['id']}")
        assert page.status_code == 200
        assert "images/a.png" in page.get_data(as_text=True)
    proof = client.get(f"/versions/{version['id']}/files/proof",
                       query_string={"path": "text/01.txt"})
    assert proof.status_code == 200 and proof.mimetype == "application/json"
    same = stranger_client.get(f"/api/v1/versions/{version['id']}/files/proof",
                               query_string={"path": "text/01.txt"})
    assert proof.get_json() == same.get_json()
    # the buyer's tool checks the downloaded file with the page's proof against the root the
    # page shows, offline; a changed byte fails
    (tmp_path / "proof.json").write_text(json.dumps(proof.get_json()))
    for content, ok in ((b"hello 1", True), (b"hello 2", False)):
        (tmp_path / "01.txt").write_bytes(content)
        checked = subprocess.run([sys.executable, str(TOOL), "--root",
                                  version["content_sha256"], str(tmp_path / "proof.json"),
                                  str(tmp_path / "01.txt")], capture_output=True, text=True)
        assert (checked.returncode == 0) is ok, checked.stdout + checked.stderr


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_a_drafts_proof_is_its_suppliers_alone(supplier_client, stranger_client, client,
                                              version):
    url = f"/versions/{version['id']}/files/proof"
    assert supplier_client.get(url, query_string={"path": "images/a.png"}).status_code == 200
    for other in (stranger_client, client):
        hidden = other.get(url, query_string={"path": "images/a.png"})
        assert hidden.status_code == 404 and hidden.mimetype == "application/problem+json"
    missing = supplier_client.get(url)
    assert missing.status_code == 422 and "path" in missing.get_json()["errors"]
    unknown = supplier_client.get(url, query_string={"path": "nope.txt"})
    assert unknown.status_code == 404


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_the_pages_routes_upload_resume_and_make_a_version(supplier_client, dataset, backend):
    data = bytes(range(256)) * (MIN_PART_SIZE // 256) + b"tail"
    started = supplier_client.post(f"/supplier/datasets/{dataset['id']}/uploads",
                                   headers=supplier_client.csrf, json={
                                       "path": "raw/blob.bin", "size": len(data),
                                       "media_type": "application/octet-stream",
                                       "sha256": sha256(data)})
    assert started.status_code == 201, started.get_json()
    upload_id = started.get_json()["id"]
    assert started.headers["Location"].endswith(f"/supplier/uploads/{upload_id}/parts")
    first = supplier_client.put(f"/supplier/uploads/{upload_id}/parts/1",
                                data=data[:MIN_PART_SIZE], headers=supplier_client.csrf,
                                content_type="application/octet-stream")
    assert first.status_code == 200, first.get_json()
    listed = supplier_client.get(f"/supplier/uploads/{upload_id}/parts").get_json()
    assert [p["number"] for p in listed["parts"]] == [1]  # what a resumed page skips
    assert math.ceil(len(data) / MIN_PART_SIZE) == 2
    assert supplier_client.put(f"/supplier/uploads/{upload_id}/parts/2",
                               data=data[MIN_PART_SIZE:], headers=supplier_client.csrf,
                               content_type="application/octet-stream").status_code == 200
    done = supplier_client.post(f"/supplier/uploads/{upload_id}/complete",
                                headers=supplier_client.csrf)
    assert done.status_code == 200 and done.get_json()["status"] == "completed"
    made = supplier_client.post(f"/supplier/datasets/{dataset['id']}/file-versions",
                                headers=supplier_client.csrf,
                                json={"upload_ids": [upload_id], "notes": "from the page"})
    assert made.status_code == 201, made.get_json()
    assert made.headers["Location"].endswith(f"/versions/{made.get_json()['id']}")
    page = supplier_client.get(f"/versions/{made.get_json()['id']}").get_data(as_text=True)
    assert "raw/blob.bin" in page


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_the_pages_routes_refuse_a_wrong_sha256_and_keep_the_upload_failed(supplier_client,
                                                                          dataset, backend):
    started = supplier_client.post(f"/supplier/datasets/{dataset['id']}/uploads",
                                   headers=supplier_client.csrf, json={
                                       "path": "w.bin", "size": 8, "sha256": sha256(b"declared"),
                                       "media_type": "application/octet-stream"}).get_json()
    assert supplier_client.put(f"/supplier/uploads/{started['id']}/parts/1", data=b"sent bad",
                               headers=supplier_client.csrf,
                               content_type="application/octet-stream").status_code == 200
    refused = supplier_client.post(f"/supplier/uploads/{started['id']}/complete",
                                   headers=supplier_client.csrf)
    assert refused.status_code == 422 and "sha256" in refused.get_json()["errors"]
    kept = supplier_client.get(f"/supplier/uploads/{started['id']}/parts").get_json()
    assert kept["upload"]["status"] == "failed"


def upload_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Upload))


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_the_pages_routes_refuse_as_the_api_does_and_write_nothing(
        session, app, supplier_client, stranger_client, client, dataset, backend, monkeypatch):
    url = f"/supplier/datasets/{dataset['id']}/uploads"
    body = {"path": "a.txt", "media_type": "text/plain", "size": 1, "sha256": "0" * 64}
    before = upload_count(session)

    refused = supplier_client.post(url, json=body)
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert "X-CSRFToken" in refused.get_json()["errors"]
    forged = supplier_client.post(url, json=body, headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 403 and "X-CSRFToken" in forged.get_json()["errors"]

    other = stranger_client.post(url, json=body, headers=stranger_client.csrf)
    assert other.status_code == 404 and other.mimetype == "application/problem+json"

    anonymous = client.post(url, json=body)
    assert anonymous.status_code == 401 and anonymous.mimetype == "application/problem+json"
    # an API key is for the API: the page's routes know only a signed-in person
    _key, secret = make_key(session, session.get(Dataset, dataset["id"]).organization)
    session.commit()
    keyed = client.post(url, json=body, headers={"Authorization": f"Bearer {secret}"})
    assert keyed.status_code == 401

    for size in (0, -5, "big"):
        bad = supplier_client.post(url, json=body | {"size": size}, headers=supplier_client.csrf)
        assert bad.status_code == 422 and "size" in bad.get_json()["errors"], size
    as_form = supplier_client.post(url, data=body, headers=supplier_client.csrf)
    assert as_form.status_code == 415 and "Content-Type" in as_form.get_json()["errors"]
    assert upload_count(session) == before

    started = supplier_client.post(url, json=body, headers=supplier_client.csrf).get_json()
    part = f"/supplier/uploads/{started['id']}/parts/1"
    assert supplier_client.put(part, data=b"x", content_type="application/octet-stream"
                               ).status_code == 403  # no CSRF token on a part either
    wrong_type = supplier_client.put(part, data=b"x", content_type="text/plain",
                                     headers=supplier_client.csrf)
    assert wrong_type.status_code == 415 and "Content-Type" in wrong_type.get_json()["errors"]
    theirs = stranger_client.put(part, data=b"x", content_type="application/octet-stream",
                                 headers=stranger_client.csrf)
    assert theirs.status_code == 404
    assert stranger_client.get(f"/supplier/uploads/{started['id']}/parts").status_code == 404
    # a part is bounded by UPLOAD_PART_MAX_BYTES, not by the ordinary request limit
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 0)
    assert supplier_client.put(part, data=b"x", content_type="application/octet-stream",
                               headers=supplier_client.csrf).status_code == 200
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 16 * 1024)
    monkeypatch.setitem(app.config, "UPLOAD_PART_MAX_BYTES", 4)
    too_big = supplier_client.put(part, data=b"x" * 5, content_type="application/octet-stream",
                                  headers=supplier_client.csrf)
    assert too_big.status_code == 413 and too_big.mimetype == "application/problem+json"
    empty = supplier_client.post(f"/supplier/datasets/{dataset['id']}/file-versions",
                                 headers=supplier_client.csrf, json={"upload_ids": []})
    assert empty.status_code == 422 and "upload_ids" in empty.get_json()["errors"]
