r"""pix2pix colorization (papers 001, 003, 004; Isola et al. 2017).

U-Net generator (8 stride-2 downsamplings at 256 px, ngf 64, batch norm,
dropout 0.5) and a 70x70 PatchGAN (3 layers, ndf 64), trained in CIE Lab
(L in, ab out) with cGAN + 100 * L1, Adam 2e-4, beta1 0.5, beta2 0.999.

The papers' settings:
  - 001 (Nepali et al.): 256 x 256 Lab, 8-down U-Net + PatchGAN with instance
    norm in D (`--config.discriminator.norm=instance`), BCE or MSE (LSGAN,
    `--config.loss.gan_mode=lsgan`), Adam 2e-4, beta1 0.5, lambda 100; 8,000
    training / 2,000 validation images; batch 100 for 5,500 iterations
    (attempt 1) and batch 16 for 160,000 iterations (attempt 2).
  - 003 (Selek and Berberi): the same U-Net (8 downsamplings at 256 px) and
    PatchGAN on a COCO subset, trained 100 epochs without pretraining.
  - 004 (Miyata): describes pix2pix (L1 + cGAN, U-Net, PatchGAN) as the
    colorization baseline; AMT "labeled real" 22.5 % for L1 + cGAN (Table 2,
    quoting Isola et al.).
Defaults here: batch 16 for 160,000 steps (001, attempt 2), on
places365_small at 256 px; the reference's schedule (constant, then linear
decay to zero) over the last half. No paper reports PSNR/SSIM for this exact
setting; 001 reports visual results, 003 FID and visuals.

Run:
  python -m jaxcolor.main --config configs/pix2pix.py --workdir runs/pix2pix \
      --config.data_dir=/path/to/tensorflow_datasets
  python -m jaxcolor.main --config configs/pix2pix.py:smoke --workdir /tmp/smoke

:pod, for a TPU slice: 64 photos per chip (`per_device_batch_size`; a v5e-16
trains on 1,024 a step) in bfloat16. At 16 per chip the step is bound by a
fixed per-step HBM traffic (weights, their gradients and Adam's state: about
13.5 GB a chip-step), which 64 photos share four times better: the roofline
bound on a v5e goes from 28 % to 60 % MFU (docs/benchmarks.md, "TPU slices,
compiled here"). The learning rate stays the papers' (for batch 16): a run
at this batch should tune it.
"""

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset


def get_config(arg=None):
  presets = check_presets(arg, ("smoke", "pod"))
  c = base_config()
  c.system = "pix2pix"
  c.dataset = "places365_small"
  c.image_size = 256
  c.batch_size = 16
  c.num_train_steps = 160_000
  c.optimizer.learning_rate = 2e-4
  c.optimizer.decay_steps = 80_000
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

  if "pod" in presets:
    c.per_device_batch_size = 64
    c.compute_dtype = "bfloat16"
  if "smoke" in presets:
    # Seconds on a CPU: tiny networks on the embedded sample.
    smoke_preset(c)
    c.generator.num_downsamplings = 5
    c.generator.ngf = 8
    c.discriminator.ndf = 8
  return c
