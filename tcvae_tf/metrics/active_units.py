"""Active units: latents whose posterior mean varies over the dataset.

```none
A_d = Var_n( E_q[z_d | x_n] ) = Var_n(loc_nd)        active if A_d > threshold
```

References:
  Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016
  (arXiv 1509.00519), section 5.2.
"""

import numpy as np

from tcvae_tf.metrics.utils import as_float_matrix


def active_units(loc, threshold=0.01):
    """Counts the latents whose posterior mean has variance above `threshold`.

    Args:
      loc: array [N, D], posterior means of the images of a dataset.
      threshold: variance above which a latent counts as active (Burda et al. use 0.01).

    Returns:
      dict with "active_units" (int), "variances" ([D], population variance of each
      latent's mean over the N images) and "threshold" (float).

    Raises:
      ValueError: `loc` is not a 2-D finite array or `threshold` is negative or not finite.

    Example:
      >>> active_units(means)["active_units"]
    """
    loc = as_float_matrix("loc", loc)
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite non-negative number, got {threshold}")
    variances = loc.var(axis=0)
    return {
        "active_units": int(np.count_nonzero(variances > threshold)),
        "variances": variances.tolist(),
        "threshold": threshold,
    }
