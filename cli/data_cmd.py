"""``tcvae-tf data``: describe a ground-truth dataset and save a grid of sample images."""

import click

SOURCES = ("auto", "rendered", "official", "tfds")
COLUMNS = 12  # sample images per row of the PNG
MAX_ROWS = 8
PNG_ZOOM = 2  # pixels of the PNG per image pixel
SHAPE_NAMES = ("square", "ellipse", "heart")  # dSprites' shape classes


def _sample_rows(dataset, rng):
    """Sample images for the PNG: one row per class of the first factor (the shape).

    Returns:
      list of (label, uint8 images [COLUMNS, H, W, C]).
    """
    import numpy as np

    first = dataset.factor_names[0]
    named_shapes = dataset.name.startswith("dsprites") and first == "shape"
    rows = []
    for value in range(min(dataset.factor_sizes[0], MAX_ROWS)):
        if dataset.is_factorial:
            classes = dataset.sample_factors(COLUMNS, rng)
            classes[:, 0] = value
            images = dataset.images_from_factors(classes)
        else:
            candidates = np.flatnonzero(dataset.factor_classes[:, 0] == value)
            if not len(candidates):
                continue
            images = dataset.images[rng.choice(candidates, COLUMNS)]
        label = SHAPE_NAMES[value] if named_shapes else f"{first} {value}"
        rows.append((label, images))
    return rows


def _write_png(rows, pixel_max, out):
    import numpy as np
    from PIL import Image

    height, width, channels = rows[0][1].shape[1:]
    gap = 2
    grid = np.full((len(rows) * (height + gap) + gap, COLUMNS * (width + gap) + gap, channels),
                   96, np.uint8)
    for row, (_, images) in enumerate(rows):
        for column, image in enumerate(images):
            top, left = gap + row * (height + gap), gap + column * (width + gap)
            grid[top : top + height, left : left + width] = (
                image.astype(np.float32) * (255.0 / pixel_max)
            ).astype(np.uint8)
    grid = grid.repeat(PNG_ZOOM, axis=0).repeat(PNG_ZOOM, axis=1)
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        grid, mode = grid[..., :1], "L"
    Image.fromarray(grid[..., 0] if mode == "L" else grid, mode).save(out)


@click.command()
@click.argument("dataset", default="dsprites")
@click.option("--source", default="auto", show_default=True, type=click.Choice(SOURCES),
              help="Where the images come from: the official npz, a prepared TFDS copy, "
                   "rendered here, or auto (the first of those that is available).")
@click.option("--data-path", default=None, type=click.Path(),
              help="The official npz file (source official/auto) or the TFDS data folder "
                   "(source tfds).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Folder of the rendered-dataset cache [env TCVAE_TF_CACHE_DIR; default "
                   "~/.cache/tcvae_tf].")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="PNG grid of sample images, one row per shape [default: "
                   "DATASET_samples.png in the current folder].")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the sampled images.")
def data(dataset, source, data_path, cache_dir, out, seed):
    """Describe DATASET (default dsprites) and save sample images.

    Prints the source actually used, its file, the number and shape of the images and the
    factors with their sizes, then writes a PNG grid of samples: one row per class of the
    first factor (for dSprites: square, ellipse, heart) with the other factors random.
    The first rendered dSprites takes about a minute and is cached (3 GB).

    Example: tcvae-tf data dsprites --source rendered --out samples.png
    """
    import numpy as np

    from tcvae_tf import data as data_lib

    if dataset not in data_lib.available_datasets():
        raise click.ClickException(f"unknown dataset {dataset!r}; available: "
                                   f"{', '.join(data_lib.available_datasets())}")
    if out is not None and not out.lower().endswith(".png"):
        raise click.ClickException(f"{out}: the samples are a PNG; give a file name ending in "
                                   f".png")
    kwargs = dict(log=lambda message: click.echo(message, err=True))
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    try:
        loaded = data_lib.load_dataset(dataset, source=source, path=data_path, **kwargs)
    except (ValueError, OSError) as error:
        raise click.ClickException(" ".join(str(error).split())) from None
    out = out or f"{dataset}_samples.png"
    click.echo(f"dataset  {loaded.name}")
    click.echo(f"source   {loaded.source}")
    click.echo(f"path     {loaded.path or '-'}")
    click.echo(f"images   {loaded.num_images} x {'x'.join(map(str, loaded.image_shape))} "
               f"{loaded.images.dtype} (values 0..{loaded.pixel_max})")
    click.echo("factors  " + ", ".join(
        f"{name} {size}" for name, size in zip(loaded.factor_names, loaded.factor_sizes,
                                               strict=True)))
    rows = _sample_rows(loaded, np.random.default_rng(seed))
    try:
        _write_png(rows, loaded.pixel_max, out)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"{out}: cannot write the PNG: "
                                   f"{' '.join(str(error).split())}") from None
    click.echo(f"samples  {out} ({len(rows)} rows: {', '.join(label for label, _ in rows)})")
