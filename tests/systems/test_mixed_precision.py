"""Mixed precision: `compute_dtype='bfloat16'` computes the networks in
bfloat16 while parameters, optimizer state, batch statistics and every loss
stay float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, load_config, random_batch

from jaxcolor import systems
from jaxcolor.core import parallel
from jaxcolor.training import experiment
from jaxcolor.training import train_step

CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.py"))


def _float_dtypes(tree) -> set:
  return {str(leaf.dtype) for leaf in jax.tree.leaves(tree)
          if jnp.issubdtype(leaf.dtype, jnp.floating)}


def _traced_in_ab_bins(eqn) -> bool:
  """Whether `eqn` was traced in jaxcolor/core/ab_bins.py: the a*b* bins'
  decoding and loss (annealed mean, resize, soft encoding), float32 by design
  as every loss is."""
  return any(frame.file_name.endswith("jaxcolor/core/ab_bins.py")
             for frame in eqn.source_info.traceback.frames)


def _conv_operand_dtypes(jaxpr, in_ab_bins: bool = False) -> set:
  """Input dtypes of every convolution and matrix product, nested calls too,
  but those of the bins' decoding and loss (and of the calls they make)."""
  found = set()
  for eqn in jaxpr.eqns:
    exempt = in_ab_bins or _traced_in_ab_bins(eqn)
    if (eqn.primitive.name in ("conv_general_dilated", "dot_general")
        and not exempt):
      found.update(str(v.aval.dtype) for v in eqn.invars)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found |= _conv_operand_dtypes(inner, exempt)
  return found


def _step_specs(config):
  size, batch = config.image_size, config.batch_size
  return ({"image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8),
           "label": jax.ShapeDtypeStruct((batch,), jnp.int32)},
          jax.eval_shape(lambda: jax.random.key(0)))


@pytest.mark.parametrize("config_file", CONFIGS)
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state(config_file):
  config = load_config(f"configs/{config_file}")
  config.compute_dtype = "bfloat16"
  system = systems.create(config)
  state = jax.eval_shape(system.init, jax.random.key(0))
  batch, rng = _step_specs(config)
  assert _float_dtypes(state) == {"float32"}
  phases = {system.phase(0), system.phase(config.num_train_steps - 1)}
  for phase in sorted(phases):
    step = system.phase_train_step(phase)
    new_state, metrics = jax.eval_shape(step, state, batch, rng)
    assert _float_dtypes(new_state) == {"float32"}, phase
    assert _float_dtypes(metrics) == {"float32"}, (phase, metrics)
    operands = _conv_operand_dtypes(jax.make_jaxpr(step)(state, batch, rng).jaxpr)
    # Every network convolves in bfloat16 (Lab conversion and losses, which
    # have no convolutions, stay float32).
    assert operands == {"bfloat16"}, (phase, operands)


def test_float32_config_has_no_bfloat16():
  config = load_config("configs/pix2pix.py")
  system = systems.create(config)
  state = jax.eval_shape(system.init, jax.random.key(0))
  batch, rng = _step_specs(config)
  jaxpr = jax.make_jaxpr(system.train_step)(state, batch, rng).jaxpr
  assert _conv_operand_dtypes(jaxpr) == {"float32"}


@pytest.mark.slow  # Minutes on 2 cores: `pytest -m slow tests`.
def test_pix2pix_bfloat16_step_is_close_to_float32():
  runs = {}
  for dtype in ("float32", "bfloat16"):
    config = load_config("configs/pix2pix.py")
    config.compute_dtype = dtype
    system = systems.create(config)
    mesh = parallel.make_mesh(jax.devices()[:1])
    init_rng, step_rng = jax.random.split(jax.random.key(0))
    abstract = jax.eval_shape(system.init, init_rng)
    step, sharding = train_step.jit_train_step(system, mesh, abstract)
    state = experiment.initial_state(system, sharding, init_rng)
    batch = parallel.global_batch(random_batch(config.batch_size,
                                               config.image_size), mesh)
    state, metrics = step(state, batch, parallel.replicate(step_rng, mesh))
    runs[dtype] = jax.device_get((state, metrics))
  (_, metrics32), (state16, metrics16) = runs["float32"], runs["bfloat16"]
  assert _float_dtypes(state16) == {"float32"}
  for key in ("generator_l1_loss", "generator_gan_loss", "discriminator_loss"):
    assert metrics16[key].dtype == np.float32
    # Same initial parameters, same batch: bfloat16's 8-bit mantissa moves
    # the losses by a fraction of a percent, not more, and not by nothing.
    np.testing.assert_allclose(metrics16[key], metrics32[key], rtol=2e-2,
                               err_msg=key)
    assert metrics16[key] != metrics32[key], key
