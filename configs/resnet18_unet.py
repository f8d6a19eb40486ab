r"""ResNet-18 U-Net, pretrained with L1, then trained as a GAN (papers 001, 003).

The generator is a U-Net on a ResNet-18 encoder (jaxcolor/models/
resnet_unet.py, after fastai's DynamicUnet as paper 003 builds it), the
discriminator pix2pix's 70x70 PatchGAN; training has two stages in one run
(system 'resnet18_unet', jaxcolor/systems/staged.py):

  1. pretrain     G alone on |G(L) - ab|_1: 20 epochs (paper 003, sec. 6.5),
                  Adam 1e-4, betas (0.9, 0.999).
  2. adversarial  pix2pix: D on BCE (or LSGAN), G on GAN + 100 * L1, Adam
                  2e-4, betas (0.5, 0.999) for G and D: 10 epochs (003:
                  "typically ranging from 10 to 20").

What the papers give:
  - 003 (Selek and Berberi, sec. 6.5): ImageNet ResNet-18 body as the
    U-Net's down-sampling path (fastai DynamicUnet, 256 px input, 2 output
    channels), the whole generator pretrained with L1 for 20 epochs, then
    cGAN + L1 training for 10-20 epochs on COCO. No number is reported, only
    images: "impressive" colors after L1 alone, conservative (grayish)
    where unsure, more vivid after the adversarial stage. It states neither
    rates nor batch: 1e-4 for pretraining, 2e-4 / beta1 0.5 for the GAN and
    batch 16 are those of the public tutorial its code follows (Shariatnia
    2020, "Colorizing black & white images with U-Net and conditional GAN"),
    whose D is this PatchGAN (3 layers, 64 filters, batch norm) and whose
    GAN loss is BCE.
  - 001 (Nepali et al., sec. 3.3, 5): the generator is trained with
    ResNet-18 "without connecting the discriminator part" first; BCE or MSE
    (LSGAN) for D, lambda = 100, Adam 2e-4 beta1 0.5, batch 16, 160,000
    iterations on 8,000 training images (Grayscale2Colorization, 2,000 for
    testing). Reported: MSE 0.038, SSIM 0.83, FID 0.0118 (scales not
    stated). Our evaluation reports `ab_mse` and `ssim` (docs/metrics.md).

Choices here: COCO 2017 as paper 003 (`coco/2017` in TFDS: 118,287 training
images, so 20 epochs at batch 16 are 147,859 steps and 10 are 73,930; the
5,000 validation images for evaluation, the first 2,000 by default as 001's
test set size). The rate is constant in both stages (the tutorial's; set
optimizer.decay_steps for pix2pix's linear decay over the end of stage 2).
BCE by default (003, the tutorial); `:lsgan` for 001's other loss.

Backbone (`config.backbone`, jaxcolor/training/backbone.py), for a fresh run:
  --config.backbone.source=torchvision \
      --config.backbone.path=/path/to/resnet18-f37072fd.pth   # or an .npz
  --config.backbone.source=checkpoint \
      --config.backbone.path=runs/classify    # configs/resnet18_classify.py
  --config.backbone.source=random      # no pretraining: not the papers'
The source has no default: a run that names none stops before anything
compiles and says how to supply weights (the papers' method starts from
ImageNet weights; a silent random encoder is not that method). 'random'
is logged as a warning.

Presets:
  :lsgan  least-squares GAN loss for stage 2 (paper 001's MSE variant).
  :bins   beyond the papers: colour as a distribution (Zhang et al. 2016,
          docs/systems.md, "Colour as a distribution"), the recipe of
          configs/cpu_2h.py on this network: the decoder scores 262 a*b*
          bins at 1/4 size, trained on the rebalanced cross-entropy alone
          (l1_weight 0), in the pretraining stage only (no GAN); the
          temperature is chosen after training (`python -m
          jaxcolor.temperature`).
  :smoke  seconds on a CPU: 32 px, the embedded sample, base_features 8,
          3 steps of each stage.

Run:
  python -m jaxcolor.main --config configs/resnet18_unet.py \
      --workdir runs/resnet18_unet --config.data_dir=/path/to/tensorflow_datasets \
      --config.backbone.source=torchvision --config.backbone.path=resnet18-f37072fd.pth
  python -m jaxcolor.main --config configs/resnet18_unet.py:smoke --workdir /tmp/smoke
"""

import ml_collections

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset

COCO_TRAIN_IMAGES = 118_287


def _epochs(epochs: int, batch_size: int) -> int:
  return -(-epochs * COCO_TRAIN_IMAGES // batch_size)


def get_config(arg=None):
  presets = check_presets(arg, ("lsgan", "bins", "smoke"))
  c = base_config()
  c.system = "resnet18_unet"
  c.dataset = "coco/2017"
  c.image_size = 256
  c.batch_size = 16
  c.generator = ml_collections.ConfigDict({"name": "resnet18_unet",
                                           "base_features": 64})
  c.discriminator = ml_collections.ConfigDict({
      "name": "patchgan", "ndf": 64, "num_layers": 3, "norm": "batch"})
  c.loss.gan_mode = "vanilla"
  c.loss.l1_weight = 100.0
  c.stages = ml_collections.ConfigDict({
      "pretrain_steps": _epochs(20, c.batch_size),
      "adversarial_steps": _epochs(10, c.batch_size),
      "pretrain_optimizer": {"learning_rate": 1e-4, "b1": 0.9, "b2": 0.999,
                             "constant_steps": -1, "decay_steps": 0},
  })
  # Stage 2's optimizer, for G and D.
  c.optimizer.learning_rate = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.optimizer.decay_steps = 0
  # Both stages to the end; fewer steps stop the run early (it resumes).
  c.num_train_steps = (c.stages.get_ref("pretrain_steps")
                       + c.stages.get_ref("adversarial_steps"))
  c.backbone = ml_collections.ConfigDict({
      "source": "",       # 'torchvision', 'checkpoint' or 'random'.
      "path": "",         # Weight file, or the classify run's workdir.
      "sha256": "",       # Expected hex prefix of the file's sha256 ('': only
                          # the one in a torch.hub file name is checked).
  })
  c.log_every_steps = 100
  c.image_every_steps = 5000
  c.checkpoint_every_steps = 5000
  c.eval_every_steps = 10_000
  c.num_eval_images = 2000
  c.eval_batch_size = 64

  if "lsgan" in presets:
    c.loss.gan_mode = "lsgan"
  if "bins" in presets:
    c.generator.ab_bins = True
    c.generator.bins_level = 2
    c.loss.bins_weight = 1.0
    c.loss.l1_weight = 0.0
    c.stages.adversarial_steps = 0
  if "smoke" in presets:
    smoke_preset(c)
    c.backbone.source = "random"
    c.optimizer.decay_steps = 0
    c.stages.pretrain_steps = 3
    c.stages.adversarial_steps = 0 if "bins" in presets else 3
    c.num_train_steps = (c.stages.get_ref("pretrain_steps")
                         + c.stages.get_ref("adversarial_steps"))
    c.generator.base_features = 8
    c.discriminator.ndf = 8
  return c
