"""Classification pretraining of the ResNet-18 backbone (papers 001, 003).

Paper 003 (section 6.5) pretrains "the backbone of the generator, which
corresponds to the down sampling path ... using a classification model on the
ImageNet dataset" before the U-Net sees a color; paper 001 (section 3.3)
starts from the same ImageNet ResNet-18. This system is that first stage done
by the codebase itself: ResNet-18 (`config.classifier`, models/resnet.py)
trained with softmax cross-entropy, SGD with momentum, weight decay and a
cosine schedule. Its checkpoint is read back as the U-Net's encoder by
`config.backbone.source = 'checkpoint'` (jaxcolor/training/backbone.py).

Input. `classifier.input_channels = 1` (the configs' choice) trains on what
the colorizer's encoder will see: lightness as L / 50 - 1 in [-1, 1], from
the same Lab conversion, so the encoder needs no adaptation and learns
features of gray images, the only ones it is ever given. 3 is the standard
recipe's RGB, scaled to [-1, 1] (x / 127.5 - 1, the range of L / 50 - 1);
the U-Net import then sums the stem over its channels, which is exact on
gray images replicated to RGB.

Optimizer: `config.optimizer.name = 'sgd'` (jaxcolor/training/optimizers.py),
the standard ImageNet recipe: momentum 0.9, learning rate 0.1 x batch / 256,
weight decay 1e-4 on the kernels, cosine decay after an optional warm-up.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcolor.core import color_space
from jaxcolor.core.errors import ConfigError
from jaxcolor.systems import base
from jaxcolor.training import backbone
from jaxcolor.training import optimizers

# The state key of the network; jaxcolor/training/backbone.py reads it back.
NETWORK = backbone.CLASSIFY_NETWORK
INPUT_CHANNELS = (1, 3)


class Classifier(base.System):
  """A ResNet-18 (`config.classifier`) on labelled images ('label' in batch)."""
  networks = (NETWORK,)
  config_fields = ("classifier",)
  colorizes = False

  def __init__(self, config: ml_collections.ConfigDict,
               platform: str | None = None):
    super().__init__(config, platform)
    self.network = self.build_network("classifier")
    # The network's fields: the config's, or the module's defaults.
    self.input_channels = self.network.input_channels
    self.num_classes = self.network.num_classes
    self.tx, self.schedule = optimizers.create(config.optimizer,
                                               config.num_train_steps)

  # -- set-up -----------------------------------------------------------------

  def validate(self) -> None:
    base.reject_generator_options(self.config, "classify")
    # `optimizers.create` has set the name (its default where none was).
    if self.config.optimizer.name != "sgd":
      raise ConfigError(
          f"config.optimizer.name={self.config.optimizer.name!r} is invalid "
          "for the classify system: 'sgd' (the ImageNet recipe; see "
          "configs/resnet18_classify.py).")
    if self.input_channels not in INPUT_CHANNELS:
      raise ConfigError(
          f"config.classifier.input_channels={self.input_channels!r} is "
          "invalid: 1 (lightness) or 3 (RGB).")
    self.abstract_state()  # The shape check.

  def check_datasets(self, datasets: dict[str, dict]) -> None:
    """The datasets must have labels, as many classes as the classifier."""
    for key, info in datasets.items():
      name = self.config[key]
      if not info["has_labels"]:
        raise ConfigError(
            f"config.{key}={name!r} has no labels: the classify system needs "
            "a labelled dataset (a TFDS classification dataset, or a folder "
            "laid out as train/<class>/*.jpg + test/<class>/*.jpg).")
      if info["num_classes"] != self.num_classes:
        raise ConfigError(
            f"config.classifier.num_classes={self.num_classes} but "
            f"config.{key}={name!r} has {info['num_classes']} classes.")

  def init(self, rng: jax.Array) -> base.State:
    size = self.config.image_size
    example = jnp.zeros((1, size, size, self.input_channels), jnp.float32)
    return {**base.counters(),
            NETWORK: base.create_train_state(self.network, self.tx, rng,
                                             example)}

  # -- the step ---------------------------------------------------------------

  def network_input(self, image: jax.Array) -> jax.Array:
    """uint8 RGB [B, H, W, 3] -> L / 50 - 1 [B, H, W, 1] or RGB in [-1, 1]."""
    if self.input_channels == 1:
      lightness, _ = color_space.split_lab(image)
      return lightness.astype(self.compute_dtype)
    return (image.astype(jnp.float32) / 127.5 - 1.0).astype(self.compute_dtype)

  def train_step(self, state, batch, rng):
    del rng  # ResNet-18 has no dropout; the crops and flips are on the host.
    classifier = state[NETWORK]
    x = self.network_input(batch["image"])
    labels = batch["label"]

    def loss_fn(params):
      logits, batch_stats = base.apply_train(classifier, params, x)
      logits = logits.astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.mean(loss), (batch_stats, logits)

    (loss, (batch_stats, logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(classifier.params)
    classifier = classifier.apply_gradients(grads=grads,
                                            batch_stats=batch_stats)
    return dict(state, step=state["step"] + 1, **{NETWORK: classifier}), {
        "classifier_loss": loss,
        "train_top1_accuracy": jnp.mean(
            (jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
        "classifier_grad_norm": base.grad_norm(grads),
        "learning_rate": self.schedule(state["step"]),
    }

  # -- evaluation -------------------------------------------------------------

  def logits(self, state: base.State, image: jax.Array) -> jax.Array:
    """Inference: uint8 RGB [B, H, W, 3] -> float32 logits [B, num_classes]."""
    logits = base.apply_eval(state[NETWORK], self.network_input(image))
    return logits.astype(jnp.float32)

  def eval_metrics(self, state, batch):
    logits = self.logits(state, batch["image"])
    labels = batch["label"]
    return {
        "top1_accuracy": (jnp.argmax(logits, -1) == labels).astype(jnp.float32),
        "cross_entropy": optax.softmax_cross_entropy_with_integer_labels(
            logits, labels),
    }

  def colorize(self, state, lightness):
    raise NotImplementedError(
        "The classify system does not colorize: it pretrains the ResNet-18 "
        "backbone of the ResNet-18 U-Net (configs/resnet18_unet.py, "
        "config.backbone.source='checkpoint').")
