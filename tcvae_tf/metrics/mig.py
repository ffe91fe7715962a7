"""Mutual Information Gap (MIG): the paper's sampling estimator and the histogram estimator.

```none
I(z_j; v_k) = H(z_j) - H(z_j | v_k)
MIG = mean_k ( I(z_(1); v_k) - I(z_(2); v_k) ) / H(v_k)
```

where z_(1), z_(2) are the latents with the largest and second largest mutual information
with factor v_k. The two estimators differ in how they get the entropies:

- `mig_sampling` (Chen et al. 2018): the code is the stochastic posterior q(z|x) of every
  image of a full factorial dataset; H(z_j) and H(z_j | v_k) are Monte-Carlo estimates
  against the exact mixtures of posteriors; H(v_k) = log |V_k|.
- `mig_histogram` (Locatello et al. 2019, disentanglement_lib): the code is the posterior
  mean of a random subset of images, each latent is discretized into equal-width bins and
  the discrete mutual information and the empirical factor entropy are used.

References:
  Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in Variational
  Autoencoders", NeurIPS 2018 (arXiv 1802.04942).
  Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of
  Disentangled Representations", ICML 2019 (arXiv 1811.12359).
"""

import math

import numpy as np

from tcvae_tf.metrics.elbo_decomposition import (
    DEFAULT_SAMPLE_CHUNK,
    log_mixture_density,
    sample_posteriors,
    validate_posteriors,
)
from tcvae_tf.metrics.utils import (
    as_float_matrix,
    check_positive_int,
    discrete_mutual_information,
    factor_codes,
    histogram_discretize,
)

# --------------------------------------------------------------------------- factors


def _full_factorial_rows(codes, sizes):
    """Checks that every combination of factor values occurs exactly once.

    Returns:
      int64 array [prod(sizes)]: the row of each combination, indexed by
      np.ravel_multi_index(combination, sizes).

    Raises:
      ValueError: the rows are not a full factorial grid.
    """
    num_rows = codes.shape[0]
    combinations = math.prod(sizes)
    if combinations != num_rows:
        raise ValueError(f"factor_classes is not a full factorial grid: {num_rows} rows but the "
                         f"factor sizes {sizes} make {combinations} combinations")
    flat = np.ravel_multi_index(codes.T, sizes)
    if np.bincount(flat, minlength=num_rows).max() > 1:
        raise ValueError("factor_classes is not a full factorial grid: some combination of "
                         "factor values appears more than once")
    rows = np.empty(num_rows, np.int64)
    rows[flat] = np.arange(num_rows)
    return rows


def _select_factors(factors, sizes, factor_names, min_size=2):
    """Resolves `factors` to a list of indices, dropping factors with a single value.

    Returns:
      (used, notes): the factor indices used and human-readable notes on the excluded ones.
    """
    num_factors = len(sizes)
    if factor_names is not None:
        factor_names = [str(name) for name in factor_names]
        if len(factor_names) != num_factors:
            raise ValueError(f"factor_names has {len(factor_names)} names but factor_classes "
                             f"has {num_factors} factors")
    if factors is None:
        requested = list(range(num_factors))
    else:
        requested = [int(k) for k in np.atleast_1d(factors)]
        for k in requested:
            if not 0 <= k < num_factors:
                raise ValueError(f"factor index {k} is out of range for {num_factors} factors")
        if len(set(requested)) != len(requested):
            raise ValueError(f"factors lists a factor twice: {requested}")
    used, notes = [], []
    for k in requested:
        if sizes[k] < min_size:
            name = f" ({factor_names[k]})" if factor_names else ""
            notes.append(f"factor {k}{name} excluded: it takes a single value")
        else:
            used.append(k)
    if not used:
        raise ValueError("no factor with more than one value to measure MIG against")
    return used, notes


def _mig_report(mutual_information, factor_entropy):
    """MIG and its parts from the [factor, latent] mutual information and factor entropies."""
    normalized_gap = _gap(mutual_information, factor_entropy)
    return {
        "mig": float(np.mean(normalized_gap)),
        "mutual_information": mutual_information.tolist(),
        "normalized_gap": normalized_gap.tolist(),
        "factor_entropy": factor_entropy.tolist(),
    }


def _gap(mutual_information, normalizer):
    """Normalized gap between the two largest entries of each row.

    Args:
      mutual_information: array [K, D].
      normalizer: array [K], H(v_k).

    Returns:
      float64 array [K]; with a single latent the second largest is taken as 0.
    """
    ordered = -np.sort(-mutual_information, axis=1)
    second = ordered[:, 1] if ordered.shape[1] > 1 else np.zeros(len(ordered))
    return (ordered[:, 0] - second) / normalizer


