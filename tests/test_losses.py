"""jaxcolor.training.losses by what the losses must do: values worked out by
hand on small inputs, symmetries, limits, the signs of their gradients, and
what they say of a perfect, a worst and an undecided discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcolor.training import losses

LOG3 = np.log(3.0)  # sigmoid(log 3) = 3/4: the hand-worked values below.


def _logits(shape=(2, 4, 4, 1), seed=0, scale=3.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# -- known values ----------------------------------------------------------------


def test_vanilla_known_values():
  # D says 3/4 real on the first patch, 1/4 on the second: the real target
  # costs -log 3/4 and -log 1/4, the fake target -log 1/4 and -log 3/4.
  x = np.array([LOG3, -LOG3], np.float32)
  expected = (np.log(4 / 3) + np.log(4.0)) / 2
  np.testing.assert_allclose(losses.gan_loss(x, True, "vanilla"), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.gan_loss(x, False, "vanilla"), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.gan_loss(x[:1], True, "vanilla"), np.log(4 / 3), rtol=1e-6)
  np.testing.assert_allclose(losses.gan_loss(x[:1], False, "vanilla"), np.log(4.0), rtol=1e-6)


def test_lsgan_known_values():
  x = np.array([0.0, 1.0, 2.0, -1.0], np.float32)
  np.testing.assert_allclose(losses.gan_loss(x, True, "lsgan"), (1 + 0 + 1 + 4) / 4)
  np.testing.assert_allclose(losses.gan_loss(x, False, "lsgan"), (0 + 1 + 4 + 1) / 4)


def test_discriminator_loss_is_half_the_two_targets():
  # Isola et al. (sec. 3.3) halve D's objective: D at 3/4 on real pairs and
  # 1/4 on fakes pays log 4/3 on each, so log 4/3 in all, not 2 log 4/3.
  real = np.full((2, 3), LOG3, np.float32)
  fake = np.full((2, 3), -LOG3, np.float32)
  np.testing.assert_allclose(losses.discriminator_loss(real, fake, "vanilla"),
                             np.log(4 / 3), rtol=1e-6)
  # LSGAN: outputs 0.5 on real (0.25 each) and 0.25 on fake (0.0625 each).
  np.testing.assert_allclose(
      losses.discriminator_loss(np.full(4, 0.5), np.full(4, 0.25), "lsgan"),
      0.5 * (0.25 + 0.0625), rtol=1e-6)


def test_l1_and_mse():
  pred = np.array([[0.0, 1.0], [2.0, -3.0]], np.float32)
  target = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(losses.l1_loss(pred, target), (1 + 0 + 2 + 3) / 4)
  np.testing.assert_allclose(losses.mse_loss(pred, target), (1 + 0 + 4 + 9) / 4)
  for loss in (losses.l1_loss, losses.mse_loss):
    assert loss(pred, pred) == 0
    assert loss(pred, target) == loss(target, pred)


# -- the discriminator: undecided, perfect, worst ---------------------------------


@pytest.mark.parametrize("mode, undecided, expected", [
    ("vanilla", 0.0, np.log(2.0)),   # D(x) = 1/2: -log 1/2 either way.
    ("lsgan", 0.5, 0.25)])           # Halfway between the targets 0 and 1.
def test_an_undecided_discriminator(mode, undecided, expected):
  d_out = np.full((3, 5), undecided, np.float32)
  for target in (True, False):
    np.testing.assert_allclose(losses.gan_loss(d_out, target, mode), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss(d_out, d_out, mode), expected, rtol=1e-6)


def test_a_perfect_discriminator_leaves_the_generator_a_gradient():
  # Vanilla: D sure of every real (logit +20) and every fake (-20) pays
  # about nothing; G's non-saturating loss -log D(G(z)) is about 20 and its
  # gradient does not vanish (it tends to -1 per element, where the
  # saturating log(1 - D(G(z))) of the minimax game would give e^-20).
  real, fake = np.full(4, 20.0, np.float32), np.full(4, -20.0, np.float32)
  assert losses.discriminator_loss(real, fake, "vanilla") < 1e-8
  np.testing.assert_allclose(losses.generator_adversarial_loss(fake, "vanilla"), 20.0,
                             rtol=1e-6)
  grad = jax.grad(losses.generator_adversarial_loss)(jnp.asarray(fake), "vanilla")
  np.testing.assert_allclose(grad, -1.0 / 4, rtol=1e-6)
  # LSGAN: exactly on its targets, D pays 0 and G pays 1 (its fakes score
  # 0, one away from the real target).
  real, fake = np.ones(4, np.float32), np.zeros(4, np.float32)
  assert losses.discriminator_loss(real, fake, "lsgan") == 0
  assert losses.generator_adversarial_loss(fake, "lsgan") == 1


@pytest.mark.parametrize("mode, real, fake, chance", [
    ("vanilla", -5.0, 5.0, np.log(2.0)),   # Confidently wrong both ways.
    ("lsgan", 0.0, 1.0, 0.25)])            # Each on the other's target.
def test_the_worst_discriminator_pays_more_than_a_coin(mode, real, fake, chance):
  # Real called fake and fake called real: D pays more than at chance ...
  real, fake = np.full(4, real, np.float32), np.full(4, fake, np.float32)
  assert losses.discriminator_loss(real, fake, mode) > chance
  # ... and G, which fooled it, less.
  assert losses.generator_adversarial_loss(fake, mode) < chance


def test_vanilla_is_stable_for_large_logits():
  x = np.array([-200.0, -40.0, 40.0, 200.0], np.float32)
  # -log sigmoid(-200) = 200 exactly in float32, -log sigmoid(200) = 0, and
  # so on: neither target overflows or loses the large terms.
  np.testing.assert_allclose(losses.gan_loss(x, True, "vanilla"), (200 + 40) / 4, rtol=1e-6)
  np.testing.assert_allclose(losses.gan_loss(x, False, "vanilla"), (40 + 200) / 4, rtol=1e-6)
  grad = jax.grad(losses.gan_loss)(jnp.asarray(x), True, "vanilla")
  assert np.all(np.isfinite(grad))


# -- symmetries and the generator's target -------------------------------------


def test_real_and_fake_targets_mirror_each_other():
  x = _logits(seed=1)
  # Vanilla: D calling x real is D calling -x fake (sigmoid(-x) = 1 - sigmoid(x)).
  np.testing.assert_allclose(losses.gan_loss(x, True, "vanilla"),
                             losses.gan_loss(-x, False, "vanilla"), rtol=1e-6)
  # LSGAN: distance to 1 from x is distance to 0 from 1 - x.
  np.testing.assert_allclose(losses.gan_loss(x, True, "lsgan"),
                             losses.gan_loss(1.0 - x, False, "lsgan"), rtol=1e-5)
  # And D's loss does not care which batch came first once the targets swap.
  real, fake = _logits(seed=2), _logits(seed=3)
  np.testing.assert_allclose(losses.discriminator_loss(real, fake, "vanilla"),
                             losses.discriminator_loss(-fake, -real, "vanilla"), rtol=1e-6)


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_generator_wants_its_fakes_called_real(mode):
  # G's loss falls as D scores its fakes more real, and is D's real-target
  # loss: the same value a real pair with those scores would give D.
  low, high = np.full(4, -1.0, np.float32), np.full(4, 0.5, np.float32)
  assert (losses.generator_adversarial_loss(high, mode)
          < losses.generator_adversarial_loss(low, mode))
  fake = _logits(seed=4)
  np.testing.assert_allclose(losses.generator_adversarial_loss(fake, mode),
                             losses.gan_loss(fake, True, mode), rtol=1e-6)


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_losses_are_means_over_patches(mode):
  # A PatchGAN's map of any shape, averaged: tiling it changes nothing.
  x = _logits(seed=5)
  np.testing.assert_allclose(losses.gan_loss(np.tile(x, (3, 1, 1, 2)), True, mode),
                             losses.gan_loss(x, True, mode), rtol=1e-6)
  np.testing.assert_allclose(losses.gan_loss(x.reshape(-1), False, mode),
                             losses.gan_loss(x, False, mode), rtol=1e-6)


# -- gradients -------------------------------------------------------------------


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_gradient_signs(mode):
  # D learns by raising its scores of real pairs and lowering those of fakes;
  # G by raising D's scores of its fakes (below the real target 1 for LSGAN).
  # Scores between LSGAN's targets 0 and 1 (vanilla: any logits).
  rng = np.random.default_rng(6)
  real, fake = rng.uniform(0.05, 0.95, (2, 2, 4, 4, 1)).astype(np.float32)
  d_real, d_fake = jax.grad(losses.discriminator_loss, argnums=(0, 1))(
      jnp.asarray(real), jnp.asarray(fake), mode)
  assert np.all(d_real < 0) and np.all(d_fake > 0)
  g_fake = jax.grad(losses.generator_adversarial_loss)(jnp.asarray(fake), mode)
  assert np.all(g_fake < 0)


def test_gradients_at_the_undecided_discriminator():
  # By hand: d/dx softplus(-x) = -sigmoid(-x) = -1/2 at 0, d/dx (x - 1)^2 =
  # -2 at 0; each over the 8 elements the mean divides by.
  zeros = jnp.zeros((2, 4))
  np.testing.assert_allclose(jax.grad(losses.gan_loss)(zeros, True, "vanilla"), -0.5 / 8,
                             rtol=1e-6)
  np.testing.assert_allclose(jax.grad(losses.gan_loss)(zeros, False, "vanilla"), 0.5 / 8,
                             rtol=1e-6)
  np.testing.assert_allclose(jax.grad(losses.gan_loss)(zeros, True, "lsgan"), -2.0 / 8,
                             rtol=1e-6)
  np.testing.assert_allclose(jax.grad(losses.gan_loss)(zeros, False, "lsgan"), 0.0)
  # At D's target the loss is at its minimum: LSGAN's gradient is 0 there.
  np.testing.assert_allclose(jax.grad(losses.gan_loss)(jnp.ones(3), True, "lsgan"), 0.0)


# -- the interface ---------------------------------------------------------------


def test_unknown_mode_names_the_allowed_values():
  with pytest.raises(ValueError, match="vanilla, lsgan"):
    losses.gan_loss(np.zeros(3), True, "wgangp")
  assert losses.GAN_MODES == ("vanilla", "lsgan")


@pytest.mark.parametrize("mode", losses.GAN_MODES)
def test_jit_matches_eager(mode):
  real, fake = _logits(seed=8), _logits(seed=9)
  jitted = jax.jit(losses.discriminator_loss, static_argnames="mode")
  np.testing.assert_allclose(jitted(real, fake, mode=mode),
                             losses.discriminator_loss(real, fake, mode), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(losses.l1_loss)(real, fake), losses.l1_loss(real, fake),
                             rtol=1e-6)


def test_bfloat16_inputs_give_float32_results():
  x = jnp.asarray(_logits(seed=10), jnp.bfloat16)
  y = jnp.asarray(_logits(seed=11), jnp.bfloat16)
  for mode in losses.GAN_MODES:
    assert losses.gan_loss(x, True, mode).dtype == jnp.float32
    assert losses.discriminator_loss(x, y, mode).dtype == jnp.float32
    assert losses.generator_adversarial_loss(x, mode).dtype == jnp.float32
  assert losses.l1_loss(x, y).dtype == jnp.float32
  assert losses.mse_loss(x, y).dtype == jnp.float32
  # Reduced in float32: 7/3 to float32's precision, where a bfloat16 mean
  # would give 2.328125 (7/3 has no closer bfloat16).
  three = jnp.asarray([1.0, 2.0, 4.0], jnp.bfloat16)
  np.testing.assert_allclose(losses.l1_loss(three, jnp.zeros_like(three)), 7 / 3, rtol=1e-6)
