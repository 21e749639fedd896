"""Reading images and videos into RGB uint8 frames, one frame at a time, and writing MP4s with audio (PyAV)."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from .errors import InputImageError
from .images import to_rgb_uint8

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself before decoding."""

    width: int
    height: int
    fps: float
    num_frames: int | None  # None when the container does not say
    has_audio: bool
    rate: Fraction | None = None  # the exact frame rate (``fps`` is its float)


def probe_video(path: VideoSource) -> VideoInfo:
    """Size, frame rate, frame count and audio presence of a video file."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate),
            num_frames=stream.frames or None,
            has_audio=bool(container.streams.audio),
            rate=Fraction(rate),
        )


def iter_video_frames(path: VideoSource, max_frames: int | None = None) -> Iterator[np.ndarray | None]:
    """Yield each frame of the first video stream as (H, W, 3) RGB uint8, decoding lazily.

    A packet the decoder refuses is skipped and counted, and the frames it held are yielded as ``None`` where the
    timestamps of the frames around it show the gap (one item per frame of the video, as far as they allow), so
    landmark extraction marks them like faceless frames; one warning names the frame range afterwards. A file with
    no decodable frame at all is one ``InputImageError``.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        count, skipped, lost = 0, 0, []  # items yielded, packets refused, (first, last) frame ranges not decoded
        start = None
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                skipped += 1
                continue
            for frame in frames:
                if frame.time is not None:
                    start = frame.time if start is None else start
                    position = round((frame.time - start) * rate)
                    if position > count:  # frames that never came out of the decoder
                        lost.append((count, position - 1))
                        for _ in range(position - count):
                            if max_frames is not None and count >= max_frames:
                                return
                            count += 1
                            yield None
                if max_frames is not None and count >= max_frames:
                    return
                count += 1
                yield frame.to_ndarray(format="rgb24")
        expected = stream.frames if max_frames is None else min(stream.frames, max_frames)
        if 0 < count < expected:  # the container knows how many there are: the damaged tail too
            lost.append((count, expected - 1))
            for _ in range(expected - count):
                count += 1
                yield None
        if count == sum(b - a + 1 for a, b in lost):  # nothing decoded
            raise InputImageError(f"{_name(path)}: no frame of its video could be decoded "
                                  f"({skipped} damaged packet{'s' * (skipped != 1)}); is it a video file?")
        if skipped or lost:
            ranges = ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in lost) or "none of them lost"
            logger.warning("%s: %d damaged packet(s) skipped; frames %s could not be decoded and are filled from "
                           "their neighbours", _name(path), skipped, ranges)


