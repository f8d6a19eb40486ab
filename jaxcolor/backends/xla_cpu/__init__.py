"""The networks' convolutions in the forms XLA:CPU runs fast.

The same functions of the same parameters as XLA's own convolutions, in
other forms: XLA:CPU runs some passes of its convolutions (the input
gradient of a strided one, a transposed one's forward pass and weight
gradient) in slow forms, and removes the barriers of `nn.remat`.

  forms.py      `CpuConvForms`: the thresholds, and which form each pass
                takes; the stride-2 layers' custom VJPs
  products.py   the forms themselves: phase convolutions, patch and tap
                products
  winograd.py   Winograd's minimal filtering for the larger 4 x 4 layers
  recompute.py  recomputation in the backward pass that XLA:CPU keeps
  options.py    `compiler_options`: which library runs the convolutions

`jaxcolor.backends.select` hands a `CpuConvForms` to the networks.
"""

from jaxcolor.backends.xla_cpu.forms import CpuConvForms
from jaxcolor.backends.xla_cpu.options import compiler_options

__all__ = ["CpuConvForms", "compiler_options"]