def _stratified_rows(rows_of, sizes, num_samples, rng):
    """Draws images so that every factor's values are equally represented.

    For each factor independently, the sample slots get its values in equal numbers (up to
    one) in random order. Since the grid is full factorial, the combination picks an image
    that is uniform over the dataset, and the slots holding value v of factor k are uniform
    over the images with v_k = v.

    Returns:
      (sample_codes, rows): int64 arrays [S, K] and [S].
    """
    columns = []
    for size in sizes:
        if size == 1:  # no draw: a constant column does not change the other factors' draws
            columns.append(np.zeros(num_samples, np.int64))
            continue
        balanced = np.resize(rng.permutation(size), num_samples)
        columns.append(rng.permutation(balanced))
    sample_codes = np.stack(columns, axis=1)
    return sample_codes, rows_of[np.ravel_multi_index(sample_codes.T, sizes)]


class _ProgressOffset:
    """Turns per-call progress of several kernel calls into one running total."""

    def __init__(self, callback, total):
        self.callback = callback
        self.total = total
        self.base = 0

    def __call__(self, done, call_total):
        if self.callback is not None:
            self.callback(self.base + done, self.total)
        if done == call_total:
            self.base += call_total


def _factor_report(used, factor_names):
    report = {"factors": list(used)}
    if factor_names is not None:
        report["factor_names"] = [str(factor_names[k]) for k in used]
    return report


# --------------------------------------------------------------------------- sampling MIG


def mig_sampling(loc, log_scale, factor_classes, num_samples=10000, seed=0, factors=None,
                 factor_names=None, batch_size=DEFAULT_SAMPLE_CHUNK, progress=None):
    """MIG with the sampling estimator of Chen et al. (2018) on a full factorial dataset.

    The code of image x_n is its posterior q(z|x_n) = prod_j Normal(loc_nj, exp(log_scale_nj)).
    With S samples z^s ~ q(z|x_{n_s}):

    ```none
    H(z_j)        = -mean_s log( (1/N) sum_n q(z_j^s | x_n) )
    H(z_j | v_k)  = mean_v H_v(z_j),  H_v the same estimate with the samples and the mixture
                    restricted to the N/|V_k| images with v_k = v
    I(z_j; v_k)   = max(0, H(z_j) - H(z_j | v_k))
    MIG           = mean_k ( I_(1) - I_(2) ) / log |V_k|
    ```

    Sample design: one pool of S images is drawn stratified (every factor's values appear
    equally often, see `_stratified_rows`), which makes the n_s uniform over the dataset
    for H(z_j), and the roughly S/|V_k| pool samples with v_k = v uniform over that value's
    images for H_v. Each conditional entropy therefore uses about S/|V_k| samples per value
    and S samples per factor in all (the authors draw S per value; the estimates share the
    pool, so the errors of H(z_j) and H(z_j | v_k) are correlated and partly cancel in I).
    S is raised to the largest used factor size so that every value gets a sample.

    Cost: S * N * D Normal log-densities for H(z) plus S * N * D / |V_k| per factor, i.e.
    about 1.25 * S * N * D on dSprites with factors 1..4 and 1.6 * S * N * D with shape
    (|V| = 3) as well.

    Args:
      loc: array [N, D], posterior means of every image of the dataset.
      log_scale: array [N, D], posterior log standard deviations (scale = exp(log_scale)).
      factor_classes: integer array [N, K], the class of each factor of each image; the rows
        must form a full factorial grid (every combination exactly once), in any order.
      num_samples: S.
      seed: seed of the numpy random generator drawing images and noise.
      factors: indices of the factors to average over (None: all). The dSprites number of
        the paper uses scale, orientation, posX, posY, i.e. [1, 2, 3, 4] of the
        (shape, scale, orientation, posX, posY) classes (columns 2..5 of `latents_classes`).
      factor_names: optional names of all K factors, echoed in the result.
      batch_size: number of samples evaluated per kernel call.
      progress: optional callable(done, total) counting (sample, image) pairs evaluated.

    Returns:
      dict with "mig" (float), "mutual_information" ([K_used][D], nats),
      "normalized_gap" ([K_used]), "entropy_z" ([D]), "conditional_entropy"
      ([K_used][D]), "factor_entropy" ([K_used], log |V_k|), "factors" (used indices),
      "factor_names" (if given), "notes" (excluded factors), "num_samples" (S used) and
      "estimator": "sampling".

    Raises:
      ValueError: mismatched shapes, NaN/inf codes, non-integer or non-factorial
        `factor_classes`, bad `factors`.

    Example:
      >>> result = mig_sampling(loc, log_scale, classes[:, 1:], factors=[1, 2, 3, 4])
      >>> result["mig"]
    """
    loc, log_scale = validate_posteriors(loc, log_scale)
    num_images, num_dims = loc.shape
    codes, sizes = factor_codes(factor_classes, num_images)
    rows_of = _full_factorial_rows(codes, sizes)
    used, notes = _select_factors(factors, sizes, factor_names)
    batch_size = check_positive_int("batch_size", batch_size)
    num_samples = max(check_positive_int("num_samples", num_samples), max(sizes[k] for k in used))

    rng = np.random.default_rng(seed)
    sample_codes, sample_rows = _stratified_rows(rows_of, sizes, num_samples, rng)
    z, log_q_own = sample_posteriors(loc, log_scale, sample_rows, rng)

    # For each used factor and value: (sample indices, image indices) of the conditional.
    groups = {}
    for k in used:
        image_order = np.argsort(codes[:, k], kind="stable")
        image_groups = np.split(image_order, np.cumsum(np.bincount(codes[:, k]))[:-1])
        sample_order = np.argsort(sample_codes[:, k], kind="stable")
        counts = np.bincount(sample_codes[:, k], minlength=sizes[k])
        sample_groups = np.split(sample_order, np.cumsum(counts)[:-1])
        groups[k] = list(zip(sample_groups, image_groups, strict=True))
    total = num_samples * num_images + sum(
        len(s) * len(n) for k in used for s, n in groups[k])
    tracker = _ProgressOffset(progress, total)

    _, log_qz = log_mixture_density(z, loc, log_scale, reference=log_q_own,
                                     sample_chunk=batch_size, progress=tracker)
    entropy_z = -log_qz.mean(axis=0)  # [D]

    conditional_entropy = np.zeros((len(used), num_dims))
    for i, k in enumerate(used):
        for sample_index, image_index in groups[k]:
            _, log_qz_given_v = log_mixture_density(
                z[sample_index], loc[image_index], log_scale[image_index],
                reference=log_q_own[sample_index], sample_chunk=batch_size, progress=tracker)
            conditional_entropy[i] -= log_qz_given_v.mean(axis=0)
        conditional_entropy[i] /= sizes[k]

    mutual_information = np.maximum(entropy_z[None, :] - conditional_entropy, 0.0)
    factor_entropy = np.log(np.array([sizes[k] for k in used], np.float64))
    result = _mig_report(mutual_information, factor_entropy)
    result.update(entropy_z=entropy_z.tolist(), conditional_entropy=conditional_entropy.tolist())
    result.update(_factor_report(used, factor_names))
    result.update({"notes": notes, "num_samples": num_samples, "estimator": "sampling"})
    return result


