"""ELBO decomposition over a whole dataset, and the aggregate-posterior density kernel.

The aggregate posterior of a dataset of N images is the mixture

```none
q(z) = (1/N) sum_n q(z | x_n),        q(z | x_n) = prod_d Normal(z_d; loc_nd, exp(log_scale_nd))
```

`log_mixture_density` evaluates log q(z) and the per-dimension marginals log q(z_d) exactly
(no minibatch estimate) for many samples z, streaming over the N posteriors in chunks under
`tf.function(jit_compile=True)`. Both the sampling MIG estimator and `elbo_decomposition` use
it. The decomposition of the KL term of the ELBO (Chen et al. 2018, eq. 2) is then

```none
E_n KL(q(z|x_n) || p(z)) = MI + TC + DWKL
MI   = E[log q(z|x_n) - log q(z)]               index-code mutual information
TC   = E[log q(z) - log prod_d q(z_d)]          total correlation
DWKL = E[log prod_d q(z_d) - log p(z)]          dimension-wise KL
```

with n uniform over the dataset and z ~ q(z|x_n).

References:
  Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in Variational
  Autoencoders", NeurIPS 2018 (arXiv 1802.04942).
"""

import functools
import math

import numpy as np

from tcvae_tf.metrics.utils import as_float_matrix, check_finite, check_positive_int

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

# Kernel call sizes: samples x images per XLA call (the [D, s, n] tensor is fused, never stored).
DEFAULT_SAMPLE_CHUNK = 512
DEFAULT_DATA_CHUNK = 8192


# --------------------------------------------------------------------------- validation


def validate_posteriors(loc, log_scale):
    """Checks Normal posterior parameters and returns them as float64 arrays.

    Args:
      loc: array [N, D], posterior means.
      log_scale: array [N, D], log standard deviations.

    Returns:
      (loc, log_scale) as float64 arrays [N, D] holding float32 values: the mixture kernel
      computes in float32, and every other quantity is computed from the same values.

    Raises:
      ValueError: wrong rank, mismatched shapes, empty input or NaN/inf values.
    """
    loc = as_float_matrix("loc", loc)
    log_scale = as_float_matrix("log_scale", log_scale)
    if loc.shape != log_scale.shape:
        raise ValueError(f"loc and log_scale must have the same shape [N, D], got {loc.shape} "
                         f"and {log_scale.shape}")
    loc = loc.astype(np.float32).astype(np.float64)
    log_scale = log_scale.astype(np.float32).astype(np.float64)
    check_finite("loc (as float32)", loc)
    check_finite("log_scale (as float32)", log_scale)
    return loc, log_scale


# --------------------------------------------------------------------------- kernel


def _chunk_layout(total, max_chunk, align):
    """Splits `total` items into equal padded chunks.

    Few distinct chunk sizes keep the number of XLA compilations small: sizes below `align` are
    rounded up to a power of two, larger ones to a multiple of `align`, neither beyond
    `max_chunk`.

    Returns:
      (chunk_size, num_chunks) with chunk_size * num_chunks >= total.
    """
    num_chunks = -(-total // max_chunk)
    size = -(-total // num_chunks)
    if size < align:
        size = 1 << (size - 1).bit_length()
    else:
        size = -(-size // align) * align
    size = min(size, max_chunk)
    return size, -(-total // size)


@functools.cache
def _chunk_functions():
    """Builds the compiled chunk kernels once per process (imports TensorFlow lazily)."""
    import tensorflow as tf

    def half_square(z, loc, rsqrt2_inv_scale):
        # z [D, s]; loc, rsqrt2_inv_scale [D, n] -> (z_sd - loc_nd)^2 / (2 scale_nd^2) [D, s, n]
        standardized = (z[:, :, None] - loc[:, None, :]) * rsqrt2_inv_scale[:, None, :]
        return standardized * standardized

    # log q(z_sd | x_n) = offset_nd - half_square_sdn, offset = -log_scale - log(2 pi) / 2.
    # The shifted kernels fold the shift into the offset: (offset - shift) - half_square.

    @tf.function(jit_compile=True)
    def per_dim_shifted(z, loc, rsqrt2_inv_scale, offset, shift):
        # shift [D, s] -> logsumexp_n log q(z_sd | x_n) [D, s], one pass, no max.
        shifted = offset[:, None, :] - shift[:, :, None] - half_square(z, loc, rsqrt2_inv_scale)
        return tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=2)) + shift

    @tf.function(jit_compile=True)
    def per_dim_exact(z, loc, rsqrt2_inv_scale, offset):
        log_q = offset[:, None, :] - half_square(z, loc, rsqrt2_inv_scale)
        return tf.reduce_logsumexp(log_q, axis=2)

    @tf.function(jit_compile=True)
    def joint_shifted(z, loc, rsqrt2_inv_scale, offset, shift):
        # -> (per-dim [D, s], joint [s]) partial logsumexps over this data chunk.
        shifted = offset[:, None, :] - shift[:, :, None] - half_square(z, loc, rsqrt2_inv_scale)
        per_dim = tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=2)) + shift
        # sum_d (log q(z_sd | x_n) - shift_sd) -> [s, n]. An explicit sum of D [s, n] slices
        # fuses into one loop under XLA; reduce_sum over the leading axis runs ~4x slower.
        joint_shifted = tf.add_n([
            offset[d][None, :] - shift[d][:, None]
            - half_square(z[d:d + 1], loc[d:d + 1], rsqrt2_inv_scale[d:d + 1])[0]
            for d in range(z.shape[0])])
        joint = tf.math.log(tf.reduce_sum(tf.exp(joint_shifted), axis=1))
        return per_dim, joint + tf.reduce_sum(shift, axis=0)

    @tf.function(jit_compile=True)
    def joint_exact(z, loc, rsqrt2_inv_scale, offset):
        log_q = offset[:, None, :] - half_square(z, loc, rsqrt2_inv_scale)
        return (tf.reduce_logsumexp(log_q, axis=2),
                tf.reduce_logsumexp(tf.reduce_sum(log_q, axis=0), axis=1))

    return {
        (False, True): per_dim_shifted,
        (False, False): per_dim_exact,
        (True, True): joint_shifted,
        (True, False): joint_exact,
    }


