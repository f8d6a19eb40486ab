"""The values a config field or a layer may take, each enumeration defined
once: the config's checks (jaxcolor/core/configuration.py) and the code that
acts on a value both read it from here.
"""

# config.compute_dtype: what the networks compute in; the state is float32.
COMPUTE_DTYPES = ("float32", "bfloat16")
# config.generator_test_mode: batch norm at test time from the running
# statistics ('eval') or each photo's own ('train', pix2pix's test mode).
GENERATOR_TEST_MODES = ("eval", "train")
# config.generator_ema_ramp: what the EMA's warm-up counts, all steps or the
# GAN's.
GENERATOR_EMA_RAMPS = ("steps", "gan")
# config.conv_impl: the convolutions' forms (jaxcolor/backends).
CONV_IMPLS = ("auto", "xla", "cpu")
# config.cpu_conv_library: which library XLA:CPU convolves with.
CPU_CONV_LIBRARIES = ("eigen", "ynnpack")
# The networks' normalization layers (config.generator.norm, ...).
NORM_KINDS = ("batch", "instance", "none")
# config.backbone.source: where a ResNet-18 encoder's weights come from.
BACKBONE_SOURCES = ("random", "none", "torchvision", "checkpoint")
# The convolutions' layouts: images NHWC, kernels HWIO.
CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
