"""`python -m jaxcolor.video VIDEO [VIDEO ...]`: each video's flicker (the
mean frame-to-frame change of a*b* within shots) and cuts, one JSON line
each; what docs/video.md measures colorized films with. Colorizing a film is
`jaxcolor colorize` (jaxcolor/inference/film.py).
"""

import json
import sys

from jaxcolor.inference import film


def main(argv: list[str] | None = None) -> int:
  """`python -m jaxcolor.video FILE...`: each video's flicker, one JSON line."""
  paths = sys.argv[1:] if argv is None else argv
  if not paths:
    print("usage: python -m jaxcolor.video VIDEO [VIDEO ...]  (prints flicker)",
          file=sys.stderr)
    return 2
  for path in paths:
    try:
      print(json.dumps({"video": path, **film.flicker(film.read_frames(path))}))
    except film.VideoError as e:
      print(f"Error: {e}", file=sys.stderr)
      return 1
  return 0



if __name__ == "__main__":
  raise SystemExit(main())
