"""DIP-VAE-I and DIP-VAE-II: the ELBO plus a penalty pulling a covariance towards I.

```none
loss = mean_i[ -log p(x_i|z_i) + KL_i ] + lambda_od * sum_{i != j} C_ij**2
                                        + lambda_d  * sum_i (C_ii - 1)**2
DIP-VAE-I:  C = Cov_batch[ mu(x) ]                         (posterior means)
DIP-VAE-II: C = Cov_batch[ mu(x) ] + mean_batch[ diag(sigma(x)**2) ]   (q(z) itself)
lambda_d = lambda_d_factor * lambda_od
```

The defaults are disentanglement_lib's: lambda_d_factor 10 for DIP-VAE-I and 1 for
DIP-VAE-II (lambda_od 10, the middle of its sweep 1..50), the analytic KL, Adam 1e-4 and
batch 64.

References:
  Kumar, Sattigeri, Balakrishnan. Variational Inference of Disentangled Latent Concepts
  from Unlabeled Observations. ICLR 2018, arXiv:1711.00848.
  Locatello et al. Challenging Common Assumptions in the Unsupervised Learning of
  Disentangled Representations. ICML 2019 (disentanglement_lib).
"""

from tcvae_tf.methods.base import Method, Option, kl_option

REFERENCE = ("Kumar, Sattigeri, Balakrishnan. Variational Inference of Disentangled Latent "
             "Concepts from Unlabeled Observations. ICLR 2018")


def _options(lambda_d_factor):
    return (
        Option("lambda_od", float, 10.0, "weight of the squared off-diagonal covariances",
               minimum=0, headline=True),
        Option("lambda_d_factor", float, lambda_d_factor, "weight of the squared diagonal "
               "deviations from 1, as a multiple of lambda_od", minimum=0),
        kl_option("analytic"),
    )


class DIPVAE1(Method):
    name = "dipvae1"
    title = "DIP-VAE-I"
    reference = REFERENCE
    loss = "KL + lambda_od*sum_{i!=j} C_ij^2 + lambda_d*sum_i (C_ii-1)^2, C = Cov[mu(x)]"
    options = _options(10.0)
    logged = ("dip_off_diagonal", "dip_diagonal")
    training_defaults = {"lr": 1e-4, "batch_size": 64}
    with_posterior_variance = False

    def check_model(self, posterior, prior):
        super().check_model(posterior, prior)
        from tcvae_tf import objectives

        objectives.posterior_variance(0.0, posterior)  # refuses a family it does not know

    def regulariser(self, model, z, loc, log_scale, terms, step, share):
        from tcvae_tf import objectives

        # The covariance of the global batch; each of R replicas holds 1/R of the penalty.
        covariance = objectives.dip_covariance(
            loc, log_scale if self.with_posterior_variance else None, model.posterior)
        penalties = {name: value / share.num_replicas
                     for name, value in objectives.dip_penalties(covariance).items()}
        lambda_d = self.lambda_d_factor * self.lambda_od
        kl = self.kl_term(loc, log_scale, terms, share)
        return {"regulariser": kl + self.lambda_od * penalties["off_diagonal"]
                + lambda_d * penalties["diagonal"],
                "kl": kl, "dip_off_diagonal": penalties["off_diagonal"],
                "dip_diagonal": penalties["diagonal"]}


class DIPVAE2(DIPVAE1):
    name = "dipvae2"
    title = "DIP-VAE-II"
    loss = ("KL + lambda_od*sum_{i!=j} C_ij^2 + lambda_d*sum_i (C_ii-1)^2, "
            "C = Cov[mu(x)] + E[diag(sigma(x)^2)]")
    options = _options(1.0)
    with_posterior_variance = True
