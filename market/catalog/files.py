"""Versions made of files: uploads in resumable parts, and versions whose content is a manifest.

**Uploads.** A supplier starts an upload for one file of a dataset it owns, declaring the file's
``path`` in the version (``market.catalog.manifest.normalize_path``), its ``media_type``, its
``size`` in bytes and its ``sha256``, and the token profile its tokens are counted by (by
default the media type's: ``DEFAULT_PROFILES``). The bytes go to the object store as a multipart
upload (``market.core.objects``): parts by number, in any order, each resent as often as
needed, through the app or, on S3, straight to the bucket at a presigned URL (``part_url``); ``upload_parts`` says what has arrived, so an interrupted client sends only the rest.
Completing asks the store to assemble the parts and refuse any content but the declared
SHA-256; the stored file is then measured (an image's dimensions, a recording's duration, read
from a temporary copy of the object, since Pillow and PyAV read a seekable file) and counted.
A completed upload keeps its object key, tokens and the measured basis; an aborted one keeps
nothing in the store.

An upload refused at completion for its SHA-256 is gone from the store (the store discards
the parts of a content it refuses): it ends ``failed`` with the reason, completing it again
answers 409, and the client starts a new upload. An upload left ``pending`` longer than
``UPLOAD_ABANDON_HOURS`` is ``expired`` by ``expire_abandoned_uploads`` (its parts freed). A completion that fails after the store assembled the
object (a file that cannot be measured) leaves the object under its address, and completing
again finds it there.

**Versions of files.** ``create_file_version`` makes the dataset's next version out of
completed uploads of that dataset: one ``VersionFile`` per upload, in manifest order, and the
version's ``content_sha256`` the manifest's Merkle root (``market.catalog.manifest``), so a
buyer checks any one file against it with its proof document. Every refusal (an upload of
another dataset or organization, one not completed, a path twice, even up to case) is raised
before anything is written, so a refused call leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.accounts.authz import Principal, get_owned
from market.catalog import file_quality, listings, services
from market.catalog.manifest import (
    MEDIA_TYPE, SHA256_HEX, ManifestEntry, inclusion_proof, merkle_root, normalize_path,
    proof_document,
)
from market.catalog.media import count, measure_audio, measure_image, measure_video
from market.catalog.models import (
    Dataset, DatasetVersion, Upload, UploadStatus, VersionFile,
)
from market.catalog.timeseries import TIME_SERIES_MEDIA_TYPE, count_time_series
from market.core import audit
from market.core.db import utcnow
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.inputs import INT64_MAX
from market.core.keyset import Keyset, asc
from market.core.objects import (
    CHUNK_SIZE, ContentMismatch, ObjectStore, StoredObject, UploadedPart, UploadNotFound,
    object_key, store_from_settings,
)
from pricing.errors import UnknownTokenProfile
from pricing.token_profiles import TokenCount, profile

SOURCE_FORMAT = "files"
# Counted by the media type's own profile, else its top-level type's, when the supplier names
# no profile.
DEFAULT_PROFILES = {
    TIME_SERIES_MEDIA_TYPE: "time-series-csv/o200k_base",
    "image": "openai-image-tiles/2024-11",
    "audio": "gemini-audio/2025-01",
    "video": "gemini-video/2025-01",
}
FALLBACK_PROFILE = "bytes-per-token/4"
_MEASURE = {"image": measure_image, "audio": measure_audio, "video": measure_video}


def default_profile(media_type: str) -> str:
    """The profile a file of ``media_type`` is counted by unless its supplier chooses one."""
    return DEFAULT_PROFILES.get(media_type, DEFAULT_PROFILES.get(media_type.split("/", 1)[0],
                                                                 FALLBACK_PROFILE))


def _modality(media_type: str) -> str:
    return "time_series" if media_type == TIME_SERIES_MEDIA_TYPE else media_type.split("/", 1)[0]


def _checked_profile(name: str, media_type: str) -> str:
    """A profile that can count a file of ``media_type``: one of its modality, or the size
    rule, which counts any file."""
    try:
        rule = profile(name)
    except UnknownTokenProfile as exc:
        raise InvalidInput(exc.message, field="token_profile") from None
    if rule.modality != "bytes" and (rule.modality not in (*_MEASURE, "time_series")
                                     or rule.modality != _modality(media_type)):
        raise InvalidInput(f"The profile {name} counts {rule.modality}; a {media_type} file is "
                           f"counted by a profile of its own kind or by {FALLBACK_PROFILE}.",
                           field="token_profile", code="profile_modality")
    return name


def start_upload(session: Session, principal: Principal, store: ObjectStore, dataset: Dataset,
                 *, path: str, media_type: str, size: int, sha256: str,
                 token_profile: str | None = None) -> Upload:
    """Begin uploading one file of a dataset the principal's organization owns."""
    if dataset.organization_id != principal.organization_id:
        raise NotFound("No such dataset.")
    path = normalize_path(path, "path")
    media_type = media_type.lower() if isinstance(media_type, str) else media_type
    if not isinstance(media_type, str) or not MEDIA_TYPE.fullmatch(media_type):
        raise InvalidInput("A media type is type/subtype (RFC 6838), without parameters.",
                           field="media_type")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= INT64_MAX:
        raise InvalidInput(f"A file's size is a whole number of bytes from 1 to {INT64_MAX}.",
                           field="size")
    sha256 = sha256.lower() if isinstance(sha256, str) else sha256
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise InvalidInput("A SHA-256 digest is 64 hexadecimal digits.", field="sha256")
    chosen = _checked_profile(token_profile or default_profile(media_type), media_type)
    upload = Upload(organization_id=dataset.organization_id, dataset_id=dataset.id,
                    created_by_id=principal.user_id, path=path, media_type=media_type,
                    size=size, expected_sha256=sha256, token_profile=chosen,
                    store_upload_id=store.start_upload(sha256), status=UploadStatus.PENDING.value)
    session.add(upload)
    session.flush()  # the audit entry names the upload's id
    audit.record(session, "upload.started", actor=principal.actor,
                 organization_id=upload.organization_id, object_type="upload",
                 object_id=upload.id, data={"dataset_id": dataset.id, "path": path,
                                            "size": size, "sha256": sha256})
    return upload


