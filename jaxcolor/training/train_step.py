"""The training step as the loop, the benchmark and the tests run it.

`jit_train_step` jits one phase of a system's step over a mesh: the state
replicated and donated, the batch sharded on 'data', non-finite updates
flagged (`divergence.guard_nonfinite`). `PhasedTrainStep` keeps one such
step per phase (`System.phase`), compiled ahead of its first run.
"""

from typing import Any

import jax
from orbax.checkpoint import multihost

from jaxcolor import backends
from jaxcolor import systems
from jaxcolor.core import parallel
from jaxcolor.training import divergence

# How long the processes wait for each other's compilation of a step.
_COMPILE_BARRIER_TIMEOUT_S = 3600


def jit_train_step(system: systems.System, mesh, abstract_state: Any,
                   phase: str = systems.base.SINGLE_PHASE):
  """`system.phase_train_step(phase)`, guarded by `guard_nonfinite`, jitted
  over `mesh`: state replicated and donated, batch sharded on 'data'.
  Returns (step function, state sharding)."""
  state_sharding = jax.tree.map(lambda _: parallel.replicated(mesh),
                                abstract_state)
  step = jax.jit(
      divergence.guard_nonfinite(system.phase_train_step(phase),
                                 system.networks,
                                 discard=system.config.skip_nonfinite_steps),
      in_shardings=(state_sharding, parallel.batch_sharded(mesh),
                    parallel.replicated(mesh)),
      out_shardings=(state_sharding, parallel.replicated(mesh)),
      donate_argnums=(0,),
      compiler_options=backends.compiler_options(system.config,
                                                 system.platform))
  return step, state_sharding


class PhasedTrainStep:
  """One jitted step per phase of the system (`System.phase`), each compiled
  when first used, so a run that stays in one phase compiles only that one."""

  def __init__(self, system: systems.System, mesh, abstract_state: Any):
    self._system, self._mesh, self._abstract_state = system, mesh, abstract_state
    self._steps, self._compiled = {}, {}

  def for_step(self, step: int):
    """The jitted step function that runs step `step` (0-based)."""
    phase = self._system.phase(step)
    if phase not in self._steps:
      self._steps[phase], _ = jit_train_step(self._system, self._mesh,
                                             self._abstract_state, phase)
    return self._steps[phase]

  def __call__(self, step: int, state: Any, batch: Any, rng: jax.Array):
    """Runs step `step`: `for_step(step)(state, batch, rng)`, compiled ahead.

    Each phase's step is compiled before its first run and, with several
    processes, all processes then meet at a barrier of the coordination
    service. Without it a process that compiles faster (hosts differ, or
    share their cores) waits in the step's first all-reduce, and gloo (CPU)
    gives up on a peer after 30 s, long before a slow compile ends.
    """
    phase = self._system.phase(step)
    if phase not in self._compiled:
      self._compiled[phase] = self.for_step(step).lower(
          state, batch, rng).compile()
      if jax.process_count() > 1:
        multihost.sync_global_processes(f"jaxcolor_compiled_{phase}_{step}",
                                        timeout=_COMPILE_BARRIER_TIMEOUT_S)
    return self._compiled[phase](state, batch, rng)
