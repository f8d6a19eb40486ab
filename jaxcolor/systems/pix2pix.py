"""pix2pix colorization: a generator and a conditional discriminator.

The step follows the reference's `optimize_parameters` (Isola et al. 2017;
junyanz/pytorch-CycleGAN-and-pix2pix, models/pix2pix_model.py):

  1. forward:   fake_ab = G(L)                       (train mode, dropout on)
  2. update D:  0.5 * [gan(D(L, ab), real) + gan(D(L, fake_ab), fake)]
  3. update G:  gan(D'(L, fake_ab), real) + lambda * |fake_ab - ab|_1
                with D' the discriminator just updated, held fixed.

G runs once per step (as in the reference): its output feeds D's update with
the gradient stopped, and G's gradient is pulled back through the same
forward pass with `jax.vjp`. The DLA C-DCGAN (paper 002) is this system with
other networks and learning rate; other systems reuse the sub-steps.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcolor import color
from jaxcolor import configuration
from jaxcolor import losses
from jaxcolor import optimizers
from jaxcolor.systems import base


class Pix2Pix(base.System):
  """Generator (`config.generator`) + discriminator (`config.discriminator`)."""
  networks = ("discriminator", "generator")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.generator = base.build_network(config.generator, self.compute_dtype,
                                        "generator")
    self.discriminator = base.build_network(
        config.discriminator, self.compute_dtype, "discriminator")
    self.gan_mode = config.loss.gan_mode
    self.l1_weight = config.loss.l1_weight
    self.tx, self.schedule = optimizers.adam(config.optimizer,
                                             config.num_train_steps)

  # -- set-up ---------------------------------------------------------------

  def validate(self) -> None:
    if self.gan_mode not in losses.GAN_MODES:
      raise configuration.ConfigError(
          f"config.loss.gan_mode={self.gan_mode!r} is invalid: one of "
          f"{', '.join(losses.GAN_MODES)}.")
    if not self.l1_weight >= 0:
      raise configuration.ConfigError(
          f"config.loss.l1_weight={self.l1_weight!r} is invalid: a "
          "non-negative number.")
    self._check_shapes()

  def _check_shapes(self) -> None:
    """Traces every network once on the configured size (nothing compiles)."""
    try:
      jax.eval_shape(self.init, jax.random.key(0))
    except (ValueError, TypeError) as e:
      raise configuration.ConfigError(
          f"config.image_size={self.config.image_size}: the networks cannot "
          f"take it: {e}") from None

  def init(self, rng: jax.Array) -> base.State:
    size = self.config.image_size
    g_rng, d_rng = jax.random.split(rng)
    lightness = jnp.zeros((1, size, size, 1), jnp.float32)
    lab = jnp.zeros((1, size, size, 3), jnp.float32)
    return {
        **base.counters(),
        "generator": base.create_train_state(self.generator, self.tx, g_rng,
                                             lightness),
        "discriminator": base.create_train_state(self.discriminator, self.tx,
                                                 d_rng, lab),
    }

  # -- the step ---------------------------------------------------------------

  def train_step(self, state, batch, rng):
    lightness, ab = self.lab_pair(batch)
    state, metrics, _ = self.adversarial_step(state, lightness, ab, rng)
    return state, metrics

  def lab_pair(self, batch: dict[str, jax.Array]):
    """Network-scaled L [B, H, W, 1] (compute dtype) and ab [B, H, W, 2]."""
    lightness, ab = color.split_lab(batch["image"])
    return lightness.astype(self.compute_dtype), ab

  def adversarial_step(self, state: base.State, lightness: jax.Array,
                       ab: jax.Array, rng: jax.Array):
    """The module docstring's steps 1-3; the step counter advances.

    Returns (state, metrics, fake_ab): G's training-mode output of this step
    is returned for systems that build on it (the Improver refines it).
    """
    dropout_rng = base.step_rng(rng, state["step"])
    fake_ab, generator_pullback, generator_stats = self.generator_forward(
        state["generator"], lightness, dropout_rng)
    discriminator, d_metrics = self.update_discriminator(
        state["discriminator"], lightness, ab, jax.lax.stop_gradient(fake_ab))
    generator, g_metrics = self.update_generator(
        state["generator"], generator_pullback, generator_stats,
        discriminator, lightness, ab, fake_ab)

    new_state = dict(state, step=state["step"] + 1, generator=generator,
                     discriminator=discriminator)
    return new_state, {**d_metrics, **g_metrics,
                       "learning_rate": self.schedule(state["step"])}, fake_ab

  def generator_forward(self, generator: base.TrainState, lightness: jax.Array,
                        dropout_rng: jax.Array):
    """G(L) in training mode; returns (ab, pullback to G's grads, new BN stats)."""
    def forward(params):
      return base.apply_train(generator, params, lightness,
                              rngs={"dropout": dropout_rng})
    fake_ab, pullback, batch_stats = jax.vjp(forward, generator.params,
                                             has_aux=True)
    return fake_ab, pullback, batch_stats

  def discriminate(self, discriminator: base.TrainState, params: Any,
                   batch_stats: Any, lightness: jax.Array, ab: jax.Array):
    """D([L, ab]) in training mode (batch statistics); returns (logits, stats)."""
    state = discriminator.replace(batch_stats=batch_stats)
    pair = jnp.concatenate([lightness, ab.astype(lightness.dtype)], axis=-1)
    return base.apply_train(state, params, pair)

  def update_discriminator(self, discriminator: base.TrainState,
                           lightness: jax.Array, ab: jax.Array,
                           fake_ab: jax.Array):
    """One Adam step on the halved real/fake GAN loss (reference backward_D)."""
    def loss_fn(params):
      # Fake first, then real, as the reference: two separate batches, so
      # batch norm normalises each with its own statistics.
      fake_logits, stats = self.discriminate(
          discriminator, params, discriminator.batch_stats, lightness, fake_ab)
      real_logits, stats = self.discriminate(
          discriminator, params, stats, lightness, ab)
      loss = losses.discriminator_loss(real_logits, fake_logits, self.gan_mode)
      return loss, (stats, real_logits, fake_logits)

    (loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(discriminator.params)
    discriminator = discriminator.apply_gradients(grads=grads,
                                                  batch_stats=stats)
    return discriminator, {
        "discriminator_loss": loss,
        "discriminator_real_score": self.score(real_logits),
        "discriminator_fake_score": self.score(fake_logits),
        "discriminator_grad_norm": base.grad_norm(grads),
    }

  def update_generator(self, generator: base.TrainState, pullback,
                       generator_stats: Any,
                       discriminator: base.TrainState, lightness: jax.Array,
                       ab: jax.Array, fake_ab: jax.Array):
    """One Adam step on gan(D(L, G(L)), real) + lambda * L1 (backward_G).

    D is the discriminator after this step's update, held fixed: it runs in
    training mode (batch statistics, as the reference, which leaves D in
    train mode), but its running statistics are NOT updated here: they are
    D's own state, moved only by D's update.
    """
    def objective(fake):
      logits, _ = self.discriminate(discriminator, discriminator.params,
                                    discriminator.batch_stats, lightness, fake)
      adversarial = losses.generator_adversarial_loss(logits, self.gan_mode)
      l1 = losses.l1_loss(fake, ab)
      return adversarial + self.l1_weight * l1, (adversarial, l1)

    (loss, (adversarial, l1)), fake_grad = jax.value_and_grad(
        objective, has_aux=True)(fake_ab)
    (grads,) = pullback(fake_grad)
    generator = generator.apply_gradients(grads=grads,
                                          batch_stats=generator_stats)
    return generator, {
        "generator_loss": loss,
        "generator_gan_loss": adversarial,
        "generator_l1_loss": l1,
        "generator_grad_norm": base.grad_norm(grads),
    }

  def score(self, logits: jax.Array) -> jax.Array:
    """D's mean output as a score: a probability (vanilla) or raw (LSGAN)."""
    logits = logits.astype(jnp.float32)
    if self.gan_mode == "vanilla":
      return jnp.mean(jax.nn.sigmoid(logits))
    return jnp.mean(logits)

  # -- inference --------------------------------------------------------------

  def colorize(self, state, lightness):
    ab = base.apply_eval(state["generator"],
                         lightness.astype(self.compute_dtype))
    return {"generator": ab.astype(jnp.float32)}
