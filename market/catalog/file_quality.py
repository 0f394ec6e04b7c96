"""The quality report of a version of files: every file read back from the store and checked.

``file_version_quality(store, files)`` reads each file of a version (anything with ``path``,
``media_type``, ``size``, ``sha256`` and ``object_key``: a ``VersionFile``, or a completed
``Upload`` seen as one) from a temporary copy of its object, and returns a JSON-serializable
report in the shape of the records' report (``market.catalog.quality``): sections with a
``score`` 0–100, and an ``overall`` score, grade, formula and weights. No floats: counts are
ints, rates strings of 4 decimals rounded half up, every score computed from the rates as
printed. Each finding names the file (its ``path``); a section lists at most
``MAX_FINDINGS`` findings of each kind and counts them all.

A file is checked by the modality of its declared media type: ``image/*``, ``audio/*``,
``video/*`` and ``TIME_SERIES_MEDIA_TYPE`` (``market.catalog.timeseries``); every file is also
checked for its media type.

1. ``media_type``, every file: the content is sniffed from its first 8,192 bytes by the
   ``filetype`` library (magic numbers; PNG, JPEG, GIF, WebP, TIFF, WAV, FLAC, MP3, Ogg, MP4,
   Matroska/WebM, …). Types are compared after folding aliases (``image/jpg`` is
   ``image/jpeg``, ``audio/x-wav`` and ``audio/wave`` are ``audio/wav``, audio and video of one
   container, such as ``audio/mp4`` and ``video/mp4``, are one). A file *matches* when the
   sniffed type is the declared one and, when the path's extension names a type (Python's
   built-in ``mimetypes`` table, not the system's), that one too. A file of which nothing is
   sniffed matches when it is text (UTF-8, no NUL byte) and declared as text (``text/*``,
   ``application/json``, a ``+json``, ``+xml`` or ``+csv`` type); it mismatches when it is
   declared as a type the sniffer knows, or as text while it is not; otherwise (e.g.
   ``application/octet-stream``) it is *unchecked*. M = matching / checked;
   **score = round(100 × M)**; not assessed when no file could be checked.
2. ``images``: each image is opened by Pillow and decoded whole (its first frame): a file
   Pillow cannot identify, or whose pixel data is cut short or corrupt, is *undecodable*; an
   image above ``limits.max_pixels`` is not decoded and counts as undecodable (it cannot be
   used as is). Reported: width and height (min, max), the distinct sizes (the 10 most
   frequent), and the longest sides in bands (≤ 256, ≤ 512, ≤ 1024, ≤ 2048, ≤ 4096, more).
   *Exact duplicates*: files whose SHA-256 is that of an earlier file of the section (in
   manifest order). *Perceptual duplicates*: decoded images, not exact duplicates, whose
   64-bit pHash (``imagehash.phash``: 32×32 greyscale, DCT, 8×8 low frequencies against their
   median) is within ``PHASH_DISTANCE`` = 8 bits (Hamming distance) of an earlier image's; the
   candidates are found by splitting the hash in 9 bands (pigeonhole: two hashes within 8 bits
   agree on at least one band), so the work grows with the images, not their square.
   D = decodable / images, E = exact duplicates / images, P = perceptual duplicates / images;
   **score = round(100 × D × (1 − E) × (1 − P))**.
3. ``audio`` and ``video``: each file's first stream of its kind is demuxed and decoded by
   PyAV (FFmpeg), up to ``limits.max_decode_seconds`` of audio or ``limits.max_video_frames``
   frames (the rest is not decoded; the finding ``capped`` says so). A file is *undecodable*
   when FFmpeg cannot open it, it has no such stream, or a packet fails to decode; it is
   *truncated* when its decoded length falls short of the length it declares: a RIFF file
   (WAV, AVI) shorter than its RIFF header's size, or, decoded to its end, audio more than 1 %
   and 50 ms shorter than its stream's recorded duration, or video with fewer frames than its
   stream records. Reported: duration (total, min, max in microseconds), sample rates and
   channels (audio), frame sizes and frame rates (video). Exact duplicates as for images.
   D = decoded whole (neither undecodable nor truncated) / files, E as above;
   **score = round(100 × D × (1 − E))**.
4. ``time_series`` (the CSV of ``market.catalog.timeseries``): a data row is *valid* when it
   has the header's number of fields, an ISO 8601 time first and numbers (or nothing) after;
   a file that cannot be read as CSV, has no header of two columns or more, or no data row,
   counts as one invalid row. Between consecutive valid rows an interval is *backwards* when
   the time does not increase (a repeated time is backwards too: a series is strictly
   increasing); among the increasing intervals, a *gap* is one longer than twice the file's
   median increasing interval. At most ``limits.max_time_series_rows`` rows of a file are
   read. V = valid rows / rows, O = increasing intervals / intervals, G = gaps / increasing
   intervals; **score = round(100 × V × O × (1 − G))** (O = 1 and G = 0 with no interval).
   Missing readings are counted, not scored.
5. ``overall``: **score = round(Σ wᵢ × scoreᵢ / Σ wᵢ)** over the assessed sections, each
   weighing its number of files (``media_type`` the files it checked); grade A ≥ 90, B ≥ 75,
   C ≥ 60, D otherwise. A version of no assessable file scores 0.

Work per file is bounded: one temporary copy of the object (the checks need a seekable file),
the sniffer's 8 KiB, one decoded image frame of at most ``max_pixels``, at most
``max_decode_seconds`` of audio or ``max_video_frames`` frames, at most
``max_time_series_rows`` rows (their intervals and lines kept, 16 bytes a row, for the
median).
"""

