"""Evaluation metrics: numpy arrays in, Python floats, lists and dicts out.

- `mig_sampling`: MIG with the sampling estimator of Chen et al. (2018) on the stochastic
  posteriors of a full factorial dataset.
- `mig_histogram`: MIG with disentanglement_lib's histogram estimator on mean codes.
- `elbo_decomposition`: MI, TC, DWKL and the analytic KL over a whole dataset.
- `active_units`: number of latents whose posterior mean varies over the dataset.
- `minibatch_saturation`: how much of the minibatch estimate of log q(z) that the TC term
  uses is each sample's own posterior.

Importing this package does not import TensorFlow; the estimators that use it import it
when called.
"""

from tcvae_tf.metrics.active_units import active_units
from tcvae_tf.metrics.elbo_decomposition import elbo_decomposition
from tcvae_tf.metrics.mig import mig_histogram, mig_sampling
from tcvae_tf.metrics.saturation import minibatch_saturation

__all__ = [
    "active_units", "elbo_decomposition", "mig_histogram", "mig_sampling", "minibatch_saturation",
]
