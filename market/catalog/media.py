"""Measuring a dataset's files: the facts the token profiles (``pricing.token_profiles``) count.

An image is measured by its width and height as Pillow reads them from the file's header: the
pixels are not decoded, so measuring a 50-megapixel photograph reads a few kilobytes. Pillow
refuses an image whose header claims more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` (a
decompression bomb: a small file that would decode to gigabytes); this module refuses any
image above ``max_pixels`` (by default ``Image.MAX_IMAGE_PIXELS``, about 89 megapixels), before
anything decodes it. The first frame of an animation or a multi-page file is what is measured;
an EXIF rotation is not applied, since every image profile counts a width×height image and its
height×width transpose alike.

A recording is measured by its duration as PyAV (FFmpeg) reads it, in whole microseconds
rounded up: the stream's own duration when the container records one (in the stream's time
base, so exact), else the container's, else the end of its last packet, found by reading
packets without decoding them. A video's width and height and an audio stream's sample rate and
channels come with it, for the quality report.

Whether every pixel or sample decodes is the quality report's question, not this module's: a
file whose header is intact but whose data is cut short is measured by its header. A file that
is not an image or a recording at all, or that has no stream of the kind asked for, raises
``UnreadableMedia`` naming ``field`` (the file's path in a manifest, or ``file``).

Every measurement also records the file's size in bytes, so a size-based profile
(``bytes-per-token/4``) counts any file. A source is a path or a binary file open for reading
and seeking, read from its start.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, ClassVar, Union

import av
from PIL import Image, UnidentifiedImageError

from market.core.errors import InvalidInput
from pricing.token_profiles import TokenCount, profile

__all__ = [
    "UnreadableMedia",
    "ImageTooLarge",
    "ImageFacts",
    "AudioFacts",
    "VideoFacts",
    "measure_image",
    "measure_audio",
    "measure_video",
    "count",
]

Source = Union[str, "os.PathLike[str]", BinaryIO]

MICROSECONDS = Fraction(1, 1_000_000)


class UnreadableMedia(InvalidInput):
    """The file is not an image or a recording this marketplace can measure."""

    default_code = "unreadable_media"


class ImageTooLarge(UnreadableMedia):
    """The image's header claims more pixels than the marketplace will measure."""

    default_code = "image_too_large"


@dataclass(frozen=True)
class ImageFacts:
    """An image as its header describes it: format (``PNG``), media type, width and height."""

    format: str
    media_type: str | None
    width: int
    height: int
    bytes: int
    modality: ClassVar[str] = "image"

    @property
    def facts(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height, "bytes": self.bytes}


@dataclass(frozen=True)
class AudioFacts:
    """An audio stream: container (``wav``), codec, duration, sample rate and channels."""

    container: str
    codec: str
    microseconds: int
    sample_rate: int
    channels: int
    bytes: int
    modality: ClassVar[str] = "audio"

    @property
    def facts(self) -> dict[str, int]:
        return {"microseconds": self.microseconds, "bytes": self.bytes}


@dataclass(frozen=True)
class VideoFacts:
    """A video stream: container, codec, duration, width, height and frames (when recorded)."""

    container: str
    codec: str
    microseconds: int
    width: int
    height: int
    frames: int | None
    bytes: int
    modality: ClassVar[str] = "video"

    @property
    def facts(self) -> dict[str, int]:
        return {"microseconds": self.microseconds, "width": self.width, "height": self.height,
                "bytes": self.bytes}


Measured = Union[ImageFacts, AudioFacts, VideoFacts]


def _size(source: Source) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.stat(source).st_size
    end = source.seek(0, os.SEEK_END)
    source.seek(0)
    return end


