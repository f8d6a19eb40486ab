"""Colorize a film: frames through the colorizer, a*b* smoothed over time
within each shot, the audio and the frame size and rate kept.

  python -m jaxcolor.colorize --workdir W --output out/ clip.mp4 [--temporal_smoothing 0.6]

Any container and codec FFmpeg reads (PyAV). Frames are decoded in one
thread, colorized in batches, and recombined and encoded in a third, so the
network waits neither on the decoder nor on the encoder when they keep up.
Each frame's own L* is
kept (`rendering.recombine`); the output is H.264 in yuv420p (or the input's
container's usual codec), whose lossy coding touches L* as it touches any
frame.

Temporal consistency: frame-by-frame color flickers, because the network
sees each frame alone. The network's a*b* (at its own resolution, before the
upsampling) are averaged over time, `ab_t <- s * ab_(t-1) + (1 - s) * ab_t`
with s = `temporal_smoothing` (0: off), reset at a shot cut, found where the
mean absolute difference of consecutive 32 x 32 gray thumbnails exceeds
`cut_threshold` (0..255). `flicker` measures the result: the mean absolute
a*b* change between consecutive frames inside shots.
"""

import dataclasses
import os
import pathlib
import queue
import threading
from typing import Any, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxcolor.core import color_space
from jaxcolor.core.errors import JobError
from jaxcolor.inference import rendering

EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg",
              ".mpeg", ".ogv", ".wmv", ".flv", ".ts")
_THUMBNAIL = 32
_END = object()


class VideoError(JobError, ValueError):
  """A video that cannot be colorized; the message names the file."""


def is_video(path: str | os.PathLike) -> bool:
  return str(path).lower().endswith(EXTENSIONS)


def thumbnail(image: Image.Image) -> np.ndarray:
  """32 x 32 gray float32, for cut detection."""
  return np.asarray(image.convert("L").resize((_THUMBNAIL, _THUMBNAIL),
                                              Image.Resampling.BILINEAR),
                    np.float32)


def is_cut(previous: np.ndarray | None, current: np.ndarray,
           threshold: float) -> bool:
  return previous is None or float(np.mean(np.abs(current - previous))) > threshold


@dataclasses.dataclass
class Smoother:
  """The running average of a*b* within a shot."""
  strength: float
  cut_threshold: float
  _ab: np.ndarray | None = None
  _thumb: np.ndarray | None = None
  cuts: int = 0

  def __call__(self, image: Image.Image, ab: np.ndarray) -> np.ndarray:
    thumb = thumbnail(image)
    cut = is_cut(self._thumb, thumb, self.cut_threshold)
    self._thumb = thumb
    if cut:
      self.cuts += self._ab is not None
    if cut or self.strength <= 0 or self._ab is None or self._ab.shape != ab.shape:
      self._ab = ab
    else:
      self._ab = self.strength * self._ab + (1.0 - self.strength) * ab
    return self._ab


def _open(path: pathlib.Path):
  import av  # noqa: PLC0415 (PyAV: only for films)
  try:
    container = av.open(str(path))
  except (av.error.FFmpegError, OSError) as e:
    raise VideoError(f"{path}: not a readable video ({e}).") from None
  if not container.streams.video:
    container.close()
    raise VideoError(f"{path}: no video stream.")
  return container


