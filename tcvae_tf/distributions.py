"""Posterior, prior and likelihood distributions, built from the tensors the layers return.

The encoder and decoder are plain Keras layers that return tensors (`loc`, `log_scale`,
`logits`); the functions here turn those tensors into TensorFlow Probability
distributions. `log_density` holds the same densities in closed form, elementwise, for
the hot path of the objective (`tcvae_tf.objectives`), where building a distribution
object over an [M, M, D] tensor would only add overhead.

```none
normal:  log q(x) = -((x - loc) / scale)**2 / 2 - log(scale) - log(2 pi) / 2
laplace: log q(x) = -|x - loc| / scale - log(scale) - log(2)
scale = exp(log_scale)
```

References: Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in
Variational Autoencoders", NeurIPS 2018, arXiv:1802.04942.
"""

import math
import numbers

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

POSTERIORS = ("normal", "laplace")
PRIORS = ("normal", "laplace")
LIKELIHOODS = ("bernoulli", "gaussian")

# Observation noise (standard deviation) of the "gaussian" likelihood, for images in [0, 1].
# With this scale, -log p(x|z) = sum (x - mean)**2 / (2 * 0.1**2) + constant: squared error
# weighted by 50 per pixel, strong enough to keep reconstructions sharp at beta of a few.
DEFAULT_GAUSSIAN_SCALE = 0.1

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
_LOG_TWO = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)


def check_family(family, allowed, kind):
    """Raises a ValueError unless `family` is one of `allowed`.

    Args:
      family: the name given by the caller, e.g. "normal".
      allowed: tuple of the accepted names, e.g. `POSTERIORS`.
      kind: what the name is for, used in the message, e.g. "posterior".

    Returns:
      `family`, unchanged.

    Example:
      >>> check_family("normal", POSTERIORS, "posterior")
      'normal'
    """
    if family not in allowed:
        raise ValueError(
            f"unknown {kind} family {family!r}; expected one of: {', '.join(allowed)}"
        )
    return family


def log_density(x, loc, log_scale, family="normal"):
    """Elementwise log-density of a Normal or Laplace distribution, in closed form.

    ```none
    normal:  log q(x) = -((x - loc) / scale)**2 / 2 - log_scale - log(2 pi) / 2
    laplace: log q(x) = -|x - loc| / scale - log_scale - log(2)
    ```

    All arguments broadcast against each other; the result has the broadcast shape.
    Terms that depend only on the parameters are computed on the parameters' own shape
    before broadcasting, so a call such as `log_density(z[:, None, :], loc[None],
    log_scale[None])` does four full-size operations on the [M, M, D] result.

    Args:
      x: float tensor, the points to evaluate; its dtype is the result's dtype.
      loc: tensor broadcastable with `x`, the location (mean for Normal, median for
        Laplace).
      log_scale: tensor broadcastable with `x`, log of the scale (standard deviation for
        Normal, b for Laplace).
      family: "normal" or "laplace".

    Returns:
      Float tensor of the broadcast shape of `x`, `loc` and `log_scale`.

    Example:
      >>> float(log_density(0.0, 0.0, 0.0))  # -log(2 pi) / 2
      -0.9189385175704956
    """
    check_family(family, POSTERIORS, "density")
    x = tf.convert_to_tensor(x)
    loc = tf.convert_to_tensor(loc, dtype=x.dtype)
    log_scale = tf.convert_to_tensor(log_scale, dtype=x.dtype)
    inv_scale = tf.exp(-log_scale)
    if family == "normal":
        neg_log_normalizer = -(log_scale + _HALF_LOG_TWO_PI)
        # ((x - loc) * inv_scale * sqrt(1/2))**2 = ((x - loc) / scale)**2 / 2.
        return neg_log_normalizer - tf.square((x - loc) * (inv_scale * _SQRT_HALF))
    neg_log_normalizer = -(log_scale + _LOG_TWO)
    return neg_log_normalizer - tf.abs(x - loc) * inv_scale


