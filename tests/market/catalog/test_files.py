"""Versions made of files, on both object stores (a local directory, and S3 on a moto server):
uploads interrupted and resumed, files measured and counted by the published rules (worked out
here again from the generated files' known sizes and durations), the version's root checked by
the buyer's own tool, a tampered object caught, and refusals that leave nothing written."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing.jobs import JOBS_BY_NAME
from billing.runs import default_period, run_job
from market.accounts import services as accounts
from market.catalog import files, listings
from market.catalog import services as catalog
from market.catalog.manifest import merkle_root
from market.catalog.models import DatasetVersion, Upload, VersionFile
from market.core.errors import Conflict, InvalidInput, NotFound
from market.core.objects import MIN_PART_SIZE, LocalObjectStore
from tests.concurrency import fresh_app
from tests.factories import make_org, make_user
from tests.market.catalog.conftest import DATASET
from tests.market.catalog.test_media import make_image, make_video, make_wav
from tests.market.core.test_objects import local_backend, s3_backend

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "verify_manifest.py"


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))


@pytest.fixture
def store(backend):
    return backend.store


@pytest.fixture
def owner(session, passwords):
    org = make_org(session, "supplier", name="Files Co")
    person = make_user(session, passwords, org, "owner")
    return accounts.principal_for_user(person, org.id)


@pytest.fixture
def dataset(session, owner):
    return catalog.create_dataset(session, owner, DATASET | {"modality": "image"})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(session, owner, store, dataset, data: bytes, path: str, media_type: str, **options):
    """One file uploaded whole in one part, completed."""
    started = files.start_upload(session, owner, store, dataset, path=path,
                                 media_type=media_type, size=len(data), sha256=sha256(data),
                                 **options)
    files.upload_part(store, started, 1, data)
    return files.complete_upload(session, owner, store, started)


def openai_tiles(width: int, height: int) -> int:
    """OpenAI's published high-detail rule: fit in 2048×2048, shortest side to 768 (never
    scaled up, whole pixels), then 85 + 170 per 512-px tile."""
    if max(width, height) > 2048:
        scale = (2048, max(width, height))
        width, height = width * scale[0] // scale[1], height * scale[0] // scale[1]
    if min(width, height) > 768:
        scale = (768, min(width, height))
        width, height = width * scale[0] // scale[1], height * scale[0] // scale[1]
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def test_an_upload_interrupted_and_resumed_ends_with_its_sha256(session, owner, backend,
                                                               dataset):
    data = bytes(range(256)) * (MIN_PART_SIZE // 256) + b"the last part"
    started = files.start_upload(session, owner, backend.store, dataset, path="raw/blob.bin",
                                 media_type="application/octet-stream", size=len(data),
                                 sha256=sha256(data))
    files.upload_part(backend.store, started, 1, data[:MIN_PART_SIZE])
    session.commit()

    # The client and the app restart: a new handle on the same store, the upload read back.
    store = backend.reopen()
    resumed = files.get_upload(session, owner, started.id)
    parts = files.upload_parts(store, resumed)
    assert [(p.number, p.size) for p in parts] == [(1, MIN_PART_SIZE)]
    assert parts[0].etag == hashlib.md5(data[:MIN_PART_SIZE]).hexdigest()
    with pytest.raises(InvalidInput) as early:
        files.complete_upload(session, owner, store, resumed)
    assert early.value.field == "size"  # nothing assembled: the rest can still be sent

    files.upload_part(store, resumed, 2, data[MIN_PART_SIZE:])
    completed = files.complete_upload(session, owner, store, resumed)

    assert completed.status == "completed"
    assert completed.object_key == f"sha256/{sha256(data)[:2]}/{sha256(data)}"
    assert completed.tokens == math.ceil(len(data) / 4)
    assert completed.token_profile == "bytes-per-token/4"
    with store.open(completed.object_key) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == sha256(data)
    assert files.upload_parts(store, completed) == []


def test_image_audio_and_video_count_by_the_published_rules(session, owner, store, dataset,
                                                            tmp_path):
    image = make_image(tmp_path / "a.png", 1200, 900).read_bytes()
    small = make_image(tmp_path / "b.png", 300, 200).read_bytes()
    audio = make_wav(tmp_path / "c.wav", 5, 2).read_bytes()  # 2.5 s
    video = make_video(tmp_path / "d.mp4", frames=30, fps=10).read_bytes()  # 3 s
    table = b"t,value\n0,1.5\n1,2.5\n"

    made = [
        upload(session, owner, store, dataset, image, "images/a.png", "image/png"),
        upload(session, owner, store, dataset, small, "images/b.png", "image/png",
               token_profile="gemini-image-tiles/2025-01"),
        upload(session, owner, store, dataset, audio, "audio/c.wav", "audio/wav"),
        upload(session, owner, store, dataset, video, "video/d.mp4", "video/mp4"),
        upload(session, owner, store, dataset, table, "series/e.csv", "text/csv"),
    ]
    version = files.create_file_version(session, owner, dataset, [u.id for u in made],
                                        notes="first files")

    counted = {f.path: (f.token_profile, f.tokens, f.basis) for f in session.scalars(
        select(VersionFile).where(VersionFile.version_id == version.id))}
    assert counted == {
        "images/a.png": ("openai-image-tiles/2024-11", openai_tiles(1200, 900),
                         {"width": 1200, "height": 900}),
        "images/b.png": ("gemini-image-tiles/2025-01", 258, {"width": 300, "height": 200}),
        "audio/c.wav": ("gemini-audio/2025-01", 32 * math.ceil(5 / 2),
                        {"microseconds": 2_500_000}),
        "video/d.mp4": ("gemini-video/2025-01", 263 * math.ceil(30 / 10),
                        {"microseconds": 3_000_000}),
        "series/e.csv": ("bytes-per-token/4", math.ceil(len(table) / 4),
                         {"bytes": len(table)}),
    }
    assert openai_tiles(1200, 900) == 85 + 170 * 2 * 2  # 1024×768 after the resize
    assert (version.source_format, version.record_count, version.number) == ("files", 5, 1)
    assert version.token_count == sum(tokens for _, tokens, _ in counted.values())
    assert version.source_bytes == sum(map(len, (image, small, audio, video, table)))


def test_the_root_is_the_manifests_and_one_file_verifies_offline(session, owner, store,
                                                                 dataset, tmp_path):
    contents = {f"docs/{n}.txt": f"file {n}\n".encode() * (n + 1) for n in range(5)}
    made = [upload(session, owner, store, dataset, data, path, "text/plain")
            for path, data in contents.items()]
    version = files.create_file_version(session, owner, dataset, [u.id for u in made])

    entries = [files.manifest_entry(f) for f in files.version_manifest(session, version).all()]
    assert [e.path for e in entries] == sorted(contents)
    assert version.content_sha256 == merkle_root(entries)

    document = files.file_proof(session, version, "docs/3.txt")
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(document))
    downloaded = tmp_path / "3.txt"
    with store.open(made[3].object_key) as handle:
        downloaded.write_bytes(handle.read())
    checked = subprocess.run([sys.executable, "-I", "-S", str(TOOL), "--root",
                              version.content_sha256, str(proof), str(downloaded)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    other = tmp_path / "2.txt"
    other.write_bytes(contents["docs/2.txt"])
    refused = subprocess.run([sys.executable, "-I", "-S", str(TOOL), "--root",
                              version.content_sha256, str(proof), str(other)],
                             capture_output=True, text=True)
    assert refused.returncode == 1


def test_a_tampered_object_is_detected_by_the_store(session, owner, backend, dataset):
    made = upload(session, owner, backend.store, dataset, b"original bytes\n", "a.txt",
                  "text/plain")
    assert backend.store.verify(made.object_key)
    backend.tamper(made.object_key, b"tampered bytes\n")
    assert not backend.store.verify(made.object_key)


def _written(session) -> tuple[int, int]:
    return (session.scalar(select(func.count()).select_from(DatasetVersion)),
            session.scalar(select(func.count()).select_from(VersionFile)))


def test_another_organizations_dataset_is_refused(session, owner, store, dataset, passwords,
                                                  backend):
    other = make_org(session, "supplier", name="Other Co")
    stranger = accounts.principal_for_user(make_user(session, passwords, other, "owner"),
                                           other.id)
    made = upload(session, owner, store, dataset, b"mine\n", "mine.txt", "text/plain")
    uploads_before = session.scalar(select(func.count()).select_from(Upload))
    before, leftovers = _written(session), backend.leftovers()

    with pytest.raises(NotFound):
        files.start_upload(session, stranger, store, dataset, path="x.txt",
                           media_type="text/plain", size=1, sha256="0" * 64)
    with pytest.raises(NotFound):
        files.create_file_version(session, stranger, dataset, [made.id])
    with pytest.raises(NotFound):
        files.get_upload(session, stranger, made.id)
    theirs = catalog.create_dataset(session, stranger, DATASET)
    with pytest.raises(NotFound) as foreign_upload:
        files.create_file_version(session, stranger, theirs, [made.id])
    assert foreign_upload.value.field == "upload_ids"

    assert session.scalar(select(func.count()).select_from(Upload)) == uploads_before
    assert _written(session) == before and backend.leftovers() == leftovers


def test_a_wrong_sha256_stores_nothing_and_the_upload_ends_failed(session, owner, backend,
                                                                   dataset):
    store = backend.store
    leftovers = backend.leftovers()
    started = files.start_upload(session, owner, store, dataset, path="a.bin",
                                 media_type="application/octet-stream", size=5,
                                 sha256=sha256(b"other"))
    files.upload_part(store, started, 1, b"bytes")
    failed = files.complete_upload(session, owner, store, started)
    assert failed.status == "failed" and failed.object_key is None
    assert "SHA-256" in failed.failure
    assert backend.leftovers() == leftovers  # no object, and the upload's parts discarded
    with pytest.raises(Conflict) as again:
        files.complete_upload(session, owner, store, started)
    assert again.value.code == "upload_failed"
    # The content itself, sent by another upload, later stored under its address, does not
    # make the failed upload complete.
    other = upload(session, owner, store, dataset, b"other", "b.bin", "application/octet-stream")
    assert other.status == "completed"
    with pytest.raises(Conflict):
        files.complete_upload(session, owner, store, started)


def test_abandoned_uploads_expire_and_free_their_parts(session, owner, backend, dataset):
    store = backend.store
    data = b"part of a file never finished"
    stale = files.start_upload(session, owner, store, dataset, path="stale.bin",
                               media_type="application/octet-stream", size=len(data) * 2,
                               sha256=sha256(data * 2))
    files.upload_part(store, stale, 1, data)
    fresh = files.start_upload(session, owner, store, dataset, path="fresh.bin",
                               media_type="application/octet-stream", size=len(data),
                               sha256=sha256(data))
    done = upload(session, owner, store, dataset, b"kept", "done.bin",
                  "application/octet-stream")
    session.flush()
    stale.created_at = done.created_at = fresh.created_at - dt.timedelta(hours=80)
    session.flush()

    expired = files.expire_abandoned_uploads(session, store, fresh.created_at, hours=72)

    assert expired == [stale.id]
    assert (stale.status, fresh.status, done.status) == ("expired", "pending", "completed")
    left = backend.leftovers()
    assert not any(item.startswith("upload:") and stale.store_upload_id.split(".")[0] in item
                   for item in left)
    with pytest.raises(Conflict) as again:
        files.upload_part(store, stale, 2, data)
    assert again.value.code == "upload_expired"
    files.upload_part(store, fresh, 1, data)
    assert files.complete_upload(session, owner, store, fresh).status == "completed"


def test_a_path_twice_writes_no_version(session, owner, store, dataset):
    first = upload(session, owner, store, dataset, b"one\n", "Data/a.txt", "text/plain")
    second = upload(session, owner, store, dataset, b"two\n", "data/A.txt", "text/plain")
    before = _written(session)
    with pytest.raises(InvalidInput) as twice:
        files.create_file_version(session, owner, dataset, [first.id, second.id])
    assert (twice.value.field, twice.value.code) == ("upload_ids", "path_twice")
    assert _written(session) == before


def test_an_unfinished_upload_writes_no_version(session, owner, store, dataset):
    done = upload(session, owner, store, dataset, b"one\n", "a.txt", "text/plain")
    pending = files.start_upload(session, owner, store, dataset, path="b.txt",
                                 media_type="text/plain", size=3, sha256=sha256(b"two"))
    before = _written(session)
    with pytest.raises(Conflict) as unfinished:
        files.create_file_version(session, owner, dataset, [done.id, pending.id])
    assert unfinished.value.field == "upload_ids"
    assert _written(session) == before
    files.abort_upload(session, owner, store, pending)
    assert pending.status == "aborted"
    with pytest.raises(Conflict):
        files.upload_part(store, pending, 1, b"two")


@pytest.mark.parametrize("field, changes", [
    ("path", {"path": "../escape.txt"}),
    ("media_type", {"media_type": "not a type"}),
    ("size", {"size": 0}),
    ("sha256", {"sha256": "abc"}),
    ("token_profile", {"token_profile": "no-such-profile/1"}),
    ("token_profile", {"media_type": "text/plain", "token_profile": "gemini-audio/2025-01"}),
])
def test_a_bad_declaration_is_refused_naming_its_field(session, owner, store, dataset, field,
                                                       changes):
    declared = {"path": "a.wav", "media_type": "audio/wav", "size": 10,
                "sha256": "0" * 64} | changes
    with pytest.raises(InvalidInput) as refused:
        files.start_upload(session, owner, store, dataset, **declared)
    assert refused.value.field == field


def test_a_file_that_is_not_its_media_type_is_refused(session, owner, store, dataset):
    data = b"not an image at all"
    started = files.start_upload(session, owner, store, dataset, path="fake.png",
                                 media_type="image/png", size=len(data), sha256=sha256(data))
    files.upload_part(store, started, 1, data)
    with pytest.raises(InvalidInput) as refused:
        files.complete_upload(session, owner, store, started)
    assert refused.value.field == "media_type"
    assert started.status == "pending"


def test_a_draft_is_its_suppliers_until_an_exchange_approves_it(session, owner, store, dataset,
                                                                 passwords):
    made = upload(session, owner, store, dataset, b"a file\n", "a.txt", "text/plain")
    version = files.create_file_version(session, owner, dataset, [made.id])
    exchange = make_org(session, "exchange", name="Files Exchange")
    reviewer = accounts.principal_for_user(make_user(session, passwords, exchange, "reviewer"),
                                           exchange.id)
    buyer_org = make_org(session, "buyer", name="Files Buyer")
    buyer = accounts.principal_for_user(make_user(session, passwords, buyer_org, "owner"),
                                        buyer_org.id)

    assert files.get_visible_file_version(session, owner, version.id) is version
    for outsider in (reviewer, buyer, None):
        with pytest.raises(NotFound):
            files.get_visible_file_version(session, outsider, version.id)

    listing = listings.submit(session, owner, dataset, version_id=version.id,
                              exchange_id=exchange.id, review_days=5)
    assert files.get_visible_file_version(session, reviewer, version.id) is version
    with pytest.raises(NotFound):
        files.get_visible_file_version(session, buyer, version.id)

    listings.approve(session, reviewer, listing)
    assert files.get_visible_file_version(session, buyer, version.id) is version
    assert files.file_proof(session, version, "a.txt")["entry"]["sha256"] == sha256(b"a file\n")


def test_the_expire_uploads_job_runs_on_the_schedulers_runner(database_url, tmp_path):
    with fresh_app(database_url, tmp_path) as app:
        root = tmp_path / "job-objects"
        settings = dict(app.config, OBJECT_STORE="local", OBJECT_STORE_ROOT=str(root))
        store = LocalObjectStore(root)
        database = app.extensions["market.db"]
        with database.session() as session, session.begin():
            org = make_org(session, "supplier", name="Stale Co")
            owner = accounts.principal_for_user(
                make_user(session, app.extensions["market.passwords"], org, "owner"), org.id)
            dataset = catalog.create_dataset(session, owner, DATASET)
            stale = files.start_upload(session, owner, store, dataset, path="s.bin",
                                       media_type="application/octet-stream", size=9,
                                       sha256=sha256(b"123456789"))
            session.flush()
            stale_id, started = stale.id, stale.created_at
        now = started + dt.timedelta(hours=settings["UPLOAD_ABANDON_HOURS"], minutes=1)
        job = JOBS_BY_NAME["expire-uploads"]
        outcome = run_job(database, job, default_period(job, now, database.calendar), now=now,
                          settings=settings, progress=lambda _: None)
        assert outcome.summary == {"expired": 1}
        with database.session() as session:
            assert session.get(Upload, stale_id).status == "expired"
        assert not any((root / "staging" / "uploads").iterdir())
