r"""pix2pix colorization (papers 001, 003, 004; Isola et al. 2017).

U-Net generator (8 stride-2 downsamplings at 256 px, ngf 64, batch norm,
dropout 0.5) and a 70x70 PatchGAN (3 layers, ndf 64), trained in CIE Lab
(L in, ab out) with cGAN + 100 * L1, Adam 2e-4, beta1 0.5, beta2 0.999.

The setting of the papers:
  - 001 (Nepali et al.): pix2pix on 256 x 256 photos, U-Net + PatchGAN with
    instance norm in D (`--config.discriminator.norm=instance`), BCE or LSGAN.
  - 003 (Selek and Berberi): U-Net + PatchGAN baseline trained for 20
    epochs at 256 px, batch 16, on a COCO subset; Adam 2e-4, betas (0.5, 0.999).
  - 004 (Miyata): pix2pix colorization, lambda = 100.
The pix2pix reference trains 100 epochs at the constant rate and 100 more
decaying linearly to zero; here one epoch of places365_small (1.8 M images)
at batch 16 is ~113k steps, and the defaults train 200k steps, half of them
with the linear decay.

Run:
  python -m jaxcolor.main --config configs/pix2pix.py --workdir runs/pix2pix \
      --config.data_dir=/path/to/tensorflow_datasets
  python -m jaxcolor.main --config configs/pix2pix.py:smoke --workdir /tmp/smoke
"""

from jaxcolor.configuration import base_config, check_presets, smoke_preset


def get_config(arg=None):
  presets = check_presets(arg, ("smoke",))
  c = base_config()
  c.system = "pix2pix"
  c.dataset = "places365_small"
  c.image_size = 256
  c.batch_size = 16
  c.num_train_steps = 200_000
  c.optimizer.learning_rate = 2e-4
  c.optimizer.decay_steps = 100_000
  c.generator = {"name": "unet", "num_downsamplings": 8, "ngf": 64,
                 "norm": "batch", "dropout_rate": 0.5}
  c.discriminator = {"name": "patchgan", "ndf": 64, "num_layers": 3,
                     "norm": "batch"}
  c.loss.gan_mode = "vanilla"
  c.loss.l1_weight = 100.0
  c.log_every_steps = 100
  c.image_every_steps = 5000
  c.checkpoint_every_steps = 5000
  c.eval_every_steps = 10_000
  c.num_eval_images = 2000
  c.eval_batch_size = 64

  if "smoke" in presets:
    # Seconds on a CPU: tiny networks on the embedded sample.
    smoke_preset(c)
    c.generator.num_downsamplings = 5
    c.generator.ngf = 8
    c.discriminator.ndf = 8
  return c
