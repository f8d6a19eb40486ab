"""Iizuka et al.: colorization with simultaneous scene classification.

Iizuka, Simo-Serra and Ishikawa, "Let there be Color!" (SIGGRAPH 2016; paper
004 sec. 4). Not a GAN: one network, `config.colorizer` ('iizuka'), predicts
the chrominance and the scene class from the lightness, and one optimizer
(ADADELTA in the original) minimises

    loss = MSE(ab) + alpha * CE(class logits, scene label)

The classification term is what makes the global features carry scene
context ("Colorization with Classification"; paper 004 sec. 4.1). It needs
labels: the step uses it when the batch has a 'label' (the input pipeline
yields one for labelled datasets only) and the network has a classifier
(`num_classes > 0`). `validate` reads the dataset's description and says at
start-up, as a warning, when the term is off; every logged step carries
`classification_enabled` (1 or 0) as well.

Loss scale. The original's network ends in a sigmoid and is trained with an
MSE against a*b* normalized to [0, 1]; ours returns ab / 110 in [-1, 1]
(`jaxcolor.models.iizuka`). The color term here is the MSE on the
original's scale, (x + 1) / 2 of ours, i.e. a quarter of the MSE on the
network's scale, so that alpha keeps the original's value 1/300 and the
logged color loss is comparable with the original's. (The a*b* range
constant differs: 110 here, 100 in the released model; for the same error in
a*b* units our [0, 1]-scale MSE is (100 / 110)^2 = 0.83 of theirs.)
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from jaxcolor.core import color_space
from jaxcolor.core.errors import ConfigError
from jaxcolor.systems import base
from jaxcolor.training import losses
from jaxcolor.training import optimizers


def color_loss(pred_ab: jax.Array, ab: jax.Array) -> jax.Array:
  """MSE on the original's [0, 1] chrominance scale; float32 scalar.

  `pred_ab`, `ab`: [B, H, W, 2] on the network's scale ab / 110 in [-1, 1].
  Mapping both to (x + 1) / 2 makes this a quarter of the MSE on [-1, 1],
  the scale on which the original's alpha = 1/300 was set (module docstring).
  """
  pred_ab = jnp.asarray(pred_ab, jnp.float32)  # A bfloat16 output too.
  ab = jnp.asarray(ab, jnp.float32)
  return losses.mse_loss((pred_ab + 1.0) / 2.0, (ab + 1.0) / 2.0)


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of [B, C] logits and int [B] labels; float32."""
  logits = jnp.asarray(logits, jnp.float32)
  return jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def top1_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1.0 where the highest logit is the label, else 0.0: float32 [B]."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