def measure_image(source: Source, *, max_pixels: int | None = None, field: str = "file") -> ImageFacts:
    """The format, width and height of an image, read from its header without decoding it.

    Rule: more than ``max_pixels`` (default ``PIL.Image.MAX_IMAGE_PIXELS``) is refused as
    ``ImageTooLarge``; anything Pillow cannot identify is ``UnreadableMedia``.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    size = _size(source)
    try:
        with Image.open(source) as image:
            width, height = image.size
            kind = image.format or ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own check, on a header claiming more than MAX_IMAGE_PIXELS (a warning,
        # unless warnings are errors) or twice that (an error): past our limit either way.
        raise ImageTooLarge(f"The image has more than {limit:,} pixels; it is not measured.",
                            field=field) from None
    except UnidentifiedImageError:
        raise UnreadableMedia("The file is not an image Pillow can read.", field=field) from None
    except OSError as exc:
        raise UnreadableMedia(f"The image cannot be read: {exc}.", field=field) from None
    if limit is not None and width * height > limit:
        raise ImageTooLarge(f"The image is {width}×{height}, more than {limit:,} pixels; "
                            "it is not measured.", field=field)
    if width < 1 or height < 1:
        raise UnreadableMedia(f"The image is {width}×{height}: it has no pixels.", field=field)
    return ImageFacts(kind, Image.MIME.get(kind), width, height, size)


def _microseconds(container: av.container.InputContainer, stream: av.stream.Stream) -> int:
    """The stream's duration in whole microseconds, rounded up (see the module docstring)."""
    if stream.duration is not None and stream.time_base is not None:
        exact = stream.duration * Fraction(stream.time_base)
    elif container.duration is not None:
        exact = container.duration * Fraction(1, av.time_base)
    else:
        end = start = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            start = packet.pts if start is None else min(start, packet.pts)
            end = max(end or 0, packet.pts + (packet.duration or 0))
        if end is None or stream.time_base is None:
            return 0
        exact = (end - start) * Fraction(stream.time_base)
    return math.ceil(exact / MICROSECONDS)


def _open(source: Source, field: str) -> av.container.InputContainer:
    try:
        return av.open(source, mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise UnreadableMedia(f"The file is not a recording FFmpeg can read ({exc}).",
                              field=field) from None


def _stream(streams, kind: str, field: str):
    if not streams:
        raise UnreadableMedia(f"The file has no {kind} stream.", field=field)
    return streams[0]


def _duration(container, stream, kind: str, field: str) -> int:
    try:
        microseconds = _microseconds(container, stream)
    except av.FFmpegError as exc:
        raise UnreadableMedia(f"The {kind} cannot be read ({exc}).", field=field) from None
    if microseconds < 1:
        raise UnreadableMedia(f"The {kind} has no duration.", field=field)
    return microseconds


def measure_audio(source: Source, *, field: str = "file") -> AudioFacts:
    """The duration, sample rate and channels of a file's first audio stream."""
    size = _size(source)
    with _open(source, field) as container:
        stream = _stream(container.streams.audio, "audio", field)
        microseconds = _duration(container, stream, "audio", field)
        context = stream.codec_context
        return AudioFacts(container.format.name, context.name, microseconds,
                          context.sample_rate or 0, context.channels or 0, size)


def measure_video(source: Source, *, field: str = "file") -> VideoFacts:
    """The duration, width, height and frame count of a file's first video stream."""
    size = _size(source)
    with _open(source, field) as container:
        stream = _stream(container.streams.video, "video", field)
        microseconds = _duration(container, stream, "video", field)
        context = stream.codec_context
        return VideoFacts(container.format.name, context.name, microseconds, context.width,
                          context.height, stream.frames or None, size)


def count(measured: Measured, profile_name: str) -> TokenCount:
    """Count a measured file's tokens by the profile called ``profile_name``.

    Rule: the profile counts the file's modality (an image profile an image) or its size
    (``bytes-per-token/4``, any file); any other is refused (field ``profile``).
    """
    rule = profile(profile_name)
    if rule.modality not in (measured.modality, "bytes"):
        raise InvalidInput(f"The profile {profile_name} counts {rule.modality}, not "
                           f"{measured.modality}.", field="profile", code="profile_modality")
    return rule.count(measured.facts)
