"""Side-by-side image grids: gray input | prediction | truth, one row a photo."""

import numpy as np
from etils import epath
from PIL import Image


def make_grid(columns: list[np.ndarray], gap: int = 2) -> np.ndarray:
  """Tiles images: `columns[j][i]` goes to row i, column j.

  Args:
    columns: equal-shape uint8 arrays [N, H, W, 3].
    gap: white pixels between tiles.

  Returns:
    uint8 [N * (H + gap) - gap, C * (W + gap) - gap, 3].
  """
  n, h, w, _ = columns[0].shape
  grid = np.full((n * (h + gap) - gap, len(columns) * (w + gap) - gap, 3),
                 255, np.uint8)
  for j, column in enumerate(columns):
    for i in range(n):
      grid[i * (h + gap):i * (h + gap) + h,
           j * (w + gap):j * (w + gap) + w] = column[i]
  return grid


def save_png(path: str | epath.Path, image: np.ndarray) -> None:
  """Writes uint8 [H, W, 3] as PNG, via a temporary file (never half-written)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  with tmp.open("wb") as f:
    Image.fromarray(image).save(f, format="PNG")
  tmp.replace(path)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
  """Float RGB in [0, 1] -> uint8 (rounded)."""
  return np.clip(np.round(np.asarray(rgb, np.float32) * 255), 0, 255).astype(np.uint8)
