"""The beta-TCVAE objective as pure TensorFlow functions.

For a minibatch of M images x_1..x_M out of a dataset of N, an encoder posterior
q(z|x_j) = prod_d q(z_d|x_j) and one sample z_i ~ q(z|x_i) per image, the KL term of
the ELBO splits into three parts, each estimated per sample i:

```none
log q(z_i)         ~= logsumexp_j( sum_d log q(z_id|x_j) + log w_ij )
log prod_d q(z_id) ~= sum_d logsumexp_j( log q(z_id|x_j) + log w_ij )

MI   = log q(z_i|x_i) - log q(z_i)              index-code mutual information
TC   = log q(z_i) - log prod_d q(z_id)          total correlation
DWKL = log prod_d q(z_id) - log p(z_i)          dimension-wise KL
MI + TC + DWKL = log q(z_i|x_i) - log p(z_i)    the single-sample KL
```

The importance weights w_ij [M, M] come from one of two estimators:

```none
MWS (minibatch-weighted sampling):   w_ij = 1 / (N * M)                 rows sum to 1/N
MSS (minibatch-stratified sampling), K = M - 1:
    w_ii               = 1 / N
    w_i,(i+1) mod M    = (N - K) / (N * K)
    w_ij (all others)  = 1 / K                                          rows sum to 1
```

The weight log w_ij enters log q(z_i) once, and enters each dimension's marginal
mixture once (the same log w_ij in every dimension's logsumexp). The diagonal of the
MSS matrix holds 1/N (a column of 1/N would be a different, biased estimator).

MSS is unbiased for q(z_i) when the batch is a uniformly random draw of distinct images
in random order, as a shuffled pipeline gives: given x_i at position i, each other
position holds each of the N - 1 other images with probability 1 / (N - 1), so every
other image gets expected weight ((N - K) / (N * K) + (K - 1) / K) / (N - 1) = 1 / N.
Which off-diagonal position carries the (N - K) / (N * K) weight does not matter for the
mean. MWS is biased by design: its rows sum to 1/N, so even with the whole dataset as
the batch it estimates q(z) / N; with concentrated, well separated posteriors its
log q(z_i) tends to log q(z_i|x_i) - log(N * M), while MSS's tends to the true
log q(z_i|x_i) - log N.

References: Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in
Variational Autoencoders", NeurIPS 2018, arXiv:1802.04942 (section 4 and appendix C).
"""

import numbers

import tensorflow as tf

from tcvae_tf.distributions import POSTERIORS, PRIORS, check_family, log_density

ESTIMATORS = ("mws", "mss")


def _batch_tensors(z, loc, log_scale):
    """Converts the three [M, D] inputs to tensors of one dtype and checks their shapes."""
    z = tf.convert_to_tensor(z)
    if not z.dtype.is_floating:
        raise ValueError(f"z must be a float tensor, got dtype {z.dtype.name}")
    loc = tf.convert_to_tensor(loc, dtype=z.dtype)
    log_scale = tf.convert_to_tensor(log_scale, dtype=z.dtype)
    for name, tensor in (("z", z), ("loc", loc), ("log_scale", log_scale)):
        if tensor.shape.rank is not None and tensor.shape.rank != 2:
            raise ValueError(f"{name} must have shape [batch, latent_dim], got {tensor.shape}")
    if not (z.shape.is_compatible_with(loc.shape) and z.shape.is_compatible_with(log_scale.shape)):
        raise ValueError(
            f"z, loc and log_scale must have the same shape [batch, latent_dim], got "
            f"{z.shape}, {loc.shape} and {log_scale.shape}"
        )
    return z, loc, log_scale


def _check_estimator(estimator):
    if estimator not in ESTIMATORS:
        allowed = ", ".join(ESTIMATORS)
        raise ValueError(f"unknown estimator {estimator!r}; expected one of: {allowed}")


def _check_dataset_size(dataset_size):
    if (
        isinstance(dataset_size, bool)
        or not isinstance(dataset_size, numbers.Integral)
        or dataset_size < 1
    ):
        raise ValueError(f"dataset_size must be a positive int, got {dataset_size!r}")
    return int(dataset_size)