def log_mixture_density(z, loc, log_scale, reference=None, joint=False,
                         sample_chunk=DEFAULT_SAMPLE_CHUNK, data_chunk=DEFAULT_DATA_CHUNK,
                         progress=None):
    """Exact log-density of the mixture of N diagonal Normals, per dimension and jointly.

    ```none
    per_dim[s, d] = log( (1/N) sum_n Normal(z[s, d]; loc[n, d], exp(log_scale[n, d])) )
    joint[s]      = log( (1/N) sum_n prod_d Normal(z[s, d]; loc[n, d], exp(log_scale[n, d])) )
    ```

    The [sample, image, dim] log-densities are evaluated in float32 chunks of
    `sample_chunk` x `data_chunk` images under XLA and never stored whole; the partial
    logsumexps of the data chunks are combined in float64.

    With `reference` (an estimate of the largest term, e.g. the log-density of each sample
    under the posterior it was drawn from) a chunk is one fused pass
    `log sum_n exp(log_q - reference) + reference` without a running maximum. Terms more
    than ~88 nats above the reference overflow float32 and a sum whose terms all lie ~100
    nats below it underflows; any sample chunk with a non-finite result is recomputed with
    the exact max-shifted logsumexp, which is also used when `reference` is None.

    Args:
      z: array [S, D], the points at which to evaluate the mixture.
      loc: array [N, D], means of the mixture components.
      log_scale: array [N, D], log standard deviations of the components.
      reference: optional array [S, D], per-dimension shift (see above); the joint shift is
        its sum over D.
      joint: also return the joint log-density.
      sample_chunk: maximum number of samples per kernel call.
      data_chunk: maximum number of components per kernel call.
      progress: optional callable(done, total) called after every kernel call, counting
        the (sample, component) pairs evaluated so far.

    Returns:
      (joint, per_dim): float64 arrays [S] (None unless `joint`) and [S, D].
    """
    import tensorflow as tf

    z = np.asarray(z, dtype=np.float64)
    num_samples, num_dims = z.shape
    num_images = loc.shape[0]
    if loc.shape[1] != num_dims:
        raise ValueError(f"z has {num_dims} dimensions but the posteriors have {loc.shape[1]}")

    data_size, num_data_chunks = _chunk_layout(num_images, data_chunk, align=256)
    sample_size, num_sample_chunks = _chunk_layout(num_samples, sample_chunk, align=32)

    # Components as [D, padded N]; padding gets offset -inf, i.e. zero weight.
    padded = data_size * num_data_chunks
    loc_t = np.zeros((num_dims, padded), np.float32)
    rsqrt2_inv_scale_t = np.ones((num_dims, padded), np.float32)
    offset_t = np.full((num_dims, padded), -np.inf, np.float32)
    loc_t[:, :num_images] = loc.T
    rsqrt2_inv_scale_t[:, :num_images] = np.exp(-log_scale.T) * math.sqrt(0.5)
    offset_t[:, :num_images] = -log_scale.T - HALF_LOG_TWO_PI
    data_chunks = []
    for c in range(num_data_chunks):
        part = slice(c * data_size, (c + 1) * data_size)
        real = min(num_images - c * data_size, data_size)
        tensors = (tf.constant(loc_t[:, part]), tf.constant(rsqrt2_inv_scale_t[:, part]),
                   tf.constant(offset_t[:, part]))
        data_chunks.append((real, tensors))

    z_t = np.zeros((num_dims, sample_size * num_sample_chunks), np.float32)
    z_t[:, :num_samples] = z.T
    shift_t = np.zeros_like(z_t)
    if reference is not None:
        shift_t[:, :num_samples] = np.asarray(reference, np.float64).T

    functions = _chunk_functions()
    per_dim = np.empty((num_samples, num_dims))
    joint_out = np.empty(num_samples) if joint else None
    total = num_samples * num_images
    done = 0

    def run_sample_chunk(z_chunk, shift_chunk, real_samples, report):
        # Partial logsumexps of every data chunk, combined in float64: ([D, s], [s]).
        nonlocal done
        function = functions[(joint, shift_chunk is not None)]
        extra = () if shift_chunk is None else (shift_chunk,)
        acc_per_dim = np.full((num_dims, z_chunk.shape[1]), -np.inf)
        acc_joint = np.full(z_chunk.shape[1], -np.inf)
        for real_images, tensors in data_chunks:
            out = function(z_chunk, *tensors, *extra)
            if joint:
                acc_per_dim = np.logaddexp(acc_per_dim, out[0].numpy().astype(np.float64))
                acc_joint = np.logaddexp(acc_joint, out[1].numpy().astype(np.float64))
            else:
                acc_per_dim = np.logaddexp(acc_per_dim, out.numpy().astype(np.float64))
            if report:
                done += real_samples * real_images
                if progress is not None:
                    progress(done, total)
        return acc_per_dim, acc_joint

    for c in range(num_sample_chunks):
        part = slice(c * sample_size, (c + 1) * sample_size)
        real = min(num_samples - c * sample_size, sample_size)
        z_chunk = tf.constant(z_t[:, part])
        shift_chunk = None if reference is None else tf.constant(shift_t[:, part])
        acc_per_dim, acc_joint = run_sample_chunk(z_chunk, shift_chunk, real, report=True)
        finite = np.all(np.isfinite(acc_per_dim[:, :real]))
        if joint:
            finite = finite and np.all(np.isfinite(acc_joint[:real]))
        if not finite and shift_chunk is not None:
            acc_per_dim, acc_joint = run_sample_chunk(z_chunk, None, real, report=False)
        rows = slice(c * sample_size, c * sample_size + real)
        per_dim[rows] = acc_per_dim[:, :real].T
        if joint:
            joint_out[rows] = acc_joint[:real]

    log_num_images = math.log(num_images)
    per_dim -= log_num_images
    if joint:
        joint_out -= log_num_images
    return joint_out, per_dim


