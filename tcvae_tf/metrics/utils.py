"""Helpers that several metrics share: input checks, binning, discrete information,
standardising codes, random train/test rows and encoding dataset rows.

Every function here is numpy only; scikit-learn and TensorFlow are imported by the metrics
that need them, when they run.

```none
histogram_discretize     z_j -> bin of 20 equal-width bins over the range of z_j
discrete_entropy         H(a)    = -sum_a p(a) log p(a)                      (nats)
discrete_mutual_information
                         I(a; b) = sum_{a,b} p(a, b) log( p(a, b) / (p(a) p(b)) )
standardize              (z - mean) / std, per latent, with the training sample's moments
```
"""

import math
import time
import warnings

import numpy as np

# disentanglement_lib's number of equal-width bins per latent (histogram MIG, modularity).
DEFAULT_NUM_BINS = 20

# --------------------------------------------------------------------------- input checks


def check_finite(name, array):
    """Raises ValueError if ``array`` holds NaN or inf values."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains NaN or inf values ({bad} of {np.size(array)} entries)")


def as_float_matrix(name, array):
    """Returns ``array`` as a finite float64 matrix [N, D] or raises a one-line ValueError."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [num_images, num_latents], got shape "
                         f"{array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    check_finite(name, array)
    return array


def check_positive_int(name, value, minimum=1):
    """``value`` as an int >= ``minimum``, or a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float) \
            or int(value) != value or value < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def factor_codes(factor_classes, num_rows, name="factor_classes"):
    """Maps each factor's class labels to 0..|V_k|-1.

    Args:
      factor_classes: integer array [N, K].
      num_rows: N expected from the code.
      name: the argument's name in error messages.

    Returns:
      (codes, sizes): int64 array [N, K] and the tuple of factor sizes |V_k| (the number of
      distinct values in these rows).

    Raises:
      ValueError: not a 2-D integer array with ``num_rows`` rows and at least one column.
    """
    factor_classes = np.asarray(factor_classes)
    if factor_classes.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [num_images, num_factors], got "
                         f"shape {factor_classes.shape}")
    if not (np.issubdtype(factor_classes.dtype, np.integer) or factor_classes.dtype == bool):
        raise ValueError(f"{name} must hold integer class labels, got dtype "
                         f"{factor_classes.dtype}")
    if factor_classes.shape[0] != num_rows:
        raise ValueError(f"{name} has {factor_classes.shape[0]} rows but the code has "
                         f"{num_rows}")
    if factor_classes.shape[1] == 0:
        raise ValueError(f"{name} has no factor columns")
    codes = np.empty(factor_classes.shape, np.int64)
    sizes = []
    for k in range(factor_classes.shape[1]):
        values, codes[:, k] = np.unique(factor_classes[:, k], return_inverse=True)
        sizes.append(len(values))
    return codes, tuple(sizes)


def check_split(train_codes, train_factors, test_codes, test_factors, min_train=2, min_test=1):
    """Checks a train/test sample of codes and factor classes.

    Args:
      train_codes, test_codes: arrays [N_train, D] and [N_test, D].
      train_factors, test_factors: integer arrays [N_train, K] and [N_test, K].
      min_train, min_test: the fewest rows each part may have.

    Returns:
      (train_codes, train_factors, test_codes, test_factors): float64 codes, int64 factors
      (the labels as given).

    Raises:
      ValueError (one line): bad shapes or dtypes, NaN/inf codes, mismatched widths, too few
        rows, or a factor that takes a single value in the training rows.
    """
    train_codes = as_float_matrix("train_codes", train_codes)
    test_codes = as_float_matrix("test_codes", test_codes)
    factor_codes(train_factors, len(train_codes), "train_factors")
    factor_codes(test_factors, len(test_codes), "test_factors")
    train_factors = np.asarray(train_factors).astype(np.int64)
    test_factors = np.asarray(test_factors).astype(np.int64)
    if train_codes.shape[1] != test_codes.shape[1]:
        raise ValueError(f"train_codes has {train_codes.shape[1]} latents but test_codes has "
                         f"{test_codes.shape[1]}")
    if train_factors.shape[1] != test_factors.shape[1]:
        raise ValueError(f"train_factors has {train_factors.shape[1]} factors but test_factors "
                         f"has {test_factors.shape[1]}")
    if len(train_codes) < min_train:
        raise ValueError(f"too few training samples: {len(train_codes)} (at least {min_train})")
    if len(test_codes) < min_test:
        raise ValueError(f"too few test samples: {len(test_codes)} (at least {min_test})")
    for k in range(train_factors.shape[1]):
        if len(np.unique(train_factors[:, k])) < 2:
            raise ValueError(f"factor {k} takes a single value in the training sample; every "
                             f"factor needs at least two")
    return train_codes, train_factors, test_codes, test_factors


# --------------------------------------------------------------------------- discrete information


def histogram_discretize(codes, num_bins=DEFAULT_NUM_BINS):
    """Equal-width binning of each latent over its own range (disentanglement_lib's).

    Bin edges are np.histogram's over the column; np.digitize against all edges but the
    last gives bins 1..num_bins (the maximum falls in the last bin). A constant latent
    falls in a single bin.

    Args:
      codes: array [n, D].
      num_bins: number of bins per latent.

    Returns:
      int64 array [n, D].
    """
    codes = np.asarray(codes)
    discretized = np.empty(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins=num_bins)[1]
        discretized[:, j] = np.digitize(codes[:, j], edges[:-1])
    return discretized


def discrete_entropy(labels):
    """Empirical entropy (nats) of a discrete label array: -sum_a p(a) log p(a)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(max(-np.sum(p * np.log(p)), 0.0))


def discrete_mutual_information(labels_a, labels_b):
    """Mutual information (nats) between two discrete label arrays of equal length.

    ```none
    I(a; b) = sum_{a,b} p(a, b) * log( p(a, b) / (p(a) p(b)) )     (empirical p)
    ```

    I(a; a) is the empirical entropy H(a).
    """
    _, a = np.unique(labels_a, return_inverse=True)
    _, b = np.unique(labels_b, return_inverse=True)
    num_b = b.max() + 1
    joint = np.bincount(a * num_b + b, minlength=(a.max() + 1) * num_b)
    joint = joint.reshape(-1, num_b).astype(np.float64) / len(a)
    p_a = joint.sum(axis=1, keepdims=True)
    p_b = joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    ratio = joint[nonzero] / (p_a * p_b)[nonzero]
    return float(max(np.sum(joint[nonzero] * np.log(ratio)), 0.0))


def mutual_information_matrix(discrete_codes, factor_classes):
    """I(c_j; v_k) for every latent j and factor k: float64 [D, K] (nats).

    Args:
      discrete_codes: integer array [n, D], e.g. from ``histogram_discretize``.
      factor_classes: integer array [n, K].
    """
    return np.array([[discrete_mutual_information(discrete_codes[:, j], factor_classes[:, k])
                      for k in range(factor_classes.shape[1])]
                     for j in range(discrete_codes.shape[1])], np.float64).reshape(
        discrete_codes.shape[1], factor_classes.shape[1])


def normalized_entropy(weights, axis):
    """Entropy of the distributions ``weights`` (normalised along ``axis``) in base n.

    n is the length of ``axis``, so the result lies in [0, 1]; 1e-11 is added to every
    weight first, as disentanglement_lib does, so that an all-zero row is uniform.

    Args:
      weights: non-negative array.
      axis: the axis holding each distribution (n >= 2 entries).
    """
    weights = np.asarray(weights, np.float64) + 1e-11
    p = weights / weights.sum(axis=axis, keepdims=True)
    return -np.sum(p * np.log(p), axis=axis) / math.log(weights.shape[axis])


# --------------------------------------------------------------------------- codes and samples


def standardize(codes, mean=None, scale=None):
    """Standardises each latent: (codes - mean) / scale.

    With ``mean`` and ``scale`` omitted they are the sample's own mean and standard
    deviation (ddof 0, as numpy). A constant latent (scale 0) keeps scale 1, so it stays 0
    instead of becoming NaN.

    Args:
      codes: array [n, D].
      mean, scale: arrays [D] from the training sample, to standardise a test sample alike.

    Returns:
      (standardized [n, D], mean [D], scale [D]).
    """
    codes = np.asarray(codes, np.float64)
    if mean is None:
        mean = codes.mean(axis=0)
    if scale is None:
        scale = codes.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    return (codes - mean) / scale, mean, scale


def train_test_rows(num_rows, num_train, num_test, rng):
    """Random rows of a dataset for a training and a test sample that share no row.

    With at least ``num_train + num_test`` rows, the rows are distinct (drawn without
    replacement). A smaller dataset is cut at random into two disjoint parts in the
    proportion ``num_train : num_test`` (at least one row each), and each sample is drawn
    with replacement from its own part. Either way no test image is one the classifier was
    trained on, so a test score measures generalisation: drawn independently with
    replacement, 99.8% of 5,000 test rows of a 1,536-image dataset would also be among
    10,000 training rows, and memorising classifiers would score far above chance on a code
    that is pure noise.

    On full dSprites (737,280 images) the draw is, up to the excluded repeats,
    disentanglement_lib's ``sample_factors`` (each factor uniform and independent) followed
    by the image of those factors.

    Args:
      num_rows: N >= 2, the rows to draw from.
      num_train, num_test: sample sizes (>= 1).
      rng: np.random.Generator.

    Returns:
      (train_rows [num_train], test_rows [num_test]), int64, disjoint.

    Raises:
      ValueError: fewer than 2 rows, or a sample size below 1.
    """
    if num_rows < 2:
        raise ValueError(f"a training and a test sample need at least 2 images, got {num_rows}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"sample sizes must be >= 1, got {num_train} and {num_test}")
    if num_train + num_test <= num_rows:
        rows = rng.choice(num_rows, num_train + num_test, replace=False).astype(np.int64)
        return rows[:num_train], rows[num_train:]
    order = rng.permutation(num_rows).astype(np.int64)
    cut = min(max(1, round(num_rows * num_train / (num_train + num_test))), num_rows - 1)
    train_part, test_part = order[:cut], order[cut:]
    return (train_part[rng.integers(0, len(train_part), num_train)],
            test_part[rng.integers(0, len(test_part), num_test)])


class RowEncoder:
    """Codes of dataset rows, each row encoded at most once.

    The intervention metrics (FactorVAE, beta-VAE scores) draw images by their factors,
    often the same image many times; a deterministic encoder (posterior means) gives the same
    code each time, so each row is encoded once and remembered. ``codes`` fills the memory
    from an encoding already made (e.g. of the whole dataset).

    Args:
      dataset: a GroundTruthDataset (``images`` uint8 [N, H, W, C], ``pixel_max``) or None
        when ``codes`` covers every row.
      encode: callable mapping float32 images [B, H, W, C] in [0, 1] to codes [B, D]
        (posterior means), or None when ``codes`` covers every row.
      batch_size: images per ``encode`` call.
      codes: optional array [N, D], the code of every row of the dataset.

    Example:
      >>> rows_to_codes = RowEncoder(dataset, encode)
      >>> rows_to_codes(np.array([3, 3, 7]))        # float64 [3, D]; rows 3 and 7 encoded once
    """

    def __init__(self, dataset, encode=None, batch_size=256, codes=None):
        self.dataset = dataset
        self.encode = encode
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.num_rows = len(codes) if codes is not None else dataset.num_images
        self.codes = None
        self.known = np.zeros(self.num_rows, bool)
        self.num_encoded = 0  # images passed to ``encode``
        self.seconds = 0.0  # time spent in ``encode``
        if codes is not None:
            self.codes = as_float_matrix("codes", codes)
            self.known[:] = True
        elif encode is None or dataset is None:
            raise ValueError("RowEncoder needs either codes of every row or a dataset and an "
                             "encode function")

    def __call__(self, rows):
        """Codes float64 [*rows.shape, D] of the dataset rows ``rows``."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise ValueError(f"rows out of range [0, {self.num_rows})")
        missing = np.unique(rows[~self.known[rows]])
        for start in range(0, len(missing), self.batch_size):
            self._encode(missing[start:start + self.batch_size])
        return self.codes[rows]

    def _encode(self, rows):
        start = time.perf_counter()
        images = self.dataset.images[rows]
        if np.issubdtype(images.dtype, np.integer):
            images = images.astype(np.float32) * np.float32(1.0 / self.dataset.pixel_max)
        codes = np.asarray(self.encode(images.astype(np.float32, copy=False)), np.float64)
        if codes.ndim != 2 or codes.shape[0] != len(rows):
            raise ValueError(f"encode must return codes [batch, latents] for a batch of "
                             f"{len(rows)} images, got shape {codes.shape}")
        check_finite("the codes returned by encode", codes)
        if self.codes is None:
            self.codes = np.zeros((self.num_rows, codes.shape[1]), np.float64)
        elif codes.shape[1] != self.codes.shape[1]:
            raise ValueError(f"encode returned {codes.shape[1]} latents, earlier "
                             f"{self.codes.shape[1]}")
        self.codes[rows] = codes
        self.known[rows] = True
        self.num_encoded += len(rows)
        self.seconds += time.perf_counter() - start


def codes_of_rows(rows_to_codes, rows):
    """Codes float64 [*rows.shape, D] of dataset rows of any shape, from a callable that
    maps rows [n] to codes [n, D] (a ``RowEncoder`` or any other)."""
    rows = np.asarray(rows, np.int64)
    codes = np.asarray(rows_to_codes(rows.reshape(-1)), np.float64)
    if codes.ndim != 2 or len(codes) != rows.size:
        raise ValueError(f"encode_rows must return codes [n, latents] for {rows.size} rows, "
                         f"got shape {codes.shape}")
    check_finite("the codes of the dataset rows", codes)
    return codes.reshape(*rows.shape, codes.shape[-1])


def check_intervention_dataset(dataset):
    """Checks that the intervention metrics can fix a factor and sample the others.

    Raises:
      ValueError: the dataset is not a full factorial grid, or a factor takes one value.
    """
    for attribute in ("sample_factors", "index_from_classes", "factor_sizes", "images"):
        if not hasattr(dataset, attribute):
            raise ValueError(f"dataset must be a GroundTruthDataset, got {type(dataset).__name__}")
    if not dataset.is_factorial:
        raise ValueError(f"dataset {dataset.name!r} is not a full factorial grid: fixing one "
                         f"factor and sampling the others needs every combination")
    names = getattr(dataset, "factor_names", None) or range(len(dataset.factor_sizes))
    for name, size in zip(names, dataset.factor_sizes, strict=True):
        if size < 2:
            raise ValueError(f"factor {name!r} takes a single value; every factor needs at "
                             f"least two")


def fit_quietly(model, inputs, labels):
    """Fits a scikit-learn model on one thread with its ConvergenceWarning caught.

    Returns:
      ``(model, converged)``: converged is False when the solver stopped at its iteration
      limit (the warning is turned into this flag, which the metrics report).
    """
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    # One thread: the problems are small, and waiting BLAS/OpenMP threads slow them down
    # many times over on a machine shared with a training job.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(inputs, labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model, converged
