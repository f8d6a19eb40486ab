r"""The CPU forms of `jaxcolor.backends.xla_cpu` against the alternatives
they replaced, at the shapes of the 128-px pix2pix U-Net, batch 16.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/layer_forms.py

Three tables, each a median over `--repeats` calls of one jitted function
(ms; GFLOP/s where the FLOPs are the convolution's):

- `adjoint`: a transposed convolution's weight gradient, [k, k, I, O], as
  the adjoint convolution's (`CpuConvForms.strided_weight_gradient`, then
  `products.swap_io`) and as the patch product
  (`products.adjoint_patch_weight_gradient`), alone and followed
  by an optimizer-like update that reads it twice (`p - 0.1 w^2 + w`): the
  update reads the gradient through whatever transpose its layout needs.
- `adam`: optax's Adam update of one [4, 4, 1024, 512] kernel whose
  gradient comes contiguous, or as a [k * k * O, I] product whose last two
  axes must be swapped on the way in (what the adjoint forms produced
  before), or that swap materialised first.
- `taps`: a transposed convolution's forward pass as the tap product
  (`products.tap_products`, shifted slices padded where they are read) and
  with all the products padded first (the form it replaced).

The defaults of `CpuConvForms`' thresholds were chosen from these
(docs/benchmarks.md, "Fourth round"); rerun this on another CPU before
moving them. Not part of the package; the tests do not import it.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcolor.backends.xla_cpu import forms
from jaxcolor.backends.xla_cpu import products


def _median_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def _normal(rng, shape, scale=1.0):
  return jnp.asarray(rng.normal(size=shape).astype(np.float32) * scale)


def adjoint_table(rng, batch: int, repeats: int) -> None:
  cpu = forms.CpuConvForms()

  def conv_form(grad, x):
    return products.swap_io(cpu.strided_weight_gradient(grad, x, 4, (1, 1)))

  def patch_form(grad, x):
    return products.adjoint_patch_weight_gradient(grad, x, 4, (1, 1))

  def updated(form):
    def fn(grad, x, p):
      w = form(grad, x)
      return p - 0.1 * w * w + w
    return fn

  print("adjoint weight gradient: x [B, H, H, I] -> grad [B, 2H, 2H, O]")
  print(f"{'H':>4} {'I':>5} {'O':>4}  {'conv':>7} {'+update':>8}  "
        f"{'patches':>8} {'+update':>8}  GFLOP/s conv, patches")
  for height, inputs, outputs in [(4, 1024, 512), (8, 1024, 256),
                                  (16, 512, 128), (32, 256, 64),
                                  (64, 128, 2)]:
    x = _normal(rng, (batch, height, height, inputs))
    grad = _normal(rng, (batch, 2 * height, 2 * height, outputs))
    p = jnp.zeros((4, 4, inputs, outputs), jnp.float32)
    gflop = 2 * batch * height * height * inputs * 16 * outputs / 1e9
    conv = _median_ms(jax.jit(conv_form), grad, x, repeats=repeats)
    conv_u = _median_ms(jax.jit(updated(conv_form)), grad, x, p,
                        repeats=repeats)
    patch = _median_ms(jax.jit(patch_form), grad, x, repeats=repeats)
    patch_u = _median_ms(jax.jit(updated(patch_form)), grad, x, p,
                         repeats=repeats)
    print(f"{height:4d} {inputs:5d} {outputs:4d}  {conv:7.1f} {conv_u:8.1f}  "
          f"{patch:8.1f} {patch_u:8.1f}  {gflop / conv * 1e3:5.0f}, "
          f"{gflop / patch * 1e3:5.0f}", flush=True)


def adam_table(rng, repeats: int) -> None:
  opt = optax.adam(2e-4, 0.5, 0.999)
  shape = (4, 4, 1024, 512)
  flat = _normal(rng, (4 * 4 * 512, 1024))

  def swapped(flat):
    return flat.reshape(4, 4, 512, 1024).swapaxes(2, 3)

  def update(gradient_of):
    def fn(p, state, g):
      updates, state = opt.update(gradient_of(g), state, p)
      return optax.apply_updates(p, updates), state
    return fn

  forms = {
      "contiguous": (lambda g: g, swapped(flat) + 0),
      "swapped in the update": (swapped, flat),
      "swap materialised": (
          lambda g: jax.lax.optimization_barrier(swapped(g)), flat),
  }
  print("adam update of a [4, 4, 1024, 512] kernel, by gradient layout (ms)")
  for name, (gradient_of, g) in forms.items():
    p = _normal(rng, shape)
    state = opt.init(p)
    fn = jax.jit(update(gradient_of))
    print(f"  {name:24s} {_median_ms(fn, p, state, g, repeats=repeats):7.1f}",
          flush=True)


def _padded_tap_products(x, kernel, padding):
  """`products.tap_products` as it was: every product padded, then sliced."""
  k, _, channels, features = kernel.shape
  batch, height, width, _ = x.shape
  taps = jnp.einsum("bhwi,iq->bhwq", x, kernel.transpose(2, 0, 1, 3)
                    .reshape(channels, k * k * features))
  taps = taps.reshape(batch, height, width, k, k, features)
  margin = k // 2
  taps = jnp.pad(taps, ((0, 0), (margin, margin), (margin, margin),
                        (0, 0), (0, 0), (0, 0)))

  def phase(row_phase, col_phase):
    row_taps, row_lo, _ = products.phase_taps(k, padding, row_phase)
    col_taps, col_lo, _ = products.phase_taps(k, padding, col_phase)
    total = 0
    for i, row_tap in enumerate(row_taps):
      for j, col_tap in enumerate(col_taps):
        top, left = margin + i - row_lo, margin + j - col_lo
        total = total + taps[:, top:top + height, left:left + width,
                             row_tap, col_tap]
    return total
  return products.interleaved(phase)


def taps_table(rng, batch: int, repeats: int) -> None:
  print("tap products, forward (ms): shifted slices / all products padded")
  for height, inputs, outputs in [(32, 256, 64), (32, 128, 64),
                                  (64, 128, 2), (4, 512, 512)]:
    x = _normal(rng, (batch, height, height, inputs))
    kernel = _normal(rng, (4, 4, inputs, outputs), 0.02)
    ours = jax.jit(lambda x, w: products.tap_products(x, w, 1))
    padded = jax.jit(lambda x, w: _padded_tap_products(x, w, 1))
    np.testing.assert_allclose(ours(x, kernel), padded(x, kernel), atol=1e-5)
    print(f"  {height:3d} {inputs:4d} -> {outputs:3d}: "
          f"{_median_ms(ours, x, kernel, repeats=repeats):6.1f} / "
          f"{_median_ms(padded, x, kernel, repeats=repeats):6.1f}", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--tables", default="adjoint,adam,taps",
                      help="comma-separated subset of adjoint, adam, taps")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  tables = args.tables.split(",")
  unknown = set(tables) - {"adjoint", "adam", "taps"}
  if unknown:
    parser.error(f"--tables: unknown {', '.join(sorted(unknown))}; expected "
                 "adjoint, adam or taps")
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, "
        f"batch {args.batch_size}")
  if "adjoint" in tables:
    adjoint_table(rng, args.batch_size, args.repeats)
  if "adam" in tables:
    adam_table(rng, args.repeats)
  if "taps" in tables:
    taps_table(rng, args.batch_size, args.repeats)


if __name__ == "__main__":
  main()
