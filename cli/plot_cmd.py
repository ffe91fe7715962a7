"""``tcvae-tf plot``: a thin shell over :func:`tcvae_tf.plots.make_plot`."""

import click

from tcvae_tf import plots

from .evaluate_cmd import StageProgress, echo, fail, user_errors
from .options import model_reference_options

# The default figure names, one per kind: traversals.png, reconstructions.png, ...
DEFAULT_NAMES = ", ".join(f"{name}.png" for name in plots.FILE_NAMES.values())


@click.command()
@click.argument("ref", metavar="RUN_OR_ZOO_NAME")
@click.option("--kind", default="traversals", show_default=True, type=click.Choice(plots.KINDS),
              help="traversals: each latent swept from seed images; reconstructions: inputs "
                   "and reconstructions; latent-factors: latents versus the dSprites factors.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help=f"PNG to write, a name ending in .png [default, by kind: {DEFAULT_NAMES} "
                   "in the run folder; for zoo models the same name after NAME-vVERSION- in "
                   "the current folder].")
@click.option("--range", "value_range", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Traversals sweep each latent over [-RANGE, RANGE] [default: 3].")
@click.option("--steps", default=None, type=click.IntRange(min=2),
              help="Values per traversal [default: 10].")
@click.option("--gif", is_flag=True,
              help="Traversals: also write an animated GIF next to the PNG.")
@click.option("--num-images", default=None, type=click.IntRange(min=1),
              help="Seed images (traversals, default 3), images shown (reconstructions, "
                   "default 10) or images encoded (latent-factors, default all).")
@click.option("--latents", "max_latents", default=None, type=click.IntRange(min=1),
              help="Traversals and latent-factors: show at most this many latents "
                   "(largest KL or variance first).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the image choice.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Images per encoder call.")
@model_reference_options
def plot(ref, kind, out, value_range, steps, gif, num_images, max_latents, seed, batch_size,
         zoo_root, version, source, data_path, quiet):
    """Draw latent traversals, reconstructions or latents versus factors of RUN_OR_ZOO_NAME.

    The latent-factors figure (dSprites) shows, for each active latent, its posterior mean
    averaged over the other factors as a heat map over position and as curves over scale
    and orientation, one curve per shape. Traversals sort the latents by their
    closed-form KL, so they are refused for a model whose posterior or prior is not normal.
    """
    progress = StageProgress(enabled=not quiet)
    try:
        written = plots.make_plot(
            ref, kind, out=out, value_range=value_range, steps=steps, num_images=num_images,
            seed=seed, gif=gif, max_latents=max_latents, zoo_root=zoo_root, version=version,
            source=source, data_path=data_path, batch_size=batch_size, progress=progress,
            echo=None if quiet else echo)
    except user_errors() as error:
        fail(error)
    finally:
        progress.close()
    for path in written:
        click.echo(f"wrote {path}")