from __future__ import annotations

import mimetypes
import shutil
import struct
import tempfile
import warnings
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, BinaryIO, Protocol

import av
import filetype
import imagehash
from PIL import Image, UnidentifiedImageError

from market.catalog.media import UnreadableMedia
from market.catalog.profile import rate
from market.catalog.quality import grade
from market.catalog.models import DatasetVersion
from market.catalog.timeseries import (
    TIME_SERIES_MEDIA_TYPE, is_reading, parse_time, rows, utf8_text,
)
from market.core.objects import CHUNK_SIZE, ObjectStore

VERSION = "file-quality-report/1"
SNIFF_BYTES = 8192
PHASH_DISTANCE = 8
PHASH_BANDS = ((0, 7), (7, 14), (14, 21), (21, 28), (28, 35), (35, 42), (42, 49), (49, 56),
               (56, 64))
MAX_FINDINGS = 20
SIZE_BANDS = (256, 512, 1024, 2048, 4096)
AUDIO_SHORTFALL = (Fraction(1, 100), 50_000)  # 1 % of the duration, and 50 ms
GAP_FACTOR = 2
SECTIONS = ("media_type", "images", "audio", "video", "time_series")

# Names of one format, folded to one: the sniffer's, the registry's and the common aliases.
_ALIASES = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp", "image/x-bmp": "image/bmp",
    "image/x-icon": "image/vnd.microsoft.icon", "image/jxr": "image/vnd.ms-photo",
    "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
    "audio/x-flac": "audio/flac", "audio/x-aiff": "audio/aiff", "audio/mp3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg", "audio/x-m4a": "video/mp4", "audio/mp4": "video/mp4",
    "video/x-m4v": "video/mp4", "audio/ogg": "application/ogg", "video/ogg": "application/ogg",
    "audio/webm": "video/webm", "video/x-matroska": "video/matroska",
    "audio/x-matroska": "video/matroska", "video/avi": "video/x-msvideo",
}
_TEXT_TYPES = ("application/json", "application/x-ndjson", "application/jsonl",
               "application/xml", "application/yaml", "application/csv",
               TIME_SERIES_MEDIA_TYPE)
_BUILTIN_TYPES = mimetypes.MimeTypes()  # Python's own table: the same on every machine


@dataclass(frozen=True)
class QualityLimits:
    """How much of each file the report decodes."""

    max_pixels: int = Image.MAX_IMAGE_PIXELS
    max_decode_seconds: int = 600
    max_video_frames: int = 300
    max_time_series_rows: int = 1_000_000


class StoredFile(Protocol):
    path: str
    media_type: str
    size: int
    sha256: str
    object_key: str


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), ROUND_HALF_UP))


def canonical_type(media_type: str | None) -> str | None:
    """A media type folded to the one name of its format."""
    if media_type is None:
        return None
    lowered = media_type.lower()
    return _ALIASES.get(lowered, lowered)


# The types the sniffer recognizes (a generic binary type is no claim about the content).
_KNOWN = frozenset(canonical_type(kind.mime) for kind in filetype.types) \
    - {"application/octet-stream"}


def _textual(media_type: str) -> bool:
    top, _, sub = media_type.partition("/")
    return top == "text" or media_type in _TEXT_TYPES or sub.endswith(("+json", "+xml", "+csv"))