def colorize_video(colorizer, source: str | os.PathLike,
                   target: str | os.PathLike, *,
                   temporal_smoothing: float = 0.6, cut_threshold: float = 12.0,
                   progress: bool = True) -> dict[str, Any]:
  """Writes the colorized `source` to `target` (built aside, then renamed).

  Returns {'frames', 'cuts', 'fps', 'size'}.

  Raises:
    VideoError: no video stream, an undecodable or truncated file with no
      frame, zero frames, a codec FFmpeg cannot decode; nothing is left at
      `target`.
  """
  import av  # noqa: PLC0415
  source, target = pathlib.Path(source), pathlib.Path(target)
  container = _open(source)
  stream = container.streams.video[0]
  audio = container.streams.audio[0] if container.streams.audio else None
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_name(f".{target.stem}.partial{target.suffix}")
  output = av.open(str(partial), "w")
  smoother = Smoother(temporal_smoothing, cut_threshold)
  frames_in: queue.Queue = queue.Queue(maxsize=4 * colorizer.batch_size)
  failure: list[BaseException] = []
  try:
    rate = stream.average_rate or stream.guessed_rate or 25
    out_video = output.add_stream("libx264" if target.suffix.lower() in (
        ".mp4", ".mov", ".mkv", ".m4v") else "mpeg4", rate=rate)
    out_video.width, out_video.height = stream.codec_context.width, stream.codec_context.height
    out_video.pix_fmt = "yuv420p"
    out_audio = output.add_stream_from_template(audio) if audio else None

    def decode():
      try:
        for packet in container.demux(*(s for s in (stream, audio) if s)):
          if packet.stream is audio:
            if packet.dts is not None:
              packet.stream = out_audio
              frames_in.put(("audio", packet))
            continue
          for frame in packet.decode():
            frames_in.put(("video", frame))
      except (av.error.FFmpegError, OSError) as e:
        failure.append(e)
      finally:
        frames_in.put((_END, None))

    reader = threading.Thread(target=decode, daemon=True)
    reader.start()
    bar = tqdm(total=stream.frames or None, unit="frame", disable=not progress,
               desc=source.name)
    # The encoder runs beside the network: batch n is recombined and
    # encoded while batch n + 1 is colorized.
    encode_in: queue.Queue = queue.Queue(maxsize=2)
    encode_failure: list[BaseException] = []

    def encode():
      try:
        while (item := encode_in.get()) is not _END:
          audio_packets, batch, prepared, abs_ = item
          for packet in audio_packets:
            output.mux(packet)
          for frame, image, ab in zip(batch, prepared, abs_):
            rgb = colorizer.recombine(image, smoother(image, ab))
            out = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            out.pts, out.time_base = frame.pts, frame.time_base
            for packet in out_video.encode(out):
              output.mux(packet)
          bar.update(len(batch))
      except BaseException as e:  # noqa: BLE001 (re-raised by the caller)
        encode_failure.append(e)
        while encode_in.get() is not _END:  # Unblock the producer.
          pass

    writer = threading.Thread(target=encode, daemon=True)
    writer.start()
    count = 0
    try:
      for batch, audio_packets in _batches(frames_in, colorizer.batch_size):
        prepared = [rendering.as_image(frame.to_image()) for frame in batch]
        abs_ = colorizer.predict_ab(prepared) if batch else []
        encode_in.put((audio_packets, batch, prepared, abs_))
        count += len(batch)
    finally:
      encode_in.put(_END)
      writer.join()
      bar.close()
    reader.join()
    if encode_failure:
      raise VideoError(f"{target}: cannot encode ({encode_failure[0]}).")
    if failure and not count:
      raise VideoError(f"{source}: cannot decode its video ({failure[0]}).")
    if not count:
      raise VideoError(f"{source}: the video stream has no frames.")
    for packet in out_video.encode():
      output.mux(packet)
    output.close()
    os.replace(partial, target)
    return {"frames": count, "cuts": smoother.cuts, "fps": float(rate),
            "size": (out_video.width, out_video.height),
            "decode_error": str(failure[0]) if failure else None}
  except BaseException:
    try:
      output.close()
    except Exception:  # noqa: BLE001 (already failing; the partial file goes)
      pass
    partial.unlink(missing_ok=True)
    raise
  finally:
    container.close()


def _batches(frames_in: queue.Queue, size: int) -> Iterator[tuple[list, list]]:
  """(video frames, audio packets) in decoding order, at most `size` frames
  each, as soon as the decoder gives them."""
  batch, audio = [], []
  while True:
    kind, item = frames_in.get()
    if kind is _END:
      break
    if kind == "audio":
      audio.append(item)
    else:
      batch.append(item)
    if len(batch) == size:
      yield batch, audio
      batch, audio = [], []
  yield batch, audio


def read_frames(path: str | os.PathLike) -> list[np.ndarray]:
  """Every frame of a video as uint8 RGB (for measuring)."""
  container = _open(pathlib.Path(path))
  try:
    return [frame.to_ndarray(format="rgb24")
            for frame in container.decode(video=0)]
  finally:
    container.close()


def flicker(frames: list[np.ndarray], cut_threshold: float = 12.0
            ) -> dict[str, float]:
  """Mean absolute a*b* change between consecutive frames inside shots
  (Lab units, at 64 x 64), and the number of cuts found from the frames'
  lightness."""
  changes, cuts, previous_ab, previous_thumb = [], 0, None, None
  for rgb in frames:
    image = Image.fromarray(rgb)
    thumb = thumbnail(image)
    small = np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR))
    ab = np.asarray(color_space.rgb_to_lab(small))[..., 1:]
    cut = is_cut(previous_thumb, thumb, cut_threshold)
    if previous_ab is not None and not cut:
      changes.append(float(np.mean(np.abs(ab - previous_ab))))
    cuts += cut and previous_ab is not None
    previous_ab, previous_thumb = ab, thumb
  return {"flicker": float(np.mean(changes)) if changes else 0.0,
          "cuts": cuts, "frames": len(frames)}