def _static_batch_size(batch_size, dataset_size, estimator):
    """Validates the batch size; returns it as a Python int when known, else as a tensor.

    Known sizes are checked here (ValueError); sizes only known when a graph runs are
    checked by assertions that raise `tf.errors.InvalidArgumentError` at run time.
    """
    static = tf.get_static_value(batch_size)
    if static is not None:
        batch_size = int(static)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if estimator == "mss" and batch_size < 2:
            raise ValueError(f"MSS needs a batch of at least 2, got batch_size {batch_size}")
        if dataset_size < batch_size:
            raise ValueError(
                f"dataset_size {dataset_size} is smaller than batch_size {batch_size}"
            )
        return batch_size
    batch_size = tf.convert_to_tensor(batch_size, dtype=tf.int32)
    minimum = 2 if estimator == "mss" else 1
    tf.debugging.assert_greater_equal(
        batch_size, minimum, message=f"{estimator.upper()} needs a batch of at least {minimum}"
    )
    tf.debugging.assert_less_equal(
        batch_size, dataset_size, message=f"dataset_size {dataset_size} is smaller than batch_size"
    )
    return batch_size


def _mws_log_weight(batch_size, dataset_size, dtype):
    """The constant MWS log-weight -log(N * M), a scalar of `dtype`."""
    num_pairs = tf.cast(batch_size, tf.float64) * float(dataset_size)
    return tf.cast(-tf.math.log(num_pairs), dtype)


def log_importance_weights(batch_size, dataset_size, estimator="mws", dtype=tf.float32):
    """The log importance weights log w_ij of the MWS or MSS estimator of q(z).

    ```none
    MWS:  w_ij = 1 / (N * M)
    MSS:  K = M - 1;  w_ii = 1 / N;  w_i,(i+1) mod M = (N - K) / (N * K);  else 1 / K
    ```

    MWS rows sum to 1/N; MSS rows sum to 1/N + (N - K) / (N * K) + (K - 1) / K = 1.
    The logarithms are taken in float64 and cast to `dtype`.

    Args:
      batch_size: M, a positive int or a scalar int tensor (the batch axis of `z`).
      dataset_size: N, the number of images in the dataset, a Python int >= M.
      estimator: "mws" or "mss".
      dtype: float dtype of the result.

    Returns:
      Float tensor [M, M] indexed [sample i, data j].

    Raises:
      ValueError: unknown estimator, N < M, M < 1, or M < 2 for MSS (when M is known
        before the graph runs; otherwise `tf.errors.InvalidArgumentError` at run time).

    Example:
      >>> tf.exp(log_importance_weights(3, 10, "mss", tf.float64)).numpy().sum(axis=1)
      array([1., 1., 1.])
    """
    _check_estimator(estimator)
    dataset_size = _check_dataset_size(dataset_size)
    batch_size = _static_batch_size(batch_size, dataset_size, estimator)
    if estimator == "mws":
        return tf.fill([batch_size, batch_size], _mws_log_weight(batch_size, dataset_size, dtype))
    return _mss_log_weights(batch_size, dataset_size, dtype)


def _mss_log_weights(batch_size, dataset_size, dtype):
    """The MSS log-weights [M, M] for an already validated batch size M >= 2."""
    num_images = tf.constant(float(dataset_size), tf.float64)  # N
    num_others = tf.cast(batch_size, tf.float64) - 1.0  # K = M - 1
    log_n, log_k = tf.math.log(num_images), tf.math.log(num_others)
    log_w_self = -log_n
    log_w_next = tf.math.log(num_images - num_others) - log_n - log_k
    log_w_other = -log_k
    index = tf.range(batch_size)
    row, col = index[:, None], index[None, :]  # [sample i, 1], [1, data j]
    log_w = tf.where(
        tf.equal(row, col),
        log_w_self,
        tf.where(tf.equal(col, (row + 1) % batch_size), log_w_next, log_w_other),
    )
    return tf.cast(log_w, dtype)


def log_density_matrix(z, loc, log_scale, family="normal"):
    """Log-density of every sample under every posterior of the batch, per dimension.

    ```none
    out[i, j, d] = log q(z_id | x_j)   with q(.|x_j) = family(loc_jd, exp(log_scale_jd))
    ```

    Built by broadcasting [M, 1, D] against [1, M, D]; no loops.

    Args:
      z: float tensor [M, D], one sample per image.
      loc: float tensor [M, D], posterior locations.
      log_scale: float tensor [M, D], posterior log-scales.
      family: one of `tcvae_tf.distributions.POSTERIORS`.

    Returns:
      Float tensor [M, M, D] indexed [sample i, data j, dim d], dtype of `z`.

    Example:
      >>> log_density_matrix(tf.zeros([4, 2]), tf.zeros([4, 2]), tf.zeros([4, 2])).shape
      TensorShape([4, 4, 2])
    """
    check_family(family, POSTERIORS, "posterior")
    z, loc, log_scale = _batch_tensors(z, loc, log_scale)
    # [sample i, 1, dim d] against [1, data j, dim d].
    return log_density(z[:, None, :], loc[None, :, :], log_scale[None, :, :], family)


