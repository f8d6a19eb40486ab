"""Staged training of the ResNet-18 U-Net: L1 pretraining, then the GAN.

Paper 003 (section 6.5), after the super-resolution practice it cites: "the
entire generator is pretrained specifically for the colorization task using
L1 loss ... Once this pretraining stage is completed, the training progresses
to incorporate the combined adversarial and L1 loss"; paper 001 (section 3.3)
likewise trains the ResNet-18 generator "without connecting the
discriminator part" first. One run does both stages:

  stage 'pretrain'     steps [0, stages.pretrain_steps): G alone,
                       |G(L) - ab|_1, Adam (`stages.pretrain_optimizer`).
  stage 'adversarial'  the next stages.adversarial_steps steps: the pix2pix
                       step (systems/pix2pix.py: update D, then G on
                       gan + lambda * L1), Adam (`config.optimizer`).

The stage is a function of the step count (`phase`), which the checkpoint
stores with the state, so a run stopped in either stage resumes in it exactly;
`state['stage']` also records the stage of the last step taken (0 or 1), so a
checkpoint says by itself which stage it is in. The training loop jits one
step per stage (`phase_train_step`) and compiles the second when it gets
there. Metrics are named per stage: 'pretrain/generator_l1_loss',
'adversarial/discriminator_loss', ...

Optimizer at the switch: stage 2 starts G's Adam afresh (zero moments, its
own rate and betas, its schedule counted from the stage's first step), as
paper 003 does by loading the pretrained generator's weights into a new GAN
model; the pretraining optimizer's state stays in the checkpoint unused. D is
first updated in stage 2 and starts there from its initialization. G's
batch-norm running statistics carry over.

The encoder can start from pretrained ResNet-18 weights (`config.backbone`,
jaxcolor/training/backbone.py): torchvision's ImageNet file or our own
classification run; they are put into a fresh run's initial state
(`load_pretrained`).
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcolor.core.errors import ConfigError
from jaxcolor.systems import base
from jaxcolor.systems import pix2pix
from jaxcolor.training import backbone
from jaxcolor.training import optimizers

PRETRAIN = "pretrain"
ADVERSARIAL = "adversarial"
STAGES = (PRETRAIN, ADVERSARIAL)
PRETRAIN_OPT_STATE = "generator_pretrain_opt_state"


class StagedPix2Pix(pix2pix.Pix2Pix):
  """A generator pretrained with L1, then trained as pix2pix with D."""
  config_fields = ("stages", "backbone")

  def __init__(self, config: ml_collections.ConfigDict,
               platform: str | None = None):
    super().__init__(config, platform)
    stages = config.stages
    self.pretrain_steps = stages.pretrain_steps
    self.gan_start_step = self.pretrain_steps  # generator_ema_ramp='gan'.
    self.adversarial_steps = stages.adversarial_steps
    # Each stage's schedule runs over the stage's own steps, counted from its
    # first one (by its Adam's count), whatever num_train_steps says.
    self.pretrain_tx, self.pretrain_schedule = optimizers.create(
        stages.pretrain_optimizer, self.pretrain_steps,
        key="stages.pretrain_optimizer", steps_name="stages.pretrain_steps")
    self.tx, self.schedule = optimizers.create(config.optimizer,
                                               self.adversarial_steps)
    # Its fields' defaults are jaxcolor/training/backbone.py's (`FIELDS`),
    # set when the section is checked (`validate`).
    self.backbone_config = config.backbone
    self._backbone = None

  # -- set-up -----------------------------------------------------------------

  def validate(self) -> None:
    if self.warmup_steps:
      raise ConfigError(
          f"config.loss.l1_warmup_steps={self.warmup_steps} is invalid for "
          "the resnet18_unet system: its L1 stage is "
          "config.stages.pretrain_steps; set l1_warmup_steps to 0.")
    self._check_stages()
    super().validate()
    self._load_backbone()

  def _check_stages(self) -> None:
    config, stages = self.config, self.config.stages
    for key in ("pretrain_steps", "adversarial_steps"):
      value = stages[key]
      if not (isinstance(value, int) and value >= 0):
        raise ConfigError(
            f"config.stages.{key}={value!r} is invalid: a non-negative "
            "integer.")
    total = self.pretrain_steps + self.adversarial_steps
    if config.num_train_steps > total:
      raise ConfigError(
          f"config.num_train_steps={config.num_train_steps} is invalid: at "
          f"most stages.pretrain_steps + stages.adversarial_steps = {total} "
          "(fewer stops the run early; it resumes where it stopped).")
    if config.optimizer.decay_steps > self.adversarial_steps:
      raise ConfigError(
          f"config.optimizer.decay_steps={config.optimizer.decay_steps} is "
          f"invalid: the adversarial stage has "
          f"stages.adversarial_steps={self.adversarial_steps} steps.")

  def _load_backbone(self) -> None:
    """Reads the pretrained weights now and checks they fit the encoder."""
    self._backbone = backbone.load_resnet18(self.backbone_config)
    if self._backbone is None:
      return
    size = self.config.image_size
    abstract = jax.eval_shape(
        lambda: self.generator.init(
            jax.random.key(0), jnp.zeros((1, size, size, 1), jnp.float32),
            train=False))
    backbone.into_unet(abstract, self._backbone,
                       path=self.backbone_config.path)

  def init(self, rng: jax.Array) -> base.State:
    state = super().init(rng)
    state["stage"] = jnp.zeros((), jnp.int32)
    state[PRETRAIN_OPT_STATE] = self.pretrain_tx.init(state["generator"].params)
    return state

  def load_pretrained(self, state: base.State) -> base.State:
    if self._backbone is None:
      return state
    generator = state["generator"]
    variables = jax.device_get({"params": generator.params,
                                "batch_stats": generator.batch_stats})
    variables = backbone.into_unet(variables, self._backbone,
                                   path=self.backbone_config.path)
    return dict(state, generator=generator.replace(
        params=variables["params"], batch_stats=variables["batch_stats"]))

  # -- the stages -------------------------------------------------------------

  def phase(self, step: int) -> str:
    return PRETRAIN if step < self.pretrain_steps else ADVERSARIAL

  def phase_train_step(self, phase: str):
    steps = {PRETRAIN: self.pretrain_step, ADVERSARIAL: self.gan_step}
    if phase not in steps:
      raise ValueError(f"Unknown stage {phase!r}; stages: {', '.join(STAGES)}.")
    return steps[phase]

  def train_step(self, state, batch, rng):
    """Not one function: each stage has its own (`phase_train_step`)."""
    raise NotImplementedError(
        "StagedPix2Pix trains with one step function per stage: call "
        "phase_train_step(phase(step)), as jaxcolor/training/loop.py does.")

  def pretrain_step(self, state, batch, rng):
    """Stage 1: one Adam step of G on the L1 loss alone (D untouched); with
    `ab_bins`, on bins_weight * the rebalanced cross-entropy plus
    loss.l1_weight * L1, pix2pix's warm-up objective (a bins config sets
    l1_weight: 0 for the cross-entropy alone)."""
    lightness, ab = self.lab_pair(batch)
    generator = state["generator"]
    grads, batch_stats, metrics = self.supervised_gradients(
        state, lightness, ab, rng, self.l1_weight if self.ab_bins else 1.0)
    updates, opt_state = self.pretrain_tx.update(
        grads, state[PRETRAIN_OPT_STATE], generator.params)
    generator = generator.replace(
        step=generator.step + 1,
        params=optax.apply_updates(generator.params, updates),
        batch_stats=batch_stats)

    new_state = dict(state, step=state["step"] + 1, generator=generator,
                     stage=jnp.asarray(0, jnp.int32),
                     **{PRETRAIN_OPT_STATE: opt_state})
    return self.update_ema(new_state), _prefixed(PRETRAIN, {
        **metrics, "learning_rate": self.pretrain_schedule(state["step"])})

  def gan_step(self, state, batch, rng):
    """Stage 2: the pix2pix step (update D, then G; `Pix2Pix.adversarial_step`)."""
    lightness, ab = self.lab_pair(batch)
    new_state, metrics, _ = self.adversarial_step(state, lightness, ab, rng)
    new_state["stage"] = jnp.asarray(1, jnp.int32)
    # The schedule counts the stage's own steps (as G's and D's Adam do).
    metrics["learning_rate"] = self.schedule(state["step"] - self.pretrain_steps)
    return self.update_ema(new_state), _prefixed(ADVERSARIAL, metrics)


def _prefixed(stage: str, metrics: base.Metrics) -> base.Metrics:
  return {f"{stage}/{name}": value for name, value in metrics.items()}
