"""Scoring any colorizer's saved outputs against the true photos.

  python -m jaxcolor.score --truth photos/ --predictions colorized/ \\
      [--output results.json] [--csv per_image.csv]

(or `jaxcolor score ...`; jaxcolor/runtime/job.py starts both and holds the
`--help` text).

Pairs each true photo with the prediction of the same relative path without
its extension (`a/b.jpg` with `a/b.png`), or, failing that, with the only
prediction of the same stem anywhere under --predictions, so the outputs of
`jaxcolor.colorize`, DeOldify or DDColor are scored on equal terms. Every
pair is scored at full resolution by the metrics the evaluator reports
(`jaxcolor.evaluation.color_metrics.image_metrics`: PSNR and SSIM on 8-bit RGB, ab MSE and
MAE, pixel accuracy, raw-accuracy AuC, colorfulness of prediction and truth
and their difference), and so is the gray baseline (the truth's own L*, ab =
0), beside it. A photo without a prediction, a prediction of another size,
or a file that cannot be decoded is reported on one line naming the file,
counted, and left out; the rest are still scored.

Outputs: a table on stdout; --output a JSON file with the means, the gray
baseline's, the counts and every problem; --csv one row per scored photo.
Both are written to a temporary name and renamed, so a file there is whole.
"""

import csv
import dataclasses
import json
import os
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxcolor.core import color_space
from jaxcolor.data import sources
from jaxcolor.data import transforms
from jaxcolor.evaluation import color_metrics

GRAY = "gray"
PREDICTION = "prediction"
# Identical images have infinite PSNR: counted as 100 dB, as the evaluator does.
_PSNR_CAP = 100.0


@dataclasses.dataclass
class Pairing:
  """True photos matched to predictions, and what could not be matched."""
  pairs: list[tuple[str, pathlib.Path, pathlib.Path]]  # (key, truth, prediction)
  missing: list[pathlib.Path]                         # truths without a prediction
  ambiguous: dict[pathlib.Path, list[pathlib.Path]]   # truth -> candidates


def pair_files(truth_dir: pathlib.Path, prediction_dir: pathlib.Path) -> Pairing:
  """Matches truths to predictions by relative path, then by unique stem."""
  for folder, flag in ((truth_dir, "--truth"), (prediction_dir, "--predictions")):
    if not folder.is_dir():
      raise FileNotFoundError(f"{flag} {folder} is not a folder.")
  truths = sources.list_images(truth_dir)
  if not truths:
    raise FileNotFoundError(f"No image files under --truth {truth_dir}.")
  predictions = sources.list_images(prediction_dir)
  by_path = {str(pathlib.PurePosixPath(p).with_suffix("")): p for p in predictions}
  by_stem: dict[str, list[str]] = {}
  for p in predictions:
    by_stem.setdefault(pathlib.PurePosixPath(p).stem, []).append(p)
  pairs, missing, ambiguous = [], [], {}
  for truth in truths:
    key = str(pathlib.PurePosixPath(truth).with_suffix(""))
    match = by_path.get(key)
    if match is None:
      candidates = by_stem.get(pathlib.PurePosixPath(truth).stem, [])
      if len(candidates) > 1:
        ambiguous[truth_dir / truth] = [prediction_dir / c for c in candidates]
        continue
      match = candidates[0] if candidates else None
    if match is None:
      missing.append(truth_dir / truth)
    else:
      pairs.append((key, truth_dir / truth, prediction_dir / match))
  return Pairing(pairs, missing, ambiguous)


def read_rgb(path: pathlib.Path) -> np.ndarray:
  """uint8 RGB [H, W, 3], decoded as training decodes (EXIF, CMYK, 16-bit...)."""
  try:
    encoded = path.read_bytes()
  except OSError as e:
    raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
  image, events = transforms.decode(encoded)
  if image is None:
    raise ValueError(f"cannot decode {path}: {events[-1].replace('_', ' ')}")
  return np.asarray(image.convert("RGB"))


@jax.jit
def score_pair(pred_u8: jax.Array, true_u8: jax.Array) -> dict[str, jax.Array]:
  """Metrics of one prediction and of the gray baseline: {output: {metric: []}}.

  Compiled once per image size; the AuC uses Zhang et al.'s sweep (0-150).
  """
  true_rgb = true_u8[None].astype(jnp.float32) / 255.0
  pred_rgb = pred_u8[None].astype(jnp.float32) / 255.0
  true_lab = color_space.rgb_to_lab(true_rgb)
  gray_lab = jnp.concatenate([true_lab[..., :1],
                              jnp.zeros_like(true_lab[..., 1:])], axis=-1)
  true_colorfulness = color_metrics.colorfulness(true_rgb)
  out = {}
  for name, rgb, lab in (
      (PREDICTION, pred_rgb, color_space.rgb_to_lab(pred_rgb)),
      (GRAY, color_space.lab_to_rgb(gray_lab), gray_lab)):
    values = color_metrics.image_metrics(rgb, lab, true_rgb, true_lab,
                                   true_colorfulness)
    values["psnr"] = jnp.minimum(values["psnr"], _PSNR_CAP)
    out[name] = {k: v[0] for k, v in values.items()}
  out["truth"] = {"colorfulness": true_colorfulness[0]}
  return out


