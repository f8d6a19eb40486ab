r"""The README's main job: pix2pix colorization on the embedded sample, on a CPU.

The paper's networks (U-Net + PatchGAN, cGAN + 100 * L1 in Lab, Adam 2e-4,
beta1 0.5) made small enough to train in minutes on 2 CPU cores: 64 px crops
of the ~290 embedded photos, a 6-level U-Net with ngf 32, a PatchGAN with
ndf 32. For the paper's setting see configs/pix2pix.py.

With the recipe of configs/cpu_budget.py (docs/results.md): the first 600
steps train the generator alone on L1 (paper 003's warm-up), the next 900
are the pix2pix GAN, and the colorizer uses an exponential moving average
of the generator's weights (decay 0.99), evaluated beside the raw weights.
The plain GAN at this budget colors boldly and wrongly and scores below
the gray baseline; this recipe scores above it.

Run:
  python -m jaxcolor.main --config configs/default.py --workdir runs/default
  python -m jaxcolor.main --config configs/default.py:smoke --workdir /tmp/smoke
"""

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset


def get_config(arg=None):
  presets = check_presets(arg, ("smoke",))
  c = base_config()
  c.system = "pix2pix"
  c.dataset = "sample"
  c.image_size = 64
  c.batch_size = 16
  c.num_train_steps = 1500
  c.loss.l1_warmup_steps = 600
  c.generator_ema_decay = 0.99
  c.optimizer.learning_rate = 2e-4
  c.optimizer.decay_steps = 400
  c.generator = {"name": "unet", "num_downsamplings": 6, "ngf": 32,
                 "norm": "batch", "dropout_rate": 0.5}
  c.discriminator = {"name": "patchgan", "ndf": 32, "num_layers": 3,
                     "norm": "batch"}
  c.log_every_steps = 50
  c.image_every_steps = 500
  c.checkpoint_every_steps = 500
  c.eval_every_steps = 500
  c.num_eval_images = 32
  c.eval_batch_size = 16
  c.num_grid_images = 8

  if "smoke" in presets:
    smoke_preset(c)
    c.loss.l1_warmup_steps = 0   # Six steps: the GAN step from the start.
    c.generator.num_downsamplings = 5
    c.generator.ngf = 8
    c.discriminator.ndf = 8
  return c
