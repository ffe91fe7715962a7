"""beta-VAE and the plain VAE: the whole KL term with one weight.

```none
loss = mean_i[ -log p(x_i|z_i) + beta_t*KL_i ]      (betavae; vae: beta = 1)
```

References:
  Higgins et al. beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework. ICLR 2017.
  Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014.
"""

from tcvae_tf.methods.base import Method, Option, kl_option


class BetaVAE(Method):
    name = "betavae"
    title = "beta-VAE"
    reference = ("Higgins et al. beta-VAE: Learning Basic Visual Concepts with a "
                 "Constrained Variational Framework. ICLR 2017")
    loss = "beta*KL"
    options = (
        Option("beta", float, 6.0, "weight of the KL", minimum=0, headline=True),
        kl_option(),
        Option("beta_warmup_steps", int, 0, "linear warm-up of beta over this many steps "
               "(0: off)", minimum=0),
    )
    weight = None  # the fixed KL weight of a subclass; None: the beta option

    def regulariser(self, model, z, loc, log_scale, terms, step, share):
        from tcvae_tf import objectives

        weight = self.beta if self.weight is None else self.weight
        beta = objectives.beta_schedule(step, weight, self.beta_warmup_steps)
        kl = self.kl_term(loc, log_scale, terms, share)
        return {"regulariser": beta * kl, "kl": kl}


class VAE(BetaVAE):
    name = "vae"
    title = "VAE"
    reference = "Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014"
    loss = "KL (the ELBO)"
    options = (
        kl_option(),
        Option("beta_warmup_steps", int, 0, "linear warm-up of the KL weight from 0 to 1 "
               "over this many steps (0: off)", minimum=0),
    )
    weight = 1.0