def _modality(media_type: str) -> str | None:
    if media_type == TIME_SERIES_MEDIA_TYPE:
        return "time_series"
    return {"image": "images", "audio": "audio", "video": "video"}.get(
        media_type.split("/", 1)[0])


class _Findings:
    """Findings of one kind: the first ``MAX_FINDINGS`` listed, all counted."""

    def __init__(self) -> None:
        self.count = 0
        self.listed: list[dict[str, Any]] = []

    def add(self, **finding: Any) -> None:
        self.count += 1
        if len(self.listed) < MAX_FINDINGS:
            self.listed.append(finding)

    def report(self) -> dict[str, Any]:
        return {"count": self.count, "listed": self.listed}


# 1. Media type ----------------------------------------------------------------------------------

class _MediaTypeCheck:
    def __init__(self) -> None:
        self.files = self.checked = self.matching = 0
        self.mismatched = _Findings()
        self.unchecked = _Findings()

    def add(self, item: StoredFile, head: bytes) -> None:
        self.files += 1
        declared = canonical_type(item.media_type)
        kind = filetype.guess(head) if head else None
        sniffed = canonical_type(kind.mime) if kind is not None else None
        named = canonical_type(_BUILTIN_TYPES.guess_type(item.path, strict=False)[0])
        if sniffed is not None:
            if sniffed != declared:
                reason = "content_is_another_type"
            elif named is not None and named != sniffed and not _textual(named):
                reason = "name_is_another_type"
            else:
                reason = None
        elif _textual(declared):
            reason = None if utf8_text(head) else "not_text"
        elif declared in _KNOWN:
            reason = "content_not_recognized"
        else:
            self.unchecked.add(path=item.path, declared=item.media_type)
            return
        self.checked += 1
        if reason is None:
            self.matching += 1
        else:
            self.mismatched.add(path=item.path, declared=item.media_type, detected=sniffed,
                                by_name=named, reason=reason)

    def report(self) -> dict[str, Any]:
        section: dict[str, Any] = {
            "files": self.files, "checked": self.checked, "matching": self.matching,
            "mismatched": self.mismatched.report(), "unchecked": self.unchecked.report(),
            "sniffer": f"filetype {filetype.__version__}, first {SNIFF_BYTES} bytes"}
        if not self.checked:
            return section | {"status": "not_assessed"}
        match = rate(self.matching, self.checked)
        return section | {"match_rate": match, "score": _round(100 * Decimal(match)),
                          "weight": self.checked}


# 2–4. Modalities --------------------------------------------------------------------------------

@dataclass
class _Section:
    """What every modality section keeps: its files and their exact duplicates."""

    files: int = 0
    sha256s: dict[str, str] = field(default_factory=dict)
    exact: _Findings = field(default_factory=_Findings)

    def first_seen(self, item: StoredFile) -> bool:
        earlier = self.sha256s.get(item.sha256)
        self.files += 1
        if earlier is not None:
            self.exact.add(path=item.path, duplicate_of=earlier, sha256=item.sha256)
            return False
        self.sha256s[item.sha256] = item.path
        return True


def _side_band(side: int) -> str:
    for band in SIZE_BANDS:
        if side <= band:
            return f"<={band}"
    return f">{SIZE_BANDS[-1]}"


