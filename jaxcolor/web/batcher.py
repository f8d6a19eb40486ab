"""The device side of the web app: requests batched onto compiled programs.

Two threads own the device. The worker takes prepared network inputs from
one queue and runs up to a batch of them (those of one input shape) per
call of an already compiled program. The compiler compiles the program of a
shape the worker has not got, one shape at a time, while the worker goes on
serving every other shape: a request at a new render size waits for its own
compilation and delays nobody else's.

Programs are compiled ahead of time (`jit(...).lower(...).compile()`) and
kept in a small least-recently-used table, not in `jax.jit`'s own cache, so
dropping one frees it: however many shapes a stream of requests asks for,
at most `capacity` programs are held.
"""

import collections
import concurrent.futures
import dataclasses
import queue
import threading
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass
class _Job:
  array: np.ndarray  # uint8 [h, w, 3], the network's input.
  future: concurrent.futures.Future

  @property
  def shape(self) -> tuple[int, ...]:
    return self.array.shape


class Batcher:
  """Batches network inputs by shape onto compiled programs (see module).

  `submit(array)` returns a future of the network's a*b*, float32
  [h, w, 2] for a uint8 [h, w, 3] input.
  """

  def __init__(self, colorizer, *, capacity: int = 8, wait_s: float = 0.02):
    """`colorizer`: a `jaxcolor.colorize.Colorizer` (its arrays, batch size
    and network program). `capacity`: compiled programs kept at most.
    `wait_s`: how long the worker waits for more requests to fill a batch."""
    if capacity < 1:
      raise ValueError(f"capacity={capacity}: at least 1.")
    self._colorizer = colorizer
    self.batch_size = colorizer.batch_size
    self._capacity, self._wait_s = capacity, wait_s
    self._lock = threading.Lock()
    self._programs: collections.OrderedDict = collections.OrderedDict()
    self._parked: dict[tuple, list[_Job]] = {}  # Waiting for a compilation.
    self._failed: dict[tuple, Exception] = {}
    self._queue: queue.Queue = queue.Queue()
    self._to_compile: queue.Queue = queue.Queue()
    self.compilations = 0
    for target in (self._work, self._compile_loop):
      threading.Thread(target=target, daemon=True).start()

  def submit(self, array: np.ndarray) -> concurrent.futures.Future:
    """Queues one network input (uint8 [h, w, 3]); never blocks."""
    future = concurrent.futures.Future()
    self._queue.put(_Job(np.asarray(array, np.uint8), future))
    return future

  def warm(self, shape: tuple[int, int, int]) -> None:
    """Compiles the program for input `shape` now (the caller waits): for
    the shapes every page load asks for, before the server opens."""
    program = self._compile(shape)
    with self._lock:
      self._store(shape, program)

  def held(self) -> int:
    """How many compiled programs are kept now."""
    with self._lock:
      return len(self._programs)

  # -- the worker --------------------------------------------------------------

  def _work(self) -> None:
    while True:
      first = self._queue.get()
      program = self._program_or_park(first)
      if program is None:
        continue
      batch, others = [first], []
      try:
        while len(batch) < self.batch_size:
          job = self._queue.get(timeout=self._wait_s)
          (batch if job.shape == first.shape else others).append(job)
      except queue.Empty:
        pass
      for job in others:  # Other shapes: the next rounds.
        self._queue.put(job)
      self._run(program, batch)

  def _run(self, program: Callable, batch: list[_Job]) -> None:
    padded = np.zeros((self.batch_size,) + batch[0].shape, np.uint8)
    for i, job in enumerate(batch):
      padded[i] = job.array
    try:
      ab = np.asarray(program(self._colorizer.arrays, padded))
    except Exception as e:  # noqa: BLE001 (each waiting request gets it)
      for job in batch:
        job.future.set_exception(e)
      return
    for i, job in enumerate(batch):
      job.future.set_result(ab[i])

  def _program_or_park(self, job: _Job) -> Callable | None:
    """The compiled program for `job`'s shape; else None, with the job set
    aside until the compiler has it (or failed with the compiler's error)."""
    with self._lock:
      if job.shape in self._programs:
        self._programs.move_to_end(job.shape)
        return self._programs[job.shape]
      if job.shape in self._failed:
        job.future.set_exception(self._failed[job.shape])
        return None
      first = job.shape not in self._parked
      self._parked.setdefault(job.shape, []).append(job)
    if first:
      self._to_compile.put(job.shape)
    return None

  # -- the compiler ------------------------------------------------------------

  def _compile(self, shape: tuple) -> Callable:
    abstract = jax.ShapeDtypeStruct((self.batch_size,) + tuple(shape),
                                    np.uint8)
    self.compilations += 1
    return self._colorizer.lowered(abstract).compile()

  def _store(self, shape: tuple, program: Any) -> None:
    self._programs[shape] = program
    self._programs.move_to_end(shape)
    while len(self._programs) > self._capacity:
      self._programs.popitem(last=False)

  def _compile_loop(self) -> None:
    while True:
      shape = self._to_compile.get()
      try:
        program, error = self._compile(shape), None
      except Exception as e:  # noqa: BLE001 (the waiting requests get it)
        program, error = None, e
      with self._lock:
        if error is None:
          self._store(shape, program)
        else:
          # Kept so that the same shape fails at once next time; bounded as
          # the table of programs is.
          self._failed[shape] = error
          while len(self._failed) > self._capacity:
            self._failed.pop(next(iter(self._failed)))
        parked = self._parked.pop(shape, [])
      for job in parked:
        if error is None:
          self._queue.put(job)
        else:
          job.future.set_exception(error)
