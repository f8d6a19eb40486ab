"""The configuration schema shared by every paper variant, and its checks.

`configs/*.py` start from `base_config()` and override it. `validate(config)`
runs before anything is built or compiled and raises `ConfigError` with one
line naming the key, the value and what is allowed. Sections with a registry
of their own are checked there: `config.optimizer` by
`jaxcolor.training.optimizers` (when a system builds its optimizer), the
datasets by `jaxcolor.data.check_datasets` (which reads the file system),
each system's own fields by its `validate`. This module imports only its
own floor's enumerations (`jaxcolor.core.choices`) and the ground floor
(`jaxcolor.core.errors`).

Every default is stated once: a common field's here, in `base_config`; an
optimizer's in its registry entry (jaxcolor/training/optimizers.py), the
pretrained encoder's in jaxcolor/training/backbone.py, a network's in its
module's fields; a system's own sections (`System.config_fields`) are set
by its config file. Code reads a field as `config.loss.gan_weight`, never
with a fallback of its own. A config written before a field existed (a
run's config.json, an artifact's model.json) gets it when it is read back
(jaxcolor/core/config_fields.py).
"""

import re

import ml_collections

from jaxcolor.core.choices import (COMPUTE_DTYPES, CONV_IMPLS,
                                   CPU_CONV_LIBRARIES, GENERATOR_EMA_RAMPS,
                                   GENERATOR_TEST_MODES)
from jaxcolor.core.errors import ConfigError, require as _require, suggest

__all__ = ["ConfigError", "suggest", "base_config", "validate",
           "parse_config_arg", "check_presets", "smoke_preset",
]


