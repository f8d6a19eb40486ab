"""What every system shares: the per-network train state and the interface.

A system composes networks into one training step. Its state is a dict
`{'step': int32[], 'skipped_steps': int32[], '<network>': TrainState, ...}`
(the counters from `counters()`); `train_step` is a pure
function `(state, batch, rng) -> (state, metrics)` that the training loop jits
once over the device mesh. Nothing here knows about data, logging or files.
"""

import abc
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from jaxcolor import backends
from jaxcolor import models
from jaxcolor.core.errors import ConfigError

State = dict[str, Any]
Metrics = dict[str, jax.Array]

# The phase name of systems that train the same way from start to end.
SINGLE_PHASE = "train"
# The state's count of steps whose update was discarded as non-finite
# (`jaxcolor.training.divergence.guard_nonfinite`); systems never touch it.
SKIPPED_STEPS = "skipped_steps"


def counters() -> State:
  """The counters every system's initial state starts with: the steps taken
  (`train_step` advances it) and the steps skipped as non-finite."""
  return {"step": jnp.zeros((), jnp.int32),
          SKIPPED_STEPS: jnp.zeros((), jnp.int32)}


class TrainState(train_state.TrainState):
  """Parameters, optimizer state and batch-norm statistics of one network."""
  batch_stats: Any = None

  @property
  def variables(self) -> dict[str, Any]:
    """Variables for `apply`: params, plus batch_stats when the net has any."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}


def network_from_config(net_config: ml_collections.ConfigDict, compute_dtype: str,
                        key: str, conv_backend: Any = None) -> nn.Module:
  """The registered network `net_config.name` with the other fields as kwargs.

  `conv_backend` (`backends.select` of config.conv_impl; None: XLA's own
  convolutions) goes to every network that has the field (those with
  stride-2 layers); `net_config` may not set it itself,
  so one setting holds for all of a run's networks.
  """
  kwargs = dict(net_config)
  name = kwargs.pop("name", None)
  if name is None:
    raise ConfigError(
        f"config.{key}.name is missing; registered networks: "
        f"{', '.join(models.names())}.")
  for field in ("conv_impl", "conv_backend"):
    if field in kwargs:
      raise ConfigError(f"config.{key}.{field}: set the top-level "
                        f"config.conv_impl, which every network follows.")
  try:
    if "conv_backend" in getattr(models.get_class(name),
                                 "__dataclass_fields__", {}):
      kwargs["conv_backend"] = conv_backend
    return models.build(name, dtype=jnp.dtype(compute_dtype), **kwargs)
  except ValueError as e:
    raise ConfigError(f"config.{key}: {e}") from None


def create_train_state(module: nn.Module, tx: optax.GradientTransformation,
                       rng: jax.Array, example_input: jax.Array) -> TrainState:
  """Initializes `module` on `example_input` (shape only matters)."""
  params_rng, dropout_rng = jax.random.split(rng)
  variables = module.init({"params": params_rng, "dropout": dropout_rng},
                          example_input, train=False)
  state = TrainState.create(
      apply_fn=module.apply, params=variables["params"], tx=tx,
      batch_stats=variables.get("batch_stats", {}))
  # Flax starts `step` at the Python int 0, a weakly typed int32 once traced,
  # where a restored checkpoint holds a plain int32: the step of a fresh run
  # and of a resumed one would then be two programs, compiled twice.
  return state.replace(step=jnp.zeros((), jnp.int32))


def apply_train(state: TrainState, params: Any, x: jax.Array,
                rngs: dict[str, jax.Array] | None = None) -> tuple[Any, Any]:
  """Training-mode forward: returns (outputs, updated batch_stats)."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  outputs, mutated = state.apply_fn(variables, x, train=True, rngs=rngs,
                                    mutable=["batch_stats"])
  return outputs, mutated.get("batch_stats", state.batch_stats)


def apply_eval(state: TrainState, x: jax.Array) -> Any:
  """Inference-mode forward: running statistics, no dropout."""
  return state.apply_fn(state.variables, x, train=False)


