"""A pix2pix generator that predicts colour as a distribution over a*b*
bins: its losses, the prior stored with the run, the temperature chosen on
the held-out split, and the colorizer that reads it."""

import json

import jax
import numpy as np
import pytest

from jaxcolor import systems
from jaxcolor.core import ab_bins
from jaxcolor.core.errors import ConfigError
from jaxcolor.evaluation import temperature
from jaxcolor.inference import colorizer
from jaxcolor.systems import pix2pix
from jaxcolor.training import ab_prior
from jaxcolor.training import experiment
from jaxcolor.training import loop
from tests import helpers


def bins_config(preset="bins_gan,smoke"):
  return helpers.load_config("configs/cpu_budget.py", preset)


def test_bins_settings_are_checked_before_anything_compiles():
  config = helpers.load_config("configs/cpu_budget.py", "smoke")
  config.loss.bins_weight = 1.0
  with pytest.raises(ConfigError, match="bins_weight=1.0 needs a generator"):
    experiment.build(config, data="none")
  config = bins_config()
  config.loss.bins_weight = 0.0
  config.loss.l1_weight = 0.0
  with pytest.raises(ConfigError, match="nothing trains the bins"):
    experiment.build(config, data="none")
  config = bins_config()
  config.loss.bins_weight = -1.0
  with pytest.raises(ConfigError, match="bins_weight=-1.0 is invalid"):
    experiment.build(config, data="none")


def test_the_cross_entropy_alone_learns_a_batch():
  config = bins_config("bins,smoke")
  config.optimizer.learning_rate = 5e-3  # Few steps: a faster pace.
  system = systems.create(config)
  assert system.phase(0) == pix2pix.WARMUP and system.l1_weight == 0
  state = jax.jit(system.init)(jax.random.key(0))
  batch = helpers.random_batch(config.batch_size, config.image_size, seed=3)
  step = jax.jit(system.warmup_step)
  losses = []
  for _ in range(12):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["generator_bins_loss"]))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.95 * losses[0], losses
  # The L1 term is off: the loss is the cross-entropy.
  np.testing.assert_allclose(float(metrics["generator_loss"]), losses[-1],
                             rtol=1e-6)


def test_a_run_stores_its_prior_and_its_chosen_temperature(tmp_path):
  config = bins_config()
  # Six steps leave batch norm's running statistics near their start, so
  # the eval-mode network barely sees its input; each photo's own
  # statistics (Isola et al.'s test mode) show what it learnt.
  config.generator_test_mode = "train"
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))
  counts = ab_prior.read(workdir / ab_prior.FILE_NAME)
  assert counts.sum() == ab_prior.PRIOR_IMAGES * (config.image_size // 4) ** 2
  # The state's weights are those of the stored prior, not the uniform ones.
  run = experiment.build(config, data="none")
  from jaxcolor.training import checkpointing  # noqa: PLC0415
  checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=10,
                                            asynchronous=False)
  state = run.restore(checkpointer, checkpointer.latest_step())
  checkpointer.close()
  weights = np.asarray(state[pix2pix.AB_BIN_WEIGHTS])
  np.testing.assert_allclose(weights, ab_bins.rebalance_weights(counts),
                             rtol=1e-6)
  assert weights.std() > 0.01
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("generator_bins_loss" in x and "generator_gan_loss" in x
             for x in lines)
  helpers.assert_colorization_follows_input(workdir)

  record = temperature.choose(str(workdir), temperatures=(1.0, 0.38, 0.1))
  assert [r["temperature"] for r in record["scores"]] == [1.0, 0.38, 0.1]
  written = json.loads((workdir / "temperature.json").read_text())
  assert written["temperature"] == record["temperature"]
  # Colder decoding, more colour: the shares rise as T falls.
  shares = [r["colorfulness_share"] for r in record["scores"]]
  assert shares[-1] > shares[0]
  chosen = colorizer.Colorizer.from_workdir(workdir)
  assert chosen.system.generator.bins_temperature == record["temperature"]

  (workdir / "temperature.json").write_text('{"temperature": -1}')
  with pytest.raises(ConfigError, match="temperature.json: no positive"):
    colorizer.Colorizer.from_workdir(workdir)
  (workdir / ab_prior.FILE_NAME).write_text('{"bins": [[0, 0]], "counts": [1]}')
  with pytest.raises(ConfigError, match="ab_prior.json: its bins are not"):
    ab_prior.read(workdir / ab_prior.FILE_NAME)


def test_the_temperature_rule():
  rows = [{"temperature": t, "psnr": p, "gray_psnr": 22.6,
           "colorfulness_share": s}
          for t, p, s in [(1.0, 23.0, 0.4), (0.5, 22.7, 0.85),
                          (0.38, 22.5, 0.95), (0.1, 21.0, 1.3)]]
  # The most colorful at or above gray; not the most colorful of all.
  assert temperature.pick(rows)["temperature"] == 0.5
  below = [dict(r, gray_psnr=24.0) for r in rows]
  assert temperature.pick(below)["temperature"] == 1.0  # The best PSNR.