def base_config() -> ml_collections.ConfigDict:
  """Fields every system understands; each variant overrides what it needs."""
  c = ml_collections.ConfigDict()
  # How a training step is composed (see jaxcolor/systems/).
  c.system = "pix2pix"

  # Data. `dataset`: 'sample' (embedded photos), 'folder:/path', or a TFDS name.
  c.dataset = "sample"
  c.eval_dataset = ""            # '' = the evaluation split of `dataset`.
  c.data_dir = ""                # TFDS data directory; '' = TFDS's default.
  c.image_size = 256
  c.batch_size = 1               # Global, over all devices and hosts.
  # N > 0: the global batch is N per device, N x the device count, in place
  # of batch_size (`scale_batch_sizes`): the config moves from one host to a
  # pod slice unchanged. 0: batch_size holds as written.
  c.per_device_batch_size = 0
  c.worker_count = 0             # grain worker processes per host; 0 = in-process.
  # Training crops: the shorter side is resized to image_size *
  # train_resize_scale, then a random image_size square is cropped (and
  # flipped). 1.0 crops from the whole shorter side; Isola et al.'s random
  # jitter is 286 / 256 = 1.1171875.
  c.train_resize_scale = 1.0

  c.num_train_steps = 1000
  c.seed = 0
  c.compute_dtype = "float32"    # Parameters and optimizer state stay float32.
  # The convolutions' forms (jaxcolor/backends): 'auto' takes XLA's own
  # convolutions and nn.remat on GPU and TPU and, on the CPU, the
  # custom-gradient forms of jaxcolor/backends/xla_cpu (Winograd's for the
  # larger 4 x 4 layers); 'xla' or 'cpu' forces one. Same function (to
  # rounding) and parameters either way: checkpoints move between them.
  c.conv_impl = "auto"
  # On the CPU backend, which library runs the convolutions of every jitted
  # program with the networks (`backends.compiler_options`):
  # 'eigen', XLA's own kernels (faster for these networks on the CPUs
  # measured, docs/benchmarks.md), or 'ynnpack', XLA's default at our jaxlib.
  # Ignored on GPU and TPU.
  c.cpu_conv_library = "eigen"
  # A step where a network's metrics (its losses, gradient norm, ...) or
  # new state hold a NaN or infinity (jaxcolor/training/divergence.py).
  # False: the update is kept and flagged, and the run stops at its next
  # check, before anything is evaluated or checkpointed, naming the
  # network, the step and the last good checkpoint. True: the step's whole
  # update (every network's) is dropped but its step count, training goes
  # on, and the skipped steps are counted (metric 'skipped_steps') and
  # warned about when logged. Either way no checkpoint holds a non-finite
  # value.
  c.skip_nonfinite_steps = False

  c.log_every_steps = 50
  # A device profile (run_log.Profiler: jax.profiler, for TensorBoard's
  # profile plugin under WORKDIR/plugins/) of this many steps, taken two
  # steps after the run starts or resumes; 0 = none.
  c.profile_steps = 0
  c.image_every_steps = 500      # Image grids (gray | prediction | truth).
  c.num_grid_images = 8
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.eval_every_steps = 1000      # Also at the end of training.
  c.num_eval_images = 64         # 0 or negative: the whole evaluation split.
  # Global; rounded up to a multiple of the device count
  # (`scale_batch_sizes`): evaluation masks the padded rows, so the size
  # changes no score.
  c.eval_batch_size = 16

  c.generator = ml_collections.ConfigDict({"name": "unet"})
  c.discriminator = ml_collections.ConfigDict({"name": "patchgan"})
  # GAN systems: gan_weight * cGAN + l1_weight * L1 (pix2pix: 1 and 100).
  # l1_warmup_steps: the first steps train G on L1 alone (D untouched), the
  # remedy paper 003 (sec. 6.5) gives for the early GAN's wild colors.
  # bins_weight: the class-rebalanced cross-entropy over a*b* bins (Zhang et
  # al. 2016), for a generator with ab_bins=True (core/ab_bins.py); 0 = off.
  c.loss = ml_collections.ConfigDict({"gan_mode": "vanilla", "l1_weight": 100.0,
                                      "gan_weight": 1.0, "l1_warmup_steps": 0,
                                      "bins_weight": 0.0})
  # GAN systems: an exponential moving average of the generator's weights
  # (and batch statistics), evaluated as output 'generator_ema' beside the
  # raw weights and used by colorize; 0 = off. Its decay ramps up as
  # min(decay, (1 + t) / (10 + t)), so early steps do not dominate.
  c.generator_ema_decay = 0.0
  # How that decay is scheduled: 'steps' (the ramp above, t counted from
  # step 0) or 'gan' (the ramp during the L1 warm-up or stage; the GAN's first
  # step restarts the average at G's weights, and from then on the decay is
  # the constant `generator_ema_decay`: an average over the GAN phase that
  # keeps a share of the warm-up's L1 weights, docs/results.md).
  c.generator_ema_ramp = "steps"
  # How a GAN generator runs at test time: 'eval' (running batch-norm
  # statistics, no dropout) or 'train' (Isola et al. 2017, sec. 3.3: dropout
  # on and batch statistics of the test batch, here of each photo on its
  # own, as their batch of 1; the result then does not depend on what else
  # is in the batch).
  c.generator_test_mode = "eval"
  # Adam and the pix2pix schedule: the rate is constant for `constant_steps`,
  # then decays linearly to zero over `decay_steps` (reference: n_epochs and
  # n_epochs_decay, counted here in steps). decay_steps = 0: constant.
  # No `name`: the optimizer registry's default, Adam. Another `name` picks
  # another optimizer with its own fields (jaxcolor/training/optimizers.py,
  # which also holds the defaults of the fields a section may leave out).
  c.optimizer = ml_collections.ConfigDict({
      "learning_rate": 2e-4, "b1": 0.5, "b2": 0.999,
      "constant_steps": -1,      # -1: num_train_steps - decay_steps.
      "decay_steps": 0,
  })
  # Evaluation runs (`--mode=evaluate`, jaxcolor/evaluation/checkpoints.py)
  # and the metrics every evaluation reports; definitions in
  # docs/metrics.md.
  c.evaluation = ml_collections.ConfigDict({
      # Which checkpoints of the workdir: 'latest', 'all', or steps '5000,10000'.
      "checkpoints": "latest",
      # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or its .npz
      # export); '' = no FID.
      "fid_weights": "",
      # Zhang et al.'s raw accuracy AuC: ab thresholds 0..max in steps.
      "auc_max_distance": 150.0,
      "auc_step": 1.0,
      "num_report_images": 16,   # Rows of the HTML report.
  })
  return c


def parse_config_arg(arg: str | None) -> dict[str, str]:
  """`'smoke'` or `'smoke,foo=1'` from `--config file.py:ARG` as a dict."""
  out = {}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, _, value = part.partition("=")
    out[key] = value
  return out


def check_presets(arg: str | None, allowed: tuple[str, ...]) -> set[str]:
  """The preset names in `arg`, or ConfigError naming the allowed ones."""
  presets = set(parse_config_arg(arg))
  unknown = presets - set(allowed)
  if unknown:
    raise ConfigError(
        f"Unknown config preset {', '.join(sorted(unknown))!s}"
        f"{suggest(min(unknown), allowed)}; "
        f"this config has: {', '.join(allowed) or 'none'}.")
  return presets


