"""Adversarial and reconstruction losses, as pure functions on arrays.

The GAN objectives follow the pix2pix reference's `GANLoss`: 'vanilla' is
binary cross-entropy on the discriminator's logits (`BCEWithLogitsLoss`, the
conditional GAN of Isola et al. 2017, eq. 1) and 'lsgan' is the least-squares
GAN of Mao et al. 2017 (`MSELoss` against targets 1 for real, 0 for fake, on
the raw output). Both average over every element, i.e. over every patch of a
PatchGAN's output map.

Every loss is reduced in float32 whatever the input dtype, so a bfloat16
forward pass still yields a float32 scalar to differentiate and log.
"""

import jax
import jax.numpy as jnp

GAN_MODES = ("vanilla", "lsgan")


def check_gan_mode(mode: str) -> None:
  if mode not in GAN_MODES:
    raise ValueError(f"gan mode={mode!r}; expected one of {', '.join(GAN_MODES)}.")


def gan_loss(logits: jax.Array, target_is_real: bool, mode: str) -> jax.Array:
  """Mean GAN loss of a discriminator output against an all-real or all-fake target.

  Args:
    logits: discriminator output of any shape, e.g. [B, h, w, 1] for a
      PatchGAN; pre-sigmoid for 'vanilla', the raw output for 'lsgan'.
    target_is_real: a Python bool (the target is static): 1 if True, else 0.
    mode: one of `GAN_MODES`.

  Returns:
    float32 scalar.
  """
  check_gan_mode(mode)
  logits = jnp.asarray(logits, jnp.float32)
  if mode == "vanilla":
    # -log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x):
    # the binary cross-entropy without the cancellation of the general
    # softplus(x) - x y form.
    return jnp.mean(jax.nn.softplus(-logits if target_is_real else logits))
  target = 1.0 if target_is_real else 0.0
  return jnp.mean(jnp.square(logits - target))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, mode: str) -> jax.Array:
  """Discriminator objective, halved as in the pix2pix reference's `backward_D`.

  The factor 1/2 slows D relative to G (Isola et al. 2017, section 3.3:
  "we divide the objective by 2 while optimizing D").

  Args:
    real_logits: D's output on (input, real target) pairs.
    fake_logits: D's output on (input, generated) pairs.
    mode: one of `GAN_MODES`.

  Returns:
    float32 scalar.
  """
  return 0.5 * (gan_loss(real_logits, True, mode) + gan_loss(fake_logits, False, mode))


def generator_adversarial_loss(fake_logits: jax.Array, mode: str) -> jax.Array:
  """Non-saturating generator loss: D's output on fakes against the real target."""
  return gan_loss(fake_logits, True, mode)


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over all elements, float32 scalar."""
  diff = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
  return jnp.mean(jnp.abs(diff))


def mse_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all elements, float32 scalar."""
  diff = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
  return jnp.mean(jnp.square(diff))