def sample_posteriors(loc, log_scale, indices, rng):
    """Draws z ~ q(z | x_n) for each n in `indices`.

    The samples are rounded to float32, the precision at which `log_mixture_density`
    evaluates them, and their own log-densities are computed in float64 at the rounded
    points. With posterior scales far below the float32 spacing of the means (e.g. 1e-5
    around 20) the unrounded log-densities would disagree with the kernel's by whole nats.

    Returns:
      (z, log_q) float64 arrays [S, D]: the samples and their per-dimension log-densities
      log q(z_d | x_n) under the posterior they were drawn from.
    """
    noise = rng.standard_normal((len(indices), loc.shape[1]))
    z = loc[indices] + np.exp(log_scale[indices]) * noise
    z = z.astype(np.float32).astype(np.float64)
    standardized = (z - loc[indices]) * np.exp(-log_scale[indices])
    log_q = -0.5 * standardized * standardized - log_scale[indices] - HALF_LOG_TWO_PI
    return z, log_q


# --------------------------------------------------------------------------- public API


def analytic_kl(loc, log_scale):
    """KL(q(z|x_n) || N(0, I)) per image, in closed form.

    ```none
    KL_n = sum_d 0.5 * (exp(2 log_scale_nd) + loc_nd^2 - 1) - log_scale_nd
    ```

    Args:
      loc: array [N, D].
      log_scale: array [N, D].

    Returns:
      float64 array [N].
    """
    loc = np.asarray(loc, np.float64)
    log_scale = np.asarray(log_scale, np.float64)
    return np.sum(0.5 * (np.exp(2.0 * log_scale) + loc * loc - 1.0) - log_scale, axis=1)


