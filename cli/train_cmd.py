"""``tcvae-tf train``: a thin shell over :func:`tcvae_tf.training.train`."""

import click


def _fail(error):
    raise click.ClickException(str(error).splitlines()[0] if str(error) else repr(error))


@click.command()
@click.argument("dataset")
@click.option("--objective", default="tcvae", show_default=True,
              help="tcvae (alpha*MI + beta*TC + gamma*DWKL), betavae (beta*KL) or vae.")
@click.option("--alpha", default=1.0, show_default=True, type=float,
              help="Weight of the index-code mutual information.")
@click.option("--beta", default=6.0, show_default=True, type=float,
              help="Weight of the total correlation (of the whole KL for betavae).")
@click.option("--gamma", default=1.0, show_default=True, type=float,
              help="Weight of the dimension-wise KL.")
@click.option("--estimator", default="mws", show_default=True,
              help="mws (minibatch-weighted) or mss (minibatch-stratified) sampling.")
@click.option("--kl", default="sampled", show_default=True,
              help="betavae/vae only: sampled or analytic KL.")
@click.option("--arch", default="mlp", show_default=True, help="mlp, conv or burgess.")
@click.option("--latent-dim", default=10, show_default=True, type=int,
              help="Number of latent dimensions.")
@click.option("--batch-size", default=2048, show_default=True, type=int, help="Minibatch size.")
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Adam learning rate.")
@click.option("--epochs", default=None, type=float,
              help="Passes over the data (default 50 when --steps is not given).")
@click.option("--steps", default=None, type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--warmup-steps", default=0, show_default=True, type=int,
              help="Warm up beta (linearly) and gamma (the authors' schedule) over this many "
                   "steps; 0 turns warm-up off.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--source", default="auto", show_default=True,
              help="Data source: auto, rendered, official or tfds.")
@click.option("--data-path", default=None, type=click.Path(dir_okay=False),
              help="Path of the official dataset file.")
@click.option("--subset", default=None, type=int,
              help="Train on this many randomly chosen images only (quick experiments).")
@click.option("--precision", default="fp32", show_default=True,
              help="fp32, or bf16 (Keras mixed precision, where the CPU/GPU supports it).")
@click.option("--jit", "jit_compile", default="auto", show_default=True,
              help="XLA for the whole step: auto (off: measured faster on CPUs; the objective "
                   "and the Adam update are compiled either way), on or off.")
@click.option("--checkpoint-every", default=500, show_default=True, type=int,
              help="Steps between checkpoints (and history rows).")
@click.option("--keep-every", default=None, type=int,
              help="Also keep the weights every this many steps (a multiple of "
                   "--checkpoint-every) in snapshots/, for MIG-against-steps curves.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run folder [default: runs/DATASET-OBJECTIVE-betaB-ARCH-seedS].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start afresh in a folder that holds a run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--strategy", default="auto", show_default=True,
              help="Data parallelism: auto (mirrored over 2+ GPUs, else none), none, mirrored "
                   "(all local GPUs, or --cpu-replicas CPU devices) or multiworker (the workers "
                   "of TF_CONFIG). --batch-size stays the global batch; the step is the "
                   "one-device step.")
@click.option("--cpu-replicas", default=None, type=int,
              help="Without GPUs: split the CPU into this many replicas (mirrored/auto).")
def train(dataset, resume, overwrite, quiet, strategy, cpu_replicas, **options):
    """Train a beta-TCVAE (or beta-VAE, VAE) on DATASET (e.g. dsprites).

    The defaults are the authors' dSprites recipe: `tcvae-tf train dsprites --beta 6`
    trains the MLP with batch 2048 and Adam 1e-3 for 50 epochs. A run folder keeps
    config.json, history.csv, TensorBoard logs, checkpoints, model.keras and samples.png.
    """
    from tcvae_tf import distribute, training

    if options["epochs"] is None and options["steps"] is None and not resume:
        options["epochs"] = 50
    try:
        config = config_from_options(dataset, **options)
        if cpu_replicas and not resume:
            distribute.check_batch_size(config.batch_size, cpu_replicas)
        # Before any other TensorFlow work: the CPU split and the collectives come first.
        strategy = distribute.make_strategy(strategy, cpu_replicas)
        training.train(config, resume=resume, overwrite=overwrite, verbose=0 if quiet else 1,
                       echo=lambda message: click.echo(message, err=True), strategy=strategy)
    except (ValueError, OSError, training.TrainingError) as error:
        _fail(error)


# Options of `train` that say how to run, not what to train (a sweep sets them itself).
RUN_CONTROL_OPTIONS = ("out", "resume", "overwrite", "quiet", "strategy", "cpu_replicas")


def config_from_options(dataset, warmup_steps=0, **options):
    """The TrainConfig of `train`'s options (Python names, as Click passes them).

    Raises:
      ValueError: an unknown dataset.
    """
    from tcvae_tf import data, training

    if dataset not in data.available_datasets():
        raise ValueError(f"unknown dataset {dataset!r}; choose one of "
                         f"{', '.join(data.available_datasets())}")
    return training.TrainConfig(dataset=dataset, beta_warmup_steps=warmup_steps,
                                gamma_warmup_steps=warmup_steps, **options)
