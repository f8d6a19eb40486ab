"""Optimisers and learning-rate schedules built from `config.optimizer`."""

import ml_collections
import optax


def pix2pix_schedule(learning_rate: float, num_train_steps: int,
                     decay_steps: int, constant_steps: int = -1) -> optax.Schedule:
  """Constant, then linear decay to zero (pix2pix `lr_policy='linear'`).

  The reference keeps the rate for `n_epochs` and decays it linearly to zero
  over `n_epochs_decay`; here both are counted in steps. `constant_steps=-1`
  means all steps before the decay.
  """
  if decay_steps <= 0:
    return optax.constant_schedule(learning_rate)
  if constant_steps < 0:
    constant_steps = max(num_train_steps - decay_steps, 0)
  return optax.join_schedules(
      [optax.constant_schedule(learning_rate),
       optax.linear_schedule(learning_rate, 0.0, decay_steps)],
      boundaries=[constant_steps])


def adam(opt_config: ml_collections.ConfigDict, num_train_steps: int
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam with the pix2pix schedule; returns (transformation, schedule)."""
  schedule = pix2pix_schedule(opt_config.learning_rate, num_train_steps,
                              opt_config.decay_steps,
                              opt_config.get("constant_steps", -1))
  return optax.adam(schedule, b1=opt_config.b1, b2=opt_config.b2), schedule