def read_audio(path: VideoSource) -> tuple[np.ndarray, int] | None:
    """The first audio stream as (channels, samples) float32 and its sample rate, or None without one."""
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout.name,
                                      rate=stream.codec_context.sample_rate)
        chunks = []
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged audio packet: a short gap
            chunks += [out.to_ndarray() for frame in frames for out in resampler.resample(frame)]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
    if not chunks:
        return None
    return np.concatenate(chunks, axis=1).astype(np.float32), int(stream.codec_context.sample_rate)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) RGB uint8, EXIF rotation applied, converted by ``images.to_rgb_uint8``."""
    try:
        with Image.open(path) as image:
            return to_rgb_uint8(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise InputImageError(f"Image file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise InputImageError(f"Cannot read image {path}: {exc}") from None


VideoSource = str | os.PathLike | io.IOBase  # a path, or an open binary file (ComfyUI's VIDEO may hold a BytesIO)


def _open(path: VideoSource):
    if isinstance(path, io.IOBase):
        path.seek(0)
    elif not Path(path).is_file():
        raise InputImageError(f"Video file not found: {path}")
    try:
        return av.open(path if isinstance(path, io.IOBase) else str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputImageError(f"Cannot read video {_name(path)}: {exc}") from None


def _name(path: VideoSource) -> str:
    return "the video" if isinstance(path, io.IOBase) else str(path)


def _video_stream(container, path):
    if not container.streams.video:
        raise InputImageError(f"{_name(path)} has no video stream")
    return container.streams.video[0]


# ---- writing ------------------------------------------------------------------------------------------------------


def _frame_rate(fps: float | Fraction) -> Fraction:
    """The exact rate: a Fraction as is, a float as its nearest simple fraction (29.97002997 → 30000/1001)."""
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1_000_000)
    if not rate > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 4:2:0 needs even sizes: an odd height or width gets one more row or column, copied from the edge."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def _as_frames(item) -> np.ndarray:
    """(n, H, W, 3) uint8 from one frame (H, W, 3) or a chunk (n, H, W, 3)."""
    array = np.asarray(item)
    array = array[None] if array.ndim == 3 else array
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) or (n, H, W, 3) uint8, got {array.shape} {array.dtype}")
    return array


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio_from: str | os.PathLike | None = None,
    *,
    crf: int = 17,
    preset: str = "medium",
) -> int:
    """Encode frames to an H.264 MP4 (libx264, yuv420p), consuming ``frames`` lazily; returns the frame count.

    ``frames``: an iterable of (H, W, 3) uint8 frames or (n, H, W, 3) chunks (``sampling.animate.decode`` yields
    chunks). Every frame is written once at ``fps`` (give the source's exact Fraction to keep 30000/1001 exact), so
    the file has exactly that many frames at that rate. Odd sizes get one edge row/column (4:2:0 needs even sizes).
    ``audio_from``: a media file whose first audio stream is re-encoded to AAC and cut at the video's duration
    (frames / fps); a file without audio adds none. ``crf``/``preset``: libx264 quality and speed.
    """
    rate = _frame_rate(fps)
    chunks = (_as_frames(item) for item in frames)
    first = next(chunks, None)
    if first is None or len(first) == 0:
        raise ValueError("no frames to write")
    height, width = first.shape[1:3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        container = stack.enter_context(av.open(str(path), "w"))
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        stream.height, stream.width = height + height % 2, width + width % 2
        stream.pix_fmt = "yuv420p"
        if (height, width) != (stream.height, stream.width):
            logger.info("odd frame size %d×%d: padded to %d×%d for H.264", width, height, stream.width, stream.height)
        audio = _audio_source(stack, container, audio_from)  # streams are added before anything is written
        count = 0
        for chunk in itertools.chain([first], chunks):
            if chunk.shape[1:3] != (height, width):
                raise ValueError(f"frame {count} is {chunk.shape[2]}×{chunk.shape[1]}, the first was {width}×{height}")
            for frame in chunk:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(_even(frame), format="rgb24")))
                count += 1
        container.mux(stream.encode())
        if audio is not None:
            _copy_audio(container, *audio, count / rate)
    return count


def _audio_source(stack: contextlib.ExitStack, container, source: str | os.PathLike | None):
    """(input audio stream, output AAC stream) for ``source``'s first audio stream, or None without one."""
    if source is None:
        return None
    inp = stack.enter_context(_open(source))
    if not inp.streams.audio:
        logger.info("%s has no audio: the video is silent", source)
        return None
    audio = inp.streams.audio[0]
    out = container.add_stream("aac", rate=audio.codec_context.sample_rate, layout=audio.codec_context.layout.name)
    return inp, audio, out


def _copy_audio(container, inp, audio, out, seconds: Fraction) -> None:
    """Re-encode ``audio`` into ``out`` from its start, cut after ``seconds``."""
    left = int(seconds * audio.codec_context.sample_rate)  # samples still wanted
    for frame in inp.decode(audio):
        if left <= 0:
            break
        if frame.samples > left:  # the last frame: keep its first `left` samples
            planes = frame.to_ndarray()
            planes = planes[:, :left] if frame.format.is_planar else planes[:, : left * len(frame.layout.channels)]
            cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes), format=frame.format.name,
                                             layout=frame.layout.name)
            cut.sample_rate, frame = frame.sample_rate, cut
        left -= frame.samples
        frame.pts = None  # the encoder numbers the samples from 0: the audio starts with the video
        container.mux(out.encode(frame))
    container.mux(out.encode())
