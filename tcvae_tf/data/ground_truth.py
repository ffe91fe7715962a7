"""Ground-truth datasets: images with the classes and values of their generative factors."""

import math

import numpy as np


class DatasetError(ValueError):
    """A dataset file or source that cannot be used; the message names it and the problem."""


def _as_rng(rng):
    """np.random.Generator from a Generator, an int seed or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class GroundTruthDataset:
    """Images with the classes and values of the factors that generated them.

    When the rows are the full row-major grid of the factors (`is_factorial`), row
    `index = sum_k classes[k] * prod(factor_sizes[k+1:])`; dSprites, for instance, has
    index = shape*245760 + scale*40960 + orientation*1024 + pos_x*32 + pos_y.

    Args:
      name: dataset name, e.g. "dsprites".
      images: uint8 array [N, H, W, C] with values 0..pixel_max (kept, not copied).
      factor_classes: int array [N, K], class of each factor, in range(factor_sizes[k]).
      factor_values: float array [N, K], the value of each factor (e.g. scale 0.5..1).
      factor_names: K names.
      factor_sizes: K numbers of classes.
      source: where the images came from ("rendered", "official", "tfds", ...).
      path: file the data came from, or None.
      pixel_max: largest pixel value (1 for binary images); `as_tf_dataset` divides by it.

    Example:
      >>> ds = dsprites_subgrid()
      >>> classes, images = ds.sample(16, rng=0)     # [16, 5], uint8 [16, 64, 64, 1]
      >>> ds.index_from_classes(ds.factor_classes[:3])
      array([0, 1, 2])
    """

    def __init__(self, name, images, factor_classes, factor_values, factor_names, factor_sizes,
                 source, path=None, pixel_max=1):
        images = np.asarray(images)
        factor_classes = np.asarray(factor_classes)
        factor_values = np.asarray(factor_values)
        factor_names = tuple(str(factor) for factor in factor_names)
        factor_sizes = tuple(int(size) for size in factor_sizes)
        if images.ndim != 4:
            raise ValueError(f"images must have shape [N, H, W, C], got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        num_images, num_factors = len(images), len(factor_sizes)
        if len(factor_names) != num_factors:
            raise ValueError(f"{len(factor_names)} factor names for {num_factors} factor sizes")
        for label, array in (("factor_classes", factor_classes), ("factor_values", factor_values)):
            if array.shape != (num_images, num_factors):
                raise ValueError(f"{label} must have shape {(num_images, num_factors)}, "
                                 f"got {array.shape}")
        if not np.issubdtype(factor_classes.dtype, np.integer):
            raise ValueError(f"factor_classes must be integers, got {factor_classes.dtype}")
        if num_images and ((factor_classes < 0).any()
                           or (factor_classes >= np.array(factor_sizes)).any()):
            raise ValueError(f"factor_classes out of range for factor sizes {factor_sizes}")
        self.name = str(name)
        self.images = images
        self.factor_classes = factor_classes
        self.factor_values = factor_values
        self.factor_names = factor_names
        self.factor_sizes = factor_sizes
        self.source = str(source)
        self.path = None if path is None else str(path)
        self.pixel_max = int(pixel_max)
        self._is_factorial = None
        self._sorted_grid_index = None

    def __len__(self):
        return self.num_images

    def __repr__(self):
        return (f"GroundTruthDataset(name={self.name!r}, source={self.source!r}, "
                f"num_images={self.num_images}, factor_names={self.factor_names}, "
                f"factor_sizes={self.factor_sizes})")

    @property
    def num_images(self):
        return len(self.images)

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    @property
    def _strides(self):
        """Row-major strides of the factor grid: int64 [K]."""
        return np.array([math.prod(self.factor_sizes[k + 1:])
                         for k in range(len(self.factor_sizes))], np.int64)

    def _grid_index(self, classes):
        return np.asarray(classes, np.int64) @ self._strides

    @property
    def is_factorial(self):
        """True when the rows are exactly the full row-major factor grid."""
        if self._is_factorial is None:
            expected = math.prod(self.factor_sizes)
            self._is_factorial = bool(
                self.num_images == expected
                and np.array_equal(self._grid_index(self.factor_classes), np.arange(expected))
            )
        return self._is_factorial

    def _check_classes(self, classes):
        classes = np.asarray(classes)
        if classes.ndim == 0 or classes.shape[-1] != len(self.factor_sizes):
            raise ValueError(f"classes must have shape [..., {len(self.factor_sizes)}], "
                             f"got {classes.shape}")
        if not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(f"classes must be integers, got {classes.dtype}")
        if classes.size and ((classes < 0).any() or (classes >= np.array(self.factor_sizes)).any()):
            raise ValueError(f"classes out of range for factor sizes {self.factor_sizes}")
        return classes

    def index_from_classes(self, classes):
        """Rows holding given factor classes.

        Args:
          classes: int array [..., K].

        Returns:
          int64 array [...] of row indices.

        Raises:
          ValueError: wrong shape, a class out of range, or (for a non-factorial subset) a
            combination that is not in the dataset.
        """
        grid_index = self._grid_index(self._check_classes(classes))
        if self.is_factorial:
            return grid_index
        if self._sorted_grid_index is None:
            all_index = self._grid_index(self.factor_classes)
            order = np.argsort(all_index, kind="stable")
            self._sorted_grid_index = (all_index[order], order)
        sorted_index, order = self._sorted_grid_index
        position = np.clip(np.searchsorted(sorted_index, grid_index), 0, len(sorted_index) - 1)
        found = sorted_index[position] == grid_index if len(sorted_index) else False
        if not np.all(found):
            raise ValueError(f"some factor combinations are not in dataset {self.name!r}")
        return order[position]

    def classes_from_index(self, index):
        """Factor classes of given rows.

        Args:
          index: int array [...] of row indices in [0, num_images).

        Returns:
          int array [..., K].
        """
        index = np.asarray(index)
        if not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must be integers, got {index.dtype}")
        if index.size and ((index < 0).any() or (index >= self.num_images).any()):
            raise ValueError(f"index out of range [0, {self.num_images})")
        return self.factor_classes[index]

    def sample_factors(self, num, rng=None):
        """Draws factor classes.

        A factorial dataset draws each factor independently and uniformly; any other draws
        rows uniformly.

        Args:
          num: number of draws.
          rng: np.random.Generator, int seed or None.

        Returns:
          int64 array [num, K].
        """
        rng = _as_rng(rng)
        if self.is_factorial:
            return np.stack([rng.integers(0, size, num) for size in self.factor_sizes], axis=1)
        return self.factor_classes[rng.integers(0, self.num_images, num)].astype(np.int64)

    def images_from_factors(self, classes):
        """Images of given factor classes: uint8 [..., H, W, C] for classes [..., K]."""
        return self.images[self.index_from_classes(classes)]

    def sample(self, num, rng=None):
        """Draws (classes [num, K], uint8 images [num, H, W, C]); see `sample_factors`."""
        classes = self.sample_factors(num, rng)
        return classes, self.images_from_factors(classes)

    def subset(self, indices):
        """A dataset of the given rows (copied), with the same factor names and sizes."""
        indices = np.asarray(indices)
        if indices.size == 0:
            raise DatasetError(f"subset: a subset of {self.name} needs at least one image")
        return GroundTruthDataset(self.name, self.images[indices], self.factor_classes[indices],
                                  self.factor_values[indices], self.factor_names,
                                  self.factor_sizes, self.source, self.path, self.pixel_max)

    def as_tf_dataset(self, batch_size, shuffle=True, seed=None, repeat=True,
                      drop_remainder=True, start_batch=0):
        """A tf.data pipeline of float32 image batches [B, H, W, C] in [0, 1].

        The uint8 images stay in memory; each batch is gathered at once and cast to float32.
        Shuffling draws a fresh permutation of the rows each epoch from `seed` (no shuffle
        buffer). See `tcvae_tf.data.pipeline.image_batches`.

        Args:
          batch_size: images per batch.
          shuffle: permute the rows each epoch.
          seed: int; None draws one at random.
          repeat: repeat epochs forever; otherwise one epoch.
          drop_remainder: drop the last, smaller batch of each epoch.
          start_batch: skip this many batches of the stream (across epochs): a run resumed
            at step s with the same seed sees the batches it would have seen.

        Returns:
          tf.data.Dataset of float32 tensors [batch_size, H, W, C].
        """
        from tcvae_tf.data.pipeline import image_batches

        return image_batches(self.images, batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
                             drop_remainder=drop_remainder, pixel_max=self.pixel_max,
                             start_batch=start_batch)

    def describe(self):
        """JSON-ready summary recorded in run configs and model cards."""
        return dict(name=self.name, source=self.source, path=self.path,
                    num_images=self.num_images, image_shape=list(self.image_shape),
                    factor_names=list(self.factor_names), factor_sizes=list(self.factor_sizes))
