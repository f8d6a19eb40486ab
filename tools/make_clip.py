"""A test film from still photos: slow pans and zooms, hard cuts, a tone.

  python tools/make_clip.py --photos jaxcolor/sample_data/eval --output clip.mp4 \\
      [--gray clip_gray.mp4] [--shots 3] [--frames 24] [--size 192x128] [--fps 24]

Each shot is one photo: a crop window that pans across it and zooms in
slowly, so consecutive frames differ as in a real shot; the next shot is
the next photo (a hard cut). The clip has a 440 Hz AAC tone as its audio.
`--gray` also writes the same clip reduced to its L* (what a colorizer is
given); the color clip is the truth to measure against.
"""

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image


def frames(photo: Image.Image, count: int, size: tuple[int, int]):
  """`count` frames of `size` panning across `photo` and zooming in 15 %."""
  width, height = photo.size
  aspect = size[0] / size[1]
  for i in range(count):
    t = i / max(count - 1, 1)
    crop_h = min(height, width / aspect) / (1.0 + 0.15 * t)
    crop_w = crop_h * aspect
    left = (width - crop_w) * (0.2 + 0.6 * t)
    top = (height - crop_h) * 0.5
    yield photo.resize(size, Image.Resampling.BICUBIC,
                       box=(left, top, left + crop_w, top + crop_h))


def write(path: pathlib.Path, images, fps: int, size: tuple[int, int],
          gray: bool) -> None:
  import av  # noqa: PLC0415
  with av.open(str(path), "w") as out:
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    audio = out.add_stream("aac", rate=16000)
    images = list(images)
    for i, image in enumerate(images):
      if gray:
        image = image.convert("L").convert("RGB")
      frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
      frame.pts = i
      for packet in video.encode(frame):
        out.mux(packet)
    seconds = len(images) / fps
    samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000)
    samples = (0.2 * samples).astype(np.float32)[None]
    for start in range(0, samples.shape[1], 1024):
      chunk = av.AudioFrame.from_ndarray(samples[:, start:start + 1024],
                                         format="fltp", layout="mono")
      chunk.sample_rate, chunk.pts = 16000, start
      for packet in audio.encode(chunk):
        out.mux(packet)
    for stream in (video, audio):
      for packet in stream.encode():
        out.mux(packet)


def make(photos: list[pathlib.Path], output: pathlib.Path,
         gray_output: pathlib.Path | None, *, frames_per_shot: int,
         size: tuple[int, int], fps: int) -> None:
  shots = [list(frames(Image.open(p).convert("RGB"), frames_per_shot, size))
           for p in photos]
  images = [image for shot in shots for image in shot]
  write(output, images, fps, size, gray=False)
  if gray_output is not None:
    write(gray_output, images, fps, size, gray=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--photos", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--gray")
  parser.add_argument("--shots", type=int, default=3)
  parser.add_argument("--frames", type=int, default=24)
  parser.add_argument("--size", default="192x128")
  parser.add_argument("--fps", type=int, default=24)
  args = parser.parse_args(argv)
  photos = sorted(p for p in pathlib.Path(args.photos).iterdir()
                  if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.shots]
  if len(photos) < args.shots:
    print(f"error: {args.photos} has fewer than {args.shots} photos",
          file=sys.stderr)
    return 2
  width, height = (int(v) for v in args.size.split("x"))
  make(photos, pathlib.Path(args.output),
       pathlib.Path(args.gray) if args.gray else None,
       frames_per_shot=args.frames, size=(width, height), fps=args.fps)
  return 0


if __name__ == "__main__":
  sys.exit(main())
