"""The objectives as pure TensorFlow functions: beta-TCVAE's decomposition of the KL term
(below), FactorVAE's permute-dims and density-ratio estimate of the TC, DIP-VAE's
covariance penalties.

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
Kim, Mnih, "Disentangling by Factorising", ICML 2018. Kumar, Sattigeri, Balakrishnan,
"Variational Inference of Disentangled Latent Concepts from Unlabeled Observations",
ICLR 2018.
"""

import math
import numbers

import tensorflow as tf

from tcvae_tf.distributions import POSTERIORS, PRIORS, check_family, log_density

ESTIMATORS = ("mws", "mss")

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
_LOG_TWO = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)


def _batch_tensors(z, loc, log_scale, rows=False):
    """Converts the three [M, D] inputs to tensors of one dtype and checks their shapes.

    With `rows`, z may hold fewer rows than loc and log_scale (a block of the batch's
    samples against all of its posteriors): only the latent dimensions must agree.
    """
    z = tf.convert_to_tensor(z)
    if not z.dtype.is_floating:
        raise ValueError(f"z must be a float tensor, got dtype {z.dtype.name}")
    loc = tf.convert_to_tensor(loc, dtype=z.dtype)
    log_scale = tf.convert_to_tensor(log_scale, dtype=z.dtype)
    for name, tensor in (("z", z), ("loc", loc), ("log_scale", log_scale)):
        if tensor.shape.rank is not None and tensor.shape.rank != 2:
            raise ValueError(f"{name} must have shape [batch, latent_dim], got {tensor.shape}")
    z_shape = z.shape[1:] if rows else z.shape
    params_shape = loc.shape[1:] if rows else loc.shape
    if not (z_shape.is_compatible_with(params_shape)
            and loc.shape.is_compatible_with(log_scale.shape)):
        expected = ("loc and log_scale the same shape [batch, latent_dim] and z as many "
                    "latent dimensions" if rows else "the same shape [batch, latent_dim]")
        raise ValueError(
            f"z, loc and log_scale must have {expected}, got "
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


def _mss_log_weight_values(batch_size, dataset_size, dtype):
    """The three MSS log-weights (self, next, other) as scalars of `dtype`, for M >= 2.

    ```none
    K = M - 1;  log w_ii = -log N;  log w_i,(i+1) mod M = log((N - K) / (N * K));  else -log K
    ```
    """
    num_images = tf.constant(float(dataset_size), tf.float64)  # N
    num_others = tf.cast(batch_size, tf.float64) - 1.0  # K = M - 1
    log_n, log_k = tf.math.log(num_images), tf.math.log(num_others)
    log_w_self = -log_n
    log_w_next = tf.math.log(num_images - num_others) - log_n - log_k
    log_w_other = -log_k
    return tuple(tf.cast(value, dtype) for value in (log_w_self, log_w_next, log_w_other))


def _log_weight_values(batch_size, dataset_size, estimator, dtype):
    """(log w_self, log w_next, log w_other) of an estimator as a float tensor [3] of `dtype`.

    MWS has one weight for every pair; MSS has the three of `_mss_log_weight_values`.
    """
    if estimator == "mws":
        return tf.fill([3], _mws_log_weight(batch_size, dataset_size, dtype))
    return tf.stack(_mss_log_weight_values(batch_size, dataset_size, dtype))


def _structured_log_weights(first_row, num_rows, columns, log_weights):
    """Rows first_row .. first_row + num_rows - 1 of the [M, M] log-weight matrix.

    `log_weights` holds (log w_self, log w_next, log w_other): w_ii, w_i,(i+1) mod M and
    every other w_ij (all three equal for MWS). Rows past M - 1 (padding) get finite values.

    Args:
      first_row: int or scalar int tensor, the first sample index i.
      num_rows: Python int, the number of rows.
      columns: int tensor [M], 0 .. M - 1 (passed in so the shape M need not be known
        inside XLA loops).
      log_weights: float tensor [3].

    Returns:
      Float tensor [num_rows, M] indexed [sample i, data j].
    """
    batch_size = tf.size(columns)
    row = first_row + tf.range(num_rows)[:, None]  # [sample i, 1]
    col = columns[None, :]  # [1, data j]
    return tf.where(
        tf.equal(col, row),
        log_weights[0],
        tf.where(tf.equal(col, (row + 1) % batch_size), log_weights[1], log_weights[2]),
    )


def _mss_log_weights(batch_size, dataset_size, dtype):
    """The MSS log-weights [M, M] for an already validated batch size M >= 2."""
    log_weights = tf.stack(_mss_log_weight_values(batch_size, dataset_size, tf.float64))
    columns = tf.range(batch_size)
    return tf.cast(_structured_log_weights(0, batch_size, columns, log_weights), dtype)


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


# Rows of the [M, M, D] log-density tensor handled at a time by `_fused_log_mixtures`: a
# block of [D, 64, M] float32 values (5 MB at M = 2048, D = 10) stays in the CPU caches.
_BLOCK_ROWS = 64


def _standardised_distance(z_block, loc_t, inv_scale_t, family):
    """u[d, i, j] = (z_id - loc_jd) * inv_scale_jd for a block of samples i.

    Args:
      z_block: [D, B] samples of the block, transposed.
      loc_t: [D, M] posterior locations, transposed.
      inv_scale_t: [D, M] exp(-log_scale), times sqrt(1/2) for the Normal.
      family: "normal" or "laplace".

    Returns:
      u [D, B, M] and the log-density a_jd - f(u) [D, B, M] without its normaliser a_jd,
      where f(u) = u**2 (normal) or |u| (laplace).
    """
    distance = (z_block[:, :, None] - loc_t[:, None, :]) * inv_scale_t[:, None, :]
    if family == "normal":
        return distance, -tf.square(distance)
    return distance, -tf.abs(distance)


def _fused_log_mixtures(z, loc, log_scale, log_weights, family, row_offset=0):
    """log q(z_i) and log q(z_id) of the minibatch estimators, without an [M, M, D] tensor.

    ```none
    log q(z_i|x_j)[d] = a_jd - f(u_ijd),  u_ijd = (z_id - loc_jd) / scale_jd (/ sqrt 2 Normal)
    log_qz[i]         = logsumexp_j( sum_d log q(z_id|x_jd) + log w_ij )
    log_marginals[i,d] = logsumexp_j( log q(z_id|x_jd) + log w_ij )
    ```

    Equal to building `log_density_matrix` and reducing it, but computed in blocks of
    `_BLOCK_ROWS` samples so each block's [D, B, M] values stay in cache, and with a
    hand-written gradient that recomputes them block by block instead of keeping them:

    ```none
    W_ijd = g_marg[i,d] * softmax_j(log q[i,j,d] + log w_ij) + g_joint[i] * softmax_j(joint[i,j])
    t = W * f'(u);   dL/dz_id = -sum_j t * s_jd;   dL/dloc_jd = s_jd * sum_i t;
    dL/dlog_scale_jd = sum_i (t * u - W)        (s = 1 / scale, times 1/sqrt 2 for the Normal)
    ```

    Compiled with XLA (`jit_compile`), also when the calling train step is not.

    `z` may hold only the samples i = row_offset .. row_offset + B - 1 of the batch (a
    replica's rows, see `kl_decomposition`): their rows of the results are computed against
    all M posteriors, with the weights of their global indices i.

    Args:
      z: float tensor [B, D], samples row_offset .. row_offset + B - 1 (B = M: all).
      loc, log_scale: float tensors [M, D], the posteriors of the whole batch.
      log_weights: float tensor [3], (log w_self, log w_next, log w_other).
      family: "normal" or "laplace".
      row_offset: int or scalar int32 tensor, the global index of the first row of `z`.

    Returns:
      log_qz [B] and log_marginals [B, D], dtype of `z`; gradients flow to z [B, D] and
      to loc and log_scale [M, D].
    """
    # The gradient is attached here, outside the two compiled functions, so TensorFlow never
    # differentiates their loops itself (eagerly or in a graph): the custom gradient calls
    # the compiled backward pass with the forward pass's padded results.
    log_weights = tf.stop_gradient(log_weights)
    row_offset = tf.convert_to_tensor(row_offset, tf.int32)

    @tf.custom_gradient
    def log_mixtures(z, loc, log_scale):
        # stop_gradient: no tape records the compiled call (it would ask for its loops'
        # intermediates); the gradient below is the only one.
        joint_t, marginal = _compiled_forward(tf.stop_gradient(z), tf.stop_gradient(loc),
                                              tf.stop_gradient(log_scale), log_weights,
                                              row_offset, family=family)
        batch_size = tf.shape(z)[0]  # rows of this block of samples

        def gradient(grad_log_qz, grad_log_marginals):
            if grad_log_qz is None:  # an output that the loss does not use
                grad_log_qz = tf.zeros_like(joint_t[:batch_size])
            if grad_log_marginals is None:
                grad_log_marginals = tf.zeros_like(marginal[:batch_size])
            return _compiled_backward(z, loc, log_scale, log_weights, row_offset, joint_t,
                                      marginal, grad_log_qz, grad_log_marginals,
                                      family=family)

        return (joint_t[:batch_size], marginal[:batch_size]), gradient

    return log_mixtures(z, loc, log_scale)


def _block_layout(batch_size):
    """Number of blocks of `_BLOCK_ROWS` rows and padding rows for M (or B) samples.

    The block size is the same for every batch (also M < 64): the forward and backward
    passes may be traced with and without a static batch size and must agree.
    """
    num_blocks = (batch_size + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    return num_blocks, num_blocks * _BLOCK_ROWS - batch_size


def _block_setup(z, loc, log_scale, log_weights, row_offset, family):
    """What the forward and backward passes share: the layout and a block's log-densities.

    Returns:
      (num_blocks, padding, inv_scale_t, z_t, block_terms): number of blocks, padding
      rows, exp(-log_scale) transposed [d, data j] (times sqrt(1/2) for the Normal), z
      transposed and padded to whole blocks [d, sample i], and block_terms(first) ->
      (u [d, i, j], log q(z_id|x_jd) [d, i, j], log w_ij [i, j]) for the rows
      first .. first + _BLOCK_ROWS - 1 of z, whose weights are those of the global samples
      row_offset + first ...
    """
    num_blocks, padding = _block_layout(tf.shape(z)[0])
    columns = tf.range(tf.shape(loc)[0])  # data index j, 0 .. M - 1
    # [dim d, data j]: posterior parameters of the batch.
    log_scale_t = tf.transpose(log_scale)
    loc_t = tf.transpose(loc)
    inv_scale_t = tf.exp(-log_scale_t)
    if family == "normal":
        inv_scale_t = inv_scale_t * _SQRT_HALF
        normaliser_t = -(log_scale_t + _HALF_LOG_TWO_PI)
    else:
        normaliser_t = -(log_scale_t + _LOG_TWO)
    # [dim d, sample i], padded with zero columns to whole blocks.
    z_t = tf.pad(tf.transpose(z), [[0, 0], [0, padding]])

    def block_terms(first):
        z_block = tf.slice(z_t, [0, first], [-1, _BLOCK_ROWS])  # [dim d, sample i]
        distance, log_kernel = _standardised_distance(z_block, loc_t, inv_scale_t, family)
        log_q = normaliser_t[:, None, :] + log_kernel  # [dim d, sample i, data j]
        log_w = _structured_log_weights(row_offset + first, _BLOCK_ROWS, columns,
                                        log_weights)  # [i, j]
        return distance, log_q, log_w

    return num_blocks, padding, inv_scale_t, z_t, block_terms


def _forward(z, loc, log_scale, log_weights, row_offset, family):
    """log q(z_i) [padded B] and log q(z_id) [padded B, D], block by block.

    The results of the blocks are written into tensors carried through the loop, not into
    TensorArrays (whose size XLA needs as a constant when the loop is compiled). Padding
    rows (zero samples) get finite values that the caller drops.
    """
    num_blocks, _, _, z_t, block_terms = _block_setup(
        z, loc, log_scale, log_weights, row_offset, family)

    def forward_block(index, joint_t, marginal):
        first = index * _BLOCK_ROWS
        _, log_q, log_w = block_terms(first)
        rows = (first + tf.range(_BLOCK_ROWS))[:, None]  # [sample i in block, 1]
        joint = tf.reduce_logsumexp(tf.reduce_sum(log_q, axis=0) + log_w, axis=1)  # [i]
        block_marginal = tf.reduce_logsumexp(log_q + log_w[None], axis=2)  # [d, i]
        return (index + 1, tf.tensor_scatter_nd_update(joint_t, rows, joint),
                tf.tensor_scatter_nd_update(marginal, rows, tf.transpose(block_marginal)))

    _, joint_t, marginal = tf.while_loop(
        lambda index, *_: index < num_blocks, forward_block,
        (0, tf.zeros_like(z_t[0]), tf.zeros_like(tf.transpose(z_t))))
    return joint_t, marginal


def _backward(z, loc, log_scale, log_weights, row_offset, joint_t, marginal, grad_log_qz,
              grad_log_marginals, family):
    """Gradients for z [B, D], loc and log_scale [M, D], recomputing each block's log-densities.

    Args:
      joint_t, marginal: the padded results of `_forward`.
      grad_log_qz [B], grad_log_marginals [B, D]: the incoming gradients.
    """
    num_blocks, padding, inv_scale_t, z_t, block_terms = _block_setup(
        z, loc, log_scale, log_weights, row_offset, family)
    marginal_t = tf.transpose(marginal)  # [d, sample i], padded
    grad_joint_t = tf.pad(grad_log_qz, [[0, padding]])  # [sample i], padded
    # [dim d, sample i], padded
    grad_marginal_t = tf.pad(tf.transpose(grad_log_marginals), [[0, 0], [0, padding]])

    def backward_block(index, grad_z, grad_loc_t, grad_log_scale_t):
        first = index * _BLOCK_ROWS
        distance, log_q, log_w = block_terms(first)
        joint = tf.reduce_sum(log_q, axis=0) + log_w  # [i, j]
        joint_lse = tf.slice(joint_t, [first], [_BLOCK_ROWS])  # [i]
        marginal_lse = tf.slice(marginal_t, [0, first], [-1, _BLOCK_ROWS])  # [d, i]
        grad_joint = tf.slice(grad_joint_t, [first], [_BLOCK_ROWS])
        grad_marginal = tf.slice(grad_marginal_t, [0, first], [-1, _BLOCK_ROWS])
        # [d, i, j]: d loss / d log q(z_id|x_jd), softmax weights of both mixtures.
        weight = (
            grad_marginal[:, :, None] * tf.exp(log_q + log_w[None] - marginal_lse[:, :, None])
            + (grad_joint[:, None] * tf.exp(joint - joint_lse[:, None]))[None]
        )
        # weight * f'(u)
        slope = weight * (2.0 * distance if family == "normal" else tf.sign(distance))
        grad_z_block = -tf.reduce_sum(slope * inv_scale_t[:, None, :], axis=2)  # [d, i]
        grad_loc_t += inv_scale_t * tf.reduce_sum(slope, axis=1)
        grad_log_scale_t += tf.reduce_sum(slope * distance - weight, axis=1)
        rows = (first + tf.range(_BLOCK_ROWS))[:, None]  # [sample i in block, 1]
        grad_z = tf.tensor_scatter_nd_update(grad_z, rows, tf.transpose(grad_z_block))
        return index + 1, grad_z, grad_loc_t, grad_log_scale_t

    zeros_t = tf.transpose(tf.zeros_like(loc))  # [d, data j]
    _, grad_z, grad_loc_t, grad_log_scale_t = tf.while_loop(
        lambda index, *_: index < num_blocks, backward_block,
        (0, tf.zeros_like(tf.transpose(z_t)), zeros_t, zeros_t))
    # grad_z [sample i, d], padded
    return (grad_z[:tf.shape(z)[0]], tf.transpose(grad_loc_t), tf.transpose(grad_log_scale_t))


_compiled_forward = tf.function(_forward, jit_compile=True, autograph=False)
_compiled_backward = tf.function(_backward, jit_compile=True, autograph=False)


def kl_decomposition(
    z, loc, log_scale, dataset_size, estimator="mws", posterior="normal", prior="normal",
    row_offset=None,
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
    of `z` (pass float32 under mixed precision). The [M, M, D] log-densities are computed
    in cache-sized blocks by an XLA-compiled function with its own gradient and never
    stored whole (about 4x faster forward + backward at M = 2048; see
    `_fused_log_mixtures`); the values equal reducing `log_density_matrix`.

    A share of the estimate (data parallelism): with `row_offset`, `z` holds only the
    samples i = row_offset .. row_offset + B - 1 of a batch whose M posteriors are `loc`
    and `log_scale`, and the results are those rows of the full decomposition, the
    [B, M, D] share of the [M, M, D] work. M, log(N * M) and the MSS pairs (i, i + 1 mod M)
    are the whole batch's, so the shares of R replicas, concatenated, equal the result on
    one device, values and gradients (to z, and to all of loc and log_scale).

    Args:
      z: float tensor [M, D], one sample z_i ~ q(z|x_i) per image (with `row_offset`:
        [B, D], the samples of rows row_offset .. row_offset + B - 1).
      loc: float tensor [M, D], posterior locations of the batch.
      log_scale: float tensor [M, D], posterior log-scales of the batch.
      dataset_size: N, the number of images in the training set, a Python int >= M.
      estimator: "mws" (minibatch-weighted) or "mss" (minibatch-stratified sampling).
      posterior: one of `tcvae_tf.distributions.POSTERIORS`.
      prior: one of `tcvae_tf.distributions.PRIORS` (standard Normal or Laplace(0, 1)).
      row_offset: None (z is the whole batch), or an int or scalar int tensor: the global
        index of z's first row, 0 <= row_offset <= M - B.

    Returns:
      Dict of float tensors [M] (with `row_offset`: [B]): "mi", "tc", "dwkl",
      "log_qz_given_x", "log_qz", "log_prod_qzi", "log_pz".

    Raises:
      ValueError: bad shapes, unknown estimator or family, N < M, M < 2 for MSS, or rows
        out of the batch (when known before the graph runs).

    Example:
      >>> parts = kl_decomposition(z, loc, log_scale, dataset_size=737280, estimator="mss")
      >>> loss = tf.reduce_mean(-log_px + alpha * parts["mi"] + beta * parts["tc"]
      ...                       + gamma * parts["dwkl"])
    """
    _check_estimator(estimator)
    check_family(posterior, POSTERIORS, "posterior")
    check_family(prior, PRIORS, "prior")
    dataset_size = _check_dataset_size(dataset_size)
    rows = row_offset is not None
    z, loc, log_scale = _batch_tensors(z, loc, log_scale, rows=rows)
    batch_size = loc.shape[0] if loc.shape[0] is not None else tf.shape(loc)[0]
    batch_size = _static_batch_size(batch_size, dataset_size, estimator)
    own_loc, own_log_scale = loc, log_scale
    if rows:
        row_offset = _check_row_offset(row_offset, z.shape[0], batch_size)
        # [sample i, dim d]: the posteriors of z's own rows.
        own_loc = tf.slice(loc, [row_offset, 0], [tf.shape(z)[0], -1])
        own_log_scale = tf.slice(log_scale, [row_offset, 0], [tf.shape(z)[0], -1])

    # [sample i, dim d]
    log_qz_given_x = tf.reduce_sum(log_density(z, own_loc, own_log_scale, posterior), axis=1)
    log_pz = tf.reduce_sum(log_density(z, 0.0, 0.0, prior), axis=1)

    log_weights = _log_weight_values(batch_size, dataset_size, estimator, z.dtype)
    # [sample i], [sample i, dim d]
    log_qz, log_qz_marginals = _fused_log_mixtures(
        z, loc, log_scale, log_weights, posterior, row_offset=row_offset if rows else 0)
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


def _check_row_offset(row_offset, num_rows, batch_size):
    """Validates a block of rows row_offset .. row_offset + B - 1 of a batch of M samples.

    Known values are checked here (ValueError); the rest are left to the slicing ops.
    Returns the offset as a scalar int32 tensor.
    """
    static = tf.get_static_value(row_offset)
    if static is not None and not isinstance(batch_size, tf.Tensor) and num_rows is not None:
        if not 0 <= int(static) <= batch_size - num_rows:
            raise ValueError(f"rows {int(static)} .. {int(static) + num_rows - 1} are not "
                             f"rows of a batch of {batch_size}")
    return tf.cast(row_offset, tf.int32)


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


# -- FactorVAE: total correlation by the density-ratio trick ------------------------------


def permute_dims(z, seed):
    """Kim and Mnih's permute-dims: each dimension shuffled independently across the batch.

    ```none
    out[i, d] = z[pi_d(i), d]      pi_1, ..., pi_D independent random permutations of 1..M
    ```

    If the rows of z are samples of q(z), the rows of the result are (approximately, for a
    large batch) samples of prod_d q(z_d): every dimension's marginal is kept, the
    dependence between dimensions is broken.

    Args:
      z: float tensor [M, D].
      seed: int tensor [2], the stateless seed (the same seed, the same permutations).

    Returns:
      Float tensor [M, D].

    References:
      Kim, Mnih. Disentangling by Factorising. ICML 2018, algorithm 1.
    """
    z = tf.convert_to_tensor(z)
    # Sorting independent uniform keys gives a uniform random permutation per column.
    keys = tf.random.stateless_uniform(tf.shape(z), seed=seed)  # [i, d]
    order = tf.argsort(keys, axis=0)  # [i, d]: row of z that lands in row i of column d
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(order), batch_dims=1))


def density_ratio_tc(logits):
    """The discriminator's estimate of the total correlation, from its logits on q(z).

    With D(z) = sigmoid(l(z)) the probability that z came from q(z) rather than from
    prod_d q(z_d), an optimal D gives D / (1 - D) = q(z) / prod_d q(z_d), so

    ```none
    TC = E_q(z)[ log q(z) - log prod_d q(z_d) ] ~= mean_i log(D_i / (1 - D_i)) = mean_i l_i
    ```

    Args:
      logits: float tensor [M], l(z_i) for samples z_i of q(z).

    Returns:
      Scalar float tensor.
    """
    return tf.reduce_mean(logits)


def discriminator_loss(real_logits, permuted_logits, mean=tf.reduce_mean):
    """The discriminator's cross-entropy: q(z) samples labelled 1, permuted ones 0.

    ```none
    loss = -(1/2) mean_i log sigmoid(l(z_i)) - (1/2) mean_j log(1 - sigmoid(l(z'_j)))
         =  (1/2) mean_i softplus(-l(z_i))   + (1/2) mean_j softplus(l(z'_j))
    ```

    Args:
      real_logits: float tensor [M], logits on samples of q(z).
      permuted_logits: float tensor [M'], logits on permuted samples (prod_d q(z_d)).
      mean: the reduction of a vector of per-sample values (a replica passes its
        ``ReplicaBatch.mean``: its part of the global mean).

    Returns:
      Scalar float tensor.
    """
    return 0.5 * (mean(tf.nn.softplus(-real_logits)) + mean(tf.nn.softplus(permuted_logits)))


def discriminator_accuracy(real_logits, permuted_logits, mean=tf.reduce_mean):
    """The discriminator's accuracy, the two kinds of samples weighted equally (``mean``
    as in ``discriminator_loss``).

    Returns:
      Scalar float32 tensor in [0, 1].
    """
    def share(condition):
        return mean(tf.cast(condition, tf.float32))

    return 0.5 * (share(real_logits > 0) + share(permuted_logits < 0))


# -- DIP-VAE: covariance penalties ---------------------------------------------------------


def posterior_variance(log_scale, posterior="normal"):
    """The variance of each posterior dimension: exp(2 log_scale) (normal) or
    2 exp(2 log_scale) (laplace)."""
    check_family(posterior, POSTERIORS, "posterior")
    variance = tf.exp(2.0 * tf.convert_to_tensor(log_scale, dtype=tf.float32))
    return variance if posterior == "normal" else 2.0 * variance


def dip_covariance(loc, log_scale=None, posterior="normal"):
    """The covariance that DIP-VAE pulls towards the identity, over a batch.

    ```none
    DIP-VAE-I  (log_scale None):  C = Cov_i[ mu_i ]
    DIP-VAE-II:                   C = Cov_i[ mu_i ] + mean_i diag(sigma_i**2)   (= Cov of q(z))
    Cov_i[ mu_i ] = mean_i mu_i mu_i^T - (mean_i mu_i)(mean_i mu_i)^T        (1/M, as the paper)
    ```

    Args:
      loc: float tensor [M, D], posterior means mu_i.
      log_scale: float tensor [M, D], or None for DIP-VAE-I.
      posterior: the posterior family (for its variance).

    Returns:
      Float tensor [D, D].

    References:
      Kumar, Sattigeri, Balakrishnan. Variational Inference of Disentangled Latent
      Concepts from Unlabeled Observations. ICLR 2018, equations 6 and 7.
    """
    loc = tf.convert_to_tensor(loc, dtype=tf.float32)
    centred = loc - tf.reduce_mean(loc, axis=0, keepdims=True)  # [i, d]
    covariance = tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(loc)[0],
                                                                          tf.float32)
    if log_scale is None:
        return covariance
    mean_variance = tf.reduce_mean(posterior_variance(log_scale, posterior), axis=0)  # [d]
    return covariance + tf.linalg.diag(mean_variance)


def dip_penalties(covariance):
    """The two parts of DIP-VAE's penalty on a covariance C [D, D].

    ```none
    off_diagonal = sum_{i != j} C_ij**2        diagonal = sum_i (C_ii - 1)**2
    penalty = lambda_od * off_diagonal + lambda_d * diagonal
    ```

    Both are 0 exactly when C is the identity.

    Returns:
      {"off_diagonal": scalar, "diagonal": scalar}.
    """
    diagonal = tf.linalg.diag_part(covariance)
    off_diagonal = covariance - tf.linalg.diag(diagonal)
    return {"off_diagonal": tf.reduce_sum(tf.square(off_diagonal)),
            "diagonal": tf.reduce_sum(tf.square(diagonal - 1.0))}
