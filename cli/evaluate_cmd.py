"""``tcvae-tf evaluate``: a thin shell over :func:`tcvae_tf.evaluation.evaluate`."""

import os
import sys

import click

from tcvae_tf import evaluation
from tcvae_tf.metrics import registry

from .options import model_reference_options


class StageProgress:
    """One progress bar per stage on stderr; called as progress(stage, done, total)."""

    LABELS = {"encode": "encoding", "decode": "log-likelihood", "sort latents": "sorting latents",
              **{name: metric.label for name, metric in registry.REGISTRY.items()}}

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.bar = None
        self.stage = None
        self.done = 0

    def __call__(self, stage, done, total):
        if not self.enabled:
            return
        if stage != self.stage or self.bar is None:
            self.close()
            self.bar = click.progressbar(length=total, label=f"{self.LABELS.get(stage, stage):<18}",
                                         file=sys.stderr)
            self.bar.__enter__()
            self.stage, self.done = stage, 0
        self.bar.update(done - self.done)
        self.done = done
        if done >= total:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar, self.stage, self.done = None, None, 0


def echo(message):
    """Prints a status line on stderr."""
    click.echo(message, err=True)


def fail(error):
    """Raises a one-line ClickException for a user error.

    The message is the error's first line; for errors whose first line only introduces
    more (TensorFlow's "in user code:"), the last line, which names the problem.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        message = type(error).__name__
    elif lines[0].endswith(":") and len(lines) > 1:
        message = lines[-1]
    else:
        message = lines[0]
    raise click.ClickException(message) from None


def check_writable(path):
    """Fails now, not after the evaluation, when ``path`` cannot be written: its nearest
    existing folder must be a folder we may write in."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        fail(f"cannot write {path}: {folder} is not a folder that can be written")


def check_metric_options(metrics):
    """Fails when an option that only some metrics read (``evaluation.METRIC_ARGUMENTS``)
    is given on the command line but none of ``metrics`` reads it; defaults never fail."""
    from click.core import ParameterSource

    context = click.get_current_context()
    given = [name for name in evaluation.METRIC_ARGUMENTS
             if context.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                       ParameterSource.ENVIRONMENT)]
    flags = {param.name: param.opts[0] for param in context.command.params}
    try:
        evaluation.check_metric_arguments(metrics, given, flags)
    except ValueError as error:
        fail(error)


def user_errors():
    """The exception types that carry one-line messages for the user."""
    from tcvae_tf import training

    return ValueError, OSError, LookupError, training.TrainingError


@click.command()
@click.argument("ref", metavar="RUN_OR_ZOO_NAME")
@click.option("--metric", "metrics", multiple=True,
              type=click.Choice((*evaluation.ALL_METRICS, registry.ALL)),
              help="Metric to compute; repeat for several, or 'all' [default: "
                   f"{', '.join(evaluation.METRICS)}].")
@click.option("--setting", "settings", multiple=True, metavar="METRIC.SETTING=VALUE",
              help="Change a metric's setting, e.g. dci.num_train=2000, dci.booster=exact or "
                   "minibatch_saturation.batch_sizes=256,2048; repeat for several [default: "
                   "disentanglement_lib's sizes].")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the results to this JSON file (the only file written for zoo "
                   "models).")
@click.option("--num-samples", default=evaluation.DEFAULT_NUM_SAMPLES, show_default=True,
              type=click.IntRange(min=1),
              help="Monte-Carlo samples of the sampling MIG and the ELBO decomposition.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the posterior samples and the image choices.")
@click.option("--batch-size", default=evaluation.DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(min=1), help="Images per encoder call.")
@click.option("--log-likelihood-images", default=evaluation.DEFAULT_NUM_SAMPLES,
              show_default=True, type=click.IntRange(min=1),
              help="Random images decoded for the ELBO's E log p(x|z) (a number >= the dataset "
                   "size decodes all of them).")
@click.option("--factor", "factors", multiple=True,
              help="Factor of the headline MIG; repeat for several [default: dSprites: scale, "
                   "orientation, pos_x, pos_y (the paper's); other data: all].")
@model_reference_options
def evaluate(ref, metrics, settings, json_path, num_samples, seed, batch_size,
             log_likelihood_images, factors, zoo_root, version, source, data_path, quiet):
    """Compute MIG, the ELBO decomposition and the standard metrics of RUN_OR_ZOO_NAME.

    Encodes the full dataset the model was trained on once, then computes by default the
    sampling MIG (the paper's estimator), the histogram MIG, the ELBO decomposition
    (log-likelihood, index-code MI, total correlation, dimension-wise KL), the active
    units, SAP, modularity and explicitness, the FactorVAE and beta-VAE scores
    (disentanglement_lib's definitions and sample sizes). --metric dci adds DCI, --metric
    all every metric, the minibatch saturation diagnostic included.

    Prints a table of the numbers, each metric's settings and time, and writes
    metrics.json into the run folder (a choice of --metric without the default set writes
    metrics-NAME+NAME.json instead when metrics.json exists, so that a full evaluation is
    never replaced by a partial one); for a zoo model nothing is written into the zoo, only
    to --json (`tcvae-tf zoo update-metrics` adds it to the card). --num-samples,
    --log-likelihood-images and --factor are refused when no chosen metric reads them.
    """
    metrics = metrics or evaluation.METRICS
    check_metric_options(metrics)
    if json_path:
        check_writable(json_path)
    progress = StageProgress(enabled=not quiet)
    options = {}
    try:
        for text in settings:
            metric, setting, value = registry.parse_setting(text)
            options.setdefault(metric, {})[setting] = value
        result = evaluation.evaluate(
            ref, metrics=metrics, num_samples=num_samples, seed=seed,
            zoo_root=zoo_root, version=version, source=source, data_path=data_path,
            batch_size=batch_size, factors=factors or None,
            log_likelihood_images=log_likelihood_images, progress=progress,
            echo=None if quiet else echo, options=options)
    except user_errors() as error:
        fail(error)
    finally:
        progress.close()
    click.echo(evaluation.format_summary(result))
    targets = [json_path] if json_path else []
    if result["model"]["kind"] == "run":
        targets.insert(0, evaluation.run_metrics_path(result["model"]["path"],
                                                      result["settings"]["metrics"]))
    failed = None  # every target is tried: a read-only run folder still gets --json written
    for path in targets:
        try:
            evaluation.write_metrics(result, path)
        except OSError as error:
            failed = failed or f"cannot write {path}: {error.strerror or error}"
            continue
        click.echo(f"metrics written to {path}")
    if failed:
        fail(failed)
