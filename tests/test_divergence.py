"""Divergence (`divergence.guard_nonfinite`): by default a non-finite step is
flagged and the run stops at its next check, naming the network, the step
and the last good checkpoint; with `config.skip_nonfinite_steps` such steps
are dropped, skipped and counted. No checkpoint ever holds a non-finite
value.

The NaNs are injected into pix2pix's generator at chosen steps (the same
steps in both loop tests, so they share one compilation).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import load_config

from jaxcolor import systems
from jaxcolor.core import configuration
from jaxcolor.systems import base
from jaxcolor.systems import pix2pix
from jaxcolor.training import checkpointing
from jaxcolor.training import divergence
from jaxcolor.training import loop

# 0-based indices of the steps whose generator update is poisoned; the loop
# counts steps from 1, so these are steps 3 and 5 in its messages and logs.
POISONED = (2, 4)


# -- the guard, on a toy two-network step (no training loop) --------------------


def _toy_state(tx=optax.sgd(0.5)):
  def network(value):
    return base.TrainState.create(apply_fn=None, tx=tx,
                                  params={"w": jnp.full((3,), value)})
  return {**base.counters(), "discriminator": network(1.0),
          "generator": network(2.0)}


def _toy_step(state, batch, rng):
  """SGD on both networks; `batch` scales G's gradient (NaN poisons it) and
  can make D's (finite) loss metric or a G-named state entry non-finite."""
  del rng
  grad = jnp.ones((3,))
  discriminator = state["discriminator"].apply_gradients(grads={"w": grad})
  generator = state["generator"].apply_gradients(
      grads={"w": grad * batch["generator_scale"]})
  new_state = dict(state, step=state["step"] + 1, discriminator=discriminator,
                   generator=generator)
  if "generator_extra" in batch:  # As staged's 'generator_pretrain_opt_state'.
    new_state["generator_extra"] = batch["generator_extra"]
  return new_state, {
      "discriminator_loss": batch["discriminator_loss"],
      # A phase prefix, as the staged system's metrics have.
      "pretrain/generator_loss": jnp.sum(generator.params["w"]),
  }


def _toy_batch(generator_scale=1.0, discriminator_loss=0.0):
  return {"generator_scale": jnp.float32(generator_scale),
          "discriminator_loss": jnp.float32(discriminator_loss)}


def _run_guarded(state, batch):
  step = jax.jit(divergence.guard_nonfinite(_toy_step,
                                       ("discriminator", "generator"),
                                       discard=True))
  return jax.device_get(step(state, batch, jax.random.key(0)))


def test_guard_discards_poisoned_update_and_flags_its_network():
  state = jax.device_get(_toy_state())

  clean, metrics = _run_guarded(state, _toy_batch())
  assert int(clean["step"]) == 1 and int(clean["skipped_steps"]) == 0
  np.testing.assert_allclose(clean["generator"].params["w"], 1.5)
  np.testing.assert_allclose(clean["discriminator"].params["w"], 0.5)
  assert metrics["nonfinite_generator"] == 0
  assert metrics["nonfinite_discriminator"] == 0
  assert metrics["skipped_steps"] == 0

  poisoned, metrics = _run_guarded(clean, _toy_batch(generator_scale=np.nan))
  assert metrics["nonfinite_generator"] == 1
  assert metrics["nonfinite_discriminator"] == 0
  assert metrics["skipped_steps"] == 1
  assert int(poisoned["step"]) == 2  # The step still advances...
  assert int(poisoned["skipped_steps"]) == 1
  # ...but the whole update is dropped, D's finite one and G's Adam-style
  # step counter included.
  for name in ("generator", "discriminator"):
    for new, old in zip(jax.tree.leaves(poisoned[name]),
                        jax.tree.leaves(clean[name])):
      np.testing.assert_array_equal(new, old)


def test_guard_reads_network_named_metrics_and_state_entries():
  state = jax.device_get(_toy_state())
  _, metrics = _run_guarded(state, _toy_batch(discriminator_loss=np.inf))
  assert metrics["nonfinite_discriminator"] == 1
  assert metrics["nonfinite_generator"] == 0

  state["generator_extra"] = np.zeros((2,), np.float32)
  batch = dict(_toy_batch(), generator_extra=jnp.array([0.0, np.nan]))
  kept, metrics = _run_guarded(state, batch)
  assert metrics["nonfinite_generator"] == 1
  assert metrics["nonfinite_discriminator"] == 0
  np.testing.assert_array_equal(kept["generator_extra"], [0.0, 0.0])


def test_skip_option_is_validated():
  config = load_config("configs/default.py")
  config.skip_nonfinite_steps = True
  configuration.validate(config, device_count=8)
  with config.unlocked():  # A config file may replace the field's type.
    del config["skip_nonfinite_steps"]
    config.skip_nonfinite_steps = "yes"
  with pytest.raises(configuration.ConfigError, match="skip_nonfinite_steps"):
    configuration.validate(config, device_count=8)