class _ImageCheck(_Section):
    def __init__(self, limits: QualityLimits) -> None:
        super().__init__()
        self.limits = limits
        self.decodable = 0
        self.undecodable = _Findings()
        self.perceptual = _Findings()
        self.sizes: Counter[str] = Counter()
        self.bands: Counter[str] = Counter()
        self.widths: list[int] = []
        self.heights: list[int] = []
        self.hashes: list[tuple[str, int]] = []
        self.buckets: list[dict[int, list[int]]] = [{} for _ in PHASH_BANDS]

    def add(self, item: StoredFile, copy: BinaryIO) -> None:
        fresh = self.first_seen(item)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(copy) as image:
                    width, height = image.size
                    if width * height > self.limits.max_pixels:
                        self.undecodable.add(path=item.path, reason="too_many_pixels",
                                             detail=f"{width}x{height}")
                        return
                    image.load()
                    digest = int(str(imagehash.phash(image)), 16)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            self.undecodable.add(path=item.path, reason="too_many_pixels", detail="")
            return
        except UnidentifiedImageError:
            self.undecodable.add(path=item.path, reason="not_an_image", detail="")
            return
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            self.undecodable.add(path=item.path, reason="corrupt", detail=str(exc)[:200])
            return
        self.decodable += 1
        self.widths.append(width)
        self.heights.append(height)
        self.sizes[f"{width}x{height}"] += 1
        self.bands[_side_band(max(width, height))] += 1
        if fresh:
            self._perceptual(item.path, digest)

    def _perceptual(self, path: str, digest: int) -> None:
        keys = [(digest >> start) & ((1 << (end - start)) - 1) for start, end in PHASH_BANDS]
        best: tuple[int, int] | None = None
        for band, key in enumerate(keys):
            for index in self.buckets[band].get(key, ()):
                distance = (digest ^ self.hashes[index][1]).bit_count()
                if distance <= PHASH_DISTANCE and (best is None or (distance, index) < best):
                    best = (distance, index)
        if best is not None:
            self.perceptual.add(path=path, duplicate_of=self.hashes[best[1]][0],
                                distance=best[0])
        index = len(self.hashes)
        self.hashes.append((path, digest))
        for band, key in enumerate(keys):
            self.buckets[band].setdefault(key, []).append(index)

    def report(self) -> dict[str, Any]:
        images = self.files
        decodable = rate(self.decodable, images)
        exact = rate(self.exact.count, images)
        near = rate(self.perceptual.count, images)
        score = _round(100 * Decimal(decodable) * (1 - Decimal(exact)) * (1 - Decimal(near)))
        return {
            "files": images, "decodable": self.decodable, "decodable_rate": decodable,
            "undecodable": self.undecodable.report(),
            "dimensions": {
                "width": {"min": min(self.widths, default=None),
                          "max": max(self.widths, default=None)},
                "height": {"min": min(self.heights, default=None),
                           "max": max(self.heights, default=None)},
                "sizes": dict(sorted(self.sizes.items(), key=lambda s: (-s[1], s[0]))[:10]),
                "distinct_sizes": len(self.sizes),
                "longest_side": {band: self.bands[band] for band in
                                 [f"<={b}" for b in SIZE_BANDS] + [f">{SIZE_BANDS[-1]}"]
                                 if self.bands[band]},
            },
            "exact_duplicates": self.exact.report(), "exact_duplicate_rate": exact,
            "perceptual_duplicates": self.perceptual.report(), "perceptual_duplicate_rate": near,
            "perceptual_hash": f"imagehash {imagehash.__version__} phash, 64 bits, "
                               f"distance <= {PHASH_DISTANCE}",
            "score": score, "weight": images,
        }


def _riff_shortfall(head: bytes, size: int) -> str | None:
    """The truncation a RIFF header (WAV, AVI) shows: fewer bytes than it declares."""
    if len(head) >= 12 and head[:4] == b"RIFF":
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if size < declared:
            return f"the RIFF header declares {declared} bytes; the file has {size}"
    return None


