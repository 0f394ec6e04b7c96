"""The storefront page of a version made of files: its manifest, paged, with totals by modality
and each file's proof link, for its supplier and the buyers who may read it; a draft only for
its supplier, and nothing at all for a stranger."""

from __future__ import annotations

import pytest

from market.catalog.models import DatasetVersion
from tests.market.web.test_file_api import (  # noqa: F401  (fixtures)
    _client, backend, dataset, make_version, stranger_client, supplier, supplier_client,
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
    page = supplier_client.get(f"/versions/{version['id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert version["content_sha256"] in html
    assert "images/a.png" in html and "64×48" in html and "text/00.txt" in html
    assert f"/api/v1/versions/{version['id']}/files/proof?path=images/a.png" in html
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


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_the_api_the_page_calls_refuses_without_csrf_and_names_bad_fields(
        supplier_client, stranger_client, dataset, backend):
    body = {"path": "a.txt", "media_type": "text/plain", "size": 1, "sha256": "0" * 64}
    refused = supplier_client.post(f"/api/v1/datasets/{dataset['id']}/uploads", json=body)
    assert refused.status_code == 403 and "X-CSRFToken" in refused.get_json()["errors"]
    other = stranger_client.post(f"/api/v1/datasets/{dataset['id']}/uploads", json=body,
                                 headers=stranger_client.csrf)
    assert other.status_code == 404
    for size in (0, -5, "big"):
        bad = supplier_client.post(f"/api/v1/datasets/{dataset['id']}/uploads",
                                   json=body | {"size": size}, headers=supplier_client.csrf)
        assert bad.status_code == 422 and "size" in bad.get_json()["errors"], size
