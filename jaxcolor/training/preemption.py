"""Stop signals: SIGTERM / SIGINT become a checkpoint at an agreed step.

One process: the step during which the signal came (`StopSignal.reached`).
The processes of a multi-host run (jax.distributed) must all save at the
same step, and a signal reaches them at different steps, or only some of
them: JAX's preemption service agrees on one
(`Checkpointer.reached_preemption`). It catches SIGTERM with its own C
handler, which a Python handler would replace, so there only SIGINT is
caught here, and handed on as a SIGTERM. With the service off
(jax_enable_preemption_service) no handler is installed: a signal ends such
a run, which resumes from its last checkpoint. A second signal stops at once
(KeyboardInterrupt).
"""

import signal

import jax
from absl import logging


class StopSignal:
  """A context manager that catches stop signals for the training loop;
  ask `reached(step)` after every step."""

  def __init__(self, checkpointer):
    self._checkpointer = checkpointer
    self._agreed = jax.distributed.is_initialized()
    self.requested = False
    self.signal_name = ""
    self._previous = {}

  def reached(self, step: int) -> bool:
    """Whether to checkpoint at `step` and stop."""
    if not self._agreed:
      return self.requested
    if self._checkpointer.reached_preemption(step):
      self.signal_name = self.signal_name or "a preemption notice (SIGTERM)"
      return True
    return False

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # A second signal: stop at once.
      raise KeyboardInterrupt
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    logging.warning("%s received: saving a checkpoint after this step%s.",
                    self.signal_name,
                    " (the one all processes agree on)" if self._agreed else "")
    if self._agreed:
      signal.raise_signal(signal.SIGTERM)  # To the preemption service.

  def __enter__(self):
    signals = (signal.SIGTERM, signal.SIGINT)
    if self._agreed:
      service = jax.config.jax_enable_preemption_service
      signals = (signal.SIGINT,) if service else ()
      if not service:
        logging.warning("jax_enable_preemption_service is off: a signal stops "
                        "this multi-process run without a checkpoint.")
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. some test runners).
        pass
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False
