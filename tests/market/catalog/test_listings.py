"""The listing workflow: submit → reject with reasons → resubmit → approve → suspend, audited."""

from __future__ import annotations

from sqlalchemy import select

from market.core.audit import AuditEntry
from tests.market.catalog.conftest import import_file, jsonl, RECORDS
from tests.factories import make_org


def _submit(client, dataset_id, exchange_id, version=1):
    return client.post(f"/api/v1/datasets/{dataset_id}/listing",
                       json={"version": version, "exchange_id": exchange_id}, headers=client.csrf)


def test_the_whole_review_workflow_is_audited(supplier_client, reviewer_client, ready_dataset,
                                              exchange, session):
    dataset_id = ready_dataset["id"]
    submitted = _submit(supplier_client, dataset_id, exchange.id)
    assert submitted.status_code == 201, submitted.get_json()
    listing = submitted.get_json()
    assert listing["status"] == "submitted" and listing["due_at"]

    queue = reviewer_client.get("/api/v1/review/listings").get_json()["items"]
    assert [item["listing"]["id"] for item in queue] == [listing["id"]]
    checks = {c["code"]: c["passed"] for c in queue[0]["checklist"]}
    assert checks == {"rights_declared": True, "shares_valid": True,
                      "quality_report_present": True, "samples_present": True,
                      "offer_present": True}

    again = _submit(supplier_client, dataset_id, exchange.id)
    assert again.status_code == 409

    base = f"/api/v1/listings/{listing['id']}"
    rejected = reviewer_client.post(f"{base}/reject", headers=reviewer_client.csrf, json={
        "reasons": ["rights_unproven", "other"], "text": "Upload the hospital's authorization."})
    assert rejected.status_code == 200 and rejected.get_json()["status"] == "rejected"

    # The supplier sees the reasons, corrects, and resubmits a new version.
    seen = supplier_client.get(base).get_json()
    assert seen["events"][-1]["reason_codes"] == ["rights_unproven", "other"]
    assert supplier_client.patch(f"/api/v1/datasets/{dataset_id}", headers=supplier_client.csrf,
                                 json={"rights": {"holding": "Hospital A (authorized)",
                                                  "usage": "Supplier Co",
                                                  "operation": "Supplier Co"}}
                                 ).status_code == 200
    assert import_file(supplier_client, dataset_id, jsonl(RECORDS * 2)).status_code == 201
    assert _submit(supplier_client, dataset_id, exchange.id, version=2).status_code == 201

    approved = reviewer_client.post(f"{base}/approve", json={"text": "Rights verified."},
                                    headers=reviewer_client.csrf)
    assert approved.status_code == 200 and approved.get_json()["status"] == "approved"
    assert approved.get_json()["version"] == 2

    suspended = reviewer_client.post(f"{base}/suspend", json={"text": "Complaint received."},
                                     headers=reviewer_client.csrf)
    assert suspended.get_json()["status"] == "suspended"

    actions = session.scalars(select(AuditEntry.action).where(
        AuditEntry.object_type == "listing").order_by(AuditEntry.seq)).all()
    assert actions == ["listing.submitted", "listing.rejected", "listing.resubmitted",
                       "listing.approved", "listing.suspended"]


def test_a_submitted_version_and_its_dataset_are_frozen(supplier_client, ready_dataset,
                                                        exchange):
    dataset_id = ready_dataset["id"]
    assert _submit(supplier_client, dataset_id, exchange.id).status_code == 201
    response = supplier_client.patch(f"/api/v1/datasets/{dataset_id}", json={"title_en": "New"},
                                     headers=supplier_client.csrf)
    assert response.status_code == 409
    version = supplier_client.get(f"/api/v1/datasets/{dataset_id}/versions/1").get_json()
    assert version["locked"] is True


