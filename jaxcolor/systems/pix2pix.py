"""pix2pix colorization: a generator and a conditional discriminator.

The step follows the reference's `optimize_parameters` (Isola et al. 2017;
junyanz/pytorch-CycleGAN-and-pix2pix, models/pix2pix_model.py):

  1. forward:   fake_ab = G(L)                       (train mode, dropout on)
  2. update D:  0.5 * [gan(D(L, ab), real) + gan(D(L, fake_ab), fake)]
  3. update G:  gan(D'(L, fake_ab), real) + lambda * |fake_ab - ab|_1
                with D' the discriminator just updated, held fixed.

Options beyond the reference (config fields; docs/results.md has the
measurements of those measured so far):
  - `loss.gan_weight` scales the cGAN term of G's loss (1 in the paper);
  - `loss.l1_warmup_steps`: the first steps are a phase 'warmup' that
    updates G alone on lambda * L1 with its own Adam (D untouched), the
    L1 pretraining of paper 003 (sec. 6.5) for every GAN system;
  - `generator_ema_decay`: an exponential moving average of G's variables,
    kept in `state['generator_ema']` and evaluated as output
    'generator_ema' beside the raw weights (first, so colorize uses it);
    `generator_ema_ramp` schedules its decay (`update_ema`);
  - `generator_test_mode`: 'train' runs G at test time as Isola et al.
    (sec. 3.3) do, dropout on and each photo's own batch statistics;
  - colour as a distribution (Zhang et al. 2016; beyond the seed papers,
    docs/systems.md): a U-Net generator with `ab_bins=True` scores the
    in-gamut a*b* bins and outputs their annealed mean; `loss.bins_weight`
    adds the class-rebalanced cross-entropy to G's loss in every phase
    (alone when `l1_weight` and `gan_weight` are 0). The rebalancing
    weights live in the state (`AB_BIN_WEIGHTS`, from the training photos'
    bin prior: training/ab_prior.py), so a resumed run keeps them.

G runs once per step (as in the reference): its output feeds D's update with
the gradient stopped, and G's gradient is pulled back through the same
forward pass with `jax.vjp`. The DLA C-DCGAN (paper 002) is this system with
other networks and learning rate; other systems reuse the sub-steps.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcolor.core import ab_bins
from jaxcolor.core import color_space
from jaxcolor.core.errors import ConfigError
from jaxcolor.systems import base
from jaxcolor.training import losses
from jaxcolor.training import optimizers


class Pix2Pix(base.System):
  """Generator (`config.generator`) + discriminator (`config.discriminator`)."""
  networks = ("discriminator", "generator")
  newer_fields = ("loss.gan_weight", "loss.l1_warmup_steps",
                  "loss.bins_weight")

  def __init__(self, config: ml_collections.ConfigDict,
               platform: str | None = None):
    super().__init__(config, platform)
    self.generator = self.build_network("generator")
    self.discriminator = self.build_network("discriminator")
    self.gan_mode = config.loss.gan_mode
    self.l1_weight = config.loss.l1_weight
    self.gan_weight = config.loss.gan_weight
    self.warmup_steps = config.loss.l1_warmup_steps
    self.bins_weight = config.loss.bins_weight
    # The generator's own field (the U-Net's), False for those without it.
    self.ab_bins = bool(getattr(self.generator, "ab_bins", False))
    self.bins_factor = (2 ** self.generator.bins_level if self.ab_bins
                        else None)
    # The first step of the GAN phase (staged systems: their second stage).
    self.gan_start_step = self.warmup_steps
    self.ema_decay = config.generator_ema_decay
    self.ema_ramp = config.generator_ema_ramp
    self.test_mode = config.generator_test_mode
    self.tx, self.schedule = optimizers.create(config.optimizer,
                                               config.num_train_steps)

  # -- set-up ---------------------------------------------------------------

  def validate(self) -> None:
    if self.gan_mode not in losses.GAN_MODES:
      raise ConfigError(
          f"config.loss.gan_mode={self.gan_mode!r} is invalid: one of "
          f"{', '.join(losses.GAN_MODES)}.")
    if not self.l1_weight >= 0:
      raise ConfigError(
          f"config.loss.l1_weight={self.l1_weight!r} is invalid: a "
          "non-negative number.")
    if not self.gan_weight >= 0:
      raise ConfigError(
          f"config.loss.gan_weight={self.gan_weight!r} is invalid: a "
          "non-negative number.")
    if not (isinstance(self.warmup_steps, int)
            and 0 <= self.warmup_steps <= self.config.num_train_steps):
      raise ConfigError(
          f"config.loss.l1_warmup_steps={self.warmup_steps!r} is invalid: "
          f"an integer between 0 and num_train_steps="
          f"{self.config.num_train_steps}.")
    if not self.bins_weight >= 0:
      raise ConfigError(
          f"config.loss.bins_weight={self.bins_weight!r} is invalid: a "
          "non-negative number.")
    if self.bins_weight and not self.ab_bins:
      raise ConfigError(
          f"config.loss.bins_weight={self.bins_weight!r} needs a generator "
          "that predicts a*b* bins: set config.generator.ab_bins=True (the "
          "U-Net's and the ResNet-18 U-Net's), or bins_weight=0.")
    if self.ab_bins and not (self.bins_weight or self.l1_weight):
      raise ConfigError(
          "config.generator.ab_bins=True with config.loss.bins_weight=0 and "
          "l1_weight=0: nothing trains the bins before the GAN; set "
          "bins_weight (Zhang et al.: 1).")
    self.abstract_state()  # The shape check.

  def init(self, rng: jax.Array) -> base.State:
    size = self.config.image_size
    g_rng, d_rng = jax.random.split(rng)
    lightness = jnp.zeros((1, size, size, 1), jnp.float32)
    lab = jnp.zeros((1, size, size, 3), jnp.float32)
    state = {
        **base.counters(),
        "generator": base.create_train_state(self.generator, self.tx, g_rng,
                                             lightness),
        "discriminator": base.create_train_state(self.discriminator, self.tx,
                                                 d_rng, lab),
    }
    if self.ema_decay:
      state[GENERATOR_EMA] = _ema_variables(state["generator"])
    if self.ab_bins:
      # Uniform until the training photos' prior replaces them
      # (training/ab_prior.py, at the run's first step).
      state[AB_BIN_WEIGHTS] = jnp.ones((ab_bins.num_bins(),), jnp.float32)
    return state

  def with_bin_prior(self, state: base.State, counts) -> base.State:
    """`state` with the rebalancing weights of bin `counts` (a fresh run)."""
    weights = jnp.asarray(ab_bins.rebalance_weights(counts))
    return dict(state, **{AB_BIN_WEIGHTS: jax.device_put(
        weights, state[AB_BIN_WEIGHTS].sharding)})

  # -- the phases -------------------------------------------------------------

  def phase(self, step: int) -> str:
    return WARMUP if step < self.warmup_steps else base.SINGLE_PHASE

  def phase_train_step(self, phase: str):
    if phase == WARMUP:
      return self.warmup_step
    return self.train_step

  # -- the step ---------------------------------------------------------------

  def train_step(self, state, batch, rng):
    lightness, ab = self.lab_pair(batch)
    state, metrics, _ = self.adversarial_step(state, lightness, ab, rng)
    return self.update_ema(state), metrics

  def warmup_step(self, state, batch, rng):
    """One Adam step of G on lambda * L1 alone; D neither runs nor moves.

    G's own optimizer and schedule, so its moments carry into the GAN
    phase; metrics carry the GAN phase's generator names (the GAN terms
    are absent, not zero; `generator_loss` is lambda * L1).
    """
    lightness, ab = self.lab_pair(batch)
    grads, batch_stats, metrics = self.supervised_gradients(
        state, lightness, ab, rng, self.l1_weight)
    generator = state["generator"].apply_gradients(grads=grads,
                                                   batch_stats=batch_stats)
    new_state = dict(state, step=state["step"] + 1, generator=generator)
    return self.update_ema(new_state), {
        **metrics, "learning_rate": self.schedule(state["step"])}

  def supervised_gradients(self, state, lightness, ab, rng, l1_weight):
    """G's gradients on its supervised objective alone (no D): l1_weight *
    L1, plus bins_weight * the rebalanced cross-entropy with `ab_bins`.
    Returns (grads, new batch statistics, metrics)."""
    output, pullback, batch_stats = self.generator_forward(
        state["generator"], lightness, base.step_rng(rng, state["step"]))
    fake_ab, logits = self.split_output(output)
    l1, fake_grad = jax.value_and_grad(losses.l1_loss)(fake_ab, ab)
    metrics = {"generator_loss": l1_weight * l1, "generator_l1_loss": l1}
    logits_grad = None
    if self.ab_bins:
      ce, logits_grad = self.bins_loss(logits, ab, state[AB_BIN_WEIGHTS])
      metrics["generator_loss"] += self.bins_weight * ce
      metrics["generator_bins_loss"] = ce
    (grads,) = pullback(self.cotangent(l1_weight * fake_grad, logits_grad))
    metrics["generator_grad_norm"] = base.grad_norm(grads)
    return grads, batch_stats, metrics

  def split_output(self, output):
    """G's output as (ab, bin logits); logits None without `ab_bins`."""
    return output if self.ab_bins else (output, None)

  def cotangent(self, ab_grad: jax.Array, logits_grad):
    """The cotangent of G's output from those of its parts."""
    return (ab_grad, logits_grad) if self.ab_bins else ab_grad

  def bins_loss(self, logits: jax.Array, ab: jax.Array, weights: jax.Array):
    """The rebalanced cross-entropy of `logits` against the true
    network-scaled `ab`, and bins_weight times its gradient."""
    true_ab = ab_bins.block_mean(color_space.net_to_ab(ab), self.bins_factor)
    ce, grad = jax.value_and_grad(ab_bins.rebalanced_cross_entropy)(
        logits, true_ab, weights)
    return ce, self.bins_weight * grad

  def update_ema(self, state: base.State) -> base.State:
    """Moves `state['generator_ema']` towards G's new variables (if kept).

    Ramp 'steps': decay min(d, (1 + t) / (10 + t)) for update t (from 0).
    Ramp 'gan': the same during the L1 warm-up (or a staged system's L1
    stage); the first GAN update has
    decay 0 (the average restarts at G's weights, i.e. the warm-up's L1
    model one step on) and every later one the constant d. After n GAN
    steps the L1 model keeps weight d^n: the average is an interpolation
    between the L1 model and the GAN's recent weights (docs/results.md
    measures both ramps).
    """
    if not self.ema_decay:
      return state
    # The step just taken is state['step'] - 1; t counts updates from 0.
    step = state["step"] - 1
    t = step.astype(jnp.float32)
    decay = jnp.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
    if self.ema_ramp == "gan":
      decay = jnp.where(step < self.gan_start_step, decay,
                        jnp.where(step == self.gan_start_step, 0.0,
                                  self.ema_decay))
    ema = jax.tree.map(lambda e, v: decay * e + (1.0 - decay) * v,
                       state[GENERATOR_EMA], _ema_variables(state["generator"]))
    return dict(state, **{GENERATOR_EMA: ema})

  def lab_pair(self, batch: dict[str, jax.Array]):
    """Network-scaled L [B, H, W, 1] (compute dtype) and ab [B, H, W, 2]."""
    lightness, ab = color_space.split_lab(batch["image"])
    return lightness.astype(self.compute_dtype), ab

  def adversarial_step(self, state: base.State, lightness: jax.Array,
                       ab: jax.Array, rng: jax.Array, shown_to_discriminator=None):
    """The module docstring's steps 1-3; the step counter advances.

    `shown_to_discriminator`: None, or a function of G's output giving the
    ab that D learns to call fake (the Improver's reading of paper 000).
    Returns (state, metrics, fake_ab): G's training-mode output of this step
    is returned for systems that build on it (the Improver refines it).
    """
    dropout_rng = base.step_rng(rng, state["step"])
    output, generator_pullback, generator_stats = self.generator_forward(
        state["generator"], lightness, dropout_rng)
    fake_ab, logits = self.split_output(output)
    shown = jax.lax.stop_gradient(fake_ab)
    if shown_to_discriminator is not None:
      shown = jax.lax.stop_gradient(shown_to_discriminator(shown))
    discriminator, d_metrics = self.update_discriminator(
        state["discriminator"], lightness, ab, shown)
    generator, g_metrics = self.update_generator(
        state["generator"], generator_pullback, generator_stats,
        discriminator, lightness, ab, fake_ab, logits=logits,
        bin_weights=state[AB_BIN_WEIGHTS] if self.ab_bins else None)

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
      # batch norm normalizes each with its own statistics.
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
                       ab: jax.Array, fake_ab: jax.Array, *,
                       logits: jax.Array | None = None,
                       bin_weights: jax.Array | None = None):
    """One Adam step on gan(D(L, G(L)), real) + lambda * L1 (backward_G),
    plus bins_weight * the rebalanced cross-entropy of `logits` (if given).

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
      return (self.gan_weight * adversarial + self.l1_weight * l1,
              (adversarial, l1))

    (loss, (adversarial, l1)), fake_grad = jax.value_and_grad(
        objective, has_aux=True)(fake_ab)
    metrics = {"generator_gan_loss": adversarial, "generator_l1_loss": l1}
    logits_grad = None
    if logits is not None:
      ce, logits_grad = self.bins_loss(logits, ab, bin_weights)
      loss += self.bins_weight * ce
      metrics["generator_bins_loss"] = ce
    (grads,) = pullback(self.cotangent(fake_grad, logits_grad))
    generator = generator.apply_gradients(grads=grads,
                                          batch_stats=generator_stats)
    return generator, {
        "generator_loss": loss, **metrics,
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
    lightness = lightness.astype(self.compute_dtype)
    outputs = {}
    if GENERATOR_EMA in state:
      outputs[GENERATOR_EMA] = self.generate(state[GENERATOR_EMA], lightness)
    outputs["generator"] = self.generate(state["generator"].variables,
                                         lightness)
    return outputs

  def generate(self, variables: Any, lightness: jax.Array) -> jax.Array:
    """G(L) at test time (`generator_test_mode`): float32 ab [B, H, W, 2]."""
    if self.test_mode == "train":
      def one_photo(x):
        output, _ = self.generator.apply(
            variables, x[None], train=True, mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)})
        return self.split_output(output)[0][0]
      ab = jax.vmap(one_photo)(lightness)
    else:
      ab, _ = self.split_output(
          self.generator.apply(variables, lightness, train=False))
    return ab.astype(jnp.float32)


WARMUP = "warmup"
GENERATOR_EMA = "generator_ema"
# The class-rebalancing weights [Q] of a generator with `ab_bins`.
AB_BIN_WEIGHTS = "ab_bin_weights"


def _ema_variables(generator: base.TrainState) -> dict[str, Any]:
  """G's variables as `apply` takes them, in float32."""
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                      dict(generator.variables))
