"""Non-finite steps: flagged (and optionally dropped) on the device, acted
on by the host.

The device half, `guard_nonfinite`, wraps a system's step: it tests the new
state and metrics of each network for NaN and infinity and, with `discard`,
keeps the old state instead. The host half, `check_finite`, reads those
flags once per logging interval (and before anything is evaluated or
checkpointed) and either raises `TrainingDiverged` or warns and goes on
(`config.skip_nonfinite_steps`). So the state never holds a NaN or an
infinity when it is evaluated or saved.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcolor.core.errors import JobError
from jaxcolor.systems import base


class TrainingDiverged(JobError):
  """A non-finite step; the message names the network(s), the first such
  step and the last good checkpoint. Exit status 3: not the config's fault."""
  label = "Training diverged"
  exit_status = 3


def guard_nonfinite(train_step, networks: tuple[str, ...], *,
                    discard: bool):
  """`train_step` that flags, and with `discard` drops, a non-finite update.

  Network `n` is finite when its metrics (named `n_*`, after any
  '<phase>/' prefix) and its new state (`state[n]` and entries named
  `n_*`: parameters, batch statistics, optimizer state) are all finite;
  a finite `n_grad_norm` metric stands for its parameters and optimizer
  state (`_unproven`). If any network is not, the whole update is dropped
  (the networks of a system train against each other's new values) except
  the step count, which advances as ever so the data position, the
  schedule and a resume stay functions of the step. The metrics gain
  `nonfinite_<n>` (1.0 where `n` was not finite) and `skipped_steps`, the
  state's count of dropped updates (`base.SKIPPED_STEPS`); the host decides
  whether to stop (`check_finite`).

  `discard` is `config.skip_nonfinite_steps`. Without it (the default
  config) the update is kept and only flagged: the host stops the run at its
  next check, which comes before any checkpoint is written, so no
  checkpoint holds a non-finite value either, and the step does not pay
  for selecting between two copies of the state.
  """
  skipped_key = base.SKIPPED_STEPS

  def guarded(state, batch, rng):
    new_state, metrics = train_step(state, batch, rng)
    finite = {}
    metric_names = [key.rsplit("/", 1)[-1] for key in metrics]
    for name in networks:
      parts = [_unproven(key, value, f"{name}_grad_norm" in metric_names)
               for key, value in new_state.items()
               if key == name or key.startswith(name + "_")]
      parts += [value for key, value in metrics.items()
                if key.rsplit("/", 1)[-1].startswith(name + "_")]
      finite[name] = _all_true([
          jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(parts)
          if jnp.issubdtype(leaf.dtype, jnp.inexact)])
    ok = jnp.all(jnp.stack([True, *finite.values()]))
    if discard:
      kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                          new_state, state)
    else:
      kept, ok = dict(new_state), jnp.array(True)
    kept["step"] = new_state["step"]
    metrics = dict(metrics, **{f"nonfinite_{name}": (~value).astype(jnp.float32)
                               for name, value in finite.items()})
    # States built by hand (some tests) may lack the counter.
    if skipped_key in state:
      kept[skipped_key] = state[skipped_key] + (~ok).astype(jnp.int32)
      metrics["skipped_steps"] = kept[skipped_key].astype(jnp.float32)
    return kept, metrics

  return guarded


def _unproven(key: str, value: Any, gradient_checked: bool) -> Any:
  """The part of state entry `key` whose finiteness must be read leaf by leaf.

  A network that reports the norm of the gradients it applied
  (`<network>_grad_norm`) proves with that one number that its new
  parameters and optimizer state are finite: Adam-style updates of finite
  values by finite gradients are finite (a gradient whose square overflows
  makes the norm infinite too), and the state they start from is finite (a
  non-finite state is never saved, and never stepped from unnoticed). Its
  batch statistics come from the forward pass and are read. Skipping the
  rest saves a pass over every parameter and both Adam moments
  (docs/benchmarks.md has its share of the step).
  """
  if not gradient_checked:
    return value
  if isinstance(value, base.TrainState):
    return (value.step, value.batch_stats)
  if key.endswith("opt_state"):  # E.g. staged's generator_pretrain_opt_state.
    return ()
  if key.endswith("_ema"):  # A convex mix of finite weights and batch
    return ()               # statistics (the latter read in the TrainState).
  return value


def _all_true(flags: list[jax.Array]) -> jax.Array:
  """Whether all the scalar booleans `flags` are true, as one unfused op.

  `jnp.all(jnp.stack(flags))` is the same value, but XLA:CPU copies that
  reduction of hundreds of inputs into every consumer, here the `where` of
  each state leaf, which costs minutes of compilation for the deepest
  networks (optimization barriers do not stop it: XLA:CPU removes them
  before fusing). XLA never fuses a sort. A concatenation of the leaves
  with one `isfinite` would do too, but copies the state; a `lax.cond` in
  place of the `where`s would too, but on a GPU it reads its predicate on
  the host, a sync every step.
  """
  flags = jnp.stack([jnp.array(True), *flags]).astype(jnp.int32)
  return jnp.sort(flags)[0] == 1


def check_finite(pending: list[dict], step: int, *,
                 networks: tuple[str, ...], skip_nonfinite_steps: bool,
                 checkpointer, warn: bool = True) -> dict[str, float]:
  """Stops the run at a step `guard_nonfinite` flagged, unless configured
  to skip such steps; then warns (`warn`) and goes on.

  `pending`: the metrics of the steps up to `step` not yet checked (one
  host sync). Returns the cumulative `skipped_steps` for the log (the mean
  of a running count would mislead).

  Raises:
    TrainingDiverged: naming the network(s), the first non-finite step and
      the newest checkpoint of `checkpointer` (waited for, so it is whole).
  """
  if not pending:
    return {}
  values = jax.device_get(pending)
  first_step = step - len(values) + 1
  first_bad: dict[str, int] = {}  # network -> its first non-finite step
  bad_steps = 0
  for offset, metrics in enumerate(values):
    names = [name for name in networks
             if metrics.get(f"nonfinite_{name}", 0) > 0]
    bad_steps += bool(names)
    for name in names:
      first_bad.setdefault(name, first_step + offset)
  skipped = values[-1].get("skipped_steps")
  out = {} if skipped is None else {"skipped_steps": float(skipped)}
  if not first_bad:
    return out
  where = ", ".join(f"{name} at step {at}" for name, at in first_bad.items())
  if not skip_nonfinite_steps:
    # The networks of the first non-finite step: the steps after it start
    # from its values, so every network follows.
    at = min(first_bad.values())
    where = ", ".join(f"{name} at step {at}" for name, first in
                      first_bad.items() if first == at)
    shown = [k for k, v in values[at - first_step].items()
             if not np.all(np.isfinite(v))]
    checkpointer.wait_until_finished()  # So the newest one is complete.
    last = checkpointer.latest_step()
    checkpoint = ("none" if last is None else
                  f"step {last} in {checkpointer.directory}")
    raise TrainingDiverged(
        f"non-finite {where} "
        f"({', '.join(shown) or 'new parameters or optimizer state'}); the "
        f"run stopped at step {step} without saving. Last good "
        f"checkpoint: {checkpoint}. Lower the learning rate, or pass "
        "--config.skip_nonfinite_steps=True to skip such steps.")
  if warn:
    logging.warning(
        "Skipped %d non-finite step(s) of steps %d-%d (%s): %s in all "
        "(config.skip_nonfinite_steps=True).", bad_steps, first_step, step,
        where, int(skipped) if skipped is not None else "?")
  return out
