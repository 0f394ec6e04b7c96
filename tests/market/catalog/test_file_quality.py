"""The quality report of a version of files: each check finds what it should in generated files
(a corrupt image, a PNG named .jpg, a near-duplicate, a truncated WAV, a CSV with a backwards
timestamp), read back from both object stores, and every score is recomputed here from the
rule and the report's own rates."""

from __future__ import annotations

import io
import json
import random
import wave
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

from market.accounts import services as accounts
from market.catalog import file_quality, files
from market.catalog import services as catalog
from market.catalog.file_quality import QualityLimits, file_version_quality
from market.catalog.models import DatasetVersion
from market.catalog.timeseries import TIME_SERIES_MEDIA_TYPE
from market.core.objects import LocalObjectStore
from tests.factories import make_org, make_user
from tests.market.catalog.conftest import DATASET
from tests.market.catalog.test_files import upload
from tests.market.catalog.test_media import make_video
from tests.market.core.test_objects import local_backend, s3_backend


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return local_backend(tmp_path).store
    return s3_backend(request.getfixturevalue("s3_server"),
                      request.getfixturevalue("s3_bucket")).store


@pytest.fixture
def owner(session, passwords):
    org = make_org(session, "supplier", name="Files Co")
    return accounts.principal_for_user(make_user(session, passwords, org, "owner"), org.id)


@pytest.fixture
def dataset(session, owner):
    return catalog.create_dataset(session, owner, DATASET | {"modality": "image"})