class System(abc.ABC):
  """How a training step is composed from networks (see module docstring).

  Subclasses set `networks` (the state keys of their networks, in update
  order), `config_fields` (top-level config fields they add to the base;
  their values are the system's config file's, read as they stand) and
  `newer_fields` (fields of the base's shared sections they read that
  `base_config` gained after its first form, such as 'loss.gan_weight': a
  config written before them gets their `base_config` value when it is
  read back, `config_fields.fill_newer_fields`).
  """
  networks: tuple[str, ...] = ()
  config_fields: tuple[str, ...] = ()
  newer_fields: tuple[str, ...] = ()

  def __init__(self, config: ml_collections.ConfigDict,
               platform: str | None = None):
    """`platform`: the JAX platform ('cpu', 'gpu', 'tpu') the system's
    programs are compiled for, which picks the networks' convolution forms
    (`backends.select`); default JAX's default backend."""
    self.config = config
    self.compute_dtype = config.compute_dtype
    self.platform = platform or jax.default_backend()

  def build_network(self, key: str) -> nn.Module:
    """The network of `config[key]`, in this run's compute dtype and
    convolution forms (`network_from_config`)."""
    try:
      conv_backend = backends.select(self.config.conv_impl, self.platform)
    except ValueError as e:
      raise ConfigError(f"config.{e}") from None
    return network_from_config(self.config[key], self.compute_dtype, key,
                         conv_backend)

  @abc.abstractmethod
  def validate(self) -> None:
    """Raises ConfigError for settings this system cannot run."""

  @abc.abstractmethod
  def init(self, rng: jax.Array) -> State:
    """The initial state (shapes from `config.image_size`)."""

  @abc.abstractmethod
  def train_step(self, state: State, batch: dict[str, jax.Array],
                 rng: jax.Array) -> tuple[State, Metrics]:
    """One update of every network; pure, jitted by the training loop.

    `batch['image']` is uint8 RGB [B, H, W, 3]: the conversion to Lab happens
    here, on the accelerator. Per-step randomness is `fold_in(rng, step)`.
    """

  @abc.abstractmethod
  def colorize(self, state: State, lightness: jax.Array) -> dict[str, jax.Array]:
    """Inference: network-scaled L [B, H, W, 1] -> {output name: ab [B, H, W, 2]}.

    The first entry is the system's final output; others (e.g. the
    generator's output before an improver) are evaluated alongside it.
    """

  def abstract_state(self) -> State:
    """The state's shapes and dtypes (`jax.eval_shape` of `init`; nothing
    compiles), traced once and kept.

    Also the shape check every system's `validate` runs: a network that
    cannot take `config.image_size` fails here, as a ConfigError naming it.
    """
    if getattr(self, "_abstract_state", None) is None:
      try:
        self._abstract_state = jax.eval_shape(self.init, jax.random.key(0))
      except (ValueError, TypeError) as e:
        raise ConfigError(
            f"config.image_size={self.config.image_size}: the networks of "
            f"system {self.config.system!r} cannot take it: {e}") from None
    return self._abstract_state

  def check_datasets(self, datasets: dict[str, dict[str, Any]]) -> None:
    """Checks what the run's datasets hold against what the system needs.

    `datasets`: {'dataset' / 'eval_dataset': `jaxcolor.data.describe(...)`}
    of the datasets the job opened (none for the benchmark's synthetic
    batches). Raises ConfigError; the default needs nothing.
    """
    del datasets

  # -- optional hooks (defaults: one phase, no pretrained weights, only the
  # -- colorization metrics) ---------------------------------------------------

  # False for systems that do not colorize (the backbone classifier): the
  # evaluator then scores only `eval_metrics` and draws no image grid.
  colorizes: bool = True

  def phase(self, step: int) -> str:
    """The phase of training that step `step` (a host int, 0-based) is in.

    A system whose step changes form during training (staged training: the
    generator alone first, then the GAN) names its phases; the training loop
    jits `phase_train_step(phase)` once per phase, when first needed, and
    picks it by the step it is about to run. A phase must therefore be a
    function of the step count alone, so a resumed run picks what an
    uninterrupted run picks.
    """
    del step
    return SINGLE_PHASE

  def phase_train_step(self, phase: str):
    """The pure step function of `phase`, with `train_step`'s signature."""
    del phase
    return self.train_step

  def load_pretrained(self, state: State) -> State:
    """A fresh run's initial state with the configured pretrained weights.

    Called on the host once, after `init` and before step 0, never on
    resume (the checkpoint already holds them). Missing or unfit weight
    files must be reported by `validate`, before anything compiles.
    """
    return state

  def eval_metrics(self, state: State, batch: dict[str, jax.Array]) -> Metrics:
    """Per-image metrics [B] beyond colorization's, e.g. a top-1 accuracy.

    `batch` is an evaluation batch: 'image' uint8 [B, H, W, 3], 'mask' bool
    [B] and, for labelled datasets, 'label' int32 [B]. The evaluator sums
    each over the real images (mask True) and reports the mean under the
    returned name. Traced inside the evaluator's jitted step.
    """
    del state, batch
    return {}


def reject_generator_options(config: ml_collections.ConfigDict,
                             system: str) -> None:
  """ConfigError for the GAN generator's options on a system without one."""
  if config.generator_ema_decay:
    raise ConfigError(
        f"config.generator_ema_decay={config.generator_ema_decay!r} is "
        f"invalid for the {system} system: it has no GAN generator; use 0.")
  if config.generator_test_mode != "eval":
    raise ConfigError(
        f"config.generator_test_mode={config.generator_test_mode!r} is "
        f"invalid for the {system} system: it has no GAN generator; use "
        "'eval'.")


def step_rng(rng: jax.Array, step: jax.Array) -> jax.Array:
  """The randomness of training step `step`: independent of the device count."""
  return jax.random.fold_in(rng, step)


def grad_norm(grads: Any) -> jax.Array:
  return optax.tree.norm(grads).astype(jnp.float32)
