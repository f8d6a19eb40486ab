"""Optimisers and learning-rate schedules built from `config.optimizer`."""

import jax
import ml_collections
import optax

from jaxcolor import configuration


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


def adadelta(opt_config: ml_collections.ConfigDict, num_train_steps: int
             ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """ADADELTA (Zeiler 2012) with the same schedule; (transformation, schedule).

  Iizuka et al. (2016) train with ADADELTA. Its `learning_rate` scales the
  adaptive step: 1.0 is Zeiler's method unscaled (Torch7's optim.adadelta has
  no rate at all). `rho` is the decay of both running averages, `eps` the
  constant inside both square roots, as in Torch7 and optax.
  """
  schedule = pix2pix_schedule(opt_config.learning_rate, num_train_steps,
                              opt_config.decay_steps,
                              opt_config.get("constant_steps", -1))
  return optax.adadelta(schedule, rho=opt_config.rho,
                        eps=opt_config.eps), schedule


def sgd(opt_config: ml_collections.ConfigDict, num_train_steps: int
        ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """SGD with momentum and weight decay, warm-up then cosine decay to zero.

  The ImageNet classification recipe (He et al. 2016; torchvision's
  reference), used to pretrain the ResNet-18 backbone: weight decay is added
  to the gradient before momentum, as PyTorch's `SGD(weight_decay=...)`, but
  only on convolution and dense kernels, not on batch-norm scales, offsets
  and biases ("no bias decay", Goyal et al. 2017). The rate rises linearly
  from 0 over `warmup_steps` (none when 0), then follows a cosine to 0 at
  `num_train_steps`.
  """
  warmup = opt_config.warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else opt_config.learning_rate,
      peak_value=opt_config.learning_rate, warmup_steps=warmup,
      decay_steps=num_train_steps, end_value=0.0)
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  tx = optax.chain(
      optax.add_decayed_weights(opt_config.weight_decay, mask=kernels_only),
      optax.sgd(schedule, momentum=opt_config.momentum,
                nesterov=opt_config.get("nesterov", False)))
  return tx, schedule


# config.optimizer.name -> builder; a config without `name` means Adam.
BUILDERS = {"adam": adam, "adadelta": adadelta, "sgd": sgd}


def create(opt_config: ml_collections.ConfigDict, num_train_steps: int
           ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser `opt_config.name` ('adam' when absent) and its schedule.

  Systems build it before the config is validated: an unknown name is a
  ConfigError here already.
  """
  name = opt_config.get("name", "adam")
  if name not in BUILDERS:
    raise configuration.ConfigError(
        f"config.optimizer.name={name!r} is invalid: one of "
        f"{', '.join(BUILDERS)}.")
  return BUILDERS[name](opt_config, num_train_steps)
