r"""Classification pretraining of the ResNet-18 U-Net's backbone (papers 001, 003).

Paper 003 (section 6.5): "the backbone of the generator, which corresponds to
the down sampling path, is pretrained using a classification model on the
ImageNet dataset". This is that classifier, trained by the codebase itself
(system 'classify', jaxcolor/systems/classifier.py): ResNet-18 on the
lightness channel L / 50 - 1 (what the colorizer's encoder sees; `:rgb` for
the standard RGB input), softmax cross-entropy.

Default: ImageNet (`imagenet2012` through TFDS) with the standard recipe (He
et al. 2016; torchvision's reference): 224 px, batch 256, SGD momentum 0.9,
learning rate 0.1 x batch / 256, weight decay 1e-4, 90 epochs (450,410 steps
at 1,281,167 images), here with a cosine decay (torchvision's and Flax's
ImageNet examples offer it; the paper's is step-wise / 10 every 30 epochs).
torchvision's RGB ResNet-18 reaches 69.76% top-1 with RandomResizedCrop;
our pipeline's augmentation is a random 224 crop of the image resized to
224 on its shorter side plus flips, and the input is gray, so expect less.

Presets:
  :cifar10  CIFAR-10 on a CPU: width 16, 32 px, batch 128, 4,000 steps
            (~10 epochs), lr 0.1, weight decay 5e-4 (the usual CIFAR
            setting), 100 warm-up steps. The data is a folder of JPEGs laid
            out as train/<class>/*.jpg + test/<class>/*.jpg (class folders
            are the labels), e.g. ../shared/data/cifar10_jpg.tar.gz extracted
            into data/: `mkdir -p data && tar xzf cifar10_jpg.tar.gz -C data`.
            Where TFDS `cifar10` is prepared: --config.dataset=cifar10.
            Measured: 71.8% top-1 on the test split (9,857 color images),
            10 min of CPU time on 2 cores (docs/resnet18_unet.md).
  :rgb      RGB input (3-channel stem; summed over channels when the U-Net
            loads it).
  :smoke    seconds: width 8, 32 px, a few steps. Needs a labelled folder:
            --config.dataset=folder:/path (train/<class>/, test/<class>/).

Use as the U-Net's backbone (configs/resnet18_unet.py):
  --config.backbone.source=checkpoint --config.backbone.path=runs/classify

Run:
  python -m jaxcolor.main --config configs/resnet18_classify.py \
      --workdir runs/classify --config.data_dir=/path/to/tensorflow_datasets
  python -m jaxcolor.main --config configs/resnet18_classify.py:cifar10 \
      --workdir runs/classify_cifar10
"""

import ml_collections

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config(arg=None):
  presets = check_presets(arg, ("cifar10", "rgb", "smoke"))
  c = base_config()
  c.system = "classify"
  # The GAN fields of the base mean nothing here: drop them, so that an
  # override such as --config.generator.ngf fails instead of being ignored.
  del c["generator"]
  del c["discriminator"]
  del c["loss"]
  c.classifier = ml_collections.ConfigDict({
      "name": "resnet18", "num_classes": 1000, "input_channels": 1,
      "base_features": 64})
  c.batch_size = 256
  c.optimizer = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1 * c.batch_size / 256,
      "momentum": 0.9, "weight_decay": 1e-4, "warmup_steps": 0})

  c.dataset = "imagenet2012"
  c.image_size = 224
  c.num_train_steps = 90 * IMAGENET_TRAIN_IMAGES // c.batch_size
  c.log_every_steps = 100
  c.image_every_steps = 10**9      # Nothing to draw: no colorization.
  c.checkpoint_every_steps = 5000
  c.eval_every_steps = 10_000
  c.num_eval_images = 10_000
  c.eval_batch_size = 256

  if "cifar10" in presets:
    c.dataset = "folder:data/cifar10_jpg"
    c.classifier.num_classes = 10
    # CPU-sized: width 16 takes 0.07 s per step on 2 CPU cores where the
    # full width 64 takes 2.3 s. A backbone for a U-Net of the same width
    # (--config.generator.base_features=16); set 64 here for the full one.
    c.classifier.base_features = 16
    c.image_size = 32
    c.batch_size = 128
    c.num_train_steps = 4000
    c.optimizer.learning_rate = 0.1
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 100
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.eval_every_steps = 1000
    c.num_eval_images = 0          # The whole test split.
    c.eval_batch_size = 500
  if "rgb" in presets:
    c.classifier.input_channels = 3
  if "smoke" in presets:
    smoke_preset(c)
    for key in ("decay_steps", "constant_steps"):  # Adam's; SGD has its own.
      del c.optimizer[key]
    c.dataset = "folder:data/cifar10_jpg"
    c.classifier.num_classes = 10
    c.classifier.base_features = 8
    c.optimizer.warmup_steps = 1
    c.image_every_steps = 10**9
  return c
