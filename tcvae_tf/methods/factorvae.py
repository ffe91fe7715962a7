"""FactorVAE: the ELBO plus gamma times a total correlation estimated by a discriminator.

```none
loss_vae = mean_i[ -log p(x_i|z_i) + KL_i ] + gamma * mean_i[ l(z_i) ]
loss_D   = -(1/2) mean_i[ log sigmoid(l(z_i)) ] - (1/2) mean_j[ log(1 - sigmoid(l(z'_j))) ]
```

l(z) is the discriminator's logit for "z was drawn from q(z)" against "z was drawn from
prod_d q(z_d)". With D = sigmoid(l), the density-ratio trick gives
TC = E_q(z)[ log q(z) / prod_d q(z_d) ] ~= E_q(z)[ log(D / (1 - D)) ] = E_q(z)[ l(z) ].
Samples of prod_d q(z_d) are samples of q(z) with every dimension permuted
independently across the batch (permute-dims).

Each step splits its batch into two independent halves, the even and the odd rows of the
(shuffled) batch: the even rows give the VAE term (and the discriminator's "from q(z)"
samples), the odd rows, permuted, the discriminator's "from prod_d q(z_d)" samples. The
VAE and the discriminator are updated in the same step, each by its own Adam. The
decomposition's MI, TC and DWKL (MWS) are logged on the even half beside the
discriminator's TC, accuracy and loss. Under a tf.distribute strategy every replica holds
as many even as odd rows; the halves' posterior parameters are gathered, the permutation
is drawn over the global odd half, and one step equals the one-device step.

Kim and Mnih's dSprites settings are the defaults: gamma 35, a discriminator of 6
layers of 1000 units with LeakyReLU(0.2), the VAE's Adam 1e-4 (0.9, 0.999), the
discriminator's Adam 1e-4 (0.5, 0.9), batch 64.

References:
  Kim, Mnih. Disentangling by Factorising. ICML 2018, arXiv:1802.05983.
"""

from tcvae_tf.methods.base import Method, Option, kl_option


class FactorVAE(Method):
    name = "factorvae"
    title = "FactorVAE"
    reference = "Kim, Mnih. Disentangling by Factorising. ICML 2018"
    loss = "KL + gamma*TC, the TC estimated by a discriminator (density-ratio trick)"
    options = (
        Option("gamma", float, 35.0, "weight of the TC estimated by the discriminator",
               minimum=0, headline=True),
        kl_option("analytic"),
        Option("discriminator_lr", float, 1e-4, "Adam learning rate of the discriminator",
               minimum=0),
        Option("discriminator_beta_1", float, 0.5, "Adam beta_1 of the discriminator",
               minimum=0),
        Option("discriminator_beta_2", float, 0.9, "Adam beta_2 of the discriminator",
               minimum=0),
        Option("discriminator_layers", int, 6, "hidden layers of the discriminator",
               minimum=1),
        Option("discriminator_units", int, 1000, "units per hidden layer of the "
               "discriminator", minimum=1),
    )
    logged = ("tc_discriminator", "discriminator_loss", "discriminator_accuracy")
    training_defaults = {"lr": 1e-4, "batch_size": 64}

    @classmethod
    def check_training(cls, options, batch_size, replicas=1):
        if batch_size < 4 or batch_size % 2:
            raise ValueError(f"factorvae splits each batch into two halves: give an even "
                             f"batch size of at least 4, got {batch_size}")
        if replicas > 1 and batch_size % (2 * replicas):
            raise ValueError(f"factorvae splits each replica's rows into two halves: give a "
                             f"batch size that is a multiple of {2 * replicas} for "
                             f"{replicas} replicas, got {batch_size}")

    def build(self, model):
        from tcvae_tf import architectures

        model.discriminator = architectures.build_discriminator(
            model.latent_dim, self.discriminator_layers, self.discriminator_units)

    def compile(self, model):
        import keras

        model.discriminator_optimizer = keras.optimizers.Adam(
            self.discriminator_lr, beta_1=self.discriminator_beta_1,
            beta_2=self.discriminator_beta_2)
        model.discriminator_optimizer.build(model.discriminator.trainable_variables)

    @staticmethod
    def logits(model, z, training=False):
        """The discriminator's logits l(z) [M], float32, for samples z [M, D]."""
        import tensorflow as tf

        return tf.cast(model.discriminator(z, training=training)[:, 0], tf.float32)

    def regulariser(self, model, z, loc, log_scale, terms, step, share):

        logits = self.logits(model, z)
        tc = share.mean(logits)  # objectives.density_ratio_tc over the global batch
        kl = self.kl_term(loc, log_scale, terms, share)
        return {"regulariser": kl + self.gamma * tc, "kl": kl, "tc_discriminator": tc,
                "discriminator_logits": logits}

    def step_terms(self, model, images, training=False):
        """Every term of one step: the VAE's on the even rows, the discriminator's on both
        halves (the odd rows permuted).

        The posterior noise of the even half is drawn from the step's seed (as every
        method's is), the odd half's and the permutation's from seeds folded from it:
        every draw is a function of (seed, step). Under a strategy, the replica's rows are
        rows of the global batch (an even number of them), so its even and odd rows are
        global even and odd rows; both halves' posterior parameters are gathered, the
        noise and the permutation are drawn for the global halves and each replica keeps
        its rows.
        """
        import tensorflow as tf

        from tcvae_tf import distribute, objectives

        images = tf.cast(images, tf.float32)
        loc, log_scale = model.encode(images, training=training)
        share = distribute.ReplicaBatch(tf.shape(images)[0] // 2)  # this replica's half
        even_loc, even_log_scale = share.gather(loc[0::2], log_scale[0::2])
        odd_loc, odd_log_scale = share.gather(loc[1::2], log_scale[1::2])
        seed = model.step_seed()
        z = share.rows(model.sample_posterior(even_loc, even_log_scale, seed=seed))
        terms = model.objective_terms(images[0::2], z, even_loc, even_log_scale,
                                      training=training, share=share)
        other = model.sample_posterior(odd_loc, odd_log_scale,
                                       seed=tf.random.experimental.stateless_fold_in(seed, 1))
        permuted = share.rows(objectives.permute_dims(
            tf.stop_gradient(other), seed=tf.random.experimental.stateless_fold_in(seed, 2)))
        real, fake = terms["discriminator_logits"], self.logits(model, permuted)
        terms["discriminator_loss"] = objectives.discriminator_loss(real, fake, share.mean)
        terms["discriminator_accuracy"] = objectives.discriminator_accuracy(real, fake,
                                                                            share.mean)
        return terms

    def train_step(self, model, data):
        """One step of both optimizers: the VAE's on its loss, the discriminator's on its."""
        import tensorflow as tf

        images = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape(persistent=True) as tape:
            terms = self.step_terms(model, images, training=True)
            loss = model.scaled_loss(terms["loss"])
        networks = model.network_variables()
        critic = model.discriminator.trainable_variables
        network_gradients = tape.gradient(loss, networks)
        critic_gradients = tape.gradient(terms["discriminator_loss"], critic)
        del tape
        model.apply_updates([(model.optimizer, network_gradients, networks),
                             (model.discriminator_optimizer, critic_gradients, critic)])
        return model.update_trackers(terms)

    def test_step(self, model, data):
        images = data[0] if isinstance(data, tuple) else data
        return model.update_trackers(self.step_terms(model, images, training=False))
