r"""Iizuka et al. (2016), "Let there be Color!" (paper 004 sec. 4).

One network, no GAN: a low-level network shared by a local path (the image
itself) and a global path (a 224 x 224 copy), fused and decoded to ab, with a
scene classifier on the global features, trained jointly on
MSE(ab) + alpha * CE(scene). See jaxcolor/systems/iizuka.py and
docs/systems.md.

From paper 004 (sec. 4): six parts (low-level, mid-level, global features,
fusion, classification, colorization networks); strided convolutions instead
of pooling; a 256-d global vector fused with the 256-channel mid-level map;
output at half the input size; MSE training; 2,448,872 training and 20,500
validation images of 205 Places scene classes; naturalness in the user study
92.6% against 69.8% for the network without global features.

From the original paper (Iizuka, Simo-Serra and Ishikawa, SIGGRAPH 2016), as
we recall it; not checked against its text here (marked *): ADADELTA*, batch
128*, about 200,000 iterations* (~11 epochs of Places*), 224 x 224 training
images*, alpha = 1/300 (also the value of the tensorpack re-implementation).
Not stated there as far as we know: ADADELTA's rho and eps; Torch7's
optim.adadelta defaults (rho 0.9, eps 1e-6, no learning rate, i.e. 1.0) are
used, the original being a Torch7 program.

Differences, on purpose:
  - places365_small (1,803,460 training images, 365 classes, 256 x 256)
    instead of the original's Places-205 (not in TFDS); num_classes follows
    the dataset. 200k steps at batch 128 are ~14 epochs of it.
  - alpha = 1/300 on a color MSE taken on the original's [0, 1] scale
    (jaxcolor/systems/iizuka.py explains the scale).
  - The loss compares full-size ab: the network's half-size output is
    upsampled bilinearly inside the model (jaxcolor/models/iizuka.py).

Presets:
  :smoke  seconds on a CPU: width 8, 32 px, the embedded sample. The sample
          has no labels, so the classification term is off (a start-up
          warning and `classification_enabled = 0` in metrics.jsonl).

Run:
  python -m jaxcolor.main --config configs/iizuka.py --workdir runs/iizuka \
      --config.data_dir=/path/to/tensorflow_datasets
  python -m jaxcolor.main --config configs/iizuka.py:smoke --workdir /tmp/smoke
"""

import ml_collections

from jaxcolor.core.configuration import base_config, check_presets, smoke_preset


def get_config(arg=None):
  presets = check_presets(arg, ("smoke",))
  c = base_config()
  c.system = "iizuka"
  # The GAN fields of the base mean nothing here: drop them, so that an
  # override such as --config.generator.ngf fails instead of being ignored.
  del c["generator"]
  del c["discriminator"]
  c.colorizer = ml_collections.ConfigDict({
      "name": "iizuka", "num_classes": 365, "global_size": 224, "width": 64})
  c.loss = ml_collections.ConfigDict({"classification_weight": 1 / 300})
  c.optimizer = ml_collections.ConfigDict({
      "name": "adadelta", "learning_rate": 1.0, "rho": 0.9, "eps": 1e-6,
      "constant_steps": -1, "decay_steps": 0})

  c.dataset = "places365_small"
  c.image_size = 224
  c.batch_size = 128
  c.num_train_steps = 200_000
  c.log_every_steps = 100
  c.image_every_steps = 5000
  c.checkpoint_every_steps = 5000
  c.eval_every_steps = 10_000
  c.num_eval_images = 2000
  c.eval_batch_size = 64

  if "smoke" in presets:
    smoke_preset(c)
    c.optimizer.decay_steps = 0
    c.colorizer.width = 8
    c.colorizer.global_size = 32
  return c
