"""Click options shared by the commands that take a run folder or a zoo name."""

import click


def model_reference_options(command):
    """Adds --zoo-root, --version, --source, --data-path and --quiet to a command."""
    options = [
        click.option("--zoo-root", default=None, envvar="TCVAE_TF_ZOO",
                     type=click.Path(file_okay=False),
                     help="Zoo folder [env TCVAE_TF_ZOO; default: the repository's zoo/, "
                          "else ./zoo]."),
        click.option("--version", default=None, type=click.IntRange(min=1),
                     help="Zoo model version [default: the latest]."),
        click.option("--source", default=None,
                     help="Data source: auto, rendered, official or tfds [default: the "
                          "training config's]."),
        click.option("--data-path", default=None, type=click.Path(),
                     help="The official npz file (source official/auto; also for a model "
                          "trained on rendered images when --source is not given) or the "
                          "TFDS data folder (source tfds) [default: the training config's]."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
