"""pix2pix + MLP Improver (paper 000): pix2pix's step, then the Improver's.

Paper 000 sec. 3.5: "learning proceeds in the order of Discriminator,
Generator, and Improver". Every step:

  1-3. pix2pix's step, unchanged (jaxcolor/systems/pix2pix.py): fake_ab = G(L),
       update D on (L, ab) against (L, fake_ab), then update G against the
       updated D.
  4.   update I: improved = I([L, fake_ab]), with fake_ab's gradient stopped
       (the Improver learns on G's output; it does not train G), on
         gan(D(L, improved), real) + lambda * |improved - ab|_1     (sec. 3.3)
       with D the discriminator updated in step 2, held fixed.

`config.loss.discriminator_fake` says what D learns to call fake in step 2:
'generator' (configs/pix2pix_improver.py's): G's output, as above;
'improver': the Improver's output on it, I([L, fake_ab]) with the Improver
as it stands before its own update of this step (a literal reading of sec.
3.5's "the predicted color image", the system's final prediction). G is then
trained against a D that judges refined colors (docs/results.md lists which
options are measured).

The discriminator is pix2pix's, shared: the paper trains three networks,
"Discriminator, Generator, and Improver" (sec. 3.5), and the Improver's
L_cGAN (sec. 3.3) is the same adversarial loss of eq. (2); there is no second
discriminator. D learns from G's outputs only (step 2 is pix2pix's), and the
Improver starts as the identity on G's output (a zero-initialized residual,
jaxcolor/models/improver.py), so what D has learnt to reject is what the
Improver starts from. docs/systems.md gives the reasons in full.

The system's output is the Improver's; `colorize` returns the generator's
output beside it, so every evaluation measures what the Improver adds.
"""

import jax
import jax.numpy as jnp
import ml_collections

from jaxcolor.core.errors import ConfigError
from jaxcolor.systems import base
from jaxcolor.systems.pix2pix import Pix2Pix
from jaxcolor.training import losses


# What D learns to call fake (config.loss.discriminator_fake).
DISCRIMINATOR_FAKES = ("generator", "improver")


class Pix2PixImprover(Pix2Pix):
  """pix2pix (`config.generator`, `config.discriminator`) and an Improver
  (`config.improver`)."""
  networks = ("discriminator", "generator", "improver")
  config_fields = ("improver",)

  def __init__(self, config: ml_collections.ConfigDict,
               platform: str | None = None):
    super().__init__(config, platform)
    if "improver" not in config:
      raise ConfigError(
          "config.improver is missing: the pix2pix_improver system needs "
          "config.improver = {'name': 'improver', 'patch_size': ..., "
          "'hidden_widths': ...}.")
    self.improver = self.build_network("improver")
    self.discriminator_fake = config.loss.discriminator_fake

  def validate(self) -> None:
    if self.discriminator_fake not in DISCRIMINATOR_FAKES:
      raise ConfigError(
          f"config.loss.discriminator_fake={self.discriminator_fake!r} is "
          f"invalid: one of {', '.join(DISCRIMINATOR_FAKES)}.")
    super().validate()

  def init(self, rng: jax.Array) -> base.State:
    pix2pix_rng, improver_rng = jax.random.split(rng)
    state = super().init(pix2pix_rng)
    size = self.config.image_size
    color = jnp.zeros((1, size, size, 3), jnp.float32)
    # The Improver has pix2pix's optimizer and schedule: paper 000 gives none.
    state["improver"] = base.create_train_state(self.improver, self.tx,
                                                improver_rng, color)
    return state

  # -- the step ---------------------------------------------------------------

  def train_step(self, state, batch, rng):
    lightness, ab = self.lab_pair(batch)
    shown = None
    if self.discriminator_fake == "improver":
      def shown(fake_ab):
        improved, _ = base.apply_train(
            state["improver"], state["improver"].params,
            self.improver_input(lightness, fake_ab))
        return improved
    state, metrics, fake_ab = self.adversarial_step(
        state, lightness, ab, rng, shown_to_discriminator=shown)
    improver, improver_metrics = self.update_improver(
        state["improver"], state["discriminator"], lightness, ab,
        jax.lax.stop_gradient(fake_ab))
    state = self.update_ema(dict(state, improver=improver))
    return state, {**metrics, **improver_metrics}

  def improver_input(self, lightness: jax.Array, ab: jax.Array) -> jax.Array:
    """The generated color image [L, ab]: [B, H, W, 3] (sec. 3.3)."""
    return jnp.concatenate([lightness, ab.astype(lightness.dtype)], axis=-1)

  def update_improver(self, improver: base.TrainState,
                      discriminator: base.TrainState, lightness: jax.Array,
                      ab: jax.Array, fake_ab: jax.Array):
    """One Adam step on gan(D(L, I(L, fake_ab)), real) + lambda * L1.

    D runs in training mode (batch statistics), as in the generator's
    update, and stays fixed: neither its parameters nor its running
    statistics move here.
    """
    generated = self.improver_input(lightness, fake_ab)

    def loss_fn(params):
      improved, stats = base.apply_train(improver, params, generated)
      logits, _ = self.discriminate(discriminator, discriminator.params,
                                    discriminator.batch_stats, lightness,
                                    improved)
      adversarial = losses.generator_adversarial_loss(logits, self.gan_mode)
      l1 = losses.l1_loss(improved, ab)
      return (self.gan_weight * adversarial + self.l1_weight * l1,
              (stats, adversarial, l1))

    (loss, (stats, adversarial, l1)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(improver.params)
    improver = improver.apply_gradients(grads=grads, batch_stats=stats)
    return improver, {
        "improver_loss": loss,
        "improver_gan_loss": adversarial,
        "improver_l1_loss": l1,
        "improver_grad_norm": base.grad_norm(grads),
    }

  # -- inference --------------------------------------------------------------

  def colorize(self, state, lightness):
    lightness = lightness.astype(self.compute_dtype)
    # The Improver refines the raw generator's output, what it trained on.
    outputs = super().colorize(state, lightness)
    improved = base.apply_eval(
        state["improver"], self.improver_input(lightness, outputs["generator"]))
    return {"improver": improved.astype(jnp.float32), **outputs}
