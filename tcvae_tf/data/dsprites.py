"""dSprites from one of three sources: rendered here, DeepMind's npz, or a prepared TFDS copy.

```none
factor       classes  values
color        1        1                       (stored in the npz, dropped from the dataset)
shape        3        1, 2, 3                 square, ellipse, heart
scale        6        linspace(0.5, 1, 6)
orientation  40       linspace(0, 2 pi, 40)   both ends present
pos_x        32       linspace(0, 1, 32)
pos_y        32       linspace(0, 1, 32)
index = shape*245760 + scale*40960 + orientation*1024 + pos_x*32 + pos_y
```

References: Matthey et al., dSprites: Disentanglement testing Sprites dataset (2017).
"""

import logging
import os
import re
from pathlib import Path

import numpy as np

from tcvae_tf.data import sprites
from tcvae_tf.data.grid_npz import GridSpec, load_or_build, read_grid_npz
from tcvae_tf.data.ground_truth import DatasetError, GroundTruthDataset

logger = logging.getLogger(__name__)

SOURCES = ("auto", "rendered", "official", "tfds")
OFFICIAL_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
CACHE_DIR_ENV = "TCVAE_TF_CACHE_DIR"
DATA_DIR_ENV = "TCVAE_TF_DATA_DIR"
# Bump when the rendered images change, so that old caches are not reused.
RENDERER_VERSION = 1

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))
DEFAULT_SUBGRID_STRIDE = (1, 3, 10, 4, 4)
DSPRITES_SPEC = GridSpec("dsprites", FACTOR_NAMES, FACTOR_SIZES, (64, 64, 1),
                         leading_factor_sizes=(1,))
TFDS_LABELS = ("label_shape", "label_scale", "label_orientation", "label_x_position",
               "label_y_position")


def factor_value_table():
    """The value of every class of every factor: a tuple of 5 float64 arrays."""
    return (
        np.arange(1.0, 4.0),
        sprites.SCALES.copy(),
        sprites.ORIENTATIONS.copy(),
        np.linspace(0.0, 1.0, sprites.NUM_POSITIONS),
        np.linspace(0.0, 1.0, sprites.NUM_POSITIONS),
    )


def factor_values_of(classes):
    """Values of factor classes: float64 [..., 5] for int [..., 5]."""
    classes = np.asarray(classes)
    table = factor_value_table()
    return np.stack([table[k][classes[..., k]] for k in range(len(table))], axis=-1)


def default_cache_dir(cache_dir=None):
    """The cache folder: `cache_dir`, else $TCVAE_TF_CACHE_DIR, else ~/.cache/tcvae_tf."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path.home() / ".cache" / "tcvae_tf"


def rendered_cache_path(cache_dir=None):
    """Path of the rendered dSprites cache file."""
    return default_cache_dir(cache_dir) / f"dsprites_rendered_v{RENDERER_VERSION}.npz"


def find_official_file(cache_dir=None):
    """The official npz in $TCVAE_TF_DATA_DIR or the cache folder, or None."""
    folders = []
    if os.environ.get(DATA_DIR_ENV):
        folders.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    folders.append(default_cache_dir(cache_dir))
    for folder in folders:
        candidate = folder / OFFICIAL_FILENAME
        if candidate.is_file():
            return candidate
    return None


def default_tfds_dir():
    """TFDS's data folder: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def _npz_layout(factor_classes):
    """Adds the constant colour column: classes and values [N, 6] in the official layout."""
    count = len(factor_classes)
    latents_classes = np.concatenate([np.zeros((count, 1), np.int64), factor_classes], axis=1)
    latents_values = np.concatenate([np.ones((count, 1)), factor_values_of(factor_classes)], axis=1)
    return latents_classes, latents_values


def _build_rendered(log):
    log("rendering dSprites: 737,280 images of 64x64 (takes about a minute, done once)")
    images = sprites.render_dsprites_grid()
    latents_classes, latents_values = _npz_layout(DSPRITES_SPEC.grid_classes())
    return images, latents_classes, latents_values


def _load_rendered(cache_dir, log):
    path = rendered_cache_path(cache_dir)
    if path.exists():
        log(f"loading rendered dSprites from {path}")
    loaded = load_or_build(path, DSPRITES_SPEC, lambda: _build_rendered(log),
                           dict(name="dsprites", renderer_version=RENDERER_VERSION), log=log)
    return _dataset(loaded, "rendered", path if loaded["metadata"] is not None else None)


def _load_official(path, log):
    if Path(path).is_file():
        log(f"loading the official dSprites file {path}")
    return _dataset(read_grid_npz(path, DSPRITES_SPEC), "official", path)


def _dataset(loaded, source, path):
    return GroundTruthDataset("dsprites", loaded["images"], loaded["factor_classes"],
                              loaded["factor_values"], FACTOR_NAMES, FACTOR_SIZES, source,
                              path=path)