class _RecordingCheck(_Section):
    def __init__(self, kind: str, limits: QualityLimits) -> None:
        super().__init__()
        self.kind = kind
        self.limits = limits
        self.whole = 0
        self.undecodable = _Findings()
        self.truncated = _Findings()
        self.capped = _Findings()
        self.durations: list[int] = []
        self.rates: Counter[str] = Counter()
        self.channels: Counter[str] = Counter()
        self.frame_sizes: Counter[str] = Counter()

    def add(self, item: StoredFile, copy: BinaryIO, head: bytes) -> None:
        self.first_seen(item)
        try:
            with av.open(copy, mode="r") as container:
                streams = container.streams.audio if self.kind == "audio" \
                    else container.streams.video
                if not streams:
                    self.undecodable.add(path=item.path, reason=f"no_{self.kind}_stream",
                                         detail="")
                    return
                stream = streams[0]
                shortfall = (self._audio(item, container, stream) if self.kind == "audio"
                             else self._video(item, container, stream))
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.undecodable.add(path=item.path, reason="corrupt", detail=str(exc)[:200])
            return
        shortfall = _riff_shortfall(head, item.size) or shortfall
        if shortfall is not None:
            self.truncated.add(path=item.path, detail=shortfall)
        else:
            self.whole += 1

    def _recorded(self, container, stream) -> int | None:
        if stream.duration is not None and stream.time_base is not None:
            return int(stream.duration * Fraction(stream.time_base) * 1_000_000)
        if container.duration is not None:
            return int(Fraction(container.duration, av.time_base) * 1_000_000)
        return None

    def _audio(self, item: StoredFile, container, stream) -> str | None:
        context = stream.codec_context
        sample_rate = context.sample_rate or 0
        limit = self.limits.max_decode_seconds * sample_rate
        samples = 0
        for frame in container.decode(stream):
            samples += frame.samples
            if samples >= limit:
                self.capped.add(path=item.path,
                                detail=f"decoded the first {self.limits.max_decode_seconds} s")
                break
        if sample_rate < 1:
            raise ValueError("the audio stream has no sample rate")
        decoded = samples * 1_000_000 // sample_rate
        self.durations.append(decoded)
        self.rates[str(sample_rate)] += 1
        self.channels[str(context.channels or 0)] += 1
        recorded = self._recorded(container, stream)
        relative, absolute = AUDIO_SHORTFALL
        if samples < limit and recorded and recorded - decoded > max(recorded * relative,
                                                                     absolute):
            return f"decoded {decoded} µs of the {recorded} µs the stream records"
        return None

    def _video(self, item: StoredFile, container, stream) -> str | None:
        context = stream.codec_context
        frames = 0
        last = None
        for frame in container.decode(stream):
            frames += 1
            last = frame
            if frames >= self.limits.max_video_frames:
                self.capped.add(path=item.path,
                                detail=f"decoded the first {self.limits.max_video_frames} frames")
                break
        if last is None:
            raise ValueError("no frame decodes")
        recorded = self._recorded(container, stream)
        if recorded:
            self.durations.append(recorded)
        self.frame_sizes[f"{context.width}x{context.height}"] += 1
        average = stream.average_rate
        self.rates[str(Fraction(average)) if average else "unknown"] += 1
        if frames < self.limits.max_video_frames and stream.frames and frames < stream.frames:
            return f"decoded {frames} of the {stream.frames} frames the stream records"
        return None

    def report(self) -> dict[str, Any]:
        files = self.files
        whole = rate(self.whole, files)
        exact = rate(self.exact.count, files)
        section: dict[str, Any] = {
            "files": files, "decoded_whole": self.whole, "decoded_whole_rate": whole,
            "undecodable": self.undecodable.report(), "truncated": self.truncated.report(),
            "capped": self.capped.report(),
            "duration_microseconds": {"total": sum(self.durations),
                                      "min": min(self.durations, default=None),
                                      "max": max(self.durations, default=None)},
        }
        if self.kind == "audio":
            section |= {"sample_rates": dict(sorted(self.rates.items())),
                        "channels": dict(sorted(self.channels.items()))}
        else:
            section |= {"frame_sizes": dict(sorted(self.frame_sizes.items())),
                        "frame_rates": dict(sorted(self.rates.items()))}
        return section | {
            "exact_duplicates": self.exact.report(), "exact_duplicate_rate": exact,
            "score": _round(100 * Decimal(whole) * (1 - Decimal(exact))), "weight": files}