def _base_distribution(loc, scale, family):
    if family == "normal":
        return tfd.Normal(loc=loc, scale=scale)
    return tfd.Laplace(loc=loc, scale=scale)


def posterior(loc, log_scale, family="normal"):
    """The encoder's factorised posterior q(z|x) = prod_d q(z_d|x).

    Args:
      loc: float tensor [..., D], the location of each latent dimension.
      log_scale: float tensor [..., D], log of the scale of each latent dimension.
      family: one of `POSTERIORS` ("normal" or "laplace").

    Returns:
      `tfd.Independent` with batch shape [...] and event shape [D].

    Example:
      >>> q = posterior(tf.zeros([32, 10]), tf.zeros([32, 10]))
      >>> q.event_shape, q.batch_shape
      (TensorShape([10]), TensorShape([32]))
    """
    check_family(family, POSTERIORS, "posterior")
    loc = tf.convert_to_tensor(loc)
    log_scale = tf.convert_to_tensor(log_scale, dtype=loc.dtype)
    if loc.shape.rank == 0:
        raise ValueError("posterior loc must have at least one axis (the latent dimension)")
    base = _base_distribution(loc, tf.exp(log_scale), family)
    return tfd.Independent(base, reinterpreted_batch_ndims=1)


def prior(latent_dim, family="normal", dtype=tf.float32):
    """The factorised prior p(z) = prod_d p(z_d) with p(z_d) standard Normal or Laplace(0, 1).

    Args:
      latent_dim: positive int D, the number of latent dimensions.
      family: one of `PRIORS` ("normal" or "laplace").
      dtype: float dtype of the distribution.

    Returns:
      `tfd.Independent` with batch shape [] and event shape [D].

    Example:
      >>> prior(10).sample(4).shape
      TensorShape([4, 10])
    """
    check_family(family, PRIORS, "prior")
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"prior latent_dim must be a positive int, got {latent_dim!r}")
    loc = tf.zeros([latent_dim], dtype=dtype)
    scale = tf.ones([latent_dim], dtype=dtype)
    return tfd.Independent(_base_distribution(loc, scale, family), reinterpreted_batch_ndims=1)


def likelihood(logits, family="bernoulli", scale=DEFAULT_GAUSSIAN_SCALE):
    """The decoder's distribution p(x|z) over images, independent across pixels.

    ```none
    bernoulli: p(x_hwc|z) = Bernoulli(sigmoid(logits_hwc))          (binary images)
    gaussian:  p(x_hwc|z) = Normal(sigmoid(logits_hwc), scale)      (images in [0, 1])
    ```

    Args:
      logits: float tensor [..., H, W, C], the decoder output (pre-sigmoid).
      family: one of `LIKELIHOODS` ("bernoulli" or "gaussian").
      scale: positive float, the fixed observation standard deviation of the "gaussian"
        likelihood (ignored for "bernoulli"); `DEFAULT_GAUSSIAN_SCALE` = 0.1.

    Returns:
      `tfd.Independent` with batch shape [...] and event shape [H, W, C]; its samples
      and `log_prob` use the dtype of `logits`.

    Example:
      >>> p = likelihood(tf.zeros([8, 64, 64, 1]))
      >>> p.event_shape, p.batch_shape
      (TensorShape([64, 64, 1]), TensorShape([8]))
    """
    check_family(family, LIKELIHOODS, "likelihood")
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank is not None and logits.shape.rank < 3:
        raise ValueError(
            f"likelihood logits must have shape [..., H, W, C], got shape {logits.shape}"
        )
    if family == "bernoulli":
        base = tfd.Bernoulli(logits=logits, dtype=logits.dtype)
    else:
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not scale > 0:
            raise ValueError(f"gaussian likelihood scale must be a positive float, got {scale!r}")
        base = tfd.Normal(loc=tf.sigmoid(logits), scale=tf.constant(scale, logits.dtype))
    return tfd.Independent(base, reinterpreted_batch_ndims=3)
