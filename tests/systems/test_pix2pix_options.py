"""The quality options of the GAN systems (docs/results.md measures them):
L1 warm-up, generator EMA, GAN weight, Isola et al.'s test-time mode, random
jitter, what the Improver's D calls fake, and the explicit ResNet backbone."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcolor import data
from jaxcolor import systems
from jaxcolor.core import color_space
from jaxcolor.core import configuration
from jaxcolor.core import parallel
from jaxcolor.systems import pix2pix
from jaxcolor.training import backbone
from jaxcolor.training import train_step

from helpers import init_host_state, load_config, random_batch

pytestmark = pytest.mark.xdist_group("remedies")


def _steps(config, phases, state=None):
  """Runs one jitted step per entry of `phases` on one device; returns
  (initial host state, final host state, metrics per step)."""
  system = systems.create(config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  abstract = jax.eval_shape(system.init, jax.random.key(0))
  state0 = state if state is not None else init_host_state(config)
  sharding = jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
  # Its values in this system's tree (the optimizer is a static field).
  current = jax.device_put(jax.tree.unflatten(
      jax.tree.structure(abstract), jax.tree.leaves(state0)), sharding)
  rng = parallel.replicate(jax.random.key(1), mesh)
  history, compiled = [], {}
  for i, phase in enumerate(phases):
    assert system.phase(i) == phase
    if phase not in compiled:
      compiled[phase], _ = train_step.jit_train_step(system, mesh, abstract, phase)
    batch = parallel.global_batch(
        random_batch(config.batch_size, config.image_size, seed=i), mesh)
    current, metrics = compiled[phase](current, batch, rng)
    history.append(jax.device_get(metrics))
  return state0, jax.device_get(current), history


def _changed(before, after) -> bool:
  return any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_l1_warmup_trains_the_generator_alone_then_the_gan():
  config = load_config("configs/default.py")
  config.loss.l1_warmup_steps = 2
  config.generator_ema_decay = 0.9
  state0, state, history = _steps(config, ["warmup", "warmup", "train"])
  warm = history[0]
  assert "generator_l1_loss" in warm and "discriminator_loss" not in warm
  assert "discriminator_loss" in history[2]
  # D neither moves nor is stepped while G warms up; G does.
  _, after_warmup, _ = _steps(config, ["warmup", "warmup"], state=state0)
  assert not _changed(state0["discriminator"], after_warmup["discriminator"])
  assert _changed(state0["generator"].params, after_warmup["generator"].params)
  assert int(after_warmup["generator"].step) == 2
  assert _changed(after_warmup["discriminator"], state["discriminator"])
  # G's loss in warm-up is lambda * L1: its gradient is lambda times L1's.
  assert warm["generator_grad_norm"] > 0


def test_ema_follows_the_ramped_decay():
  config = load_config("configs/default.py")
  config.generator_ema_decay = 0.5
  state0, state, _ = _steps(config, ["train", "train"])
  # Step t (from 0) mixes with decay min(0.5, (1 + t) / (10 + t)): 0.1, then 2/11.
  _, one, _ = _steps(config, ["train"], state=state0)
  ema0 = pix2pix._ema_variables(state0["generator"])  # noqa: SLF001
  expected_one = jax.tree.map(lambda e, v: 0.1 * e + 0.9 * v, ema0,
                              pix2pix._ema_variables(one["generator"]))  # noqa: SLF001
  for a, b in zip(jax.tree.leaves(one["generator_ema"]),
                  jax.tree.leaves(expected_one)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  expected_two = jax.tree.map(
      lambda e, v: (2 / 11) * e + (9 / 11) * v, expected_one,
      pix2pix._ema_variables(state["generator"]))  # noqa: SLF001
  for a, b in zip(jax.tree.leaves(state["generator_ema"]),
                  jax.tree.leaves(expected_two)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Evaluated first (colorize and the unprefixed metrics use it), raw beside.
  system = systems.create(config)
  outputs = system.colorize(state, jnp.zeros((2, 32, 32, 1)))
  assert list(outputs) == ["generator_ema", "generator"]


def test_ema_ramp_gan_restarts_at_the_gan_phase_then_keeps_the_decay():
  config = load_config("configs/default.py")
  config.loss.l1_warmup_steps = 1
  config.generator_ema_decay = 0.5
  config.generator_ema_ramp = "gan"
  # Same seeds and batches: each run's prefix is the shorter run.
  state0, warm, _ = _steps(config, ["warmup"])
  _, first, _ = _steps(config, ["warmup", "train"])
  _, second, _ = _steps(config, ["warmup", "train", "train"])

  def assert_mix(ema, previous, weights, decay):
    expected = jax.tree.map(lambda e, v: decay * e + (1 - decay) * v, previous,
                            pix2pix._ema_variables(weights))  # noqa: SLF001
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  # Warm-up: the ramp of 'steps' (update 0: decay 0.1).
  assert_mix(warm["generator_ema"], state0["generator_ema"],
             warm["generator"], 0.1)
  # The first GAN update restarts the average at G's weights ...
  assert_mix(first["generator_ema"], warm["generator_ema"],
             first["generator"], 0.0)
  # ... and the next one mixes with the constant decay, not the ramp's 2/11.
  assert_mix(second["generator_ema"], first["generator_ema"],
             second["generator"], 0.5)


def test_gan_weight_zero_leaves_only_l1():
  config = load_config("configs/default.py")
  config.loss.gan_weight = 0.0
  _, _, (metrics,) = _steps(config, ["train"])
  np.testing.assert_allclose(metrics["generator_loss"],
                             config.loss.l1_weight * metrics["generator_l1_loss"],
                             rtol=1e-6)
  assert metrics["generator_gan_loss"] > 0  # Measured, not weighed in.


def test_train_test_mode_uses_each_photos_own_statistics():
  config = load_config("configs/default.py")
  state = init_host_state(config)
  batch = random_batch(4, config.image_size, seed=3)["image"]
  lightness, _ = color_space.split_lab(jnp.asarray(batch))
  config.generator_test_mode = "train"
  isola = systems.create(config)
  alone = isola.colorize(state, lightness[:1])["generator"]
  together = isola.colorize(state, lightness)["generator"]
  np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-6)
  config.generator_test_mode = "eval"
  running = systems.create(config).colorize(state, lightness)["generator"]
  assert not np.allclose(running, together, atol=1e-4)


def test_test_mode_and_ema_are_checked():
  config = load_config("configs/default.py")
  config.generator_test_mode = "dropout"
  with pytest.raises(configuration.ConfigError, match="generator_test_mode"):
    configuration.validate(config, device_count=1)
  config = load_config("configs/default.py")
  config.generator_ema_ramp = "linear"
  with pytest.raises(configuration.ConfigError, match="generator_ema_ramp"):
    configuration.validate(config, device_count=1)
  config = load_config("configs/iizuka.py")
  config.generator_ema_decay = 0.99
  with pytest.raises(configuration.ConfigError,
                     match="generator_ema_decay=0.99 .*iizuka"):
    systems.create(config).validate()
  config = load_config("configs/default.py")
  config.loss.l1_warmup_steps = config.num_train_steps + 1
  with pytest.raises(configuration.ConfigError, match="l1_warmup_steps"):
    systems.create(config).validate()


def test_random_jitter_crops_from_a_larger_resize():
  size = 32
  plain = next(data.create_train_iterator(
      "sample", image_size=size, global_batch_size=4, seed=0,
      process_index=0, process_count=1))
  jittered = next(data.create_train_iterator(
      "sample", image_size=size, global_batch_size=4, seed=0,
      process_index=0, process_count=1, resize_scale=286 / 256))
  assert plain["image"].shape == jittered["image"].shape == (4, size, size, 3)
  assert not np.array_equal(plain["image"], jittered["image"])
  config = load_config("configs/default.py")
  config.train_resize_scale = 0.5
  with pytest.raises(configuration.ConfigError, match="train_resize_scale"):
    configuration.validate(config, device_count=1)


def test_improver_discriminator_can_judge_the_improvers_output():
  config = load_config("configs/pix2pix_improver.py")
  state0 = init_host_state(config)
  # A non-identity Improver, so what D sees differs between the readings.
  state0["improver"] = state0["improver"].replace(params=jax.tree.map(
      lambda p: p + 0.05, state0["improver"].params))
  _, by_generator, _ = _steps(config, ["train"], state=state0)
  config.loss.discriminator_fake = "improver"
  _, by_improver, _ = _steps(config, ["train"], state=state0)
  assert _changed(by_generator["discriminator"].params,
                  by_improver["discriminator"].params)
  config.loss.discriminator_fake = "both"
  with pytest.raises(configuration.ConfigError, match="discriminator_fake"):
    systems.create(config).validate()


def test_resnet_backbone_must_be_named():
  with pytest.raises(configuration.ConfigError,
                     match="backbone.source is unset.*source=random"):
    backbone.load_resnet18(ml_collections.ConfigDict({"source": "",
                                                      "path": ""}))
  assert backbone.load_resnet18(ml_collections.ConfigDict(
      {"source": "random", "path": ""})) is None