def _tfds_builder(data_dir):
    import tensorflow_datasets as tfds

    return tfds.builder("dsprites", data_dir=None if data_dir is None else str(data_dir))


def _load_tfds(data_dir, log):
    """Reads TFDS's dsprites if it is prepared in `data_dir`; never downloads."""
    try:
        builder = _tfds_builder(data_dir)
    except Exception as error:  # tfds raises many kinds for a broken install or folder
        raise DatasetError(f"{data_dir or default_tfds_dir()}: cannot open TFDS dsprites: "
                           f"{' '.join(str(error).split())}") from None
    if not builder.is_prepared():
        raise DatasetError(f"{builder.data_dir}: TFDS dsprites is not prepared there (this "
                           "loader never downloads; prepare it with `tfds build dsprites` on a "
                           "machine with internet, or use source='rendered')")
    log(f"loading TFDS dsprites from {builder.data_dir}")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        batches = builder.as_dataset(split="train", batch_size=8192, shuffle_files=False)
        images, factor_classes = assemble_labelled_batches(
            tfds.as_numpy(batches), TFDS_LABELS, FACTOR_SIZES, (64, 64, 1), builder.data_dir
        )
    except tf.errors.OpError as error:  # a missing, truncated or corrupted record file
        problem = " ".join(re.sub(r"\{\{.*?\}\}|\[Op:.*", "", error.message).split())
        raise DatasetError(f"{builder.data_dir}: cannot read TFDS dsprites (damaged or "
                           f"incomplete copy?): {problem}") from None
    return GroundTruthDataset("dsprites", images, factor_classes, factor_values_of(factor_classes),
                              FACTOR_NAMES, FACTOR_SIZES, "tfds", path=builder.data_dir)


def assemble_labelled_batches(batches, label_keys, factor_sizes, image_shape, where):
    """Puts labelled examples, in any order, into the row-major grid order.

    Args:
      batches: iterable of dicts with "image" uint8 [b, H, W, C] (values 0/1 or 0/255) and
        one int array [b] per key of `label_keys`.
      label_keys: the label of each factor, in grid order.
      factor_sizes: number of classes of each factor.
      image_shape: (H, W, C).
      where: the source's name for error messages.

    Returns:
      (images uint8 [N, H, W, C] with values 0/1, factor_classes int64 [N, K]) with row
      index = the row-major grid index of the classes.

    Raises:
      DatasetError: labels out of range, repeated or missing combinations.
    """
    sizes = np.array(factor_sizes, np.int64)
    count = int(np.prod(sizes))
    strides = np.array([np.prod(sizes[k + 1:]) for k in range(len(sizes))], np.int64)
    images = np.zeros((count, *image_shape), np.uint8)
    factor_classes = np.zeros((count, len(sizes)), np.int64)
    seen = np.zeros(count, bool)
    for batch in batches:
        classes = np.stack([np.asarray(batch[key]) for key in label_keys], axis=1)
        classes = classes.astype(np.int64)
        if (classes < 0).any() or (classes >= sizes).any():
            raise DatasetError(f"{where}: labels out of range for factor sizes {factor_sizes}")
        rows = classes @ strides
        if seen[rows].any() or len(np.unique(rows)) != len(rows):
            raise DatasetError(f"{where}: some factor combinations appear more than once")
        seen[rows] = True
        batch_images = np.asarray(batch["image"]).reshape(len(rows), *image_shape)
        images[rows] = batch_images if batch_images.max(initial=0) <= 1 else batch_images > 127
        factor_classes[rows] = classes
    if not seen.all():
        raise DatasetError(f"{where}: {int((~seen).sum())} of {count} factor combinations are "
                           "missing")
    return images, factor_classes


