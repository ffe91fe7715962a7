"""The Keras model shared by every method: networks, posterior, prior, likelihood, trackers.

``train_step`` wires the pure functions of :mod:`tcvae_tf.objectives` together; the
method (``objective``, see :mod:`tcvae_tf.methods`) supplies the regulariser, or a
``train_step`` of its own:

```none
loss = mean_i[ -log p(x_i|z_i) ] + regulariser          z_i ~ q(z|x_i)
tcvae    alpha*MI + beta_t*TC + gamma_t*DWKL            betavae  beta_t*KL      vae  KL
factorvae  KL + gamma*TC_discriminator                  dipvae1/2  KL + covariance penalty
```

MI, TC and DWKL (the decomposition of the sampled KL) are computed for every method, by
one call of the minibatch estimator (``kl_terms``), and logged with the method's terms.

Under a ``tf.distribute`` strategy each replica holds rows of the global batch: the
posterior parameters are all-gathered before the estimator and the regulariser, the noise
is drawn for the global batch, and every term is this replica's part of the global-batch
mean (see :class:`tcvae_tf.distribute.ReplicaBatch`), so one step on R replicas is the
one-device step.

References:
  Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in VAEs. NeurIPS 2018.
"""

import keras
import tensorflow as tf

from tcvae_tf import architectures, distribute, distributions, methods, objectives

OBJECTIVES = methods.names()
KL_KINDS = methods.KL_KINDS


