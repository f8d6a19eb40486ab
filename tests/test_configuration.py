"""Configuration errors are one clear line, found before anything compiles
or is written: invalid values, image sizes the networks cannot take, batches
the devices cannot split, unknown or unprepared datasets, and a checkpoint
that does not fit the config."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxcolor import data
from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.core.errors import ConfigError
from jaxcolor.runtime import config_file
from jaxcolor.training import checkpointing
from jaxcolor.training import experiment
from jaxcolor.training import loop

from helpers import REPO, load_config, make_checkpoint

# One worker runs the whole file: its tests share module-scoped results
# (`python -m pytest -n 2` distributes with --dist loadgroup, pyproject.toml).
pytestmark = pytest.mark.xdist_group("config_errors")

# -- the command line ------------------------------------------------------------

_CLI_CASES = {
    # name: (extra argv, environment, text the one line must hold)
    "batch_over_devices": (["--config.batch_size=12"], {"JAX_NUM_CPU_DEVICES": "8"},
                           ["config.batch_size=12", "multiple of 8"]),
    "unknown_field": (["--config.batchsize=8"], {},
                      ["'batchsize'", "did you mean 'batch_size'"]),
    "unknown_preset": (None, {}, ["smok", "did you mean 'smoke'"]),
    "bad_value": (["--config.batch_size=eight"], {},
                  ["--config.batch_size='eight' is invalid: expected an int"]),
    "missing_file": (["--config", "configs/nope.py"], {},
                     ["Cannot load the config file configs/nope.py"]),
    "image_size_for_depth": (["--config.image_size=64",
                              "--config.generator.num_downsamplings=8"], {},
                             ["config.image_size=64", "num_downsamplings=8"]),
    "unprepared_tfds": (["--config.dataset=cifar10", "--config.data_dir={tmp}"],
                        {}, ["config.dataset='cifar10'",
                             "tfds build cifar10 --data_dir {tmp}"]),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
  """Every case's `python -m jaxcolor.main`, run side by side (each fails in
  seconds; together they would otherwise add up)."""
  tmp = tmp_path_factory.mktemp("cli")
  running = {}
  for name, (extra, env, _) in _CLI_CASES.items():
    preset = "smok" if extra is None else "smoke"
    argv = [sys.executable, "-m", "jaxcolor.main", "--config",
            f"{REPO / 'configs/default.py'}:{preset}",
            "--workdir", str(tmp / name)]
    argv += [a.format(tmp=tmp) for a in extra or []]
    running[name] = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp, env={**os.environ, **env})
  results = {}
  for name, process in running.items():
    _, stderr = process.communicate(timeout=300)
    results[name] = (process.returncode, stderr)
  return tmp, results


@pytest.mark.parametrize("case", sorted(_CLI_CASES))
def test_cli_error_is_one_line_before_anything_is_written(cli_results, case):
  tmp, results = cli_results
  returncode, stderr = results[case]
  lines = [l for l in stderr.splitlines() if l.startswith("Configuration error")]
  assert returncode == 2, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-2000:]
  assert len(lines) == 1, stderr[-2000:]
  for text in _CLI_CASES[case][2]:
    assert text.format(tmp=tmp) in lines[0]
  assert not (tmp / case / "config.json").exists()


# -- validation ------------------------------------------------------------------


@pytest.mark.parametrize("path,size", [
    ("configs/default.py", 48),           # 5 downsamplings: multiples of 32.
    ("configs/pix2pix_improver.py", 40),
    ("configs/resnet18_unet.py", 48),     # The ResNet encoder: 32.
    ("configs/dla_cdcgan.py", 36),        # Smoke: 3 downsamplings, 8.
    ("configs/iizuka.py", 36),            # Multiples of 8.
])
def test_image_size_each_generator_cannot_take(tmp_path, path, size):
  config = load_config(path)
  config.image_size = size
  with pytest.raises(configuration.ConfigError, match=f"image_size={size}"):
    experiment.build(config)


def test_invalid_values_name_the_key():
  config = load_config("configs/default.py")
  with config.unlocked():
    config.generator.ngf = -8
  with pytest.raises(configuration.ConfigError,
                     match=r"config.generator.ngf=-8 .*negative"):
    configuration.validate(config, device_count=8)
  config = load_config("configs/default.py")
  with pytest.raises(configuration.ConfigError,
                     match="split evenly over the 3 hosts"):
    configuration.validate(config, device_count=1, process_count=3)
  with config.unlocked():
    config.num_train_step = 3
  with pytest.raises(configuration.ConfigError,
                     match="'num_train_step' .*did you mean 'num_train_steps'"):
    configuration.validate(config, device_count=1)
  config = load_config("configs/iizuka.py")  # ADADELTA: no momentum.
  with config.unlocked():
    config.optimizer.momentum = 0.9
  with pytest.raises(configuration.ConfigError, match=(
      r"'optimizer.momentum'; the adadelta optimizer reads: .*rho, eps")):
    systems.create(config)  # Its optimizer is built, and checked, here.
  with pytest.raises(configuration.ConfigError,
                     match="preset smok .*did you mean 'smoke'"):
    load_config("configs/default.py", "smok")
  config = load_config("configs/default.py")
  config.conv_impl = "cuda"
  with pytest.raises(configuration.ConfigError,
                     match="config.conv_impl='cuda' .*auto, xla, cpu"):
    configuration.validate(config, device_count=1)
  config = load_config("configs/default.py")
  config.generator.conv_impl = "xla"  # One setting for all of a run's nets.
  with pytest.raises(configuration.ConfigError,
                     match="config.generator.conv_impl: set the top-level"):
    systems.create(config)


def test_config_file_loading_and_overrides_word_every_error(tmp_path):
  """jaxcolor/runtime/config_file.py: our own reading of --config and
  --config.FIELD=VALUE, every failure one ConfigError naming what failed."""
  argv = ["prog", "--config", "c.py:smoke", "--config.batch_size=4",
          "--workdir", "w", "--config.generator.ngf", "16", "--", "--config.x=1"]
  rest, overrides = config_file.split_overrides(argv)
  assert rest == ["prog", "--config", "c.py:smoke", "--workdir", "w", "--",
                  "--config.x=1"]
  assert overrides == [("batch_size", "4"), ("generator.ngf", "16")]
  with pytest.raises(ConfigError, match="--config.seed needs a value"):
    config_file.split_overrides(["prog", "--config.seed"])

  config = config_file.load(
      str(REPO / "configs/default.py") + ":smoke",
      [("batch_size", "4"), ("generator.dropout_rate", "0.25"),
       ("generator_ema_decay", "0"), ("dataset", "folder:/x"),
       ("compute_dtype", "bfloat16")])
  assert (config.batch_size, config.generator.dropout_rate) == (4, 0.25)
  assert config.generator_ema_decay == 0.0 and config.dataset == "folder:/x"
  assert config.image_size == 32  # The preset applied before the overrides.
  with pytest.raises(AttributeError):
    config.not_a_field = 1  # Locked.

  default = str(REPO / "configs/default.py")
  cases = {
      "batchsize=8": "Unknown config field 'batchsize' in --config.batchsize "
                     "(did you mean 'batch_size'?)",
      "generator.ngff=8": "Unknown config field 'generator.ngff'",
      "batch_size=abc": "--config.batch_size='abc' is invalid: expected an int",
      "generator_ema_decay=x": "expected a number",
      "generator=3": "--config.generator is a section: set its fields",
      "batch_size.x=1": "config.batch_size is a value, not a section",
  }
  for override, message in cases.items():
    field, _, text = override.partition("=")
    with pytest.raises(ConfigError) as raised:
      config_file.load(default, [(field, text)])
    assert message in str(raised.value), (override, str(raised.value))

  with pytest.raises(ConfigError, match="Cannot load the config file "
                     ".*nope.py: no such file"):
    config_file.load(str(tmp_path / "nope.py"))
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(arg=None):\n  return {}['system']\n")
  with pytest.raises(ConfigError, match=r"broken.py, line 2: KeyError: 'system'"):
    config_file.load(str(broken))
  plain = tmp_path / "plain.py"
  plain.write_text("def get_config(arg=None):\n  return {'a': 1}\n")
  with pytest.raises(ConfigError, match="returned a dict, not an "
                     "ml_collections.ConfigDict"):
    config_file.load(str(plain))
  with pytest.raises(ConfigError, match="defines no get_config"):
    config_file.load(_empty(tmp_path))


def _empty(tmp_path) -> str:
  path = tmp_path / "empty.py"
  path.write_text("x = 1\n")
  return str(path)


# -- datasets --------------------------------------------------------------------


def test_datasets_unknown_missing_or_unprepared(tmp_path):
  config = load_config("configs/default.py")
  check = data.check_datasets
  config.dataset = "places365_smal"
  with pytest.raises(configuration.ConfigError, match=(
      "config.dataset='places365_smal'.*did you mean 'places365_small'")):
    check(config)
  config.dataset = "tfds:cifar100000"
  with pytest.raises(configuration.ConfigError, match="did you mean 'cifar100'"):
    check(config)
  config.dataset = f"folder:{tmp_path / 'absent'}"
  with pytest.raises(configuration.ConfigError, match="does not exist"):
    check(config)
  config.dataset = f"folder:{tmp_path}"
  with pytest.raises(configuration.ConfigError, match="No image files"):
    check(config)
  config.dataset = "sample"
  config.eval_dataset = "places365_small"
  config.data_dir = str(tmp_path)
  with pytest.raises(configuration.ConfigError) as error:
    check(config)
  assert "config.eval_dataset='places365_small'" in str(error.value)
  assert (f"tfds build places365_small --data_dir {tmp_path} "
          "--file_format array_record") in str(error.value)
  # An evaluation run reads only the evaluation split's dataset.
  config.dataset, config.eval_dataset = "places365_small", "sample"
  check(config, train=False)
  with pytest.raises(configuration.ConfigError, match="places365_small"):
    check(config)


def test_dataset_is_checked_before_the_workdir_and_any_compile(tmp_path,
                                                               monkeypatch):
  def compiles(*args, **kwargs):
    raise AssertionError("compiled before the dataset was checked")
  monkeypatch.setattr(experiment, "initial_state", compiles)
  config = load_config("configs/default.py")
  config.eval_dataset = f"folder:{tmp_path / 'absent'}"
  with pytest.raises(configuration.ConfigError, match="config.eval_dataset"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "config.json").exists()


# -- checkpoints -----------------------------------------------------------------


def test_checkpoint_that_does_not_fit_the_config(tmp_path):
  config = load_config("configs/default.py")  # ngf 8.
  workdir = tmp_path / "run"
  make_checkpoint(config, workdir, steps=(2,))
  written = (workdir / "config.json").read_text()

  wider = load_config("configs/default.py")
  wider.generator.ngf = 16
  with pytest.raises(checkpointing.CheckpointMismatchError) as error:
    loop.train_and_evaluate(wider, str(workdir))
  message = str(error.value)
  assert "step 2" in message and str(workdir / "checkpoints") in message
  assert ("generator/params/down_0/kernel is (4, 4, 1, 8) in the checkpoint "
          "but (4, 4, 1, 16) in this config") in message
  assert str(workdir / "config.json") in message
  assert (workdir / "config.json").read_text() == written

  # Arrays that only one side has are counted and the first named.
  shallower = load_config("configs/default.py")
  shallower.discriminator.num_layers = 2
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match=r"not in this config, first discriminator/params/"):
    loop.train_and_evaluate(shallower, str(workdir))

  # The same check guards every restore (evaluation, colorize).
  import jax  # noqa: PLC0415
  from jaxcolor import systems  # noqa: PLC0415
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=3,
                                    asynchronous=False)
  abstract = jax.eval_shape(systems.create(wider).init, jax.random.key(0))
  with pytest.raises(checkpointing.CheckpointMismatchError):
    ckpt.restore(2, abstract)
  same = jax.eval_shape(systems.create(config).init, jax.random.key(0))
  state = ckpt.restore(2, same)
  assert state["generator"].params["down_0"]["kernel"].shape == (4, 4, 1, 8)
  assert np.all(np.isfinite(state["generator"].params["down_0"]["kernel"]))
  ckpt.close()
