r"""DLA C-DCGAN colorization (paper 002; Gui, Gu and Shi).

The system is pix2pix's (`system = 'pix2pix'`, jaxcolor/systems/pix2pix.py):
the same conditional GAN step, D then G, on cGAN + lambda * L1 in Lab. The
DLA C-DCGAN differs from pix2pix only in its networks and hyperparameters:

  - Generator 'dla' (sec. 3.1; docs/dla_generator.md): a symmetric
    deep-layer-aggregation encoder-decoder with long and short connections,
    blocks of three 3x3 convolutions with batch norm and ReLU, widths
    64, 128, 256, 512, 512 (four strided-convolution downsamplings, strided
    transposed-convolution upsamplings); ab out through tanh.
  - Discriminator 'dcgan_discriminator' (sec. 3.2, Table 1): 4x4 stride-2
    convolutions of widths 64, 128, 256, 512, batch norm (not on the first
    layer, the DCGAN convention; the text normalizes all: see
    jaxcolor/models/dcgan.py), LeakyReLU 0.2, then Conv5. The text says the
    last layer is a 1x1 convolution, Table 1 says 4x4, stride 1, one
    channel: we follow Table 1 (final_kernel_size=4; each logit sees 94 x 94
    px; `--config.discriminator.final_kernel_size=1` gives the text's).
    D outputs logits and the loss is the sigmoid cross-entropy on them
    (gan_mode 'vanilla'): the paper's sigmoid and log D of eq. (1), computed
    stably.
  - Loss (eq. 3): cGAN + lambda * L1, lambda = 100 (sec. 4).
  - Optimizer (sec. 4): Adam, learning rate 0.0003, "momentum" 0.5 (beta1);
    beta2 0.999 (not given: Adam's default). Constant rate: the paper names
    no decay.
  - Batch 16 and "a total of 20 iterations", read as 20 epochs: 20 epochs of
    places365_small's 1,803,460 training images at batch 16 is 2,254,325
    steps (`:imagenet`: 20 epochs of ILSVRC2012's 1,281,167, 1,601,459 steps).
  - Image size: the paper gives none; 256 x 256, places365_small's own size
    and pix2pix's (both networks need a multiple of 16).
  - Metrics (sec. 4.2): PSNR and pixel accuracy. The paper does not define
    pixel accuracy; we report Nazeri et al. 2018's (rounded Lab, a pixel is
    correct when |dL| <= 2 and |da|, |db| <= 4.4; docs/metrics.md) as
    eval/pixel_accuracy, beside eval/psnr. Our accuracy may therefore not
    compare with the paper's.

The paper's numbers (Table 2):
  Places365:  PSNR 25.54 dB, pixel accuracy 17.6 %
  ILSVRC2012: PSNR 25.12 dB, pixel accuracy 17.1 %

Run:
  python -m jaxcolor.main --config configs/dla_cdcgan.py --workdir runs/dla_cdcgan \
      --config.data_dir=/path/to/tensorflow_datasets
  python -m jaxcolor.main --config configs/dla_cdcgan.py:imagenet \
      --workdir runs/dla_cdcgan_imagenet --config.data_dir=/path/to/tensorflow_datasets
  python -m jaxcolor.main --config configs/dla_cdcgan.py:smoke --workdir /tmp/smoke
"""

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset

# Training images of the TFDS datasets (TFDS catalogue, 'train' split).
PLACES365_SMALL_TRAIN_IMAGES = 1_803_460
IMAGENET2012_TRAIN_IMAGES = 1_281_167
EPOCHS = 20


def epochs_to_steps(epochs: int, num_images: int, batch_size: int) -> int:
  return -(-epochs * num_images // batch_size)  # Ceiling division.


def get_config(arg=None):
  presets = check_presets(arg, ("smoke", "imagenet"))
  c = base_config()
  c.system = "pix2pix"
  c.dataset = "places365_small"
  c.eval_dataset = ""  # places365_small's validation split (36,500 images).
  c.image_size = 256
  c.batch_size = 16
  c.num_train_steps = epochs_to_steps(EPOCHS, PLACES365_SMALL_TRAIN_IMAGES,
                                      c.batch_size)
  c.optimizer.learning_rate = 3e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.optimizer.decay_steps = 0
  # remat: the generator recomputes each block, downsampling and upsampling
  # in the backward pass instead of keeping their intermediates
  # (models/dla.py): a fraction of the step's temporaries at 256 px, batch
  # 16, for about a third more FLOPs (docs/benchmarks.md).
  # `--config.generator.remat=False` where memory allows.
  c.generator = {"name": "dla", "widths": (64, 128, 256, 512, 512),
                 "norm": "batch", "remat": True}
  c.discriminator = {"name": "dcgan_discriminator",
                     "widths": (64, 128, 256, 512), "final_kernel_size": 4,
                     "norm": "batch", "norm_first_layer": False,
                     "negative_slope": 0.2}
  c.loss.gan_mode = "vanilla"
  c.loss.l1_weight = 100.0
  c.log_every_steps = 100
  c.image_every_steps = 5000
  c.checkpoint_every_steps = 5000
  c.eval_every_steps = 10_000
  c.num_eval_images = 2000
  c.eval_batch_size = 64

  if "imagenet" in presets:
    c.dataset = "imagenet2012"  # Evaluated on its validation split.
    c.num_train_steps = epochs_to_steps(EPOCHS, IMAGENET2012_TRAIN_IMAGES,
                                        c.batch_size)
  if "smoke" in presets:
    # Seconds on a CPU: tiny widths, four scales (every kind of node and
    # connection of the five-scale network, a third fewer layers to compile).
    smoke_preset(c)
    c.generator.widths = (4, 8, 8, 16)
    c.discriminator.widths = (4, 8, 8, 16)
  return c
