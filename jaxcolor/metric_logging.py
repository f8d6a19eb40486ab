"""Scalars and images to TensorBoard (clu) and to `WORKDIR/metrics.jsonl`.

Only process 0 writes; the others log to the Python logger alone. Each call to
`scalars` appends one JSON object with a `step` key to metrics.jsonl, so
scripts can follow a run without TensorBoard.
"""

import json
import math
from typing import Any, Mapping

import numpy as np
from etils import epath


def _step_of(line: str) -> int | None:
  """The step of a JSON line; None for a blank line or one cut by a kill
  (SIGKILL can land in the middle of an append)."""
  try:
    return int(json.loads(line).get("step", 0)) if line.strip() else None
  except (ValueError, AttributeError):
    return None


def _plain(value: Any) -> Any:
  value = np.asarray(value).item() if np.ndim(value) == 0 else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep them visible as strings.
  return value


class MetricLogger:
  """TensorBoard + JSON-lines writer for one run."""

  def __init__(self, workdir: str, *, is_primary: bool):
    from clu import metric_writers  # noqa: PLC0415 (TensorFlow import is slow)
    self.is_primary = is_primary
    self.workdir = epath.Path(workdir)
    self.writer = metric_writers.create_default_writer(
        str(self.workdir), just_logging=not is_primary, asynchronous=True)
    self.jsonl_path = self.workdir / "metrics.jsonl"

  def truncate_after(self, step: int) -> None:
    """Drops JSON lines logged after `step` (a resumed run logs them again)."""
    if not self.is_primary or not self.jsonl_path.exists():
      return
    kept = [line for line in self.jsonl_path.read_text().splitlines()
            if _step_of(line) is not None and _step_of(line) <= step]
    # Written aside and renamed: a kill during the rewrite leaves the old
    # file or the new one, never a cut one.
    temporary = self.jsonl_path.with_name(self.jsonl_path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    temporary.replace(self.jsonl_path)

  def scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    plain = {k: _plain(v) for k, v in scalars.items()}
    self.writer.write_scalars(step, {k: v for k, v in plain.items()
                                     if isinstance(v, (int, float))})
    if self.is_primary:
      with self.jsonl_path.open("a") as f:
        f.write(json.dumps({"step": int(step), **plain}) + "\n")

  def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """`images`: name -> uint8 [N, H, W, 3] or [H, W, 3]."""
    self.writer.write_images(
        step, {k: v if v.ndim == 4 else v[None] for k, v in images.items()})

  def hparams(self, hparams: Mapping[str, Any]) -> None:
    self.writer.write_hparams({k: v if isinstance(v, (int, float, str, bool))
                               else str(v) for k, v in hparams.items()})

  def flush(self) -> None:
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()
