"""jaxcolor.losses against closed forms computed independently in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor import losses


def _logits(shape=(2, 4, 4, 1), seed=0, scale=3.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _numpy_bce(x, y):
  # -[y log p + (1 - y) log(1 - p)], p = sigmoid(x), in float64.
  x = x.astype(np.float64)
  p = 1.0 / (1.0 + np.exp(-x))
  return np.mean(-(y * np.log(p) + (1 - y) * np.log1p(-p)))


def test_vanilla_at_zero_logits_is_log_2():
  zeros = np.zeros((3, 5), np.float32)
  for target in (True, False):
    np.testing.assert_allclose(losses.gan_loss(zeros, target, "vanilla"), np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize("target", [True, False])
def test_vanilla_is_binary_cross_entropy(target):
  x = _logits()
  np.testing.assert_allclose(losses.gan_loss(x, target, "vanilla"), _numpy_bce(x, float(target)),
                             rtol=1e-5)


def test_vanilla_is_stable_for_large_logits():
  x = np.array([-200.0, -40.0, 40.0, 200.0], np.float32)
  real = losses.gan_loss(x, True, "vanilla")
  fake = losses.gan_loss(x, False, "vanilla")
  # softplus(-x) and softplus(x) averaged: (200 + 40 + ~0 + ~0) / 4 each.
  np.testing.assert_allclose(real, 60.0, rtol=1e-6)
  np.testing.assert_allclose(fake, 60.0, rtol=1e-6)


@pytest.mark.parametrize("target", [True, False])
def test_lsgan_is_mse_against_one_or_zero(target):
  x = _logits(seed=1)
  expected = np.mean((x.astype(np.float64) - float(target)) ** 2)
  np.testing.assert_allclose(losses.gan_loss(x, target, "lsgan"), expected, rtol=1e-5)


def test_lsgan_known_values():
  x = np.array([0.0, 1.0, 2.0, -1.0], np.float32)
  np.testing.assert_allclose(losses.gan_loss(x, True, "lsgan"), (1 + 0 + 1 + 4) / 4)
  np.testing.assert_allclose(losses.gan_loss(x, False, "lsgan"), (0 + 1 + 4 + 1) / 4)


def test_unknown_mode_names_the_allowed_values():
  with pytest.raises(ValueError, match="vanilla, lsgan"):
    losses.gan_loss(np.zeros(3), True, "wgangp")
  assert losses.GAN_MODES == ("vanilla", "lsgan")


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_discriminator_loss_is_halved_sum(mode):
  real, fake = _logits(seed=2), _logits(seed=3)
  if mode == "vanilla":
    expected = 0.5 * (_numpy_bce(real, 1.0) + _numpy_bce(fake, 0.0))
  else:
    expected = 0.5 * (np.mean((real - 1.0) ** 2) + np.mean(fake.astype(np.float64) ** 2))
  np.testing.assert_allclose(losses.discriminator_loss(real, fake, mode), expected, rtol=1e-5)


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_generator_adversarial_loss_targets_real(mode):
  fake = _logits(seed=4)
  np.testing.assert_allclose(losses.generator_adversarial_loss(fake, mode),
                             losses.gan_loss(fake, True, mode), rtol=1e-6)
  assert not np.isclose(losses.generator_adversarial_loss(fake, mode),
                        losses.gan_loss(fake, False, mode))


def test_l1_and_mse():
  pred = np.array([[0.0, 1.0], [2.0, -3.0]], np.float32)
  target = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(losses.l1_loss(pred, target), (1 + 0 + 2 + 3) / 4)
  np.testing.assert_allclose(losses.mse_loss(pred, target), (1 + 0 + 4 + 9) / 4)


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_jit_matches_eager(mode):
  real, fake = _logits(seed=5), _logits(seed=6)
  jitted = jax.jit(losses.discriminator_loss, static_argnames="mode")
  np.testing.assert_allclose(jitted(real, fake, mode=mode),
                             losses.discriminator_loss(real, fake, mode), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(losses.l1_loss)(real, fake), losses.l1_loss(real, fake),
                             rtol=1e-6)


def test_bfloat16_inputs_give_float32_results():
  x = jnp.asarray(_logits(seed=7), jnp.bfloat16)
  y = jnp.asarray(_logits(seed=8), jnp.bfloat16)
  for mode in losses.GAN_MODES:
    assert losses.gan_loss(x, True, mode).dtype == jnp.float32
    assert losses.discriminator_loss(x, y, mode).dtype == jnp.float32
    assert losses.generator_adversarial_loss(x, mode).dtype == jnp.float32
  assert losses.l1_loss(x, y).dtype == jnp.float32
  assert losses.mse_loss(x, y).dtype == jnp.float32
  # Reduced in float32: the same value as from the bfloat16 values upcast.
  np.testing.assert_allclose(losses.l1_loss(x, y),
                             np.mean(np.abs(np.float32(x) - np.float32(y))), rtol=1e-6)


@pytest.mark.parametrize("target", [True, False])
def test_vanilla_gradient_is_sigmoid_minus_target_over_n(target):
  x = _logits(seed=9)
  grad = jax.grad(losses.gan_loss)(jnp.asarray(x), target, "vanilla")
  expected = (1.0 / (1.0 + np.exp(-x.astype(np.float64))) - float(target)) / x.size
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-9)


def test_lsgan_gradient_is_two_residual_over_n():
  x = _logits(seed=10)
  grad = jax.grad(losses.gan_loss)(jnp.asarray(x), True, "lsgan")
  np.testing.assert_allclose(grad, 2.0 * (x - 1.0) / x.size, rtol=1e-5)
