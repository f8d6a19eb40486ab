"""One builder for every job: the system, the mesh, the abstract state and
its shardings, checked before anything compiles; and one way to restore a
checkpointed step of a run directory into a state.

  experiment = experiment.build(config)                 # train, evaluate
  state = experiment.init_state()                       # a fresh run
  state = experiment.restore(checkpointer, step)        # a saved step

`build` runs the whole set-up chain in one order: the system is created
(its optimizers check their config sections), the common fields are
validated for this device and process count, the system validates its own,
the datasets are opened once (`data.check_datasets`: names, folders, TFDS
preparation, labels) and described to the system, and the state is traced
with `jax.eval_shape` (nothing compiles). Training, evaluation, colorize,
the benchmark and the tests all start here.
"""

import dataclasses
from typing import Any, Literal

import jax
import ml_collections

from jaxcolor import data as data_lib
from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.core import parallel
from jaxcolor.core.errors import ConfigError
from jaxcolor.training import checkpointing

# Which datasets `build` opens: training's two, an evaluation run's one, or
# none (the benchmark's synthetic batches; colorize reads no dataset).
DataCheck = Literal["train", "eval", "none"]


@dataclasses.dataclass
class Experiment:
  """A built system on a mesh, with its state's shapes and shardings."""
  config: ml_collections.ConfigDict
  system: systems.System
  mesh: jax.sharding.Mesh
  abstract_state: Any
  state_sharding: Any

  @property
  def init_rng(self) -> jax.Array:
    """The key `initial_state` draws the initial parameters from."""
    return jax.random.split(jax.random.key(self.config.seed))[0]

  @property
  def step_rng(self) -> jax.Array:
    """The per-run key of the training steps, replicated on the mesh."""
    return parallel.replicate(
        jax.random.split(jax.random.key(self.config.seed))[1], self.mesh)

  def init_state(self) -> Any:
    """A fresh state in its shardings, with the configured pretrained
    weights (`System.load_pretrained`)."""
    state = initial_state(self.system, self.state_sharding, self.init_rng)
    pretrained = self.system.load_pretrained(state)
    if pretrained is not state:
      state = jax.device_put(pretrained, self.state_sharding)
    return state

  def restore_target(self) -> Any:
    """The abstract state with its shardings: what a restore fills."""
    return checkpointing.abstract_with_shardings(self.abstract_state,
                                                 self.state_sharding)

  def restore(self, checkpointer: checkpointing.Checkpointer, step: int,
              data_iter: Any = None, **kwargs) -> Any:
    """The state of checkpoint `step` (and `data_iter` moved to it).

    Raises:
      CheckpointMismatchError: the checkpoint's arrays do not fit this
        config's state (the first differing array named, both shapes).
    """
    try:
      return checkpointer.restore(step, self.restore_target(), data_iter,
                                  **kwargs)
    except ConfigError:  # A mismatch, named by check_fits; a data position.
      raise
    except (ValueError, KeyError, TypeError) as e:
      # Orbax lists every mismatched variable; the first says enough.
      detail = " ".join(line.strip() for line in str(e).splitlines()[:2])
      raise ConfigError(
          f"The checkpoint at step {step} in {checkpointer.directory} does "
          "not fit this config's networks (is --config the run's? compare "
          f"its config.json): {detail}") from e


def build(config: ml_collections.ConfigDict, *, data: DataCheck = "train",
          devices: list | None = None, validate: bool = True) -> Experiment:
  """Checks `config` and builds its experiment on `devices` (default: all).

  Args:
    config: the full configuration.
    data: which datasets to open and describe to the system (see
      `DataCheck`).
    devices: the mesh's devices; default every device of every process.
      Their platform picks the networks' convolution forms
      (`backends.select`).
    validate: False to skip the config checks, for a run's own config.json
      read back on another machine (colorize): its batch sizes were checked
      for the devices it trained on.

  Raises:
    ConfigError: the first invalid field, dataset or image size, before
      anything compiles.
  """
  system = systems.create(
      config, platform=devices[0].platform if devices else None)
  if validate:
    device_count = len(devices) if devices is not None else jax.device_count()
    configuration.scale_batch_sizes(config, device_count)
    configuration.validate(config, device_count=device_count,
                           process_count=jax.process_count(),
                           extra_fields=system.config_fields)
    system.validate()
  if data != "none":
    system.check_datasets(data_lib.check_datasets(config,
                                                  train=data == "train"))
  mesh = parallel.make_mesh(devices)
  abstract_state = system.abstract_state()
  state_sharding = jax.tree.map(lambda _: parallel.replicated(mesh),
                                abstract_state)
  return Experiment(config=config, system=system, mesh=mesh,
                    abstract_state=abstract_state,
                    state_sharding=state_sharding)


def initial_state(system: systems.System, state_sharding: Any, rng: jax.Array):
  """`system.init` jitted straight into its shardings (no host copy).

  Initialization draws with the non-partitionable threefry: the initial
  state is replicated, so both forms give device-count-independent values,
  and this one compiles several times faster on XLA:CPU, where each random
  parameter otherwise costs a fraction of a second of compile time
  (docs/benchmarks.md). Per-step randomness keeps the partitionable form,
  so sharded dropout masks match those of one device.
  """
  init = jax.jit(system.init, out_shardings=state_sharding)
  with jax.threefry_partitionable(False):
    return init(rng)
