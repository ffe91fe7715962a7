"""A registry of ground-truth datasets by name."""

from tcvae_tf.data import dsprites

_LOADERS = {
    "dsprites": dsprites.load_dsprites,
    "dsprites-small": dsprites.load_dsprites_small,
}
# Image counts known without loading (every source of a dataset holds the same grid), so
# that a batch larger than the data is refused before anything is read.
_SIZES = {
    "dsprites": dsprites.NUM_IMAGES,
    "dsprites-small": dsprites.subgrid_size(),
}


def register_dataset(name, loader, overwrite=False, num_images=None):
    """Makes a dataset loadable by name with `load_dataset`.

    Args:
      name: dataset name.
      loader: callable(source="auto", path=None, **kw) -> GroundTruthDataset.
      overwrite: replace an existing registration instead of raising.
      num_images: how many images every source of the dataset holds, if known; lets
        `known_size` answer (and `train` refuse a batch larger than the data) without
        loading it.

    Raises:
      ValueError: the name is taken (and not `overwrite`) or the loader is not callable.

    Example:
      >>> register_dataset("toy", lambda source="auto", path=None, **kw: make_toy())
    """
    if not callable(loader):
        raise ValueError(f"loader of dataset {name!r} must be callable")
    if name in _LOADERS and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True")
    _LOADERS[str(name)] = loader
    _SIZES.pop(str(name), None)
    if num_images is not None:
        _SIZES[str(name)] = int(num_images)


def known_size(name):
    """The number of images of a registered dataset if it is known without loading it,
    else None."""
    return _SIZES.get(name)


def available_datasets():
    """Sorted names of the registered datasets."""
    return sorted(_LOADERS)


def load_dataset(name, source="auto", path=None, **kwargs):
    """Loads a registered dataset.

    Args:
      name: a name from `available_datasets()`, e.g. "dsprites" or "dsprites-small".
      source: where to read it from (dataset-specific; "auto" picks).
      path: file or folder of the source, or None.
      **kwargs: passed to the loader (e.g. cache_dir, log).

    Returns:
      GroundTruthDataset.

    Raises:
      ValueError: unknown name (the message lists the available ones).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return _LOADERS[name](source=source, path=path, **kwargs)
