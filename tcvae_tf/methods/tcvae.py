"""beta-TCVAE: the KL term split into MI, TC and DWKL, each with its own weight.

```none
loss = mean_i[ -log p(x_i|z_i) + alpha*MI_i + beta_t*TC_i + gamma_t*DWKL_i ]
```

log q(z) is estimated from the minibatch (MWS or MSS, see :mod:`tcvae_tf.objectives`).

References:
  Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in Variational
  Autoencoders. NeurIPS 2018, arXiv:1802.04942.
"""

from tcvae_tf.methods.base import Method, Option

ESTIMATORS = ("mws", "mss")  # the same names as tcvae_tf.objectives.ESTIMATORS


class BetaTCVAEMethod(Method):
    name = "tcvae"
    title = "beta-TCVAE"
    reference = ("Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in "
                 "Variational Autoencoders. NeurIPS 2018")
    loss = "alpha*MI + beta*TC + gamma*DWKL, q(z) estimated from the minibatch"
    options = (
        Option("alpha", float, 1.0, "weight of the index-code mutual information",
               minimum=0),
        Option("beta", float, 6.0, "weight of the total correlation", minimum=0,
               headline=True),
        Option("gamma", float, 1.0, "weight of the dimension-wise KL", minimum=0),
        Option("estimator", str, "mws", "mws (minibatch-weighted) or mss "
               "(minibatch-stratified) sampling", choices=ESTIMATORS),
        Option("beta_warmup_steps", int, 0, "linear warm-up of beta over this many steps "
               "(0: off)", minimum=0),
        Option("gamma_warmup_steps", int, 0, "the authors' warm-up of gamma over this many "
               "steps (0: off)", minimum=0),
    )

    @property
    def decomposition_estimator(self):
        return self.estimator

    @classmethod
    def check_training(cls, options, batch_size, replicas=1):
        if options.get("estimator") == "mss" and batch_size < 2:
            raise ValueError("the MSS estimator needs a batch size of at least 2")

    def regulariser(self, model, z, loc, log_scale, terms, step, share):
        from tcvae_tf import objectives

        beta = objectives.beta_schedule(step, self.beta, self.beta_warmup_steps)
        gamma = objectives.gamma_schedule(step, self.gamma, self.gamma_warmup_steps)
        return {"regulariser": self.alpha * terms["mi"] + beta * terms["tc"]
                + gamma * terms["dwkl"]}