def scene(seed: int, size=(128, 96)) -> Image.Image:
    """A picture of coloured rectangles, different for each seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle([x, y, x + rng.randrange(10, 60), y + rng.randrange(10, 60)],
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def encoded(image: Image.Image, kind: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def wav(seconds: int, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as recording:
        recording.setnchannels(1)
        recording.setsampwidth(2)
        recording.setframerate(rate)
        recording.writeframes(b"\x10\x00" * rate * seconds)
    return out.getvalue()


SERIES = (b"timestamp,value\n"
          b"2026-01-01T00:00:00Z,1.0\n"
          b"2026-01-01T00:01:00Z,2.0\n"
          b"2026-01-01T00:00:30Z,3.0\n"      # line 4: backwards
          b"2026-01-01T00:02:00Z,\n"          # a missing reading
          b"2026-01-01T00:03:00Z,4.0\n"
          b"2026-01-01T00:10:00Z,5.0\n"       # line 7: a gap of 7 minutes
          b"2026-01-01T00:11:00Z,six\n")     # line 8: not a number

PROBLEMS = [
    ("img/a.png", "image/png", encoded(scene(1))),
    ("img/b.png", "image/png", encoded(scene(2))),
    ("img/c.png", "image/png", encoded(scene(3))),
    ("img/z-a-brighter.jpg", "image/jpeg",
     encoded(scene(1).point(lambda v: min(255, v + 6)), "JPEG", quality=90)),
    ("img/z-b-again.png", "image/png", encoded(scene(2))),
    ("img/really-png.jpg", "image/jpeg", encoded(scene(4))),
    ("img/broken.png", "image/png", encoded(scene(5))[:200]),
    ("sound/whole.wav", "audio/wav", wav(2)),
    ("sound/cut.wav", "audio/wav", wav(2)[:12_000]),
    ("series/feeder.csv", TIME_SERIES_MEDIA_TYPE, SERIES),
]


def score(*factors: str) -> int:
    value = Decimal(100)
    for factor in factors:
        value *= Decimal(factor)
    return int(value.quantize(Decimal(1), ROUND_HALF_UP))


def one_minus(rate: str) -> str:
    return str(1 - Decimal(rate))


def test_every_check_finds_its_problem_on_both_stores(session, owner, store, dataset):
    made = [upload(session, owner, store, dataset, data, path, media_type)
            for path, media_type, data in PROBLEMS]
    version = files.create_file_version(session, owner, dataset, [u.id for u in made],
                                        store=store)
    session.commit()
    report = session.get(DatasetVersion, version.id).quality

    media = report["media_type"]
    assert media["checked"] == 10 and media["matching"] == 9
    assert media["mismatched"]["listed"] == [{
        "path": "img/really-png.jpg", "declared": "image/jpeg", "detected": "image/png",
        "by_name": "image/jpeg", "reason": "content_is_another_type"}]
    assert media["score"] == score(media["match_rate"]) == 90

    images = report["images"]
    assert images["files"] == 7 and images["decodable"] == 6
    assert [(f["path"], f["reason"]) for f in images["undecodable"]["listed"]] \
        == [("img/broken.png", "corrupt")]
    assert [(f["path"], f["duplicate_of"]) for f in images["exact_duplicates"]["listed"]] \
        == [("img/z-b-again.png", "img/b.png")]
    near = images["perceptual_duplicates"]["listed"]
    assert [(f["path"], f["duplicate_of"]) for f in near] == [("img/z-a-brighter.jpg", "img/a.png")]
    assert near[0]["distance"] <= file_quality.PHASH_DISTANCE
    assert images["dimensions"]["width"] == {"min": 128, "max": 128}
    assert images["dimensions"]["sizes"] == {"128x96": 6}
    assert images["score"] == score(images["decodable_rate"],
                                    one_minus(images["exact_duplicate_rate"]),
                                    one_minus(images["perceptual_duplicate_rate"]))

    audio = report["audio"]
    assert audio["files"] == 2 and audio["decoded_whole"] == 1
    assert [f["path"] for f in audio["truncated"]["listed"]] == ["sound/cut.wav"]
    assert "RIFF" in audio["truncated"]["listed"][0]["detail"]
    assert audio["sample_rates"] == {"8000": 2} and audio["channels"] == {"1": 2}
    assert audio["duration_microseconds"]["max"] == 2_000_000
    assert audio["score"] == 50

    series = report["time_series"]
    assert series["rows"] == 7 and series["valid_rows"] == 6
    assert series["invalid_rows"]["listed"] == [
        {"path": "series/feeder.csv", "line": 8, "reason": "not a number"}]
    assert [(f["line"], f["time"]) for f in series["backwards"]["listed"]] \
        == [(4, "2026-01-01T00:00:30Z")]
    # Increasing intervals: 60 s, 90 s, 60 s, 420 s; the median (lower middle) is 60 s.
    assert series["gaps"]["listed"] == [{"path": "series/feeder.csv", "line": 7,
                                         "microseconds": 420_000_000,
                                         "median_microseconds": 60_000_000}]
    assert (series["intervals"], series["increasing_intervals"]) == (5, 4)
    assert series["missing_readings"] == 1
    assert series["score"] == score(series["valid_rate"], series["increasing_rate"],
                                    one_minus(series["gap_rate"]))

    overall = report["overall"]
    weights = {"media_type": 10, "images": 7, "audio": 2, "time_series": 1}
    assert overall["weights"] == weights
    expected = int((Decimal(sum(w * report[name]["score"] for name, w in weights.items()))
                    / 20).quantize(Decimal(1), ROUND_HALF_UP))
    assert (overall["score"], version.quality_score) == (expected, expected)
    assert version.quality_grade == overall["grade"]
    json.dumps(report, allow_nan=False)  # plain JSON: no float anywhere
    assert "float" not in json.dumps(report, default=lambda v: type(v).__name__)


@dataclass
class Stored:
    path: str
    media_type: str
    size: int
    sha256: str
    object_key: str


def stored(store, path: str, media_type: str, data: bytes) -> Stored:
    kept = store.put_stream(io.BytesIO(data))
    return Stored(path, media_type, len(data), kept.sha256, kept.key)


@pytest.fixture
def local(tmp_path):
    return LocalObjectStore(tmp_path / "objects")


def test_the_report_is_the_same_every_time(local):
    entries = [stored(local, path, media_type, data) for path, media_type, data in PROBLEMS]
    first = json.dumps(file_version_quality(local, entries), sort_keys=True)
    assert json.dumps(file_version_quality(local, entries), sort_keys=True) == first


def test_distinct_pictures_are_not_perceptual_duplicates(local):
    entries = [stored(local, f"{i}.png", "image/png", encoded(scene(i))) for i in range(40)]
    images = file_version_quality(local, entries)["images"]
    assert images["perceptual_duplicates"]["count"] == 0 and images["score"] == 100


def test_a_video_is_decoded_and_its_frames_described(local, tmp_path):
    clip = make_video(tmp_path / "clip.mp4", frames=12, fps=6, width=64, height=48).read_bytes()
    report = file_version_quality(local, [stored(local, "v/clip.mp4", "video/mp4", clip),
                                          stored(local, "v/junk.mp4", "video/mp4",
                                                 clip[:40] + b"\x00" * 400)])
    video = report["video"]
    assert video["frame_sizes"] == {"64x48": 1} and video["frame_rates"] == {"6": 1}
    assert video["duration_microseconds"]["total"] == 2_000_000
    assert [f["path"] for f in video["undecodable"]["listed"]] == ["v/junk.mp4"]
    assert video["score"] == 50


def test_decoding_stops_at_the_limits(local, tmp_path):
    clip = make_video(tmp_path / "clip.mp4", frames=12, fps=6).read_bytes()
    report = file_version_quality(
        local, [stored(local, "a.wav", "audio/wav", wav(3)),
                stored(local, "v.mp4", "video/mp4", clip)],
        QualityLimits(max_decode_seconds=1, max_video_frames=5))
    assert report["audio"]["capped"]["count"] == 1 and report["audio"]["truncated"]["count"] == 0
    assert report["video"]["capped"]["count"] == 1 and report["video"]["score"] == 100


def test_an_image_beyond_the_pixel_limit_is_not_decoded(local):
    entries = [stored(local, "big.png", "image/png", encoded(scene(1, (400, 300))))]
    images = file_version_quality(local, entries, QualityLimits(max_pixels=100_000))["images"]
    assert images["undecodable"]["listed"][0]["reason"] == "too_many_pixels"


@pytest.mark.parametrize("path, media_type, data, outcome", [
    ("notes.txt", "text/plain", "说明文字\n".encode(), "matching"),
    ("data.json", "application/json", b'{"a": 1}', "matching"),
    ("blob.bin", "application/octet-stream", b"\x00\x01\x02", "unchecked"),
    ("notes.txt", "text/plain", encoded(scene(1)), "mismatched"),
    ("photo.png", "image/png", b"not an image at all", "mismatched"),
    ("photo.jpg", "image/png", encoded(scene(1)), "mismatched"),   # its name says JPEG
    ("sound.wav", "audio/x-wav", wav(1), "matching"),                # an alias of audio/wav
])
def test_the_media_type_is_checked_against_the_content(local, path, media_type, data, outcome):
    media = file_version_quality(local, [stored(local, path, media_type, data)])["media_type"]
    found = {"matching": media["matching"], "mismatched": media["mismatched"]["count"],
             "unchecked": media["unchecked"]["count"]}
    assert found == {kind: int(kind == outcome) for kind in found}


@pytest.mark.parametrize("data, reason", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"timestamp\n2026-01-01T00:00:00Z\n", "no header of two columns"),
    (b"timestamp,value\n", "no data row"),
    (b"timestamp,value\nyesterday,1\n", "not an ISO 8601 time"),
    (b"timestamp,value\n2026-01-01T00:00:00Z,1,2\n", "3 fields of 2"),
])
def test_a_time_series_that_cannot_be_read_is_named(local, data, reason):
    series = file_version_quality(local, [stored(local, "s.csv", TIME_SERIES_MEDIA_TYPE,
                                                 data)])["time_series"]
    assert reason in series["invalid_rows"]["listed"][0]["reason"]
    assert series["score"] == 0


def test_a_version_without_the_store_has_no_report_yet(session, owner, store, dataset):
    made = upload(session, owner, store, dataset, wav(1), "a.wav", "audio/wav")
    version = files.create_file_version(session, owner, dataset, [made.id])
    assert version.quality == {} and version.quality_grade == "-"


def test_a_time_series_is_counted_by_its_canonical_csv(session, owner, store, dataset):
    made = upload(session, owner, store, dataset, SERIES, "series/feeder.csv",
                  TIME_SERIES_MEDIA_TYPE)
    assert made.token_profile == "time-series-csv/o200k_base"
    assert made.basis == {"rows": 8, "characters": len(SERIES.decode())}
    files.create_file_version(session, owner, dataset, [made.id], store=store)
    session.commit()
    assert session.scalar(select(DatasetVersion.token_count)) == made.tokens > 0


@pytest.mark.parametrize("media_type, data, reason", [
    ("audio/wav", b"RIFF but not really a recording" * 4, "corrupt"),
    ("audio/wav", b"", "corrupt"),
    ("video/mp4", wav(1), "no_video_stream"),
])
def test_a_recording_that_does_not_decode_is_named(local, media_type, data, reason):
    kind = media_type.split("/")[0]
    section = file_version_quality(local, [stored(local, "r", media_type, data)])[kind]
    assert [(f["path"], f["reason"]) for f in section["undecodable"]["listed"]] == [("r", reason)]
    assert section["score"] == 0
