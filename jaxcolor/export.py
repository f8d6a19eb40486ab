"""`python -m jaxcolor.export --workdir RUN --output FOLDER`: export a trained
run as a model artifact, and optionally as serving programs (also
`jaxcolor export`).

  python -m jaxcolor.export --workdir runs/default --output models/default \\
      [--checkpoint 1500] [--network_output generator] [--stablehlo] \\
      [--saved_model] [--archive] [--weights_dtype bfloat16] [--upsample guided]

What an artifact holds and why: jaxcolor/inference/exporting.py, which does
the work.
"""

import sys

from absl import flags

from jaxcolor.inference import exporting
from jaxcolor.runtime import job


def main(argv) -> None:
  job.takes_no_arguments(argv)
  F = flags.FLAGS
  exporting.run(F.workdir, F.output, checkpoint=F.checkpoint,
                network_output=F.network_output, stablehlo=F.stablehlo,
                saved_model=F.saved_model, archive=F.archive,
                weights_dtype=F.weights_dtype, upsample=F.upsample)


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The training run's directory.")
  flags.DEFINE_string("output", None, "The artifact directory to create.")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default: newest.")
  flags.DEFINE_string("network_output", None, "Which output to export; "
                      "default: the system's final one (the EMA generator "
                      "where the run keeps one).")
  flags.DEFINE_bool("stablehlo", False, "Also write the serving program as a "
                    "serialized jax.export (StableHLO).")
  flags.DEFINE_bool("saved_model", False, "Also write it as a TensorFlow "
                    "SavedModel (TF Serving).")
  flags.DEFINE_bool("archive", False, "Also write OUTPUT.tar.gz.")
  flags.DEFINE_enum("weights_dtype", "float32", list(exporting.WEIGHTS_DTYPES),
                    "How the trained weights are stored: bfloat16 halves "
                    "the artifact (widened back to float32 when loaded).")
  flags.DEFINE_enum("upsample", "bilinear", ["bilinear", "guided"],
                    "How the serving programs (--stablehlo, --saved_model) "
                    "bring the a*b* to the photo's size: bilinear, or "
                    "guided by the photo's own L*.")


if __name__ == "__main__":
  job.run("export", sys.modules[__name__])
