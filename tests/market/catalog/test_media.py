"""Measuring real files: images made with Pillow, a WAV made with ``wave``, a video encoded with
PyAV, all generated here; their measured facts and the token counts the profiles make of them.

The expected counts are worked out by hand from the published rules (see
tests/pricing/test_token_profiles.py for the rules themselves).
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import wave
import zlib
from pathlib import Path

import av
import pytest
from PIL import Image

from market.catalog.media import (
    ImageTooLarge,
    UnreadableMedia,
    count,
    measure_audio,
    measure_image,
    measure_video,
)
from market.core.errors import InvalidInput
from pricing.token_profiles import TokenCount


def make_image(path: Path, width: int, height: int, kind: str = "PNG") -> Path:
    Image.new("L", (width, height), color=128).save(path, kind)
    return path


def make_wav(path: Path, seconds_num: int, seconds_den: int = 1, *, rate: int = 8000,
             channels: int = 1) -> Path:
    frames = rate * seconds_num // seconds_den
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * channels * frames)
    return path


def make_video(path: Path, frames: int, fps: int, width: int = 64, height: int = 48) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 5 % 256]) * plane.buffer_size)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height (and whose one row of data is all there is)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size, kind, openai, gemini", [
    ((1024, 1024), "PNG", 765, 258 * 2 * 2),
    ((2048, 4096), "PNG", 1105, 258 * 3 * 6),
    ((384, 384), "PNG", 255, 258),
    ((385, 384), "JPEG", 255, 258),
    ((513, 384), "JPEG", 425, 258),
    ((1, 1), "PNG", 255, 258),
    ((10000, 100), "PNG", 765, 258 * 14),
    ((1500, 700), "JPEG", 1105, 258 * 2 * 1),
])
def test_an_image_is_measured_and_counted(tmp_path, size, kind, openai, gemini):
    path = make_image(tmp_path / f"image.{kind.lower()}", *size, kind)
    facts = measure_image(path)
    assert (facts.width, facts.height, facts.format) == (*size, kind)
    assert facts.media_type == {"PNG": "image/png", "JPEG": "image/jpeg"}[kind]
    assert facts.bytes == path.stat().st_size
    basis = {"width": size[0], "height": size[1]}
    assert count(facts, "openai-image-tiles/2024-11") == TokenCount("openai-image-tiles/2024-11", openai, basis)
    assert count(facts, "gemini-image-tiles/2025-01").tokens == gemini
    assert count(facts, "openai-image-low/2024-11").tokens == 85
    assert count(facts, "bytes-per-token/4").tokens == math.ceil(path.stat().st_size / 4)


def test_an_image_is_measured_from_an_open_file_too(tmp_path):
    data = make_image(tmp_path / "a.png", 800, 600).read_bytes()
    facts = measure_image(io.BytesIO(data))
    assert (facts.width, facts.height, facts.bytes) == (800, 600, len(data))


def test_measuring_reads_the_header_without_decoding(tmp_path):
    # The header claims 20000×1000; the data holds one row. Decoding would fail; measuring does not.
    path = tmp_path / "header.png"
    path.write_bytes(png_header_only(20000, 1000))
    facts = measure_image(path)
    assert (facts.width, facts.height) == (20000, 1000)
    assert count(facts, "gemini-image-tiles/2025-01").tokens == 258 * 27 * 2


@pytest.mark.parametrize("width, height", [(10000, 10000), (100000, 100000)])
@pytest.mark.parametrize("warning_filter", ["error", "ignore"])
def test_a_decompression_bomb_is_refused(tmp_path, width, height, warning_filter):
    # 10⁸ pixels passes Pillow's warning threshold, 10¹⁰ its error threshold: refused either way,
    # whether warnings are errors (as in this suite) or not.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter(warning_filter)
        with pytest.raises(ImageTooLarge) as caught:
            measure_image(path, field="images/bomb.png")
    assert caught.value.field == "images/bomb.png"
    assert caught.value.code == "image_too_large" and caught.value.status == 422


def test_the_project_limit_is_applied_below_pillows(tmp_path):
    path = make_image(tmp_path / "a.png", 100, 100)
    assert measure_image(path, max_pixels=10_000).width == 100
    with pytest.raises(ImageTooLarge):
        measure_image(path, max_pixels=9_999)


@pytest.mark.parametrize("data", [b"", b"not an image at all" * 10, b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_a_file_that_is_not_an_image_is_a_clear_error(tmp_path, data):
    path = tmp_path / "broken.png"
    path.write_bytes(data)
    with pytest.raises(UnreadableMedia) as caught:
        measure_image(path)
    assert caught.value.field == "file" and caught.value.code == "unreadable_media"
    assert "not an image" in caught.value.detail or "cannot be read" in caught.value.detail


@pytest.mark.parametrize("seconds, rate, channels, microseconds, tokens", [
    ((5, 2), 8000, 1, 2_500_000, 96),
    ((1, 1), 44100, 2, 1_000_000, 32),
    ((1, 100), 16000, 1, 10_000, 32),
    ((61, 1), 8000, 1, 61_000_000, 32 * 61),
])
def test_a_wav_is_measured_and_counted(tmp_path, seconds, rate, channels, microseconds, tokens):
    path = make_wav(tmp_path / "a.wav", *seconds, rate=rate, channels=channels)
    facts = measure_audio(path)
    assert (facts.microseconds, facts.sample_rate, facts.channels) == (microseconds, rate, channels)
    assert (facts.container, facts.codec, facts.bytes) == ("wav", "pcm_s16le", path.stat().st_size)
    assert count(facts, "gemini-audio/2025-01") == TokenCount(
        "gemini-audio/2025-01", tokens, {"microseconds": microseconds})


@pytest.mark.parametrize("frames, fps, microseconds, tokens", [
    (50, 25, 2_000_000, 526),
    (13, 10, 1_300_000, 526),
    (1, 25, 40_000, 263),
])
def test_a_video_is_measured_and_counted(tmp_path, frames, fps, microseconds, tokens):
    path = make_video(tmp_path / "a.mp4", frames, fps)
    facts = measure_video(path)
    assert (facts.microseconds, facts.width, facts.height, facts.frames) == (microseconds, 64, 48, frames)
    assert facts.codec == "mpeg4" and "mp4" in facts.container
    assert count(facts, "gemini-video/2025-01") == TokenCount(
        "gemini-video/2025-01", tokens, {"microseconds": microseconds})
    assert count(facts, "bytes-per-token/4").tokens == math.ceil(path.stat().st_size / 4)


def test_a_recording_is_measured_from_an_open_file_too(tmp_path):
    data = make_wav(tmp_path / "a.wav", 3).read_bytes()
    assert measure_audio(io.BytesIO(data)).microseconds == 3_000_000


def test_asking_for_a_stream_the_file_lacks_is_a_clear_error(tmp_path):
    video = make_video(tmp_path / "a.mp4", 5, 25)
    audio = make_wav(tmp_path / "a.wav", 1)
    with pytest.raises(UnreadableMedia, match="no audio stream"):
        measure_audio(video)
    with pytest.raises(UnreadableMedia, match="no video stream"):
        measure_video(audio)


def test_a_corrupt_recording_is_a_clear_error(tmp_path):
    whole = make_video(tmp_path / "a.mp4", 25, 25).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])  # the index (moov) is written last: cut off
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + b"\xff" * 200)
    for path, measure in ((cut, measure_video), (garbage, measure_audio), (cut, measure_audio)):
        with pytest.raises(UnreadableMedia) as caught:
            measure(path, field="clips/a.mp4")
        assert caught.value.field == "clips/a.mp4"
        assert "FFmpeg can read" in caught.value.detail


@pytest.mark.parametrize("name", ["gemini-audio/2025-01", "gemini-video/2025-01", "tiktoken/o200k_base"])
def test_an_image_is_not_counted_by_a_profile_of_another_modality(tmp_path, name):
    facts = measure_image(make_image(tmp_path / "a.png", 10, 10))
    with pytest.raises(InvalidInput) as caught:
        count(facts, name)
    assert caught.value.field == "profile" and caught.value.code == "profile_modality"
