"""Test set-up: 8 simulated CPU devices, so sharded code runs as on a pod slice.

`jax_num_cpu_devices` must be set before any device is touched, hence here.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