def score(truth_dir: str | os.PathLike, prediction_dir: str | os.PathLike, *,
          progress: bool = False) -> dict[str, Any]:
  """Scores every pair (see module docstring).

  Returns:
    {'num_scored', 'num_missing', 'num_failed', 'problems': {file: reason},
     'prediction': {metric: mean}, 'gray': {metric: mean},
     'truth_colorfulness', 'colorfulness_share' (mean predicted over mean true
     colorfulness), 'psnr_minus_gray', 'per_image': [{...}, ...]}.
  """
  pairing = pair_files(pathlib.Path(truth_dir), pathlib.Path(prediction_dir))
  problems: dict[str, str] = {}
  for truth in pairing.missing:
    problems[str(truth)] = "no prediction with its name under --predictions"
  for truth, candidates in pairing.ambiguous.items():
    problems[str(truth)] = ("several predictions share its stem: "
                            + ", ".join(map(str, candidates)))
  rows = []
  for key, truth, prediction in tqdm(pairing.pairs, unit="image",
                                     disable=not progress):
    try:
      true_u8 = read_rgb(truth)
      pred_u8 = read_rgb(prediction)
    except ValueError as e:
      problems[str(truth)] = str(e)
      continue
    if pred_u8.shape != true_u8.shape:
      problems[str(truth)] = (
          f"size mismatch: truth {true_u8.shape[1]}x{true_u8.shape[0]}, "
          f"prediction {prediction} {pred_u8.shape[1]}x{pred_u8.shape[0]}")
      continue
    values = jax.device_get(score_pair(pred_u8, true_u8))
    row = {"image": key, "width": true_u8.shape[1], "height": true_u8.shape[0]}
    for output in (PREDICTION, GRAY):
      row.update({f"{output}_{k}": float(v) for k, v in values[output].items()})
    row["truth_colorfulness"] = float(values["truth"]["colorfulness"])
    rows.append(row)
  result: dict[str, Any] = {
      "truth": str(truth_dir), "predictions": str(prediction_dir),
      "num_scored": len(rows), "num_missing": len(pairing.missing),
      "num_failed": len(problems) - len(pairing.missing),
      "problems": problems,
  }
  if rows:
    for output in (PREDICTION, GRAY):
      names = [k[len(output) + 1:] for k in rows[0] if k.startswith(output + "_")]
      result[output] = {n: float(np.mean([r[f"{output}_{n}"] for r in rows]))
                        for n in names}
    result["truth_colorfulness"] = float(
        np.mean([r["truth_colorfulness"] for r in rows]))
    result["colorfulness_share"] = (result[PREDICTION]["colorfulness"]
                                    / max(result["truth_colorfulness"], 1e-12))
    result["psnr_minus_gray"] = (result[PREDICTION]["psnr"]
                                 - result[GRAY]["psnr"])
  result["per_image"] = rows
  return result


def format_table(result: dict[str, Any]) -> str:
  """The means as a plain-text table: metric | prediction | gray | difference."""
  if not result["num_scored"]:
    return "No image was scored."
  lines = [f"{'metric':<26}{'prediction':>12}{'gray':>12}{'difference':>12}"]
  for name, value in result[PREDICTION].items():
    gray = result[GRAY][name]
    lines.append(f"{name:<26}{value:>12.4f}{gray:>12.4f}{value - gray:>+12.4f}")
  lines.append(f"{'truth_colorfulness':<26}{result['truth_colorfulness']:>12.4f}")
  lines.append(f"colorfulness / truth's: {100 * result['colorfulness_share']:.1f} %;"
               f" PSNR minus gray: {result['psnr_minus_gray']:+.3f} dB;"
               f" {result['num_scored']} scored, {result['num_missing']} "
               f"missing, {result['num_failed']} failed.")
  return "\n".join(lines)


def _write_atomically(path: pathlib.Path, write) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  with open(partial, "w", newline="") as f:
    write(f)
  os.replace(partial, path)


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
  _write_atomically(pathlib.Path(path),
                    lambda f: json.dump(result, f, indent=1, sort_keys=False))


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> None:
  rows = result["per_image"]

  def write(f):
    if not rows:
      return
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  _write_atomically(pathlib.Path(path), write)


def run(truth: str, predictions: str, output: str | None = None,
        csv_path: str | None = None) -> int:
  """The score job (`jaxcolor score`): `score`, problems on stderr, the table
  on stdout, the files; returns the exit status (1 when nothing was
  scored)."""
  result = score(truth, predictions, progress=True)
  for file, reason in result["problems"].items():
    print(f"Not scored: {file}: {reason}", file=sys.stderr)
  print(format_table(result))
  if output:
    write_json(result, output)
  if csv_path:
    write_csv(result, csv_path)
  return 0 if result["num_scored"] else 1
