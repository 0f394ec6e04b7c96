"""API: versions made of files — resumable uploads, versions of them, manifests and proofs."""

from __future__ import annotations

from flask import current_app, url_for

from market.accounts.authz import Principal
from market.catalog import files, services
from market.catalog.models import UploadStatus
from market.core.objects import ContentMismatch, ObjectStore
from market.web.api.blueprint import api
from market.web.api.endpoint import Created
from market.web.api.files_schemas import (
    FileVersionCreateSchema, FileVersionSchema, ManifestEntrySchema, PartSchema,
    PartUrlQuerySchema, PartUrlSchema, ProofQuerySchema, ProofSchema, UploadPartsSchema,
    UploadSchema, UploadStartSchema,
)
from market.web.api.pagination import PageQuerySchema, page_request, page_schema
from market.web.http import db_session, end_request_transaction

CATALOG = ["Catalogue"]
SUPPLY = ["Supplier"]
PART_TYPES = ("application/octet-stream",)


def _store() -> ObjectStore:
    return current_app.extensions["market.objects"]


@api.operation("/datasets/<int:dataset_id>/uploads", "POST", summary="Start uploading a file",
               permission="catalog:write", body=UploadStartSchema, response=UploadSchema,
               status=201, tags=SUPPLY, errors=(404, 422))
def start_upload(principal: Principal, dataset_id: int, body: dict):
    """Declare one file of a version to come: its path, media type, size and SHA-256, and the
    token profile that counts it (default by media type). Then send its parts, and complete."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    upload = files.start_upload(session, principal, _store(), dataset, path=body["path"],
                                media_type=body["media_type"], size=body["size"],
                                sha256=body["sha256"], token_profile=body["token_profile"])
    return Created(upload, url_for("api.list_upload_parts", upload_id=upload.id))


@api.operation("/uploads/<int:upload_id>/parts/<int:number>", "PUT",
               summary="Send one part of an upload", permission="catalog:write",
               response=PartSchema, tags=SUPPLY, errors=(404, 409, 413, 415, 422),
               upload=PART_TYPES, upload_limit="UPLOAD_PART_MAX_BYTES")
def upload_part(principal: Principal, upload_id: int, number: int, stream, content_type,
                content_length):
    """The part's bytes as the body, at most UPLOAD_PART_MAX_BYTES. Parts are numbered from
    1 in the file's order; every part but the last holds at least 5 MiB. A part sent again
    replaces the first."""
    upload = files.get_upload(db_session(), principal, upload_id)
    return files.upload_part(_store(), upload, number, stream)


@api.operation("/uploads/<int:upload_id>/parts/<int:number>/url", "GET",
               summary="Where to send one part straight to the bucket",
               permission="catalog:write", query=PartUrlQuerySchema, response=PartUrlSchema,
               tags=SUPPLY, errors=(404, 409, 422))
def part_url(principal: Principal, upload_id: int, number: int, query: dict):
    """On an S3 store, a presigned URL to PUT part ``number`` to, so large files need not pass
    through the app; null on the local store."""
    upload = files.get_upload(db_session(), principal, upload_id)
    return {"number": number, "expires": query["expires"],
            "url": files.part_url(_store(), upload, number, query["expires"])}


@api.operation("/uploads/<int:upload_id>/parts", "GET", summary="An upload and its parts",
               permission="catalog:write", response=UploadPartsSchema, tags=SUPPLY,
               errors=(404, 409))
def list_upload_parts(principal: Principal, upload_id: int):
    """What has arrived, so that an interrupted client sends only the rest."""
    upload = files.get_upload(db_session(), principal, upload_id)
    return {"upload": upload, "parts": files.upload_parts(_store(), upload)}


@api.operation("/uploads/<int:upload_id>/complete", "POST", summary="Complete an upload",
               permission="catalog:write", response=UploadSchema, tags=SUPPLY,
               errors=(404, 409, 422))
def complete_upload(principal: Principal, upload_id: int):
    """Assemble the parts; a content whose SHA-256 is not the declared one is refused (422;
    the upload is then ``failed``, with the reason: start a new one). The file is then measured and counted."""
    session = db_session()
    return complete_or_refuse(session, principal, _store(),
                              files.get_upload(session, principal, upload_id))


def complete_or_refuse(session, principal: Principal, store: ObjectStore, upload):
    """Complete an upload for a request; one whose content the store refused is kept
    ``failed`` (committed) and answered as the refusal (422 naming ``sha256``)."""
    completed = files.complete_upload(session, principal, store, upload)
    if completed.status == UploadStatus.FAILED.value:
        end_request_transaction()
        raise ContentMismatch(completed.failure, field="sha256")
    return completed


@api.operation("/uploads/<int:upload_id>", "DELETE", summary="Abort an upload",
               permission="catalog:write", response=UploadSchema, tags=SUPPLY,
               errors=(404, 409))
def abort_upload(principal: Principal, upload_id: int):
    """Discard a pending upload and its parts (a completed one stays: 409)."""
    session = db_session()
    upload = files.get_upload(session, principal, upload_id)
    return files.abort_upload(session, principal, _store(), upload)


@api.operation("/datasets/<int:dataset_id>/file-versions", "POST",
               summary="Make a version of completed uploads", permission="catalog:write",
               body=FileVersionCreateSchema, response=FileVersionSchema, status=201,
               tags=SUPPLY, errors=(404, 409, 422))
def create_file_version(principal: Principal, dataset_id: int, body: dict):
    """The dataset's next version: its files are the uploads, its content_sha256 the Merkle
    root of its manifest. Nothing is written when any upload is refused."""
    session = db_session()
    dataset = services.get_dataset_for_owner(session, principal, dataset_id)
    version = files.create_file_version(session, principal, dataset, body["upload_ids"],
                                        body["notes"], store=_store())
    return Created(version, url_for("api.version_manifest", version_id=version.id))


@api.operation("/versions/<int:version_id>/manifest", "GET", summary="A version's manifest",
               permission="catalog:read", query=PageQuerySchema,
               response=page_schema(ManifestEntrySchema), tags=CATALOG, errors=(404,))
def version_manifest(principal: Principal, version_id: int, query: dict):
    """The version's files by path (by their UTF-8 bytes, the manifest's order). A draft only
    for its supplier, and for the exchange once it was submitted there."""
    session = db_session()
    version = files.get_visible_file_version(session, principal, version_id)
    return files.version_manifest(session, version).page(page_request(query))


@api.operation("/versions/<int:version_id>/files/proof", "GET",
               summary="One file's proof against the version's root", permission="catalog:read",
               query=ProofQuerySchema, response=ProofSchema, tags=CATALOG, errors=(404, 422))
def file_proof(principal: Principal, version_id: int, query: dict):
    """What `tools/verify_manifest.py` checks a downloaded file with, offline."""
    session = db_session()
    version = files.get_visible_file_version(session, principal, version_id)
    return files.file_proof(session, version, query["path"]) | {
        "root": version.content_sha256}