def get_upload(session: Session, principal: Principal, upload_id: int) -> Upload:
    """An upload of the principal's organization (another's answers 404)."""
    return get_owned(session, Upload, upload_id, principal)


def _pending(upload: Upload) -> None:
    if upload.status != UploadStatus.PENDING.value:
        raise Conflict(f"The upload is {upload.status}; it takes no more parts.",
                       field="status", code=f"upload_{upload.status}")


def upload_part(store: ObjectStore, upload: Upload, number: int, data) -> UploadedPart:
    """Store part ``number`` of a pending upload (a part sent again replaces the first)."""
    _pending(upload)
    try:
        return store.upload_part(upload.store_upload_id, number, data)
    except UploadNotFound:
        raise _gone() from None


def part_url(store: ObjectStore, upload: Upload, number: int, expires: int) -> str | None:
    """A short-lived URL the client PUTs part ``number`` to, straight to the bucket; None where
    the store has none (the local store: parts go through the app)."""
    _pending(upload)
    try:
        return store.presigned_part_url(upload.store_upload_id, number, expires)
    except UploadNotFound:
        raise _gone() from None


def upload_parts(store: ObjectStore, upload: Upload) -> list[UploadedPart]:
    """The parts of a pending upload that have arrived (none once it is completed or
    aborted)."""
    if upload.status != UploadStatus.PENDING.value:
        return []
    try:
        return store.list_parts(upload.store_upload_id)
    except UploadNotFound:
        raise _gone() from None


def _gone() -> Conflict:
    return Conflict("The upload's parts are gone (its content was refused, or it was aborted "
                    "elsewhere); start a new upload.", field="upload", code="upload_gone")


def complete_upload(session: Session, principal: Principal, store: ObjectStore,
                    upload: Upload) -> Upload:
    """Assemble a pending upload, refuse any content but the declared SHA-256, then measure
    and count the stored file.

    Rule: the parts must add up to the declared size before the store is asked (until then
    the upload can still be resumed); the store itself checks the SHA-256.
    """
    if upload.status == UploadStatus.COMPLETED.value:
        return upload
    _pending(upload)
    key = object_key(upload.expected_sha256)
    try:
        parts = store.list_parts(upload.store_upload_id)
    except UploadNotFound:
        # Assembled by an earlier completion that failed later: the object is at its address.
        if not store.exists(key):
            raise _gone() from None
        stored = StoredObject(key, store.size(key), upload.expected_sha256)
    else:
        arrived = sum(part.size for part in parts)
        if arrived != upload.size:
            raise InvalidInput(f"The parts hold {arrived} bytes of the declared {upload.size}; "
                               "send the missing parts, then complete.", field="size",
                               code="upload_incomplete")
        try:
            stored = store.complete_upload(upload.store_upload_id, upload.expected_sha256)
        except ContentMismatch as refused:
            return _fail(session, principal, upload, str(refused))
    counted = _count_object(store, stored, upload)
    upload.status = UploadStatus.COMPLETED.value
    upload.object_key = stored.key
    upload.tokens = counted.tokens
    upload.basis = dict(counted.basis)
    upload.completed_at = utcnow()
    audit.record(session, "upload.completed", actor=principal.actor,
                 organization_id=upload.organization_id, object_type="upload",
                 object_id=upload.id, data={"sha256": stored.sha256, "size": stored.size,
                                            "tokens": counted.tokens,
                                            "token_profile": counted.profile})
    return upload