def _check_known(section: ml_collections.ConfigDict, known, prefix: str,
                 what: str) -> None:
  for key in section.keys():
    if key not in known:
      raise ConfigError(f"Unknown config field '{prefix}.{key}'"
                        f"{suggest(key, known)}; {what}: {', '.join(known)}.")


# The form only; `jaxcolor.data.check_datasets` finds out whether the data
# is there.
_DATASET_RE = re.compile(
    r"^(sample|folder:.+|(tfds:)?[a-z0-9_]+(/[a-z0-9_.]+)?(:[0-9.]+)?)$")


def scale_batch_sizes(config: ml_collections.ConfigDict,
                      device_count: int) -> None:
  """Sets the global batch sizes for `device_count` devices, in place.

  With `per_device_batch_size` N > 0, `batch_size` becomes N x
  `device_count`; `eval_batch_size` is rounded up to a multiple of
  `device_count` (evaluation masks padded rows). A field of the wrong type
  is left for `validate` to name. The run's config.json records the sizes
  used.
  """
  per_device = config.per_device_batch_size
  if isinstance(per_device, int) and not isinstance(per_device, bool) and (
      per_device > 0):
    config.batch_size = per_device * device_count
  eval_size = config.eval_batch_size
  if isinstance(eval_size, int) and not isinstance(eval_size, bool) and (
      eval_size > 0):
    config.eval_batch_size = -(-eval_size // device_count) * device_count


def validate(config: ml_collections.ConfigDict, *, device_count: int,
             process_count: int = 1, extra_fields: tuple[str, ...] = ()) -> None:
  """Checks the fields common to all systems; systems check their own.

  Args:
    config: the full configuration.
    device_count: global number of devices (the batch is split across them).
    process_count: number of host processes (each loads its own share).
    extra_fields: top-level fields the chosen system adds to the base.

  Raises:
    ConfigError: the first invalid field, named with its allowed values.
  """
  known = set(base_config().keys()) | set(extra_fields)
  for key in config.keys():
    if key not in known:
      raise ConfigError(f"Unknown config field {key!r}{suggest(key, known)}.")
  ints_positive = ("num_train_steps", "image_size", "batch_size",
                   "log_every_steps", "checkpoint_every_steps",
                   "keep_checkpoints", "eval_every_steps", "eval_batch_size",
                   "image_every_steps")
  for key in ints_positive:
    value = config[key]
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             key, value, "a positive integer")
  _require(isinstance(config.per_device_batch_size, int)
           and not isinstance(config.per_device_batch_size, bool)
           and config.per_device_batch_size >= 0, "per_device_batch_size",
           config.per_device_batch_size,
           "0 (batch_size is the global batch) or images per device")
  _require(isinstance(config.seed, int), "seed", config.seed, "an integer")
  _require(isinstance(config.worker_count, int) and config.worker_count >= 0,
           "worker_count", config.worker_count,
           "0 (in-process) or a positive number of worker processes")
  _require(isinstance(config.train_resize_scale, (int, float))
           and 1.0 <= config.train_resize_scale <= 4.0, "train_resize_scale",
           config.train_resize_scale,
           "a number between 1 (no jitter) and 4 (Isola et al.: 286 / 256)")
  _require(config.compute_dtype in COMPUTE_DTYPES, "compute_dtype",
           config.compute_dtype, f"one of {', '.join(COMPUTE_DTYPES)}")
  _require(config.conv_impl in CONV_IMPLS, "conv_impl", config.conv_impl,
           f"one of {', '.join(CONV_IMPLS)}")
  _require(config.cpu_conv_library in CPU_CONV_LIBRARIES, "cpu_conv_library",
           config.cpu_conv_library, f"one of {', '.join(CPU_CONV_LIBRARIES)}")
  _require(isinstance(config.skip_nonfinite_steps, bool),
           "skip_nonfinite_steps", config.skip_nonfinite_steps,
           "True (skip and count non-finite steps) or False (stop the run)")
  for key in ("dataset", "eval_dataset"):
    value = config[key]
    if key == "eval_dataset" and value == "":
      continue
    _require(isinstance(value, str) and bool(_DATASET_RE.match(value)), key,
             value, "'sample', 'folder:/path/to/images' or a TFDS name such "
             "as 'places365_small', 'imagenet2012', 'coco/2017', 'cifar10'")
  _require(config.batch_size % device_count == 0, "batch_size",
           config.batch_size,
           f"the global batch must split evenly over the {device_count} "
           f"devices: set a multiple of {device_count}, or "
           f"config.per_device_batch_size (the global batch is then that "
           f"times the device count)")
  _require(config.batch_size % process_count == 0, "batch_size",
           config.batch_size,
           f"the global batch must split evenly over the {process_count} hosts")
  _require(config.eval_batch_size % device_count == 0, "eval_batch_size",
           config.eval_batch_size,
           f"must be a multiple of the device count {device_count} "
           f"(`scale_batch_sizes` rounds it up)")
  _check_known(config.evaluation, list(base_config().evaluation.keys()),
               "evaluation", "known fields")
  _require(isinstance(config.profile_steps, int) and config.profile_steps >= 0,
           "profile_steps", config.profile_steps,
           "0 (no profile) or the number of steps to profile")
  _require(isinstance(config.generator_ema_decay, (int, float))
           and 0 <= config.generator_ema_decay < 1, "generator_ema_decay",
           config.generator_ema_decay, "0 (off) or a decay in (0, 1)")
  _require(config.generator_ema_ramp in GENERATOR_EMA_RAMPS,
           "generator_ema_ramp", config.generator_ema_ramp,
           f"one of {', '.join(GENERATOR_EMA_RAMPS)}")
  _require(config.generator_test_mode in GENERATOR_TEST_MODES,
           "generator_test_mode", config.generator_test_mode,
           f"one of {', '.join(GENERATOR_TEST_MODES)}")
  _validate_evaluation(config.evaluation)
  _validate_network_sizes(config)


