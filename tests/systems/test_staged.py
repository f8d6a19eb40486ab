"""Staged training of the ResNet-18 U-Net (system 'resnet18_unet') and its
backbone sources: stage switching, resumption in each stage, pretrained
encoders from our classify checkpoints and from torchvision files, each
stage's step on 8 devices against 1, and a smoke run that passes through
both stages and colorizes.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import helpers
from helpers import (assert_colorization_follows_input, assert_same_steps,
                     init_host_state, load_config, one_device_mesh, run_steps,
                     with_plain_sgd)

from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.models import torchvision_import
from jaxcolor.systems import staged
from jaxcolor.training import checkpointing
from jaxcolor.training import experiment
from jaxcolor.training import loop

# One worker runs the whole file: its tests share a module-scoped run
# (`python -m pytest -n 2` distributes with --dist loadgroup, pyproject.toml).
pytestmark = pytest.mark.xdist_group("staged")


def staged_config(pretrain_steps=2, adversarial_steps=2):
  config = load_config("configs/resnet18_unet.py")
  config.stages.pretrain_steps = pretrain_steps
  config.stages.adversarial_steps = adversarial_steps
  config.num_train_steps = pretrain_steps + adversarial_steps
  return config


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _equal(a, b) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
      np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def _adam_count(opt_state) -> int:
  counts = [int(x) for path, x in jax.tree_util.tree_leaves_with_path(opt_state)
            if "count" in jax.tree_util.keystr(path)]
  return max(counts)


def _lines(workdir):
  return [json.loads(line) for line in
          (workdir / "metrics.jsonl").read_text().splitlines()]


def _checkpoint(workdir, config, step):
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=10)
  abstract = jax.eval_shape(systems.create(config).init, jax.random.key(0))
  state = ckpt.restore(step, abstract)
  ckpt.close()
  return _host(state)


def _two_by_two():
  """2 steps of L1 pretraining, 2 of the GAN, every step logged and saved."""
  config = staged_config(pretrain_steps=2, adversarial_steps=2)
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = 10
  config.eval_every_steps = 100
  config.image_every_steps = 100
  config.num_eval_images = 8
  # The average restarts at stage 2's first step (steps 1 and 2 ramp).
  config.generator_ema_decay = 0.5
  config.generator_ema_ramp = "gan"
  return config


@pytest.fixture(scope="module")
def one_device_run():
  """One device for the module's runs (see helpers.one_device_mesh)."""
  with one_device_mesh():
    yield


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, one_device_run):
  """An uninterrupted run of `_two_by_two`: (workdir, config)."""
  workdir = tmp_path_factory.mktemp("staged") / "straight"
  config = _two_by_two()
  loop.train_and_evaluate(config, str(workdir))
  return workdir, config


