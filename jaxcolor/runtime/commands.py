"""The jobs of the `jaxcolor` command: what each is, its module and its
`--help` text.

`jaxcolor NAME ...` runs the job that `python -m jaxcolor.MODULE ...` runs;
both go through jaxcolor/runtime/job.py's `run`, so they take the same
flags and behave alike. The modules are the thin commands at the top of the
package (jaxcolor/train.py, colorize.py, ...).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Command:
  """A job of the `jaxcolor` command.

  `usage` is the `--help` text, with `{prog}` for the command as typed;
  `required`: the flags it cannot run without (checked after parsing, so
  the message is ours); `config`: it takes `--config FILE[:preset]` and
  `--config.FIELD=VALUE` overrides (jaxcolor/runtime/config_file.py);
  `logs_progress`: the job reports through the log, so its own INFO lines
  stay when the libraries' are hidden.
  """
  module: str
  summary: str
  usage: str
  required: tuple[str, ...] = ()
  config: bool = False
  logs_progress: bool = False


COMMANDS = {
    "train": Command(
        "jaxcolor.train", "Train a colorizer, or resume a run where it stopped.",
        """\
Usage: {prog} --config FILE[:preset] --workdir DIR [--config.FIELD=VALUE ...]

Trains the system that the config file describes and writes checkpoints,
TensorBoard logs, metrics.jsonl and image grids into DIR; the same command
again resumes from the newest checkpoint, and Ctrl-C saves one first.

  {prog} --config configs/default.py --workdir runs/default
  {prog} --config configs/default.py:smoke --workdir /tmp/smoke

Any config field can be set on the command line (--config.batch_size=32);
`jaxcolor evaluate` scores the saved checkpoints instead of training. More:
README.md ("Train") and docs/usage.md.""",
        required=("config", "workdir"), config=True, logs_progress=True),
    "evaluate": Command(
        "jaxcolor.evaluate", "Score a run's saved checkpoints on its evaluation "
        "photos.", """\
Usage: {prog} --config FILE[:preset] --workdir DIR [--config.FIELD=VALUE ...]

Scores the run's saved checkpoints on its evaluation photos, never trains,
and writes DIR/eval/<step>.json and an HTML report for each checkpoint.

  {prog} --config configs/default.py --workdir runs/default
  {prog} --config configs/default.py --workdir runs/default \\
      --config.evaluation.checkpoints=all --config.eval_dataset=folder:/photos

More: docs/usage.md ("Evaluate") and docs/metrics.md.""",
        required=("config", "workdir"), config=True, logs_progress=True),
    "ab_prior": Command(
        "jaxcolor.ab_prior", "Count the training photos' a*b* bins for a "
        "bins generator.", """\
Usage: {prog} --config FILE[:preset] --workdir DIR [--config.FIELD=VALUE ...]

Counts the a*b* bins (Zhang et al. 2016) of the config's training photos
into DIR/ab_prior.json, whose class rebalancing a generator with
config.generator.ab_bins=True trains against. A training run does this at
its first step when DIR has none.

  {prog} --config configs/cpu_budget.py:bins --workdir runs/bins

More: docs/systems.md ("Colour as a distribution").""",
        required=("config", "workdir"), config=True, logs_progress=True),
    "temperature": Command(
        "jaxcolor.temperature", "Choose a bins run's decoding temperature on "
        "its held-out photos.", """\
Usage: {prog} --workdir RUN [--checkpoint N]

Colorizes the run's own held-out split at several annealed-mean
temperatures, picks the most colorful one whose PSNR is at least the gray
baseline's (else the best PSNR), and writes RUN/temperature.json, which
colorize, export and serve then use.

  {prog} --workdir runs/bins

More: docs/systems.md ("Colour as a distribution").""",
        required=("workdir",), logs_progress=True),
    "colorize": Command(
        "jaxcolor.colorize", "Colorize photos, folders and videos.", """\
Usage: {prog} --workdir RUN --output FOLDER INPUT [INPUT ...]
       {prog} --model MODEL --output FOLDER INPUT [INPUT ...]

Colorizes each INPUT (an image file, a folder of images searched
recursively, or a video) with a training run's newest checkpoint or with an
exported model (a folder, an archive or a URL), and writes the results into
FOLDER under the inputs' own names; the inputs are never written over.

  {prog} --workdir runs/default --output colorized/ photo.jpg photos/
  {prog} --model models/default.tar.gz --output colorized/ photos/

More: docs/usage.md ("Colorize"), docs/video.md and docs/deploy.md.""",
        required=("output",)),
    "export": Command(
        "jaxcolor.export", "Export a run as a model to hand on or serve.", """\
Usage: {prog} --workdir RUN --output FOLDER [--archive] [--stablehlo]

Writes the weights that colorize with the run's newest checkpoint, and a
model.json describing them, into a new FOLDER (no training state); the
model loads with `jaxcolor colorize --model FOLDER` or `jaxcolor serve
--model FOLDER`.

  {prog} --workdir runs/default --output models/default --archive

More: docs/deploy.md.""", required=("workdir", "output")),
    "serve": Command(
        "jaxcolor.serve", "Serve a colorizer as a web page and an HTTP API.",
        """\
Usage: {prog} (--workdir RUN | --model MODEL) [--host 127.0.0.1] [--port 8000]

Serves a page at http://127.0.0.1:8000/ where a photo is dropped and
colorized, and an API that scripts post photos to; Ctrl-C stops it.

  {prog} --workdir runs/default
  curl -F file=@photo.jpg http://127.0.0.1:8000/api/colorize -o colorized.png

Before serving beyond this machine, read docs/deploy.md ("Security")."""),
    "score": Command(
        "jaxcolor.score", "Score colorized photos against the true ones.", """\
Usage: {prog} --truth FOLDER --predictions FOLDER [--output results.json]
       [--csv per_image.csv]

Pairs each true photo with the colorized one of the same name (from any
program) and prints every metric, at full resolution, beside the score of
the gray photo with no color at all.

  {prog} --truth photos/ --predictions colorized/

More: docs/usage.md ("Score") and docs/metrics.md.""",
        required=("truth", "predictions")),
    "benchmark": Command(
        "jaxcolor.benchmark", "Time the training step, the input pipeline or "
        "inference.", """\
Usage: {prog} --config FILE[:preset] [--steps 20] [--input_pipeline]
       [--colorize FOLDER] [--inference]

Times the training step that the config describes on synthetic data (or,
with --colorize, the colorize path on a folder of photos) and prints every
number as one JSON object on its last line.

  {prog} --config configs/default.py
  {prog} --config configs/default.py --colorize photos/

More: docs/benchmarks.md.""",
        required=("config",), config=True, logs_progress=True),
}