def kl_decomposition(
    z, loc, log_scale, dataset_size, estimator="mws", posterior="normal", prior="normal"
):
    """Per-sample estimates of MI, TC and DWKL, the three parts of the ELBO's KL term.

    ```none
    log q(z_i|x_i)     = sum_d log q(z_id|x_i)
    log p(z_i)         = sum_d log p(z_id)
    log q(z_i)         ~= logsumexp_j( sum_d log q(z_id|x_j) + log w_ij )
    log prod_d q(z_id) ~= sum_d logsumexp_j( log q(z_id|x_j) + log w_ij )
    mi   = log q(z_i|x_i) - log q(z_i)
    tc   = log q(z_i) - log prod_d q(z_id)
    dwkl = log prod_d q(z_id) - log p(z_i)
    mi + tc + dwkl = log q(z_i|x_i) - log p(z_i)
    ```

    The beta-TCVAE loss is mean_i[-log p(x_i|z_i) + alpha * mi + beta * tc + gamma * dwkl].
    Works eagerly and under `tf.function` (also with an unknown batch size), in the dtype
    of `z` (pass float32 under mixed precision).

    Args:
      z: float tensor [M, D], one sample z_i ~ q(z|x_i) per image.
      loc: float tensor [M, D], posterior locations of the batch.
      log_scale: float tensor [M, D], posterior log-scales of the batch.
      dataset_size: N, the number of images in the training set, a Python int >= M.
      estimator: "mws" (minibatch-weighted) or "mss" (minibatch-stratified sampling).
      posterior: one of `tcvae_tf.distributions.POSTERIORS`.
      prior: one of `tcvae_tf.distributions.PRIORS` (standard Normal or Laplace(0, 1)).

    Returns:
      Dict of float tensors [M]: "mi", "tc", "dwkl", "log_qz_given_x", "log_qz",
      "log_prod_qzi", "log_pz".

    Raises:
      ValueError: bad shapes, unknown estimator or family, N < M, or M < 2 for MSS.

    Example:
      >>> parts = kl_decomposition(z, loc, log_scale, dataset_size=737280, estimator="mss")
      >>> loss = tf.reduce_mean(-log_px + alpha * parts["mi"] + beta * parts["tc"]
      ...                       + gamma * parts["dwkl"])
    """
    _check_estimator(estimator)
    check_family(posterior, POSTERIORS, "posterior")
    check_family(prior, PRIORS, "prior")
    dataset_size = _check_dataset_size(dataset_size)
    z, loc, log_scale = _batch_tensors(z, loc, log_scale)
    batch_size = z.shape[0] if z.shape[0] is not None else tf.shape(z)[0]
    batch_size = _static_batch_size(batch_size, dataset_size, estimator)

    # [sample i, dim d]
    log_qz_given_x = tf.reduce_sum(log_density(z, loc, log_scale, posterior), axis=1)
    log_pz = tf.reduce_sum(log_density(z, 0.0, 0.0, prior), axis=1)

    # [sample i, data j, dim d]
    log_q_matrix = log_density_matrix(z, loc, log_scale, posterior)
    # [sample i, data j]: log q(z_i|x_j), the joint over dimensions.
    log_q_joint = tf.reduce_sum(log_q_matrix, axis=2)

    if estimator == "mws":
        # A constant weight comes out of the logsumexp: logsumexp_j(a_j + c) = logsumexp_j(a_j) + c.
        log_w = _mws_log_weight(batch_size, dataset_size, z.dtype)
        log_qz = tf.reduce_logsumexp(log_q_joint, axis=1) + log_w
        # [sample i, dim d]: log q(z_id), the weight once in each dimension's mixture.
        log_qz_marginals = tf.reduce_logsumexp(log_q_matrix, axis=1) + log_w
    else:
        log_w = _mss_log_weights(batch_size, dataset_size, z.dtype)  # [sample i, data j]
        log_qz = tf.reduce_logsumexp(log_q_joint + log_w, axis=1)
        # [sample i, dim d]: log q(z_id), the same log w_ij in each dimension's mixture.
        log_qz_marginals = tf.reduce_logsumexp(log_q_matrix + log_w[:, :, None], axis=1)
    log_prod_qzi = tf.reduce_sum(log_qz_marginals, axis=1)

    return {
        "mi": log_qz_given_x - log_qz,
        "tc": log_qz - log_prod_qzi,
        "dwkl": log_prod_qzi - log_pz,
        "log_qz_given_x": log_qz_given_x,
        "log_qz": log_qz,
        "log_prod_qzi": log_prod_qzi,
        "log_pz": log_pz,
    }