class _TimeSeriesCheck(_Section):
    def __init__(self, limits: QualityLimits) -> None:
        super().__init__()
        self.limits = limits
        self.rows = self.valid = self.intervals = self.increasing = 0
        self.missing = self.readings = 0
        self.invalid = _Findings()
        self.backwards = _Findings()
        self.gaps = _Findings()
        self.capped = _Findings()

    def add(self, item: StoredFile, copy: BinaryIO) -> None:
        self.first_seen(item)
        steps = array("q")  # increasing intervals in microseconds, for the median
        step_lines = array("q")  # the line each ends on
        data_rows = 0
        try:
            read = rows(copy, item.path)
            header = next(read, None)
            if header is None or len(header[1]) < 2:
                self._bad_file(item, header[0] if header else 1, "no header of two columns")
                return
            columns = len(header[1])
            previous = None
            for line, row in read:
                if data_rows >= self.limits.max_time_series_rows:
                    self.capped.add(path=item.path, detail=f"read the first "
                                    f"{self.limits.max_time_series_rows} rows")
                    break
                data_rows += 1
                self.rows += 1
                moment = parse_time(row[0]) if len(row) == columns else None
                if moment is None or not all(is_reading(value) for value in row[1:]):
                    self.invalid.add(path=item.path, line=line, reason=(
                        f"{len(row)} fields of {columns}" if len(row) != columns
                        else "not an ISO 8601 time" if moment is None else "not a number"))
                    continue
                self.valid += 1
                self.readings += columns - 1
                self.missing += sum(1 for value in row[1:] if not value.strip())
                if previous is not None:
                    self.intervals += 1
                    step = (moment - previous[1]) // timedelta(microseconds=1)
                    if step <= 0:
                        self.backwards.add(path=item.path, line=line, time=row[0].strip(),
                                           after=previous[2])
                    else:
                        self.increasing += 1
                        steps.append(step)
                        step_lines.append(line)
                previous = (line, moment, row[0].strip())
        except UnreadableMedia as exc:
            self._bad_file(item, 0, exc.detail)
            return
        if not data_rows:
            self._bad_file(item, 1, "no data row")
            return
        if steps:
            ordered = sorted(steps)
            median = ordered[(len(ordered) - 1) // 2]
            limit = GAP_FACTOR * median
            for step, line in zip(steps, step_lines):
                if step > limit:
                    self.gaps.add(path=item.path, line=line, microseconds=step,
                                  median_microseconds=median)

    def _bad_file(self, item: StoredFile, line: int, reason: str) -> None:
        self.rows += 1
        self.invalid.add(path=item.path, line=line, reason=reason)

    def report(self) -> dict[str, Any]:
        valid = rate(self.valid, self.rows)
        ordered = rate(self.increasing, self.intervals) if self.intervals else rate(1, 1)
        gaps = rate(self.gaps.count, self.increasing)
        score = _round(100 * Decimal(valid) * Decimal(ordered) * (1 - Decimal(gaps)))
        return {
            "files": self.files, "rows": self.rows, "valid_rows": self.valid,
            "valid_rate": valid, "invalid_rows": self.invalid.report(),
            "intervals": self.intervals, "increasing_intervals": self.increasing,
            "increasing_rate": ordered, "backwards": self.backwards.report(),
            "gap_rule": f"an increasing interval longer than {GAP_FACTOR} x the file's median",
            "gaps": self.gaps.report(), "gap_rate": gaps,
            "readings": self.readings, "missing_readings": self.missing,
            "missing_rate": rate(self.missing, self.readings),
            "capped": self.capped.report(),
            "exact_duplicates": self.exact.report(),
            "score": score, "weight": self.files,
        }


# The report -------------------------------------------------------------------------------------

def file_version_quality(store: ObjectStore, files: Iterable[StoredFile],
                         limits: QualityLimits = QualityLimits()) -> dict[str, Any]:
    """The quality report of a version's files, each read from ``store`` (see the module
    docstring for every check, threshold and score)."""
    media = _MediaTypeCheck()
    checks: dict[str, Any] = {"images": _ImageCheck(limits),
                              "audio": _RecordingCheck("audio", limits),
                              "video": _RecordingCheck("video", limits),
                              "time_series": _TimeSeriesCheck(limits)}
    count = 0
    for item in files:
        count += 1
        modality = _modality(item.media_type.lower())
        with tempfile.TemporaryFile() as copy:
            with store.open(item.object_key) as source:
                shutil.copyfileobj(source, copy, CHUNK_SIZE)
            copy.seek(0)
            head = copy.read(SNIFF_BYTES)
            media.add(item, head)
            copy.seek(0)
            if modality == "images":
                checks["images"].add(item, copy)
            elif modality in ("audio", "video"):
                checks[modality].add(item, copy, head)
            elif modality == "time_series":
                checks["time_series"].add(item, copy)
    sections = {"media_type": media.report()} | {
        name: check.report() for name, check in checks.items() if check.files}
    return {"version": VERSION, "files": count, **sections,
            "overall": _overall(sections)}


def _overall(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    weights = {name: section["weight"] for name, section in sections.items()
               if "score" in section}
    total = sum(weights.values())
    if total:
        score = _round(sum(Decimal(weights[name] * sections[name]["score"]) for name in weights)
                       / Decimal(total))
    else:
        score = 0
    terms = " + ".join(f"{weights[name]} x {sections[name]['score']} ({name})"
                       for name in weights) or "0"
    formula = (f"({terms}) / {total}, rounded half up = {score}; grade A >= 90, B >= 75, "
               "C >= 60, else D") if total else "no file could be assessed"
    return {"score": score, "grade": grade(score), "formula": formula, "weights": weights,
            "version": VERSION}


def record_report(version: DatasetVersion, report: dict[str, Any]) -> None:
    """Keep a version's report and its overall score and grade on the version."""
    version.quality = report
    version.quality_score = report["overall"]["score"]
    version.quality_grade = report["overall"]["grade"]