def test_stages_switch_at_the_boundary(straight_run):
  workdir, config = straight_run
  system = systems.create(config)
  assert [system.phase(s) for s in range(4)] == [
      "pretrain", "pretrain", "adversarial", "adversarial"]
  lines = [l for l in _lines(workdir) if not any(k.startswith("eval/") for k in l)]
  assert [l["step"] for l in lines] == [1, 2, 3, 4]
  for line in lines[:2]:   # Stage 1: G alone, on L1.
    assert {"pretrain/generator_l1_loss", "pretrain/generator_grad_norm",
            "pretrain/learning_rate"} <= set(line)
    assert not any(k.startswith("adversarial/") for k in line)
    np.testing.assert_allclose(line["pretrain/learning_rate"], 1e-4)
  for line in lines[2:]:   # Stage 2: the pix2pix step.
    assert {"adversarial/discriminator_loss", "adversarial/generator_gan_loss",
            "adversarial/generator_l1_loss"} <= set(line)
    assert not any(k.startswith("pretrain/") for k in line)
    np.testing.assert_allclose(line["adversarial/learning_rate"], 2e-4)

  states = {step: _checkpoint(workdir, config, step) for step in (1, 2, 3, 4)}
  assert [int(states[s]["stage"]) for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
  # Step 2 (stage 1) moves G with its pretraining Adam; D, and the Adam G
  # uses in stage 2, stay as initialized.
  assert not _equal(states[1]["generator"].params, states[2]["generator"].params)
  assert _equal(states[1]["discriminator"], states[2]["discriminator"])
  assert _equal(states[1]["generator"].opt_state, states[2]["generator"].opt_state)
  assert _adam_count(states[2][staged.PRETRAIN_OPT_STATE]) == 2
  assert _adam_count(states[2]["generator"].opt_state) == 0
  # Steps 3 and 4 (stage 2) move D and G; G's stage-2 Adam starts afresh and
  # the pretraining optimizer stays where stage 1 left it.
  for before, after in ((states[2], states[3]), (states[3], states[4])):
    assert not _equal(before["discriminator"].params,
                      after["discriminator"].params)
    assert not _equal(before["generator"].params, after["generator"].params)
    assert _equal(before[staged.PRETRAIN_OPT_STATE],
                  after[staged.PRETRAIN_OPT_STATE])
  assert _adam_count(states[3]["generator"].opt_state) == 1
  assert _adam_count(states[4]["discriminator"].opt_state) == 2
  # generator_ema_ramp='gan': the GAN stage's first step restarts the
  # average at G, the next mixes with the constant decay 0.5.
  def variables(state):
    return jax.tree.map(lambda x: np.asarray(x, np.float32),
                        dict(state["generator"].variables))
  assert not _equal(states[2]["generator_ema"], variables(states[2]))
  for a, b in zip(jax.tree.leaves(states[3]["generator_ema"]),
                  jax.tree.leaves(variables(states[3]))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  expected = jax.tree.map(lambda e, v: 0.5 * e + 0.5 * v,
                          states[3]["generator_ema"], variables(states[4]))
  for a, b in zip(jax.tree.leaves(states[4]["generator_ema"]),
                  jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stopped_at", [1, 3])  # In stage 1, in stage 2.
def test_resume_in_each_stage_equals_the_straight_run(
    straight_run, one_device_run, tmp_path, stopped_at):
  """A run stopped at `stopped_at` (its checkpoint, the same as the straight
  run's at that step) and resumed ends exactly as the straight run."""
  workdir, config = straight_run
  resumed = tmp_path / "resumed"
  shutil.copytree(workdir / "checkpoints" / str(stopped_at),
                  resumed / "checkpoints" / str(stopped_at))
  loop.train_and_evaluate(config, str(resumed))

  a, b = _checkpoint(workdir, config, 4), _checkpoint(resumed, config, 4)
  assert int(b["step"]) == 4 and int(b["stage"]) == 1
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):  # Params, BN stats, both optimizers.
    np.testing.assert_array_equal(x, y)
  train_lines = lambda w: [l for l in _lines(w) if "eval/ssim" not in l]
  straight_lines = {l["step"]: l for l in train_lines(workdir)}
  assert [l["step"] for l in train_lines(resumed)] == list(
      range(stopped_at + 1, 5))
  for line in train_lines(resumed):
    for key, value in line.items():
      if "loss" in key:
        np.testing.assert_allclose(value, straight_lines[line["step"]][key],
                                   rtol=1e-6, err_msg=key)


def test_num_train_steps_beyond_the_stages_is_a_config_error(tmp_path):
  config = staged_config(pretrain_steps=2, adversarial_steps=2)
  config.num_train_steps = 5
  with pytest.raises(configuration.ConfigError,
                     match="num_train_steps=5.*= 4"):
    experiment.build(config)
  config = staged_config()
  config.backbone.source = "imagenet"
  with pytest.raises(configuration.ConfigError, match="backbone.source"):
    experiment.build(config)


# -- sharding --------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_sgd_start():
  """The smoke preset with plain SGD in both stages (helpers.with_plain_sgd)
  and its initial state on the host."""
  config = with_plain_sgd(load_config("configs/resnet18_unet.py"), 0.1)
  return config, init_host_state(config)


# Measured worst error (2-core x86 CPU, XLA:CPU): 8.3e-6 in the L1 stage and
# 8.2e-6 in the GAN stage, both the gradient of the encoder's last batch-norm
# offset (layer4_1/bn2, 1 x 1 pixels at the smoke size); the tolerance is
# 5e-5. A real bug is 4-5 orders of magnitude above it: each device's
# gradient of its own shard, not averaged, gives up to 9.3 (stage 1) and
# 9.6 (stage 2) on the worst tensor; per-device batch statistics with
# averaged gradients 3.9 and 3.8, and up to 2.0 on the running variances.
@pytest.mark.parametrize("stage", staged.STAGES)
def test_each_stage_on_8_devices_equals_1_device(plain_sgd_start, stage):
  assert jax.device_count() == 8
  config, state0 = plain_sgd_start
  first = {staged.PRETRAIN: 0,
           staged.ADVERSARIAL: config.stages.pretrain_steps}[stage]
  state0 = dict(state0, step=np.asarray(first, np.int32))
  assert systems.create(config).phase(first) == stage
  assert_same_steps(run_steps(config, jax.devices(), 1, initial_state=state0),
                    run_steps(config, jax.devices()[:1], 1,
                              initial_state=state0),
                    state0, rtol=5e-5)


# -- backbones -----------------------------------------------------------------


def _random_like(abstract, seed: int):
  """Random arrays in the shapes and dtypes of `abstract` (nothing compiles)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(s.dtype)),
      abstract)


def _classify_checkpoint(workdir, base_features: int):
  """A classify run's checkpoint, saved as the training loop saves it."""
  config = load_config("configs/resnet18_classify.py")
  config.classifier.base_features = base_features
  system = systems.create(config)
  state = _random_like(jax.eval_shape(system.init, jax.random.key(1)), seed=1)
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=1,
                                    asynchronous=False)
  ckpt.save(7, state, force=True)
  ckpt.wait_until_finished()
  ckpt.close()
  return jax.device_get(state["classifier"])


def test_backbone_from_a_classify_checkpoint(tmp_path):
  classifier = _classify_checkpoint(tmp_path / "classify", base_features=8)
  config = staged_config()
  config.backbone.source = "checkpoint"
  config.backbone.path = str(tmp_path / "classify")
  system = systems.create(config)
  system.validate()
  fresh = _random_like(jax.eval_shape(system.init, jax.random.key(0)), seed=2)
  assert not _equal(fresh["generator"].params["encoder"],
                    classifier.params["body"])
  state = system.load_pretrained(fresh)
  assert _equal(state["generator"].params["encoder"],
                classifier.params["body"])
  assert _equal(state["generator"].batch_stats["encoder"],
                classifier.batch_stats["body"])
  assert _equal(state["generator"].params["up1"], fresh["generator"].params["up1"])
  assert _equal(state["discriminator"], fresh["discriminator"])

  # A classifier of another width does not fit: one line, before compiling.
  config.generator.base_features = 16
  with pytest.raises(configuration.ConfigError,
                     match="backbone.path=.*does not fit config.generator"):
    experiment.build(config)
  config.backbone.path = str(tmp_path / "nothing_here")
  with pytest.raises(configuration.ConfigError, match="does not exist"):
    experiment.build(config)


def fake_torchvision_npz(path, seed: int = 0) -> dict[str, np.ndarray]:
  """A torchvision-named ResNet-18 state dict of random values, as .npz."""
  template = torchvision_import.resnet18_template()
  rng = np.random.default_rng(seed)
  state_dict = {}
  for collection in ("params", "batch_stats"):
    for path_, leaf in jax.tree_util.tree_leaves_with_path(template[collection]):
      keys = tuple(k.key for k in path_)
      shape = leaf.shape
      if len(shape) == 4:               # HWIO -> torch's OIHW
        shape = (shape[3], shape[2], shape[0], shape[1])
      elif len(shape) == 2:             # fc [in, out] -> [out, in]
        shape = shape[::-1]
      state_dict[torchvision_import.torch_name(collection, keys)] = (
          rng.uniform(0.5, 1.5, shape).astype(np.float32))
  np.savez(path, **state_dict)
  return state_dict


def test_backbone_from_a_torchvision_file(tmp_path):
  state_dict = fake_torchvision_npz(tmp_path / "resnet18_imagenet.npz")
  config = staged_config()
  config.generator.base_features = 64   # torchvision's width.
  config.backbone.source = "torchvision"
  config.backbone.path = str(tmp_path / "resnet18_imagenet.npz")
  system = systems.create(config)
  system.validate()
  # Zeros in the full-size generator's shapes: nothing to compile.
  generator = jax.eval_shape(system.init, jax.random.key(0))["generator"]
  zeros = lambda tree: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)
  state = {"generator": generator.replace(
      params=zeros(generator.params), batch_stats=zeros(generator.batch_stats),
      opt_state=None)}
  encoder = system.load_pretrained(state)["generator"]
  np.testing.assert_array_equal(
      encoder.params["encoder"]["conv1"]["kernel"],
      state_dict["conv1.weight"].sum(axis=1, keepdims=True).transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      encoder.params["encoder"]["layer3_0"]["downsample_0"]["kernel"],
      state_dict["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      encoder.batch_stats["encoder"]["layer4_1"]["bn2"]["var"],
      state_dict["layer4.1.bn2.running_var"])
  assert not np.any(encoder.params["middle_conv1"]["kernel"])  # Untouched.

  # A wrong hash, in the name or in the config, is reported with the digest.
  hashed = tmp_path / "resnet18-0badc0de.npz"
  hashed.write_bytes((tmp_path / "resnet18_imagenet.npz").read_bytes())
  config.backbone.path = str(hashed)
  with pytest.raises(configuration.ConfigError, match="sha256 mismatch"):
    experiment.build(config)
  config.backbone.path = str(tmp_path / "resnet18_imagenet.npz")
  config.backbone.sha256 = "0badc0de"
  with pytest.raises(configuration.ConfigError, match="sha256 mismatch"):
    experiment.build(config)
  config.backbone.sha256 = ""
  config.backbone.path = str(tmp_path / "missing.pth")
  with pytest.raises(configuration.ConfigError, match="No weight file"):
    experiment.build(config)
  # torchvision's width only: a narrower U-Net cannot take it.
  config.backbone.path = str(tmp_path / "resnet18_imagenet.npz")
  config.generator.base_features = 8
  with pytest.raises(configuration.ConfigError, match="does not fit"):
    experiment.build(config)


# -- the command ---------------------------------------------------------------


def test_smoke_preset_passes_through_both_stages(tmp_path, one_device_run):
  workdir = tmp_path / "run"
  loop.train_and_evaluate(load_config("configs/resnet18_unet.py"),
                           str(workdir))
  lines = _lines(workdir)
  pretrain = [l["step"] for l in lines if "pretrain/generator_l1_loss" in l]
  adversarial = [l["step"] for l in lines
                 if "adversarial/discriminator_loss" in l]
  assert pretrain and adversarial and max(pretrain) <= 4 <= min(adversarial)
  assert any("eval/ssim" in l and "eval/ab_mse" in l for l in lines)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == ["3", "6"]
  # The run colorizes: a generator that outputs zeros or ignores its input
  # would pass the lines above.
  assert_colorization_follows_input(workdir)


def test_bins_preset_learns_the_distribution_in_the_pretraining_stage():
  config = load_config("configs/resnet18_unet.py", "bins,smoke")
  config.stages.pretrain_optimizer.learning_rate = 3e-3  # Few steps.
  system = systems.create(config)
  system.validate()
  assert system.ab_bins and system.l1_weight == 0
  assert config.num_train_steps == config.stages.pretrain_steps
  state = jax.jit(system.init)(jax.random.key(0))
  # The decoder stops at stride 4: no blocks or full-size layers past it.
  assert set(state["generator"].params) == {
      "encoder", "middle_bn", "middle_conv1", "middle_conv2", "up1", "up2",
      "up3", "bins_head"}
  batch = helpers.random_batch(config.batch_size, config.image_size, seed=3)
  step = jax.jit(system.phase_train_step(staged.PRETRAIN))
  losses = []
  for _ in range(10):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["pretrain/generator_bins_loss"]))
  assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0], losses
  np.testing.assert_allclose(float(metrics["pretrain/generator_loss"]),
                             losses[-1], rtol=1e-6)
  lightness = jnp.zeros((2, config.image_size, config.image_size, 1))
  ab, logits = system.generator.apply(
      {"params": state["generator"].params,
       "batch_stats": state["generator"].batch_stats}, lightness, train=False)
  assert ab.shape == (2, config.image_size, config.image_size, 2)
  assert logits.shape[1:3] == (config.image_size // 4,) * 2