def _fail(session: Session, principal: Principal, upload: Upload, reason: str) -> Upload:
    """End an upload whose content the store refused: its parts are gone, so it is ``failed``
    for good, with the reason (the caller keeps this state, and then answers the refusal)."""
    upload.status = UploadStatus.FAILED.value
    upload.failure = reason
    audit.record(session, "upload.failed", actor=principal.actor,
                 organization_id=upload.organization_id, object_type="upload",
                 object_id=upload.id, data={"reason": reason})
    return upload


def _count_object(store: ObjectStore, stored: StoredObject, upload: Upload) -> TokenCount:
    """The stored file's tokens by the upload's profile, measured from a temporary copy."""
    rule = profile(upload.token_profile)
    if rule.modality == "bytes":
        return rule.count({"bytes": stored.size})
    if rule.modality == "time_series":
        with store.open(stored.key) as source:
            return count_time_series(source, upload.token_profile, field="media_type")
    measure = _MEASURE[rule.modality]
    with tempfile.TemporaryFile() as copy:
        with store.open(stored.key) as source:
            shutil.copyfileobj(source, copy, CHUNK_SIZE)
        copy.seek(0)
        measured = measure(copy, field="media_type")
    return count(measured, upload.token_profile)


def expire_abandoned_uploads(session: Session, store: ObjectStore, now: dt.datetime,
                             hours: int) -> list[int]:
    """Expire every upload pending since more than ``hours`` before ``now``: its parts are
    freed in the store and its row ends ``expired``. Returns their ids. Each is locked
    and checked still pending, so a completion that wins the race keeps its upload."""
    cutoff = now - dt.timedelta(hours=hours)
    expired = []
    for upload in session.scalars(
            select(Upload).where(Upload.status == UploadStatus.PENDING.value,
                                 Upload.created_at < cutoff)
            .order_by(Upload.id).with_for_update(skip_locked=True)):
        store.abort_upload(upload.store_upload_id)
        upload.status = UploadStatus.EXPIRED.value
        audit.record(session, "upload.expired", organization_id=upload.organization_id, object_type="upload",
                     object_id=upload.id, data={"started_at": upload.created_at.isoformat(),
                                                "hours": hours})
        expired.append(upload.id)
    return expired


def run_upload_expiry(ctx: Any) -> dict:
    """Job ``expire-uploads`` (listed in ``billing.jobs``; ``ctx`` is its run context):
    expire the uploads abandoned longer than ``UPLOAD_ABANDON_HOURS``."""
    store = store_from_settings(ctx.settings)
    with ctx.db.session() as session, session.begin():
        expired = expire_abandoned_uploads(session, store, ctx.now,
                                           ctx.settings["UPLOAD_ABANDON_HOURS"])
    ctx.progress(f"{len(expired)} abandoned uploads expired")
    return {"expired": len(expired)}


def abort_upload(session: Session, principal: Principal, store: ObjectStore,
                 upload: Upload) -> Upload:
    """Discard a pending upload and its parts; a completed one stays (its file may be in a
    version)."""
    if upload.status == UploadStatus.ABORTED.value:
        return upload
    if upload.status == UploadStatus.COMPLETED.value:
        raise Conflict("The upload is completed; its file stays.", field="status",
                       code="upload_completed")
    store.abort_upload(upload.store_upload_id)
    upload.status = UploadStatus.ABORTED.value
    audit.record(session, "upload.aborted", actor=principal.actor,
                 organization_id=upload.organization_id, object_type="upload",
                 object_id=upload.id, data={})
    return upload


def manifest_entry(item: Upload | VersionFile) -> ManifestEntry:
    """A version's file (or a completed upload, the file it becomes) as its manifest entry."""
    sha256 = item.sha256 if isinstance(item, VersionFile) else item.expected_sha256
    return ManifestEntry(item.path, item.media_type, item.size, sha256, item.tokens,
                         item.token_profile)