# Registered under its first name: model files written since the first release name
# "tcvae_tf>BetaTCVAE", and they keep loading.
@keras.saving.register_keras_serializable(package="tcvae_tf", name="BetaTCVAE")
class DisentangledVAE(keras.Model):
    """A VAE trained with one of the registered methods (beta-TCVAE by default).

    Args:
      latent_dim: number of latent dimensions D.
      arch: encoder/decoder family, one of ``architectures.ARCHITECTURES``.
      image_shape: (64, 64, C).
      objective: the method, one of ``methods.names()``: ``"tcvae"``, ``"betavae"``,
        ``"vae"``, ``"factorvae"``, ``"dipvae1"``, ``"dipvae2"``.
      options: the method's options (see ``methods.get(objective).options``); missing
        ones take their defaults. They may also be given as keyword arguments
        (``beta=6.0``).
      dataset_size: N, the number of training images (the estimators need it).
      posterior, prior: ``"normal"`` or ``"laplace"``.
      likelihood: ``"bernoulli"`` (binary images) or ``"gaussian"``.
      seed: seed of the random draws of training: those of step t are drawn from
        (seed, t) with stateless ops, so a resumed run draws what the uninterrupted one did.

    Example:

    ```python
    model = DisentangledVAE(latent_dim=10, arch="mlp", beta=6.0, dataset_size=737280)
    model = DisentangledVAE(arch="burgess", objective="factorvae", options={"gamma": 35})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images_dataset, steps_per_epoch=100)
    ```
    """

    def __init__(self, latent_dim=10, arch="mlp", image_shape=(64, 64, 1), objective="tcvae",
                 options=None, dataset_size=737280, posterior="normal", prior="normal",
                 likelihood="bernoulli", seed=0, **kwargs):
        given = dict(options or {})
        for name in methods.option_table():
            if name in kwargs:
                given[name] = kwargs.pop(name)
        super().__init__(**kwargs)
        self.objective = objective
        self.options = methods.resolve_options(objective, given)
        self.method = methods.get(objective)(**self.options)
        self.method.check_model(posterior, prior)
        self.latent_dim = int(latent_dim)
        self.arch = arch
        self.image_shape = tuple(int(s) for s in image_shape)
        self.dataset_size = int(dataset_size)
        self.posterior = posterior
        self.prior = prior
        self.likelihood = likelihood
        self.seed = int(seed)
        self.encoder = architectures.build_encoder(arch, self.latent_dim, self.image_shape)
        self.decoder = architectures.build_decoder(arch, self.latent_dim, self.image_shape)
        self.method.build(self)
        # Keyed by term; named as logged (the minibatch estimates say so in their names).
        self._trackers = {term: keras.metrics.Mean(name=methods.LOGGED_NAMES.get(term, term))
                          for term in (*methods.BASE_TERMS, *self.method.logged)}
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim, arch=self.arch, image_shape=list(self.image_shape),
            objective=self.objective, options=dict(self.options),
            dataset_size=self.dataset_size, posterior=self.posterior, prior=self.prior,
            likelihood=self.likelihood, seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if not isinstance(config.get("options"), dict):
            # Written before methods declared their options: all of them stored flat.
            objective, options = methods.split_record(config)
            for key in methods.LEGACY_KEYS:
                config.pop(key, None)
            config.update(objective=objective, options=options)
        return super().from_config(config, custom_objects=custom_objects)

    def build(self, input_shape=None):
        # Sub-networks are Sequential models with Input layers: built on construction.
        self.built = True

    def compile(self, *args, **kwargs):
        """Keras's compile; also builds the optimizers' state (the method's too), so that a
        reloaded .keras file restores all of it and the optimizer only holds the
        encoder's and decoder's variables."""
        super().compile(*args, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.network_variables())
        self.method.compile(self)

    def compile_from_config(self, config):
        # Keras's own version skips an overridden compile(), and would build the optimizer
        # on every trainable variable (a method's discriminator too).
        self.compile(**keras.saving.deserialize_keras_object(config))

    @property
    def metrics(self):
        return list(self._trackers.values())

    def network_variables(self):
        """The trainable variables of the encoder and the decoder (the main optimizer's)."""
        return [*self.encoder.trainable_variables, *self.decoder.trainable_variables]

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

    def kl_terms(self, z, loc, log_scale, share):
        """The batch's MI, TC and DWKL and their sum, the sampled KL (scalars).

        The one call of the minibatch estimator, for every method: its estimator is the
        method's ``decomposition_estimator`` (MWS unless beta-TCVAE is told otherwise).

        Args:
          z: float32 [B, D], the replica's samples (B = M on one device).
          loc, log_scale: float32 [M, D], the global batch's posterior parameters.
          share: the replica's :class:`tcvae_tf.distribute.ReplicaBatch`.
        """
        parts = objectives.kl_decomposition(
            z, loc, log_scale, self.dataset_size, estimator=self.method.decomposition_estimator,
            posterior=self.posterior, prior=self.prior, row_offset=share.row_offset)
        mi, tc, dwkl = (share.mean(parts[name]) for name in ("mi", "tc", "dwkl"))
        return {"mi": mi, "tc": tc, "dwkl": dwkl, "kl": mi + tc + dwkl}

    def objective_terms(self, images, z, loc, log_scale, training=False, share=None):
        """Every term of the objective for a batch whose posterior sample is ``z``.

        Args:
          images: float32 [B, 64, 64, C] in [0, 1], the replica's images.
          z: float32 [B, D], their posterior samples.
          loc, log_scale: float32 [M, D], the global batch's posterior parameters (on one
            device, B = M and they are the images' own).
          training: passed to the decoder (BatchNorm).
          share: the replica's :class:`tcvae_tf.distribute.ReplicaBatch` (None: one
            device).

        Returns:
          A dict of scalar tensors: ``loss``, ``reconstruction`` (mean -log p(x|z)),
          ``kl`` (mean log q(z|x) - log p(z), or the analytic KL), ``mi``, ``tc``, ``dwkl``
          and the method's own terms. Means over the global batch; under a strategy with R
          replicas, this replica's part of them, which the replicas' sum makes whole.
        """
        share = share or distribute.ReplicaBatch(tf.shape(images)[0])
        logits = self.decode(z, training=training)
        terms = {"reconstruction": share.mean(self.reconstruction_nll(images, logits))}
        terms.update(self.kl_terms(z, loc, log_scale, share))
        step = tf.cast(self.optimizer.iterations, tf.float32) if self.optimizer else 0.0
        terms.update(self.method.regulariser(self, z, loc, log_scale, terms, step, share))
        terms["loss"] = terms["reconstruction"] + terms.pop("regulariser")
        return terms

    def loss_terms(self, images, training=False):
        """Computes every term of the objective for a batch.

        Args:
          images: float [B, 64, 64, C] in [0, 1].
          training: passed to the networks (BatchNorm).

        Returns:
          See ``objective_terms``; the posterior noise is the current step's, drawn for
          the global batch.
        """
        images = tf.cast(images, tf.float32)
        # Under a tf.distribute strategy this replica holds rows of the global batch: the
        # noise, the estimators and the regulariser are the global batch's.
        share = distribute.ReplicaBatch(tf.shape(images)[0])
        loc, log_scale = self.encode(images, training=training)
        all_loc, all_log_scale = share.gather(loc, log_scale)  # [M, D]
        z = share.rows(self.sample_posterior(all_loc, all_log_scale, seed=self.step_seed()))
        return self.objective_terms(images, z, all_loc, all_log_scale, training=training,
                                    share=share)

    def update_trackers(self, terms):
        """Adds the batch's terms (summed over the replicas' parts) to the trackers; returns
        every tracker's result."""
        reported = distribute.sum_over_replicas(
            {name: terms[name] for name in self._trackers if name in terms})
        for name, value in reported.items():
            self._trackers[name].update_state(value)
        return distribute.step_logs(
            {tracker.name: tracker.result() for tracker in self._trackers.values()})

    def scaled_loss(self, loss):
        """The loss as the optimizer differentiates it (scaled under float16 loss scaling)."""
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.scale_loss(loss)
        return loss

    def apply_updates(self, updates):
        """Applies [(optimizer, gradients, variables), ...] in one step.

        When the step itself is not compiled with XLA, the optimizer updates still are:
        Adam reads and writes every weight, gradient and moment several times per step,
        and as separate TensorFlow ops it took about three times the CPU time of the same
        update as one XLA computation (MLP, batch 256: 34 ms against 12 ms). The networks
        then run on TensorFlow's own kernels (oneDNN matrix products and convolutions,
        faster than XLA's on CPU) with a fused update. Eager steps, loss-scaled (float16)
        optimizers and distribution strategies keep the plain update.
        """
        plain_update = (self.jit_compile or not tf.inside_function()
                        or tf.distribute.has_strategy()
                        or isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer))
        if plain_update:
            for optimizer, gradients, variables in updates:
                optimizer.apply_gradients(zip(gradients, variables, strict=True))
            return
        for optimizer, _, variables in updates:
            if not optimizer.built:
                optimizer.build(variables)

        @tf.function(jit_compile=True, autograph=False)
        def fused_update(all_gradients):
            for (optimizer, _, variables), gradients in zip(updates, all_gradients,
                                                            strict=True):
                optimizer.apply_gradients(zip(gradients, variables, strict=True))

        fused_update([gradients for _, gradients, _ in updates])

    def train_step(self, data):
        """One optimizer step on a batch (the method's own step, if it has one); returns
        the trackers' results."""
        if self.method.train_step is not None:
            return self.method.train_step(self, data)
        images = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            terms = self.loss_terms(images, training=True)
            loss = self.scaled_loss(terms["loss"])
        variables = self.network_variables()
        self.apply_updates([(self.optimizer, tape.gradient(loss, variables), variables)])
        return self.update_trackers(terms)

    def test_step(self, data):
        if self.method.test_step is not None:
            return self.method.test_step(self, data)
        images = data[0] if isinstance(data, tuple) else data
        return self.update_trackers(self.loss_terms(images, training=False))


# The model's first name, kept for code and files written against earlier versions.
BetaTCVAE = DisentangledVAE