def elbo_decomposition(loc, log_scale, log_likelihood=None, num_samples=10000, seed=0,
                       batch_size=DEFAULT_SAMPLE_CHUNK, progress=None):
    """Decomposes the KL term of the ELBO into MI, TC and DWKL over a whole dataset.

    S image indices n_s are drawn uniformly (without replacement when S <= N), one sample
    z_s ~ q(z | x_{n_s}) each, and every density is evaluated against all N posteriors:

    ```none
    log q(z)          = logsumexp_n log q(z | x_n) - log N
    log prod_d q(z_d) = sum_d ( logsumexp_n log q(z_d | x_n) - log N )
    MI   = mean_s log q(z_s | x_{n_s}) - log q(z_s)          (0 <= MI <= log N)
    TC   = mean_s log q(z_s) - log prod_d q(z_sd)
    DWKL = mean_s log prod_d q(z_sd) - log p(z_s)            p = N(0, I)
    sampled_kl = MI + TC + DWKL = mean_s log q(z_s | x_{n_s}) - log p(z_s)
    kl   = (1/N) sum_n KL(q(z | x_n) || p(z))                 (closed form, all N images)
    elbo = mean_n log_likelihood_n - kl
    ```

    `sampled_kl` is a Monte-Carlo estimate of `kl`; they agree within Monte-Carlo error.
    The cost is S * N * (D + 1) Normal log-densities (chunked, see `log_mixture_density`).

    Args:
      loc: array [N, D], posterior means of every image of the dataset.
      log_scale: array [N, D], posterior log standard deviations (scale = exp(log_scale)).
      log_likelihood: optional array [N], per-image estimates of E_q log p(x_n | z).
      num_samples: S, the number of Monte-Carlo samples.
      seed: seed of the numpy random generator choosing images and noise.
      batch_size: number of samples evaluated per kernel call.
      progress: optional callable(done, total), see `log_mixture_density`.

    Returns:
      dict of Python floats: "mutual_information", "total_correlation",
      "dimensionwise_kl", "sampled_kl", "kl", "num_samples", "num_images" and, when
      `log_likelihood` is given, "log_likelihood" (its mean) and "elbo".

    Raises:
      ValueError: mismatched shapes, NaN/inf inputs or a bad `num_samples`.

    Example:
      >>> result = elbo_decomposition(loc, log_scale, num_samples=10000)
      >>> result["total_correlation"]
    """
    loc, log_scale = validate_posteriors(loc, log_scale)
    num_samples = check_positive_int("num_samples", num_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    num_images = loc.shape[0]
    if log_likelihood is not None:
        log_likelihood = np.asarray(log_likelihood, np.float64)
        if log_likelihood.shape != (num_images,):
            raise ValueError(f"log_likelihood must have shape [{num_images}] (one value per "
                             f"image), got {log_likelihood.shape}")
        check_finite("log_likelihood", log_likelihood)

    rng = np.random.default_rng(seed)
    indices = rng.choice(num_images, size=num_samples, replace=num_samples > num_images)
    z, log_q_own = sample_posteriors(loc, log_scale, indices, rng)
    log_qz, log_qz_per_dim = log_mixture_density(
        z, loc, log_scale, reference=log_q_own, joint=True, sample_chunk=batch_size,
        progress=progress)

    log_qzx = log_q_own.sum(axis=1)
    log_prod_qzd = log_qz_per_dim.sum(axis=1)
    log_pz = np.sum(-0.5 * z * z - HALF_LOG_TWO_PI, axis=1)
    mutual_information = float(np.mean(log_qzx - log_qz))
    total_correlation = float(np.mean(log_qz - log_prod_qzd))
    dimensionwise_kl = float(np.mean(log_prod_qzd - log_pz))
    result = {
        "mutual_information": mutual_information,
        "total_correlation": total_correlation,
        "dimensionwise_kl": dimensionwise_kl,
        "sampled_kl": mutual_information + total_correlation + dimensionwise_kl,
        "kl": float(np.mean(analytic_kl(loc, log_scale))),
        "num_samples": num_samples,
        "num_images": num_images,
    }
    if log_likelihood is not None:
        result["log_likelihood"] = float(np.mean(log_likelihood))
        result["elbo"] = result["log_likelihood"] - result["kl"]
    return result
