"""Storefront pages of versions made of files: the supplier's upload page, and a version's
manifest for its supplier and the buyers entitled to the dataset.

The upload page's script calls the storefront's JSON routes (``file_routes``), sending the
page's CSRF token in ``X-CSRFToken``, and gets the API's problem+json refusals; the page only
hands the script its dataset, the routes and the part size."""

from __future__ import annotations

from collections import defaultdict

from flask import current_app, render_template, request
from sqlalchemy import func, select

from market.accounts.authz import Principal
from market.catalog import files, services
from market.catalog.models import VersionFile
from market.core.keyset import PageRequest
from market.core.objects import MIN_PART_SIZE
from market.web.storefront.blueprint import storefront
from market.web.storefront.views import signed_in
from market.web.http import db_session, session_principal

MANIFEST_PAGE = 50
# Parts of 8 MiB (never below S3's minimum, never above what the app takes in one request).
PART_BYTES = 8 * 1024 * 1024


def part_bytes() -> int:
    return max(MIN_PART_SIZE, min(PART_BYTES, current_app.config["UPLOAD_PART_MAX_BYTES"]))


@storefront.get("/supplier/datasets/<int:dataset_id>/files")
@signed_in("catalog:write")
def upload_files(principal: Principal, dataset_id: int):
    dataset = services.get_dataset_for_owner(db_session(), principal, dataset_id)
    return render_template("catalog/upload_files.html", dataset=dataset,
                           part_bytes=part_bytes())


@storefront.get("/versions/<int:version_id>")
def file_version(version_id: int):
    session = db_session()
    principal = session_principal()
    version = files.get_visible_file_version(session, principal, version_id)
    page = files.version_manifest(session, version).page(
        PageRequest(cursor=request.args.get("cursor"), limit=MANIFEST_PAGE))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "bytes": 0,
                                                             "tokens": 0})
    # Summed by media type in the database (a manifest may hold many files), then by modality.
    for media_type, count, size, tokens in session.execute(
            select(VersionFile.media_type, func.count(), func.sum(VersionFile.size),
                   func.sum(VersionFile.tokens)).where(VersionFile.version_id == version.id)
            .group_by(VersionFile.media_type)):
        total = totals[media_type.split("/", 1)[0]]
        total["files"] += count
        total["bytes"] += int(size)
        total["tokens"] += int(tokens)
    return render_template("catalog/file_version.html", version=version,
                           dataset=version.dataset, page=page, totals=dict(sorted(totals.items())),
                           is_owner=principal is not None
                           and principal.organization_id == version.dataset.organization_id)