def create_file_version(session: Session, principal: Principal, dataset: Dataset,
                        upload_ids: Sequence[int], notes: str = "", *,
                        store: ObjectStore | None = None) -> DatasetVersion:
    """The dataset's next version, made of the completed uploads ``upload_ids``; with the
    ``store`` its files are in, its quality report too (``market.catalog.file_quality``).

    Rule: each upload is of this dataset (another's answers 404) and completed (409); no path
    is listed twice, nor two paths that differ only in case (422). All of it is checked before
    the version is written.
    """
    if dataset.organization_id != principal.organization_id:
        raise NotFound("No such dataset.")
    ids = list(upload_ids)
    if not ids:
        raise InvalidInput("A version of files lists at least one upload.", field="upload_ids")
    if len(set(ids)) != len(ids):
        raise InvalidInput("Each upload is listed once.", field="upload_ids")
    found = {upload.id: upload for upload in session.scalars(
        select(Upload).where(Upload.id.in_(ids), Upload.dataset_id == dataset.id,
                             Upload.organization_id == principal.organization_id))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"No upload {missing[0]} of this dataset.", field="upload_ids")
    uploads = [found[i] for i in ids]
    unfinished = [u.id for u in uploads if u.status != UploadStatus.COMPLETED.value]
    if unfinished:
        raise Conflict(f"Upload {unfinished[0]} is not completed.", field="upload_ids",
                       code="upload_not_completed")
    seen: dict[str, int] = {}
    for upload in uploads:
        folded = upload.path.casefold()
        if folded in seen:
            raise InvalidInput(f"Uploads {seen[folded]} and {upload.id} are both "
                               f"{upload.path!r} (or differ only in case).", field="upload_ids",
                               code="path_twice")
        seen[folded] = upload.id
    ordered = sorted(uploads, key=lambda u: u.path.encode("utf-8"))
    root = merkle_root(manifest_entry(upload) for upload in ordered)

    number = (session.scalar(select(func.max(DatasetVersion.number))
                             .where(DatasetVersion.dataset_id == dataset.id)) or 0) + 1
    size = sum(upload.size for upload in uploads)
    tokens = sum(upload.tokens for upload in uploads)
    version = DatasetVersion(
        dataset_id=dataset.id, number=number, notes=notes, source_format=SOURCE_FORMAT,
        source_filename=None, source_bytes=size, record_count=len(uploads), canonical_bytes=size,
        token_count=tokens, encoding="", content_sha256=root, schema={}, samples=[],
        quality={}, quality_score=0, quality_grade="-", created_by_id=principal.user_id)
    session.add(version)
    session.flush()  # the files need the version's id
    made = [VersionFile(
        version_id=version.id, position=position, path=upload.path,
        media_type=upload.media_type, size=upload.size, sha256=upload.expected_sha256,
        object_key=upload.object_key, tokens=upload.tokens, token_profile=upload.token_profile,
        basis=upload.basis) for position, upload in enumerate(ordered)]
    session.add_all(made)
    if store is not None:
        file_quality.record_report(version, file_quality.file_version_quality(store, made))
    audit.record(session, "dataset_version.files_added", actor=principal.actor,
                 organization_id=dataset.organization_id, object_type="dataset_version",
                 object_id=version.id, data={
                     "dataset_id": dataset.id, "number": number, "files": len(uploads),
                     "tokens": tokens, "sha256": root, "uploads": ids})
    return version


def get_visible_file_version(session: Session, principal: Principal | None,
                             version_id: int) -> DatasetVersion:
    """A version of files whose contents the principal may read (``listings.sees_contents``:
    a draft only for its supplier); 404 for any other, so a draft is not even confirmed."""
    version = session.get(DatasetVersion, version_id)
    if version is None or version.source_format != SOURCE_FORMAT \
            or not services.can_see(session, principal, version.dataset) \
            or not listings.sees_contents(principal, version,
                                          listings.reviewed_version_ids(session,
                                                                        version.dataset_id)):
        raise NotFound("No such version.")
    return version


def version_manifest(session: Session, version: DatasetVersion) -> Keyset[VersionFile]:
    """The version's files in manifest order (by the UTF-8 bytes of their paths)."""
    return Keyset(session, select(VersionFile).where(VersionFile.version_id == version.id),
                  [asc(VersionFile.position), asc(VersionFile.id)])


def file_proof(session: Session, version: DatasetVersion, path: str) -> dict[str, Any]:
    """One file's proof document (``market.catalog.manifest.proof_document``): its entry and
    its audit path to the version's ``content_sha256``."""
    entries = [manifest_entry(item) for item in version_manifest(session, version).all()]
    proof = inclusion_proof(entries, path)
    return proof_document(entries[proof.leaf_index], proof)


def version_file(session: Session, version: DatasetVersion, path: str) -> VersionFile:
    """The file at ``path`` (as the manifest spells it) of a version of files; 404 naming
    ``path`` for any other, and for a version that is not made of files."""
    found = None
    if version.source_format == SOURCE_FORMAT:
        found = session.scalar(select(VersionFile).where(VersionFile.version_id == version.id,
                                                         VersionFile.path == path))
    if found is None:
        raise NotFound("No such file in this version.", field="path")
    return found
