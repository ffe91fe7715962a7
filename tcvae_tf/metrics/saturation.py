"""How much of a minibatch estimate of log q(z) is the sample's own posterior.

The TC term of beta-TCVAE estimates the aggregate posterior at z_i ~ q(z|x_i) from the M
images of a minibatch (Chen et al. 2018, section 4.1):

```none
q(z_i) ~= sum_j w_ij q(z_i | x_j)                 MWS: w_ij = 1/(N M)
share_i = w_ii q(z_i | x_i) / sum_j w_ij q(z_i | x_j)   (in [0, 1])
```

The share is computed for the joint density q(z) and for each marginal q(z_d). When the
joint share is close to 1, no other image of the batch has a posterior that reaches z_i:
the MWS estimate is log q(z_i|x_i) - log(N M), and the TC term becomes

```none
TC_mws ~= log q(z_i|x_i) - sum_d log q(z_id) - log(N M)
```

so that alpha = gamma = 1 turns the beta-TCVAE loss into the beta-VAE loss minus
(beta - 1) times the dimension-wise KL, up to a constant: the term no longer measures
the dependence between latents. MSS gives the own posterior the weight 1/N and the others
about 1/M, so its share only approaches 1 when the neighbours' densities are N/M times
smaller than the own posterior's.

Posteriors are diagonal Normals, as in the rest of `tcvae_tf.metrics`. The weights are
`tcvae_tf.objectives.log_importance_weights`, so TensorFlow is imported when this runs.
"""

import numpy as np

from tcvae_tf.metrics.elbo_decomposition import HALF_LOG_TWO_PI, validate_posteriors

ESTIMATORS = ("mws", "mss")
DEFAULT_BATCH_SIZES = (256, 2048)
_ROW_BLOCK = 128  # rows of the [rows, M, D] density tensor computed at once


def _log_weights(estimator, batch_size, dataset_size):
    """The [M, M] float64 log-weights w_ij (sample i, image j) that training uses."""
    import tensorflow as tf

    from tcvae_tf import objectives

    return objectives.log_importance_weights(batch_size, dataset_size, estimator,
                                             tf.float64).numpy()


def _log_normal(z, loc, log_scale):
    """log Normal(z_id; loc_jd, exp(log_scale_jd)) as [i, j, d] for z [i, D], loc [j, D]."""
    standard = (z[:, None, :] - loc[None]) * np.exp(-log_scale)[None]
    return -0.5 * standard**2 - log_scale[None] - HALF_LOG_TWO_PI


def _logsumexp(values, axis):
    peak = values.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.exp(values - peak).sum(axis=axis))


def own_shares(z, loc, log_scale, log_weights):
    """The own-posterior shares of one minibatch.

    Args:
      z: float64 [M, D], z_i ~ q(z|x_i).
      loc, log_scale: float64 [M, D], the posteriors of the same M images.
      log_weights: float64 [M, M], log w_ij.

    Returns:
      (joint [M], per_dimension [M, D]), each share in [0, 1].
    """
    size = len(z)
    joint = np.empty(size)
    per_dimension = np.empty(z.shape)
    for start in range(0, size, _ROW_BLOCK):
        rows = np.arange(start, min(start + _ROW_BLOCK, size))
        log_density = _log_normal(z[rows], loc, log_scale)  # [rows, M, D]
        weights = log_weights[rows][:, :, None]
        own = log_density[np.arange(len(rows)), rows] + weights[np.arange(len(rows)), rows]
        per_dimension[rows] = np.exp(own - _logsumexp(log_density + weights, axis=1))
        joint_density = log_density.sum(axis=2) + log_weights[rows]
        joint[rows] = np.exp(joint_density[np.arange(len(rows)), rows]
                             - _logsumexp(joint_density, axis=1))
    return joint, per_dimension


def minibatch_saturation(loc, log_scale, batch_sizes=DEFAULT_BATCH_SIZES, num_batches=4,
                         estimators=ESTIMATORS, seed=0):
    """Own-posterior shares of minibatch estimates of log q(z), over random batches.

    Args:
      loc: array [N, D], posterior means of every image of a dataset.
      log_scale: array [N, D], posterior log standard deviations.
      batch_sizes: minibatch sizes M to measure, each in 2 .. N.
      num_batches: random batches (drawn without replacement) per batch size.
      estimators: "mws" and/or "mss".
      seed: seed of the batches and of the samples z_i ~ q(z|x_i).

    Returns:
      dict with "dataset_size", "num_batches", "seed" and, per estimator, per batch size
      (as a string key): "joint_median", "joint_mean" (of the joint share over the
      num_batches * M samples) and "per_dimension_median" ([D], the marginals' shares).

    Raises:
      ValueError: bad posteriors, a batch size outside 2 .. N, an unknown estimator or a
        non-positive number of batches.
    """
    loc, log_scale = validate_posteriors(loc, log_scale)
    count = len(loc)
    batch_sizes = [int(size) for size in batch_sizes]
    bad = [size for size in batch_sizes if not 2 <= size <= count]
    if bad:
        raise ValueError(f"batch size {bad[0]} is outside 2 .. {count} (the number of images)")
    unknown = [name for name in estimators if name not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator {unknown[0]!r}; choose from {', '.join(ESTIMATORS)}")
    if int(num_batches) < 1:
        raise ValueError(f"num_batches must be at least 1, got {num_batches}")
    rng = np.random.default_rng(seed)
    result = {"dataset_size": count, "num_batches": int(num_batches), "seed": seed}
    shares = {(name, size): ([], []) for name in estimators for size in batch_sizes}
    for size in batch_sizes:
        weights = {name: _log_weights(name, size, count) for name in estimators}
        for _ in range(int(num_batches)):
            rows = rng.choice(count, size, replace=False)
            batch_loc, batch_log_scale = loc[rows], log_scale[rows]
            z = batch_loc + np.exp(batch_log_scale) * rng.standard_normal(batch_loc.shape)
            for name in estimators:
                joint, per_dimension = own_shares(z, batch_loc, batch_log_scale, weights[name])
                shares[name, size][0].append(joint)
                shares[name, size][1].append(per_dimension)
    for name in estimators:
        result[name] = {}
        for size in batch_sizes:
            joint = np.concatenate(shares[name, size][0])
            per_dimension = np.concatenate(shares[name, size][1])
            result[name][str(size)] = {
                "joint_median": float(np.median(joint)),
                "joint_mean": float(joint.mean()),
                "per_dimension_median": np.median(per_dimension, axis=0).tolist(),
            }
    return result