# --------------------------------------------------------------------------- histogram MIG


def mig_histogram(codes, factor_classes, num_bins=20, num_samples=None, seed=0, factors=None,
                  factor_names=None):
    """MIG with disentanglement_lib's histogram estimator, on deterministic codes.

    ```none
    c_j       = digitize(z_j, 20 equal-width bins over the range of z_j)
    I(c_j; v_k), H(v_k)   empirical discrete mutual information and entropy (nats)
    MIG       = mean_k ( I_(1) - I_(2) ) / H(v_k)
    ```

    Args:
      codes: array [n, D], usually posterior means.
      factor_classes: integer array [n, K], the factor classes of the same images (no
        factorial structure needed).
      num_bins: number of equal-width bins per latent.
      num_samples: if given and smaller than n, a random subset of this many rows is used
        (disentanglement_lib uses 10000 images).
      seed: seed of the subset choice.
      factors: indices of the factors to average over (None: all).
      factor_names: optional names of all K factors, echoed in the result.

    Returns:
      dict with "mig" (float), "mutual_information" ([K_used][D], nats),
      "normalized_gap" ([K_used]), "factor_entropy" ([K_used], empirical H(v_k)),
      "num_bins", "num_samples" (rows used), "factors", "factor_names" (if given),
      "notes" (excluded factors: those constant over the rows used) and
      "estimator": "histogram".

    Raises:
      ValueError: mismatched shapes, NaN/inf codes, non-integer `factor_classes`, bad
        `factors`, `num_bins` or `num_samples`.

    Example:
      >>> result = mig_histogram(means, classes, num_samples=10000)
      >>> result["mig"]
    """
    codes = as_float_matrix("codes", codes)
    classes, _ = factor_codes(factor_classes, codes.shape[0])
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    num_bins = int(num_bins)
    if num_samples is not None:
        num_samples = check_positive_int("num_samples", num_samples)
        if num_samples < codes.shape[0]:
            rows = np.random.default_rng(seed).choice(codes.shape[0], num_samples, replace=False)
            codes, classes = codes[rows], classes[rows]
    # Factor sizes over the rows actually used: a factor constant there is excluded.
    sizes = tuple(len(np.unique(classes[:, k])) for k in range(classes.shape[1]))
    used, notes = _select_factors(factors, sizes, factor_names)

    discretized = histogram_discretize(codes, num_bins)
    mutual_information = np.array([
        [discrete_mutual_information(discretized[:, j], classes[:, k])
         for j in range(codes.shape[1])]
        for k in used
    ])
    factor_entropy = np.array([discrete_mutual_information(classes[:, k], classes[:, k])
                               for k in used])
    result = _mig_report(mutual_information, factor_entropy)
    result.update(num_bins=num_bins, num_samples=int(codes.shape[0]))
    result.update(_factor_report(used, factor_names))
    result.update({"notes": notes, "estimator": "histogram"})
    return result
