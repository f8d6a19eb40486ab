"""A self-contained HTML report of one evaluation: metric table and images.

  DIR/eval/<step>/index.html
  DIR/eval/<step>/images/000_gray.png, 000_prediction.png, 000_truth.png, ...

The page links its images by relative paths and carries its own style, so it
opens from disk in any browser (no server, no network) and the folder can be
copied or zipped as a whole.
"""

import html
import math
from typing import Any, Mapping, Sequence

import numpy as np
from etils import epath

from jaxcolor.evaluation import image_grid


# Table rows: (metric key, label, better: 'higher' | 'lower' | '').
METRICS = (
    ("psnr", "PSNR (dB, 8-bit RGB)", "higher"),
    ("ssim", "SSIM (8-bit RGB)", "higher"),
    ("pixel_accuracy", "Pixel accuracy (Nazeri et al.)", "higher"),
    ("raw_accuracy_auc", "Raw accuracy AuC (Zhang et al.)", "higher"),
    ("ab_mse", "MSE on a*b*", "lower"),
    ("ab_mae", "MAE on a*b*", "lower"),
    ("fid", "FID (pytorch-fid Inception)", "lower"),
    ("colorfulness", "Colorfulness (Hasler & Suesstrunk)", ""),
    ("colorfulness_difference", "Colorfulness - truth's", ""),
)
GRAY = "gray"
TRUTH = "truth"
IMAGE_COLUMNS = (("gray", "gray input"), ("prediction", "prediction"),
                 ("truth", "truth"))

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; }
td.name, th.name { text-align: left; }
td.best { font-weight: bold; }
.floor { color: #777; }
.images td { text-align: center; vertical-align: top; }
.images img { image-rendering: pixelated; width: var(--tile); height: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
"""


def output_names(metrics: Mapping[str, Any]) -> list[str]:
  """Outputs with per-image metrics in `metrics`: the final one
  (`final_output`), the system's others, then the gray baseline."""
  names = []
  for key in metrics:
    for suffix, _, _ in METRICS:
      prefix = key[:-len(suffix) - 1]
      if (key.endswith("_" + suffix) and prefix and prefix != TRUTH
          and prefix not in names):
        names.append(prefix)
  final = metrics.get("final_output")
  names.sort(key=lambda name: (name != final, name == GRAY))
  return names


def _format(value: Any) -> str:
  if value is None:
    return "&ndash;"
  if isinstance(value, float):
    if not math.isfinite(value):
      return html.escape(str(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
  return html.escape(str(value))


def metric_table(metrics: Mapping[str, Any]) -> str:
  """HTML table: one row per metric, one column per output and the floor."""
  names = output_names(metrics)
  if not names:  # A system that does not colorize (e.g. the classifier).
    return ""
  labels = {GRAY: "gray baseline (ab = 0)",
            metrics.get("final_output"): f"{metrics.get('final_output')} (final)"}
  head = "".join(
      f'<th class="{"floor" if n == GRAY else ""}">'
      f'{html.escape(labels.get(n, n))}</th>' for n in names)
  rows = []
  for key, label, better in METRICS:
    values = [metrics.get(f"{n}_{key}") for n in names]
    if all(v is None for v in values):
      continue
    numbers = [v for v in values if isinstance(v, (int, float))]
    best = None
    if numbers and len(names) > 1 and better:
      best = max(numbers) if better == "higher" else min(numbers)
    cells = "".join(
        f'<td class="{"best" if best is not None and v == best else ""}'
        f'{" floor" if n == GRAY else ""}">{_format(v)}</td>'
        for n, v in zip(names, values))
    arrow = {"higher": " &uarr;", "lower": " &darr;"}.get(better, "")
    rows.append(f'<tr><td class="name">{html.escape(label)}{arrow}</td>'
                f"{cells}</tr>")
  if f"{TRUTH}_colorfulness" in metrics:
    rows.append('<tr><td class="name">Colorfulness of the truth</td>'
                f'<td colspan="{len(names)}">'
                f'{_format(metrics[f"{TRUTH}_colorfulness"])}</td></tr>')
  return (f'<table><tr><th class="name">metric</th>{head}</tr>'
          + "".join(rows) + "</table>")


def _other_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
  """Values the table does not show (system metrics, counts, timings)."""
  names = output_names(metrics)
  shown = {f"{n}_{key}" for n in names for key, _, _ in METRICS}
  shown |= {key for key, _, _ in METRICS} | {f"{TRUTH}_colorfulness"}
  return {k: v for k, v in metrics.items() if k not in shown}


def write_report(directory: str | epath.Path, metrics: Mapping[str, Any],
                 images: Mapping[str, np.ndarray], *, title: str,
                 captions: Sequence[str] = (), tile_size: int = 256) -> epath.Path:
  """Writes index.html and the images into `directory`; returns the page.

  Args:
    directory: the report's folder (created).
    metrics: as `Evaluator.evaluate` returns them, plus any run details.
    images: uint8 [N, H, W, 3] arrays 'gray', 'prediction', 'truth' (any
      may be missing; none: a report without images).
    title: the page's heading.
    captions: one line per image row (e.g. its PSNR), optional.
    tile_size: displayed width of each image, in CSS pixels.
  """
  directory = epath.Path(directory)
  (directory / "images").mkdir(parents=True, exist_ok=True)
  rows = []
  count = min((len(v) for v in images.values()), default=0)
  for i in range(count):
    cells = []
    for key, _ in IMAGE_COLUMNS:
      if key not in images:
        continue
      name = f"images/{i:03d}_{key}.png"
      image_grid.save_png(directory / name, np.asarray(images[key][i]))
      cells.append(f'<td><img src="{name}" alt="{key} {i}"></td>')
    caption = html.escape(captions[i]) if i < len(captions) else ""
    rows.append(f"<tr><td>{i}<br><small>{caption}</small></td>"
                + "".join(cells) + "</tr>")
  heads = "".join(f"<th>{label}</th>" for key, label in IMAGE_COLUMNS
                  if key in images)
  image_section = (
      f'<h2>Images</h2><table class="images" style="--tile: {tile_size}px">'
      f"<tr><th>#</th>{heads}</tr>{''.join(rows)}</table>" if rows else "")
  details = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{_format(v)}</dd>"
                    for k, v in _other_metrics(metrics).items())
  page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Metrics</h2>
<p>Means over the evaluated images; the gray baseline (true L*, a*b* = 0)
is each metric's floor. Definitions: docs/metrics.md.</p>
{metric_table(metrics)}
<dl>{details}</dl>
{image_section}
</body></html>
"""
  path = directory / "index.html"
  path.write_text(page)
  return path