def resolve_source(source="auto", path=None, cache_dir=None):
    """Decides which dSprites source `load_dsprites` reads, without reading it.

    Args:
      source: "auto", "rendered", "official" or "tfds".
      path: official npz path (official, auto) or TFDS data folder (tfds).
      cache_dir: cache folder (see `default_cache_dir`).

    Returns:
      (source, path): the source to use and its file or folder (None for a rendered
      dataset, whose cache path is `rendered_cache_path`).

    Raises:
      ValueError: unknown source, or a path given with the rendered source.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown dSprites source {source!r}; choose from {', '.join(SOURCES)}")
    if source == "official":
        found = Path(path) if path is not None else find_official_file(cache_dir)
        if found is None:
            raise DatasetError(f"{OFFICIAL_FILENAME}: not found in ${DATA_DIR_ENV} or "
                               f"{default_cache_dir(cache_dir)}; pass its path")
        return "official", found
    if source == "rendered" and path is not None:
        raise ValueError(f"the rendered dSprites reads no file, got {path}; give "
                         f"source='official' for DeepMind's npz or 'tfds' for a TFDS folder")
    if source != "auto":
        return source, path
    if path is not None:
        return "official", Path(path)
    official = find_official_file(cache_dir)
    if official is not None:
        return "official", official
    tfds_dir = default_tfds_dir()
    if (tfds_dir / "dsprites").is_dir():
        try:
            if _tfds_builder(tfds_dir).is_prepared():
                return "tfds", tfds_dir
        except Exception as error:  # a broken TFDS install must not stop the fallback
            logger.info("ignoring TFDS dsprites in %s: %s", tfds_dir, error)
    return "rendered", None


def load_dsprites(source="auto", path=None, cache_dir=None, log=None):
    """Loads dSprites (737,280 binary 64x64 images) with its five factors.

    Sources:
      - "official": DeepMind's `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, from `path`,
        $TCVAE_TF_DATA_DIR or the cache folder; validated (keys, dtypes, shapes, grid).
      - "tfds": TensorFlow Datasets' `dsprites`, only if already prepared in `path` (a TFDS
        data folder; default $TFDS_DATA_DIR or ~/tensorflow_datasets). Never downloads.
      - "rendered": drawn here (see `tcvae_tf.data.sprites`), cached once as an uncompressed
        npz in the cache folder ($TCVAE_TF_CACHE_DIR or ~/.cache/tcvae_tf, about 3 GB);
        a damaged cache is rebuilt with a warning.
      - "auto": official if a file is given or found, else tfds if prepared, else rendered.

    Args:
      source: "auto", "rendered", "official" or "tfds".
      path: see the sources.
      cache_dir: cache folder; default $TCVAE_TF_CACHE_DIR or ~/.cache/tcvae_tf.
      log: callable(str) told which source is used and of slow steps; default logging.info.

    Returns:
      GroundTruthDataset named "dsprites"; `source` says which source was used.

    Raises:
      ValueError: unknown source.
      DatasetError: the requested source is missing, not prepared or invalid.

    Example:
      >>> ds = load_dsprites()                 # auto
      >>> ds.source, ds.images.shape
      ('rendered', (737280, 64, 64, 1))
    """
    log = log or logger.info
    chosen, chosen_path = resolve_source(source, path, cache_dir)
    if source == "auto":
        log(f"dSprites source: {chosen}" + (f" ({chosen_path})" if chosen_path else ""))
    if chosen == "official":
        return _load_official(chosen_path, log)
    if chosen == "tfds":
        return _load_tfds(chosen_path, log)
    return _load_rendered(cache_dir, log)


def subgrid_size(stride=DEFAULT_SUBGRID_STRIDE):
    """The number of images of `dsprites_subgrid(stride)`, without rendering them."""
    return int(np.prod([len(range(0, size, step))
                        for size, step in zip(FACTOR_SIZES, stride, strict=True)]))


def dsprites_subgrid(stride=DEFAULT_SUBGRID_STRIDE):
    """A small dSprites: every stride-th class of each factor, rendered directly.

    With the default stride the factors keep (3, 2, 4, 8, 8) classes, 1536 images: shapes
    all, scales 0.5 and 0.8, orientations 0, 10, 20, 30 of 40, positions 0, 4, ..., 28.
    The rows are the full row-major grid of the kept classes, re-indexed 0..size-1, with
    the true factor values. Nothing is cached.

    Args:
      stride: 5 ints >= 1.

    Returns:
      GroundTruthDataset named "dsprites-small", source "rendered".

    Example:
      >>> small = dsprites_subgrid()
      >>> small.factor_sizes, small.is_factorial
      ((3, 2, 4, 8, 8), True)
    """
    stride = tuple(int(step) for step in stride)
    if len(stride) != len(FACTOR_SIZES) or min(stride) < 1:
        raise ValueError(f"stride must be {len(FACTOR_SIZES)} integers >= 1, got {stride}")
    kept = [np.arange(0, size, step) for size, step in zip(FACTOR_SIZES, stride, strict=True)]
    sizes = tuple(len(classes) for classes in kept)
    grid = np.indices(sizes, dtype=np.int64).reshape(len(sizes), -1).T
    original = np.stack([kept[k][grid[:, k]] for k in range(len(sizes))], axis=1)
    return GroundTruthDataset("dsprites-small", sprites.render_dsprites(original), grid,
                              factor_values_of(original), FACTOR_NAMES, sizes, "rendered")


def load_dsprites_small(source="auto", path=None, **unused):
    """Registry loader of "dsprites-small" (always rendered; `cache_dir`, `log` are ignored)."""
    if source not in ("auto", "rendered"):
        raise ValueError(f"dsprites-small is only rendered; got source {source!r}")
    if path is not None:
        raise ValueError("dsprites-small is rendered directly and reads no file")
    return dsprites_subgrid()