def _validate_network_sizes(config: ml_collections.ConfigDict) -> None:
  """No negative width, depth or size in a network's fields.

  Networks (the sections with a `name`, but the optimizer) would fail
  inside their first trace with an error about array shapes, which the
  systems' shape check reports as an unfit image size.
  """
  for field, value in config.items():
    if (field == "optimizer" or not isinstance(value, ml_collections.ConfigDict)
        or "name" not in value):
      continue
    for key, item in value.items():
      items = item if isinstance(item, (tuple, list)) else (item,)
      if any(isinstance(x, int) and not isinstance(x, bool) and x < 0
             for x in items):
        raise ConfigError(
            f"config.{field}.{key}={item!r} is invalid: a width, depth or "
            "size cannot be negative.")


_CHECKPOINTS_RE = re.compile(r"^(latest|all|[0-9]+(,[0-9]+)*)$")


def _validate_evaluation(ev: ml_collections.ConfigDict) -> None:
  _require(isinstance(ev.checkpoints, str)
           and bool(_CHECKPOINTS_RE.match(ev.checkpoints.replace(" ", ""))),
           "evaluation.checkpoints", ev.checkpoints,
           "'latest', 'all', or checkpoint steps such as '5000' or '5000,10000'")
  _require(isinstance(ev.fid_weights, str), "evaluation.fid_weights",
           ev.fid_weights, "a path to pt_inception-2015-12-05-6726825d.pth or ''")
  # Types first: a model.json's config (colorize) may hold any JSON value.
  _require(isinstance(ev.auc_step, (int, float)) and ev.auc_step > 0,
           "evaluation.auc_step", ev.auc_step, "a positive distance in ab units")
  intervals = (ev.auc_max_distance / ev.auc_step
               if isinstance(ev.auc_max_distance, (int, float)) else -1)
  _require(intervals > 0 and abs(intervals - round(intervals)) < 1e-6,
           "evaluation.auc_max_distance", ev.auc_max_distance,
           f"a positive multiple of evaluation.auc_step={ev.auc_step} "
           "(Zhang et al.: 150)")
  _require(isinstance(ev.num_report_images, int)
           and ev.num_report_images >= 0, "evaluation.num_report_images",
           ev.num_report_images, "a non-negative integer")


def smoke_preset(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks the run for the `:smoke` presets: seconds on a CPU, every action.

  The embedded sample at 32 px, 6 steps, and logging, images, evaluation and
  checkpoints every few steps, so a smoke run passes through all of them.
  Each config then shrinks its own networks.

  A smoke run is all compilation: it takes XLA's own convolutions, which
  compile faster than the CPU forms that `auto` picks on a CPU and compute
  the same function (docs/benchmarks.md, "`conv_impl` on a CPU").
  """
  c.dataset = "sample"
  c.eval_dataset = ""
  c.image_size = 32
  c.batch_size = 8
  c.num_train_steps = 6
  c.optimizer.decay_steps = 3
  c.optimizer.constant_steps = -1
  c.log_every_steps = 2
  c.image_every_steps = 3
  c.checkpoint_every_steps = 3
  c.eval_every_steps = 3
  c.num_eval_images = 16
  c.eval_batch_size = 8
  c.num_grid_images = 4
  c.conv_impl = "xla"
  return c
