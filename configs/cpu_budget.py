r"""The best colorizer found for 25 minutes of a 2-core CPU (docs/results.md).

pix2pix (papers 001, 003, 004) with the remedies the seed papers give for
the early GAN's wild colors, measured under the quality protocol of
docs/results.md (trained on photos256 without bsds_test/, scored on
bsds_test/ at full resolution through `jaxcolor.colorize`):

  1. L1 warm-up (paper 003, sec. 6.5): the first `loss.l1_warmup_steps`
     steps train the U-Net alone on L1, D untouched. Alone, L1 is the
     conservative colorizer that beats the gray baseline in PSNR but keeps
     about a third of the photos' colorfulness.
  2. Then the pix2pix GAN (cGAN + 100 L1, Adam 2e-4, beta1 0.5), which adds
     color, and with it the early GAN's blotches.
  3. An exponential moving average of the generator's weights
     (`generator_ema_decay`), which averages the blotches of successive
     steps away while keeping the color they agree on: the EMA weights
     are what `colorize` uses; the raw weights are scored beside them.
     `generator_ema_ramp = 'gan'`: the average restarts at the GAN phase's
     first step and then has the constant decay 0.998, so after n GAN steps
     the warm-up's L1 model keeps the weight 0.998^n and the rest is an
     average over the last few hundred GAN steps. Color then arrives more
     slowly per step than with the ramp from step 0, so a checkpoint lands
     nearer the color wanted (docs/results.md compares the two).

The networks are pix2pix's at half width (ngf 32, ndf 32) with 7
downsamplings at 128 px; 1,500 warm-up steps and 900 GAN steps at a
constant rate. The step count was chosen on the run's own held-out split
(never on the test photos): the most colorful checkpoint (every 100
steps) whose held-out PSNR stays above the gray baseline's.
docs/results.md has its scores on bsds_test against the goal, the
frontier, and the run's wall time.

Presets `bins`, `bins_l1` and `bins_gan` predict colour as a distribution over a*b*
bins instead (Zhang et al. 2016, beyond the seed papers: docs/systems.md,
"Colour as a distribution"); docs/results.md has their rows.

Run (PHOTOS: a folder of color photos, e.g. photos256 without its test splits):
  python -m jaxcolor.main --config configs/cpu_budget.py --workdir runs/cpu_budget \
      --config.dataset=folder:PHOTOS
  tools/quality_protocol.sh configs/cpu_budget.py runs/cpu_budget   # + scores
  tools/quality_protocol.sh configs/cpu_budget.py:bins_gan runs/bins_gan
  python -m jaxcolor.main --config configs/cpu_budget.py:smoke --workdir /tmp/smoke
"""

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset


def get_config(arg=None):
  presets = check_presets(arg, ("smoke", "bins", "bins_l1", "bins_gan"))
  c = base_config()
  c.system = "pix2pix"
  c.dataset = "sample"
  c.image_size = 128
  c.batch_size = 16
  c.num_train_steps = 2400
  c.loss.l1_warmup_steps = 1500
  c.generator_ema_decay = 0.998
  c.generator_ema_ramp = "gan"
  c.optimizer.learning_rate = 2e-4
  c.optimizer.decay_steps = 0    # Constant: see the module docstring.
  c.generator = {"name": "unet", "num_downsamplings": 7, "ngf": 32,
                 "norm": "batch", "dropout_rate": 0.5}
  c.discriminator = {"name": "patchgan", "ndf": 32, "num_layers": 3,
                     "norm": "batch"}
  c.log_every_steps = 100
  c.image_every_steps = 1000
  c.checkpoint_every_steps = 500  # 1,500: the warm-up's end, to branch from.
  c.eval_every_steps = 1000
  c.num_eval_images = 0          # The whole held-out split.
  c.eval_batch_size = 16
  c.num_grid_images = 8

  if presets & {"bins", "bins_l1", "bins_gan"}:
    # Colour as a distribution (Zhang et al. 2016; docs/systems.md): the
    # U-Net scores 262 a*b* bins at 1/4 size and outputs their annealed
    # mean. `bins`: the rebalanced cross-entropy alone, every step (no GAN,
    # no L1: Zhang et al.'s recipe). `bins_l1`: the cross-entropy and
    # L1 10, every step, no GAN. `bins_gan`: the cross-entropy and a
    # lighter L1 (10, not 100: at 100 its gradient on the decoded mean
    # outweighs the cross-entropy's several times and pulls the
    # distribution back to the brown mean) in the warm-up, then the GAN.
    c.generator.ab_bins = True
    c.generator.bins_level = 2
    c.loss.bins_weight = 1.0
    c.loss.l1_weight = 0.0 if "bins" in presets else 10.0
    if "bins_gan" not in presets:  # No GAN phase.
      c.loss.l1_warmup_steps = c.num_train_steps
      c.generator_ema_ramp = "steps"

  if "smoke" in presets:
    smoke_preset(c)
    c.loss.l1_warmup_steps = 3
    c.generator.num_downsamplings = 5
    c.generator.ngf = 8
    c.discriminator.ndf = 8
  return c