def analytic_kl(loc, log_scale):
    """KL( Normal(loc, exp(log_scale)) || Normal(0, 1) ), summed over dimensions.

    ```none
    KL = sum_d ( loc_d**2 + exp(2 * log_scale_d) - 1 - 2 * log_scale_d ) / 2
    ```

    Args:
      loc: float tensor [M, D].
      log_scale: float tensor [M, D].

    Returns:
      Float tensor [M].

    Example:
      >>> analytic_kl(tf.zeros([2, 3]), tf.zeros([2, 3])).numpy()
      array([0., 0.], dtype=float32)
    """
    loc = tf.convert_to_tensor(loc)
    log_scale = tf.convert_to_tensor(log_scale, dtype=loc.dtype)
    # [sample i, dim d]
    kl_per_dim = 0.5 * (tf.square(loc) + tf.exp(2.0 * log_scale) - 1.0) - log_scale
    return tf.reduce_sum(kl_per_dim, axis=-1)


def sampled_kl(z, loc, log_scale, posterior="normal", prior="normal"):
    """Single-sample estimate of KL(q(z|x) || p(z)): log q(z_i|x_i) - log p(z_i).

    Unbiased for the analytic KL when z_i ~ q(z|x_i); equals mi + tc + dwkl of
    `kl_decomposition` for the same inputs.

    Args:
      z: float tensor [M, D], z_i ~ q(z|x_i).
      loc: float tensor [M, D].
      log_scale: float tensor [M, D].
      posterior: one of `tcvae_tf.distributions.POSTERIORS`.
      prior: one of `tcvae_tf.distributions.PRIORS`.

    Returns:
      Float tensor [M].

    Example:
      >>> sampled_kl(tf.zeros([2, 3]), tf.zeros([2, 3]), tf.zeros([2, 3])).numpy()
      array([0., 0.], dtype=float32)
    """
    check_family(posterior, POSTERIORS, "posterior")
    check_family(prior, PRIORS, "prior")
    z, loc, log_scale = _batch_tensors(z, loc, log_scale)
    # [sample i, dim d]
    log_ratio = log_density(z, loc, log_scale, posterior) - log_density(z, 0.0, 0.0, prior)
    return tf.reduce_sum(log_ratio, axis=1)


def _check_warmup_steps(warmup_steps):
    if warmup_steps is None:
        return 0
    if (
        isinstance(warmup_steps, bool)
        or not isinstance(warmup_steps, numbers.Integral)
        or warmup_steps < 0
    ):
        raise ValueError(f"warmup_steps must be a non-negative int or None, got {warmup_steps!r}")
    return int(warmup_steps)


def beta_schedule(step, beta, warmup_steps=None, dtype=tf.float32):
    """Linear warm-up of the TC weight: beta_t = beta * min(1, t / warmup_steps).

    Args:
      step: training step t >= 0, a Python int or an int tensor (e.g.
        `optimizer.iterations`).
      beta: the final weight.
      warmup_steps: int; None or 0 turns the warm-up off (beta_t = beta).
      dtype: float dtype of the result.

    Returns:
      Scalar float tensor beta_t.

    Example:
      >>> float(beta_schedule(3500, 6.0, warmup_steps=7000))
      3.0
    """
    warmup_steps = _check_warmup_steps(warmup_steps)
    beta = tf.convert_to_tensor(beta, dtype=dtype)
    if warmup_steps == 0:
        return beta
    progress = tf.cast(step, dtype) / float(warmup_steps)  # t / warmup
    return beta * tf.minimum(tf.constant(1.0, dtype), progress)


def gamma_schedule(step, gamma, warmup_steps=None, dtype=tf.float32):
    """Warm-up of the DWKL weight: gamma_t = gamma * (1 - max(0, 0.95 - t / warmup_steps)).

    Starts at 0.05 * gamma and reaches gamma at t = 0.95 * warmup_steps. For gamma = 1
    this is the authors' schedule 1 - max(0, 0.95 - t / warmup).

    Args:
      step: training step t >= 0, a Python int or an int tensor.
      gamma: the final weight.
      warmup_steps: int; None or 0 turns the warm-up off (gamma_t = gamma).
      dtype: float dtype of the result.

    Returns:
      Scalar float tensor gamma_t.

    Example:
      >>> round(float(gamma_schedule(0, 1.0, warmup_steps=7000)), 6)
      0.05
    """
    warmup_steps = _check_warmup_steps(warmup_steps)
    gamma = tf.convert_to_tensor(gamma, dtype=dtype)
    if warmup_steps == 0:
        return gamma
    progress = tf.cast(step, dtype) / float(warmup_steps)  # t / warmup
    remaining = tf.maximum(tf.constant(0.0, dtype), 0.95 - progress)
    return gamma * (1.0 - remaining)
