"""Evaluation metrics: numpy arrays in, Python floats, lists and dicts out.

- `mig_sampling`: MIG with the sampling estimator of Chen et al. (2018) on the stochastic
  posteriors of a full factorial dataset.
- `mig_histogram`: MIG with disentanglement_lib's histogram estimator on mean codes.
- `elbo_decomposition`: MI, TC, DWKL and the analytic KL over a whole dataset.
- `active_units`: number of latents whose posterior mean varies over the dataset.
- `minibatch_saturation`: how much of the minibatch estimate of log q(z) that the TC term
  uses is each sample's own posterior.
- `dci`: disentanglement, completeness and informativeness (Eastwood & Williams 2018).
- `sap`: the Separated Attribute Predictability score (Kumar et al. 2018).
- `modularity_explicitness`: Ridgeway & Mozer (2018).
- `factorvae_score`: Kim & Mnih's (2018) majority-vote score, from an encoder and a dataset.
- `betavae_score`: Higgins et al.'s (2017) linear-classifier score, likewise.

The last five follow disentanglement_lib (Locatello et al. 2019); each docstring says where
a choice differs. Helpers they share are public in `tcvae_tf.metrics.utils`; the metric
registry that `tcvae-tf evaluate` dispatches on is `tcvae_tf.metrics.registry`.

Importing this package imports neither TensorFlow nor scikit-learn; the metrics that use
them import them when called.
"""

from tcvae_tf.metrics.active_units import active_units
from tcvae_tf.metrics.betavae_score import betavae_score
from tcvae_tf.metrics.dci import dci
from tcvae_tf.metrics.elbo_decomposition import elbo_decomposition
from tcvae_tf.metrics.factorvae_score import factorvae_score
from tcvae_tf.metrics.mig import mig_histogram, mig_sampling
from tcvae_tf.metrics.modularity import modularity_explicitness
from tcvae_tf.metrics.sap import sap
from tcvae_tf.metrics.saturation import minibatch_saturation

__all__ = [
    "active_units", "betavae_score", "dci", "elbo_decomposition", "factorvae_score",
    "mig_histogram", "mig_sampling", "minibatch_saturation", "modularity_explicitness", "sap",
]