def test_rejections_need_known_reasons_and_text(reviewer_client, supplier_client, ready_dataset,
                                                exchange):
    listing = _submit(supplier_client, ready_dataset["id"], exchange.id).get_json()
    base = f"/api/v1/listings/{listing['id']}"
    for body, field in (({"reasons": ["too_ugly"], "text": "x"}, "reasons"),
                        ({"reasons": [], "text": "x"}, "reasons"),
                        ({"reasons": ["other"]}, "text")):
        response = reviewer_client.post(f"{base}/reject", json=body, headers=reviewer_client.csrf)
        assert response.status_code == 422 and field in response.get_json()["errors"]


def test_another_exchange_cannot_review(sign_in_as, session, supplier_client, ready_dataset,
                                        exchange):
    from tests.fixtures import csrf_token

    listing = _submit(supplier_client, ready_dataset["id"], exchange.id).get_json()
    other = make_org(session, "exchange", name="Exchange Two")
    session.commit()
    client = sign_in_as(other, "reviewer")
    response = client.post(f"/api/v1/listings/{listing['id']}/approve", json={},
                           headers={"X-CSRFToken": csrf_token(client)})
    assert response.status_code == 404
    assert client.get("/api/v1/review/listings").get_json()["items"] == []


def test_only_exchanges_review(supplier_client, ready_dataset, exchange):
    listing = _submit(supplier_client, ready_dataset["id"], exchange.id).get_json()
    response = supplier_client.post(f"/api/v1/listings/{listing['id']}/approve", json={},
                                    headers=supplier_client.csrf)
    assert response.status_code == 403


def test_submitting_to_a_non_exchange_is_refused(supplier_client, ready_dataset, supplier):
    response = _submit(supplier_client, ready_dataset["id"], supplier.id)
    assert response.status_code == 422 and "exchange_id" in response.get_json()["errors"]


def test_unlisted_datasets_are_invisible_to_others(sign_in_as, org, ready_dataset):
    client = sign_in_as(org, "owner")
    assert client.get(f"/api/v1/datasets/{ready_dataset['id']}").status_code == 404
    assert client.get(f"/datasets/{ready_dataset['id']}").status_code == 404


def test_review_through_the_pages(supplier_client, reviewer_client, ready_dataset, exchange):
    from tests.fixtures import csrf_token

    listing = _submit(supplier_client, ready_dataset["id"], exchange.id).get_json()
    page = reviewer_client.get("/exchange/listings").get_data(as_text=True)
    assert "Medical imaging reports" in page and "5/5" in page
    token = csrf_token(reviewer_client, f"/exchange/listings/{listing['id']}")
    response = reviewer_client.post(f"/exchange/listings/{listing['id']}/reject", data={
        "csrf_token": token, "reasons": ["quality_below_threshold"], "text": "Too few records."})
    assert response.status_code == 302
    manage = supplier_client.get(f"/supplier/datasets/{ready_dataset['id']}").get_data(
        as_text=True)
    assert "Too few records." in manage and "Quality below threshold" in manage


def test_the_upload_form_answers_its_progress_bar_in_json(supplier_client):
    """The manage page's progress bar posts the file itself and asks for JSON."""
    from tests.market.catalog.conftest import RECORDS, create_dataset, jsonl
    from tests.fixtures import csrf_token

    dataset = create_dataset(supplier_client)
    page = f"/supplier/datasets/{dataset['id']}"
    html = supplier_client.get(page).get_data(as_text=True)
    assert 'id="upload-progress"' in html and "upload-progress.js" in html
    token = csrf_token(supplier_client, page)
    url = f"/supplier/datasets/{dataset['id']}/versions"
    import io

    ok = supplier_client.post(url, headers={"Accept": "application/json"}, data={
        "csrf_token": token, "notes": "", "file": (io.BytesIO(jsonl(RECORDS)), "r.jsonl")},
        content_type="multipart/form-data")
    assert ok.status_code == 200 and ok.get_json()["redirect"].endswith(page)
    bad = supplier_client.post(url, headers={"Accept": "application/json"}, data={
        "csrf_token": token, "notes": "", "file": (io.BytesIO(b"{not json\n"), "r.jsonl")},
        content_type="multipart/form-data")
    assert bad.status_code == 422 and "line 1" in " ".join(bad.get_json()["errors"]["file"])
