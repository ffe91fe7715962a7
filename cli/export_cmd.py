"""``tcvae-tf export``: a thin shell over :func:`tcvae_tf.zoo.publish`."""

import click


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True,
              help="Zoo name describing the model, e.g. dsprites-btcvae-b6.")
@click.option("--version", "version", default=None, type=click.IntRange(min=1),
              help="Integer version to publish [default: the next free one]. "
                   "A published version is never overwritten.")
@click.option("--zoo-root", default=None, envvar="TCVAE_TF_ZOO",
              type=click.Path(file_okay=False),
              help="Zoo folder [env TCVAE_TF_ZOO; default: the repository's zoo/, else ./zoo].")
@click.option("--study", default=None, type=click.Path(exists=True, file_okay=False),
              help="A study (sweep folder, or its results committed in the zoo) that RUN is "
                   "a trial of: the card records the trial and the study's mean and sd.")
def export(run_dir, name, version, zoo_root, study):
    """Export RUN's encoder and decoder as SavedModels into the zoo as NAME.

    Writes ZOO/NAME/encoder/VERSION and ZOO/NAME/decoder/VERSION (TF Serving's
    layout), adds the version to ZOO/NAME/card.json (dataset, training config,
    metrics.json if present, library versions, parameter counts, sha256 of every
    file, with --study the study entry) and registers it in ZOO/index.json. A
    metrics.json computed on another model than RUN's current model.keras is refused:
    re-run `tcvae-tf evaluate RUN` first.
    """
    from tcvae_tf import sweep, training, zoo

    root = zoo.resolve_root(zoo_root)
    try:
        published = zoo.publish(run_dir, name, version=version, root=root, study=study)
    except (zoo.ZooError, ValueError, OSError, training.TrainingError,
            sweep.SweepError) as error:
        message = str(error).strip().splitlines()
        raise click.ClickException(message[0] if message else type(error).__name__) from None
    click.echo(f"published {name} version {published} in {root / name}")
