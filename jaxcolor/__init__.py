"""jaxcolor: GAN colorization of grayscale photographs in JAX/Flax.

Five published systems behind one training machinery; see README.md for the
table of systems and `python -m jaxcolor.main --help` for the entry point.
"""

__version__ = "0.1.0"
