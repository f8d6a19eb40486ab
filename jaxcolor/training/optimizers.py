"""The optimizer registry: each name's fields, checks and builder, in one place.

`config.optimizer.name` (`DEFAULT_NAME` when absent) picks an entry of
`REGISTRY`; every system builds its optimizers with `create(section,
num_steps, key)`, which first checks the section (unknown or missing fields,
values out of range) and raises `ConfigError` naming `config.<key>.<field>`.
Systems build their optimizers when they are created, so these errors come
before anything compiles.

An entry states which fields its optimizer reads and the defaults of those
a section may leave out; nowhere else states them. `check` writes the
defaults into the section, so a run's config.json records every value its
optimizers used.
"""

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import optax

from jaxcolor.core.config_fields import fill_missing
from jaxcolor.core.errors import ConfigError, require, suggest

Built = tuple[optax.GradientTransformation, optax.Schedule]


def pix2pix_schedule(learning_rate: float, num_train_steps: int,
                     decay_steps: int, constant_steps: int) -> optax.Schedule:
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


def _linear_schedule_of(opt: ml_collections.ConfigDict,
                        num_steps: int) -> optax.Schedule:
  return pix2pix_schedule(opt.learning_rate, num_steps, opt.decay_steps,
                          opt.constant_steps)


def _adam(opt: ml_collections.ConfigDict, num_steps: int) -> Built:
  """Adam with the pix2pix schedule."""
  schedule = _linear_schedule_of(opt, num_steps)
  return optax.adam(schedule, b1=opt.b1, b2=opt.b2), schedule


def _adadelta(opt: ml_collections.ConfigDict, num_steps: int) -> Built:
  """ADADELTA (Zeiler 2012) with the pix2pix schedule.

  Iizuka et al. (2016) train with ADADELTA. Its `learning_rate` scales the
  adaptive step: 1.0 is Zeiler's method unscaled (Torch7's optim.adadelta has
  no rate at all). `rho` is the decay of both running averages, `eps` the
  constant inside both square roots, as in Torch7 and optax.
  """
  schedule = _linear_schedule_of(opt, num_steps)
  return optax.adadelta(schedule, rho=opt.rho, eps=opt.eps), schedule


def _sgd(opt: ml_collections.ConfigDict, num_steps: int) -> Built:
  """SGD with momentum and weight decay, warm-up then cosine decay to zero.

  The ImageNet classification recipe (He et al. 2016; torchvision's
  reference), used to pretrain the ResNet-18 backbone: weight decay is added
  to the gradient before momentum, as PyTorch's `SGD(weight_decay=...)`, but
  only on convolution and dense kernels, not on batch-norm scales, offsets
  and biases ("no bias decay", Goyal et al. 2017). The rate rises linearly
  from 0 over `warmup_steps` (none when 0), then follows a cosine to 0 at
  the last step.
  """
  warmup = opt.warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else opt.learning_rate,
      peak_value=opt.learning_rate, warmup_steps=warmup,
      decay_steps=num_steps, end_value=0.0)
  kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  tx = optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=kernels_only),
      optax.sgd(schedule, momentum=opt.momentum,
                nesterov=opt.nesterov))
  return tx, schedule


def _check_linear_schedule(opt, key: str, num_steps: int, steps_name: str):
  require(0 <= opt.decay_steps <= num_steps, f"{key}.decay_steps",
          opt.decay_steps, f"between 0 and {steps_name}={num_steps}")
  require(opt.constant_steps == -1 or opt.constant_steps >= 0,
          f"{key}.constant_steps", opt.constant_steps,
          "-1 (the steps before the decay) or a non-negative integer")


def _check_adam(opt, key: str, num_steps: int, steps_name: str) -> None:
  require(0 <= opt.b1 < 1 and 0 <= opt.b2 < 1, f"{key}.b1/b2",
          (opt.b1, opt.b2), "numbers in [0, 1)")
  _check_linear_schedule(opt, key, num_steps, steps_name)


