"""Rematerialisation that holds on XLA:CPU: recompute a module in the backward.

Why not `nn.remat` / `jax.checkpoint`: they keep the recomputation apart from
the forward pass with optimization barriers, and XLA:CPU removes them. The
recomputed forward then depends only on values the forward pass already
had: XLA merges part of it back into the forward pass and schedules the rest
right after the forward operations it repeats, so every intermediate stays
alive until the backward pass anyway, and the memory does not drop
(docs/benchmarks.md, "Every config on this CPU").

`recompute_in_backward` instead saves only the module's inputs (its variables
are alive anyway) and, in the backward pass, ties those inputs to the
incoming cotangent (`x + 0 * g[0]`, which XLA does not fold for floats) before
running the module's forward and VJP again. The recomputation then cannot
start before the gradient of its output exists, on any backend, so at most
one module's intermediates are alive at a time. The cost is one more forward
pass of the module per gradient. It is the CPU's form
(`CpuConvForms.recompute`); with XLA's own forms (GPU, TPU) the DLA
generator uses `nn.remat`, whose barriers those backends keep.
"""

from typing import Any

import flax.linen as nn
import jax


def _tie(tree: Any, cotangent: Any) -> Any:
  """`tree` unchanged in value, but data-dependent on `cotangent`.

  Adds `0 * (first element of cotangent)`: exact for finite inputs; a
  non-finite cotangent makes the gradient non-finite, as it would anyway.
  """
  zero = jax.tree.leaves(cotangent)[0].reshape(-1)[0] * 0
  return jax.tree.map(lambda x: x + zero.astype(x.dtype), tree)


def recompute_in_backward(module: nn.Module, *inputs: Any, train: bool) -> Any:
  """`module(*inputs, train)`, whose backward pass recomputes its forward.

  The value, the parameters (same names and paths: the module is called as
  itself) and the updated batch statistics are those of the plain call; only
  what the backward pass keeps changes: the inputs instead of every
  intermediate. For modules without randomness (no dropout): the recomputation
  runs without rngs.

  Args:
    module: a submodule of the caller (e.g. `ConvBlock(64, name='block_0_0')`).
    *inputs: its array (or pytree of arrays) arguments.
    train: passed on as the module's `train` argument.
  """
  definition = module.clone(parent=None, name=None)

  def call(bound, *xs):
    return bound(*xs, train)

  def forward(bound, *xs):
    # Taken before the call: the recomputation must see the variables the
    # forward pass saw (in training, batch norm normalizes with the batch's
    # own statistics, so the running averages it updates do not enter).
    variables = bound.variables
    return bound(*xs, train), (variables, xs)

  def backward(residuals, cotangent):
    variables, xs = residuals
    xs = _tie(xs, cotangent)

    def pure(params, *xs):
      outputs, _ = definition.apply({**variables, "params": params}, *xs, train,
                                    mutable=True)
      return outputs

    _, pullback = jax.vjp(pure, variables.get("params", {}), *xs)
    params_grad, *inputs_grad = pullback(cotangent)
    return ({"params": params_grad}, *inputs_grad)

  return nn.custom_vjp(call, forward_fn=forward, backward_fn=backward)(
      module, *inputs)