def test_gradient_norm_stands_for_parameters_and_optimizer_state():
  """A network reporting `<name>_grad_norm` is judged by it (and its batch
  statistics and metrics), not by a pass over its parameters and moments."""
  def step_with_norms(state, batch, rng):
    new_state, metrics = _toy_step(state, batch, rng)
    grad = jnp.ones((3,)) * batch["generator_scale"]
    return new_state, dict(metrics, generator_grad_norm=jnp.linalg.norm(grad))

  def count_isfinite(step_fn):
    guarded = divergence.guard_nonfinite(step_fn, ("discriminator", "generator"),
                                         discard=True)
    # With a momentum buffer: parameters and optimizer state to skip.
    state = _toy_state(optax.sgd(0.5, momentum=0.9))
    jaxpr = jax.make_jaxpr(guarded)(state, _toy_batch(), jax.random.key(0))
    return str(jaxpr).count("is_finite")

  state = jax.device_get(_toy_state())
  step = jax.jit(divergence.guard_nonfinite(step_with_norms,
                                       ("discriminator", "generator"),
                                       discard=True))
  kept, metrics = jax.device_get(step(state, _toy_batch(generator_scale=np.inf),
                                      jax.random.key(0)))
  assert metrics["nonfinite_generator"] == 1
  assert metrics["nonfinite_discriminator"] == 0
  np.testing.assert_array_equal(kept["generator"].params["w"], 2.0)
  # G's parameters and momentum are not read (-2), its norm is (+1); D
  # (no norm reported) is read leaf by leaf in both.
  assert count_isfinite(step_with_norms) == count_isfinite(_toy_step) - 2 + 1


# -- the training loop ----------------------------------------------------------


@pytest.fixture
def poisoned_generator(monkeypatch):
  """pix2pix whose generator parameters and loss turn NaN at `POISONED`."""
  original = pix2pix.Pix2Pix.train_step

  def train_step(self, state, batch, rng):
    new_state, metrics = original(self, state, batch, rng)
    scale = jnp.where(jnp.isin(state["step"], jnp.array(POISONED)),
                      jnp.nan, 1.0)
    generator = new_state["generator"]
    new_state["generator"] = generator.replace(
        params=jax.tree.map(lambda p: p * scale, generator.params))
    metrics["generator_loss"] = metrics["generator_loss"] * scale
    return new_state, metrics

  monkeypatch.setattr(pix2pix.Pix2Pix, "train_step", train_step)


def _config(**overrides):
  config = load_config("configs/default.py")  # :smoke, 32 px.
  # Smaller still: the poisoned step compiles on its own (~half the time).
  config.generator.num_downsamplings = 3
  config.discriminator.num_layers = 1
  config.num_train_steps = 6
  config.eval_every_steps = 100  # Evaluation only at the end.
  config.image_every_steps = 100
  config.num_eval_images = 8
  config.keep_checkpoints = 10
  for key, value in overrides.items():
    config[key] = value
  return config


def _checkpoints(workdir, config) -> dict[int, dict]:
  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=10)
  abstract = jax.eval_shape(systems.create(config).init, jax.random.key(0))
  states = {step: jax.device_get(ckpt.restore(step, abstract))
            for step in ckpt.all_steps()}
  ckpt.close()
  return states


def _all_finite(tree) -> bool:
  return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree))


def test_default_stops_before_the_next_checkpoint(tmp_path,
                                                  poisoned_generator):
  # Checkpoints every 2 steps, logs only at the end: step 3 diverges, so the
  # check before the save at step 4 must stop the run.
  config = _config(checkpoint_every_steps=2, log_every_steps=100)
  workdir = tmp_path / "run"
  with pytest.raises(divergence.TrainingDiverged) as error:
    loop.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert "generator at step 3" in message, message
  assert "discriminator" not in message.split("(")[0], message
  assert "generator_loss" in message, message
  assert f"step 2 in {workdir / 'checkpoints'}" in message, message
  assert "skip_nonfinite_steps=True" in message
  states = _checkpoints(workdir, config)
  assert sorted(states) == [2]
  assert _all_finite(states[2])


def test_skip_option_counts_steps_and_keeps_parameters(tmp_path,
                                                       poisoned_generator):
  config = _config(checkpoint_every_steps=1, log_every_steps=2,
                   skip_nonfinite_steps=True)
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, str(workdir))

  lines = [json.loads(line) for line in
           (workdir / "metrics.jsonl").read_text().splitlines()]
  logged = {line["step"]: line for line in lines if "skipped_steps" in line}
  assert {s: logged[s]["skipped_steps"] for s in (2, 4, 6)} == {2: 0, 4: 1, 6: 2}
  assert logged[4]["nonfinite_generator"] == 0.5  # Steps 3-4: one of two.
  assert logged[4]["nonfinite_discriminator"] == 0

  states = _checkpoints(workdir, config)
  assert sorted(states) == [1, 2, 3, 4, 5, 6]
  for step, state in states.items():
    assert _all_finite(state), step
    assert int(state["step"]) == step
  assert [int(states[s]["skipped_steps"]) for s in range(1, 7)] == [
      0, 0, 1, 1, 2, 2]

  def networks(step):
    return [states[step][name] for name in ("generator", "discriminator")]

  def same(a, b):
    return all(np.array_equal(x, y)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  assert same(networks(2), networks(3))  # Step 3 skipped.
  assert same(networks(4), networks(5))  # Step 5 skipped.
  assert not same(networks(3), networks(4))  # Step 4 trained.