def _check_adadelta(opt, key: str, num_steps: int, steps_name: str) -> None:
  require(0 <= opt.rho < 1, f"{key}.rho", opt.rho, "a number in [0, 1)")
  require(opt.eps > 0, f"{key}.eps", opt.eps, "a positive number")
  _check_linear_schedule(opt, key, num_steps, steps_name)


def _check_sgd(opt, key: str, num_steps: int, steps_name: str) -> None:
  require(0 <= opt.momentum < 1, f"{key}.momentum", opt.momentum,
          "a number in [0, 1)")
  require(opt.weight_decay >= 0, f"{key}.weight_decay", opt.weight_decay,
          "a non-negative number")
  require(0 <= opt.warmup_steps < num_steps, f"{key}.warmup_steps",
          opt.warmup_steps, f"between 0 and {steps_name}={num_steps}")


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A registry entry: the fields a section must set (besides `name`), the
  fields it may leave out with their defaults, the check of their values,
  and the builder of (transformation, schedule)."""
  fields: tuple[str, ...]
  defaults: dict[str, Any]
  check: Callable[[ml_collections.ConfigDict, str, int, str], None]
  build: Callable[[ml_collections.ConfigDict, int], Built]

  @property
  def known(self) -> tuple[str, ...]:
    return ("name", *self.fields, *self.defaults)


# The optimizer of a section without a `name` (base_config's): pix2pix's
# Adam, the only one before sections had names.
DEFAULT_NAME = "adam"

REGISTRY: dict[str, Optimizer] = {
    "adam": Optimizer(("learning_rate", "b1", "b2", "constant_steps",
                       "decay_steps"), {}, _check_adam, _adam),
    "adadelta": Optimizer(("learning_rate", "rho", "eps", "constant_steps",
                           "decay_steps"), {}, _check_adadelta, _adadelta),
    "sgd": Optimizer(("learning_rate", "momentum", "weight_decay",
                      "warmup_steps"), {"nesterov": False}, _check_sgd, _sgd),
}


def check(opt: ml_collections.ConfigDict, num_steps: int, *,
          key: str = "optimizer", steps_name: str = "num_train_steps") -> None:
  """ConfigError for an unknown name or field, a missing field, or a value
  out of range; then the section's missing `name` and optional fields are
  set to their defaults (`DEFAULT_NAME`, the entry's `defaults`), in place.

  `key`: where the section sits in the config ('optimizer',
  'stages.pretrain_optimizer'); `steps_name`: what `num_steps` is called
  there, for the messages.
  """
  fill_missing(opt, {"name": DEFAULT_NAME})
  name = opt.name
  if name not in REGISTRY:
    raise ConfigError(
        f"config.{key}.name={name!r} is invalid: one of "
        f"{', '.join(REGISTRY)}{suggest(str(name), REGISTRY)}.")
  entry = REGISTRY[name]
  known = entry.known
  for field in opt.keys():
    # Overrides on the command line cannot add fields; a config file can.
    if field not in known:
      raise ConfigError(
          f"Unknown config field '{key}.{field}'{suggest(field, known)}; the "
          f"{name} optimizer reads: {', '.join(known)}.")
  for field in entry.fields:
    if field not in opt:
      raise ConfigError(
          f"config.{key}.{field} is missing: the {name} optimizer reads "
          f"{', '.join(entry.fields)}.")
  fill_missing(opt, entry.defaults)
  require(opt.learning_rate > 0, f"{key}.learning_rate", opt.learning_rate,
          "a positive number")
  entry.check(opt, key, num_steps, steps_name)


def create(opt: ml_collections.ConfigDict, num_steps: int, *,
           key: str = "optimizer", steps_name: str = "num_train_steps"
           ) -> Built:
  """The checked optimizer `opt.name` (`DEFAULT_NAME` when absent) over
  `num_steps` steps, and its schedule; `check` completes `opt` first."""
  check(opt, num_steps, key=key, steps_name=steps_name)
  return REGISTRY[opt.name].build(opt, num_steps)
