"""The Keras model: a VAE trained with the TC-decomposed ELBO.

``train_step`` only wires the pure functions of :mod:`tcvae_tf.objectives` together:

```none
loss = mean_i[ -log p(x_i|z_i) + alpha*MI_i + beta_t*TC_i + gamma_t*DWKL_i ]   (tcvae)
loss = mean_i[ -log p(x_i|z_i) + beta_t*KL_i ]                               (betavae, vae)
```

References:
  Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in VAEs. NeurIPS 2018.
  Higgins et al. beta-VAE. ICLR 2017.
"""

import keras
import tensorflow as tf

from tcvae_tf import architectures, distribute, distributions, objectives

OBJECTIVES = ("tcvae", "betavae", "vae")
KL_KINDS = ("sampled", "analytic")


@keras.saving.register_keras_serializable(package="tcvae_tf")
class BetaTCVAE(keras.Model):
    """A VAE whose KL term is split into index-code MI, total correlation and dim-wise KL.

    Args:
      latent_dim: number of latent dimensions D.
      arch: encoder/decoder family, one of ``architectures.ARCHITECTURES``.
      image_shape: (64, 64, C).
      objective: ``"tcvae"`` (alpha*MI + beta*TC + gamma*DWKL), ``"betavae"``
        (beta*KL) or ``"vae"`` (KL, beta forced to 1).
      alpha, beta, gamma: weights of MI, TC and DWKL (beta also weighs the beta-VAE KL).
      estimator: ``"mws"`` or ``"mss"``, how q(z) is estimated from the minibatch.
      dataset_size: N, the number of training images (the estimators need it).
      posterior, prior: ``"normal"`` or ``"laplace"``.
      likelihood: ``"bernoulli"`` (binary images) or ``"gaussian"``.
      kl: ``"sampled"`` or ``"analytic"`` KL for the beta-VAE objectives.
      beta_warmup_steps: linear warm-up of beta over this many steps (0: off).
      gamma_warmup_steps: the authors' warm-up of gamma over this many steps (0: off).
      seed: seed of the posterior noise of training: the noise of step t is drawn from
        (seed, t) with stateless ops, so a resumed run draws what the uninterrupted one did.

    Example:

    ```python
    model = BetaTCVAE(latent_dim=10, arch="mlp", beta=6.0, dataset_size=737280)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images_dataset, steps_per_epoch=100)
    ```
    """

    def __init__(self, latent_dim=10, arch="mlp", image_shape=(64, 64, 1), objective="tcvae",
                 alpha=1.0, beta=6.0, gamma=1.0, estimator="mws", dataset_size=737280,
                 posterior="normal", prior="normal", likelihood="bernoulli", kl="sampled",
                 beta_warmup_steps=0, gamma_warmup_steps=0, seed=0, **kwargs):
        super().__init__(**kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of "
                             f"{', '.join(OBJECTIVES)}")
        if estimator not in objectives.ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of "
                             f"{', '.join(objectives.ESTIMATORS)}")
        if kl not in KL_KINDS:
            raise ValueError(f"unknown kl {kl!r}; choose one of {', '.join(KL_KINDS)}")
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if kl == "analytic" and (posterior, prior) != ("normal", "normal"):
            raise ValueError("the analytic KL needs a normal posterior and a normal prior")
        self.latent_dim = int(latent_dim)
        self.arch = arch
        self.image_shape = tuple(int(s) for s in image_shape)
        self.objective = objective
        self.alpha = float(alpha)
        self.beta = 1.0 if objective == "vae" else float(beta)
        self.gamma = float(gamma)
        self.estimator = estimator
        self.dataset_size = int(dataset_size)
        self.posterior = posterior
        self.prior = prior
        self.likelihood = likelihood
        self.kl = kl
        self.beta_warmup_steps = int(beta_warmup_steps)
        self.gamma_warmup_steps = int(gamma_warmup_steps)
        self.seed = int(seed)
        self.encoder = architectures.build_encoder(arch, self.latent_dim, self.image_shape)
        self.decoder = architectures.build_decoder(arch, self.latent_dim, self.image_shape)
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "reconstruction", "kl", "mi", "tc", "dwkl")
        }
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim, arch=self.arch, image_shape=list(self.image_shape),
            objective=self.objective, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
            estimator=self.estimator, dataset_size=self.dataset_size, posterior=self.posterior,
            prior=self.prior, likelihood=self.likelihood, kl=self.kl,
            beta_warmup_steps=self.beta_warmup_steps,
            gamma_warmup_steps=self.gamma_warmup_steps, seed=self.seed,
        )
        return config

    def build(self, input_shape=None):
        # Sub-networks are Sequential models with Input layers: built on construction.
        self.built = True

    def compile_from_config(self, config):
        # Build the optimizer's slots so a reloaded .keras file restores its state too.
        super().compile_from_config(config)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return list(self._trackers.values())

    # -- the networks -------------------------------------------------------------------

    def encode(self, images, training=False):
        """Maps images [B, 64, 64, C] in [0, 1] to (loc, log_scale), each [B, D] float32."""
        params = tf.cast(self.encoder(images, training=training), tf.float32)
        loc, log_scale = tf.split(params, 2, axis=-1)
        return loc, log_scale

    def decode(self, latents, training=False):
        """Maps latents [B, D] to likelihood logits [B, 64, 64, C] float32."""
        return tf.cast(self.decoder(latents, training=training), tf.float32)

    def sample_posterior(self, loc, log_scale, seed=None):
        """Draws one reparameterised sample z ~ q(z|x) [B, D].

        Args:
          loc, log_scale: [B, D] posterior parameters.
          seed: None for stateful random noise, or an int tensor [2] for stateless noise
            (the same seed gives the same sample).
        """
        if self.posterior == "normal":
            shape = tf.shape(loc)
            if seed is None:
                noise = tf.random.normal(shape, dtype=loc.dtype)
            else:
                noise = tf.random.stateless_normal(shape, seed=seed, dtype=loc.dtype)
            return loc + tf.exp(log_scale) * noise
        return distributions.posterior(loc, log_scale, self.posterior).sample(seed=seed)

    def step_seed(self):
        """The stateless seed [2] of the current optimizer step: (seed, step)."""
        step = self.optimizer.iterations if self.optimizer is not None else 0
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def call(self, images, training=False):
        """Encodes, samples and decodes: returns the logits of the reconstruction."""
        loc, log_scale = self.encode(images, training=training)
        return self.decode(self.sample_posterior(loc, log_scale), training=training)

    # -- the objective ------------------------------------------------------------------

    def reconstruction_nll(self, images, logits):
        """-log p(x|z) per image [B]."""
        if self.likelihood == "bernoulli":
            # Sum of sigmoid cross-entropies == -Bernoulli(logits).log_prob(x) summed over pixels.
            per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
            return tf.reduce_sum(per_pixel, axis=[1, 2, 3])
        return -distributions.likelihood(logits, self.likelihood).log_prob(images)

    def loss_terms(self, images, training=False):
        """Computes every term of the objective for a batch.

        Args:
          images: float [B, 64, 64, C] in [0, 1].
          training: passed to the networks (BatchNorm).

        Returns:
          A dict of scalar tensors: ``loss``, ``reconstruction`` (mean -log p(x|z)),
          ``kl`` (mean log q(z|x) - log p(z), or the analytic KL), ``mi``, ``tc``, ``dwkl``:
          means over the batch; under a strategy with several replicas, this replica's
          part of the global batch's means (its rows' sum / M), which sum over replicas.
        """
        images = tf.cast(images, tf.float32)
        # Under a tf.distribute strategy this replica holds rows of the global batch: the
        # noise and the estimators are the global batch's (see tcvae_tf.distribute).
        share = distribute.ReplicaBatch(tf.shape(images)[0])
        loc, log_scale = self.encode(images, training=training)
        all_loc, all_log_scale = share.gather(loc, log_scale)  # [M, D]
        z = share.rows(self.sample_posterior(all_loc, all_log_scale, seed=self.step_seed()))
        logits = self.decode(z, training=training)
        reconstruction = share.mean(self.reconstruction_nll(images, logits))
        step = tf.cast(self.optimizer.iterations, tf.float32) if self.optimizer else 0.0
        beta = objectives.beta_schedule(step, self.beta, self.beta_warmup_steps)
        parts = objectives.kl_decomposition(
            z, all_loc, all_log_scale, self.dataset_size, estimator=self.estimator,
            posterior=self.posterior, prior=self.prior, row_offset=share.row_offset)
        mi, tc, dwkl = (share.mean(parts[name]) for name in ("mi", "tc", "dwkl"))
        if self.kl == "analytic":
            kl = share.mean(objectives.analytic_kl(loc, log_scale))
        else:
            kl = mi + tc + dwkl  # == mean(log q(z|x) - log p(z))
        if self.objective == "tcvae":
            gamma = objectives.gamma_schedule(step, self.gamma, self.gamma_warmup_steps)
            regulariser = self.alpha * mi + beta * tc + gamma * dwkl
        else:
            regulariser = beta * kl
        return {"loss": reconstruction + regulariser, "reconstruction": reconstruction,
                "kl": kl, "mi": mi, "tc": tc, "dwkl": dwkl}

    def _update_trackers(self, terms):
        for name, tracker in self._trackers.items():
            tracker.update_state(terms[name])
        return distribute.step_logs(
            {name: tracker.result() for name, tracker in self._trackers.items()})

    def train_step(self, data):
        """One optimizer step on a batch; returns the trackers' results.

        When the step itself is not compiled with XLA, the optimizer update still is: Adam
        reads and writes every weight, gradient and moment several times per step, and as
        separate TensorFlow ops it took about three times the CPU time of the same update
        as one XLA computation (MLP, batch 256: 34 ms against 12 ms). The networks then run
        on TensorFlow's own kernels (oneDNN matrix products and convolutions, faster than
        XLA's on CPU) with a fused update. Eager steps, loss-scaled (float16) optimizers and
        distribution strategies keep the plain update.
        """
        images = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            terms = self.loss_terms(images, training=True)
            loss = terms["loss"]
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        plain_update = (self.jit_compile or not tf.inside_function()
                        or tf.distribute.has_strategy()
                        or isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer))
        if plain_update:
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        else:
            if not self.optimizer.built:
                self.optimizer.build(variables)

            @tf.function(jit_compile=True, autograph=False)
            def fused_update(gradients):
                self.optimizer.apply_gradients(zip(gradients, variables, strict=True))

            fused_update(gradients)
        return self._update_trackers(distribute.sum_over_replicas(terms))

    def test_step(self, data):
        images = data[0] if isinstance(data, tuple) else data
        return self._update_trackers(
            distribute.sum_over_replicas(self.loss_terms(images, training=False)))