class Iizuka(base.System):
  """One network (`config.colorizer`), color MSE + alpha * scene CE.

  Config: `config.colorizer` (`{'name': 'iizuka', 'num_classes': ...,
  'width': ..., 'global_size': ...}`), `config.loss.classification_weight`
  (alpha), `config.optimizer` (`name` 'adadelta' or 'adam', see
  `jaxcolor.training.optimizers`).
  """
  networks = ("colorizer",)
  config_fields = ("colorizer",)

  def __init__(self, config: ml_collections.ConfigDict,
               platform: str | None = None):
    super().__init__(config, platform)
    self.colorizer = self.build_network("colorizer")
    self.num_classes = self.colorizer.num_classes
    self.classification_weight = config.loss.classification_weight
    self.tx, self.schedule = optimizers.create(config.optimizer,
                                               config.num_train_steps)
    # Whether evaluation reports the classification accuracy of labelled
    # batches; `check_datasets` turns it off when the classifier does not train or
    # the evaluation labels are not its classes.
    self.eval_accuracy = True

  # -- set-up ---------------------------------------------------------------

  def validate(self) -> None:
    base.reject_generator_options(self.config, "iizuka")
    alpha = self.classification_weight
    if (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
        or not alpha >= 0):
      raise ConfigError(
          f"config.loss.classification_weight={alpha!r} is invalid: a "
          "non-negative number (the original's alpha is 1/300).")
    self.abstract_state()  # The shape check.

  def check_datasets(self, datasets: dict[str, dict]) -> None:
    """Decides, and says, whether the classification term trains.

    The input pipeline yields labels for labelled datasets only, so the
    dataset's description tells before the first step what the step will
    do. A class count that disagrees with the network's is an error: labels
    beyond the logits would make the cross-entropy meaningless. Without a
    description (the benchmark's synthetic batches) the batches alone decide.
    """
    config = self.config
    train_info = datasets.get("dataset")
    enabled = self.num_classes > 0
    if train_info is not None:
      enabled = self._training_uses_labels(train_info)
    eval_key = "eval_dataset" if config.eval_dataset else "dataset"
    eval_info = datasets.get(eval_key)
    if eval_info is None:
      return
    self.eval_accuracy = (enabled and eval_info["has_labels"]
                          and eval_info["num_classes"] == self.num_classes)
    if enabled and not self.eval_accuracy:
      logging.warning(
          "No classification accuracy in evaluation: the evaluation dataset "
          "%r has %s, the classifier %d classes.", config[eval_key],
          f"{eval_info['num_classes']} classes" if eval_info["has_labels"]
          else "no labels", self.num_classes)

  def _training_uses_labels(self, train_info: dict) -> bool:
    """Whether the training set's labels train the classifier (logged)."""
    config = self.config
    if not train_info["has_labels"]:
      logging.warning(
          "Classification term OFF: dataset %r has no labels, so only the "
          "color MSE trains and the scene classifier keeps its initial "
          "weights. Train on a labelled dataset (places365_small, "
          "imagenet2012, cifar10) for the original's joint training.",
          config.dataset)
      return False
    if self.num_classes == 0:
      logging.warning(
          "Classification term OFF: config.colorizer.num_classes=0 (the "
          "color-only ablation), although dataset %r has %d classes.",
          config.dataset, train_info["num_classes"])
      return False
    if self.num_classes != train_info["num_classes"]:
      raise ConfigError(
          f"config.colorizer.num_classes={self.num_classes} does not match "
          f"dataset {config.dataset!r}, which has "
          f"{train_info['num_classes']} classes: set "
          f"--config.colorizer.num_classes={train_info['num_classes']} (or 0 "
          "to train without the classification term).")
    logging.info("Classification term ON: alpha=%g on the cross-entropy "
                 "of %d classes of %r.", self.classification_weight,
                 self.num_classes, config.dataset)
    return True

  def init(self, rng: jax.Array) -> base.State:
    size = self.config.image_size
    lightness = jnp.zeros((1, size, size, 1), jnp.float32)
    return {
        **base.counters(),
        "colorizer": base.create_train_state(self.colorizer, self.tx, rng,
                                             lightness),
    }

  # -- the step ---------------------------------------------------------------

  def objective(self, params, colorizer: base.TrainState, lightness: jax.Array,
                ab: jax.Array, labels: jax.Array | None = None):
    """The training loss of one batch, in training mode.

    Args:
      params: the colorizer's parameters (differentiated).
      colorizer: its train state (apply function, batch statistics).
      lightness: [B, H, W, 1] network-scaled L.
      ab: [B, H, W, 2] target chrominance, ab / 110.
      labels: int [B] scene classes, or None: no classification term.

    Returns:
      (loss, (updated batch_stats, metrics)).
    """
    (pred_ab, logits), batch_stats = base.apply_train(colorizer, params,
                                                      lightness)
    color = color_loss(pred_ab, ab)
    loss = color
    metrics = {"colorizer_color_loss": color}
    classify = labels is not None and logits is not None
    if classify:
      cross_entropy = classification_loss(logits, labels)
      loss = loss + self.classification_weight * cross_entropy
      metrics["colorizer_classification_loss"] = cross_entropy
      metrics["classification_accuracy"] = jnp.mean(top1_correct(logits,
                                                                 labels))
    metrics["colorizer_loss"] = loss
    metrics["classification_enabled"] = jnp.float32(classify)
    return loss, (batch_stats, metrics)

  def train_step(self, state, batch, rng):
    del rng  # No dropout, no noise: the step is deterministic.
    lightness, ab = color_space.split_lab(batch["image"])
    lightness = lightness.astype(self.compute_dtype)
    # Static under jit: the batch's structure says whether labels came.
    labels = batch.get("label") if self.num_classes else None
    colorizer = state["colorizer"]
    grads, (batch_stats, metrics) = jax.grad(self.objective, has_aux=True)(
        colorizer.params, colorizer, lightness, ab, labels)
    colorizer = colorizer.apply_gradients(grads=grads, batch_stats=batch_stats)
    new_state = dict(state, step=state["step"] + 1, colorizer=colorizer)
    return new_state, {**metrics,
                       "colorizer_grad_norm": base.grad_norm(grads),
                       "learning_rate": self.schedule(state["step"])}

  # -- inference --------------------------------------------------------------

  def colorize(self, state, lightness):
    ab, _ = base.apply_eval(state["colorizer"],
                            lightness.astype(self.compute_dtype))
    return {"colorizer": ab.astype(jnp.float32)}

  def eval_metrics(self, state, batch):
    """'classification_accuracy' [B]: top-1 on labelled evaluation batches."""
    if not (self.eval_accuracy and self.num_classes and "label" in batch):
      return {}
    lightness, _ = color_space.split_lab(batch["image"])
    # The same forward as `colorize`: XLA merges the two in the eval step
    # (checked: the compiled step has one set of convolutions).
    _, logits = base.apply_eval(state["colorizer"],
                                lightness.astype(self.compute_dtype))
    return {"classification_accuracy": top1_correct(logits, batch["label"])}
