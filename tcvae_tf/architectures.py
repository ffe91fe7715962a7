"""Encoder and decoder networks for 64x64xC images.

Three families, each a pair of ``keras.Sequential`` networks (and FactorVAE's
discriminator, ``build_discriminator``):

- ``mlp``: the authors' dSprites networks. Encoder 4096-1200-1200-2D (ReLU);
  decoder D-1200-1200-1200-4096 (tanh).
- ``conv``: the authors' convolutional networks. Encoder conv 32, 32, 64, 64 (4x4,
  stride 2, BatchNorm, ReLU), conv 512 (4x4 valid), 1x1 conv to 2D; decoder mirrored
  with transposed convolutions 512 (1x1), 64 (4x4 valid), 64, 32, 32, C (4x4, stride 2).
- ``burgess``: the community standard (Burgess et al. 2018; disentanglement_lib).
  Encoder conv 32, 32, 64, 64 (4x4, stride 2, ReLU), dense 256, dense 2D; decoder
  dense 256, dense 1024, reshape 4x4x64, transposed convs 64, 32, 32, C.

Every encoder maps images [B, 64, 64, C] in [0, 1] to a tensor [B, 2D] whose first D
columns are the posterior location and last D the log-scale; every decoder maps
latents [B, D] to logits [B, 64, 64, C].

References:
  Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in VAEs. NeurIPS 2018.
  Burgess et al. Understanding disentangling in beta-VAE. 2018.
"""

import keras
from keras import layers

from tcvae_tf.choices import ARCHITECTURES

__all__ = ["ARCHITECTURES", "BatchNormalization", "build_decoder", "build_discriminator",
           "build_encoder"]
IMAGE_SIZE = 64


def _check(arch, image_shape):
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if tuple(image_shape[:2]) != (IMAGE_SIZE, IMAGE_SIZE) or len(image_shape) != 3:
        raise ValueError(f"architectures take 64x64xC images, got shape {tuple(image_shape)}")


@keras.saving.register_keras_serializable(package="tcvae_tf")
class BatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    The same weights, moving-average rule and results as the Keras layer, which on the
    TensorFlow backend normalises with separate moment and arithmetic ops (several passes
    over every activation, forward and backward); oneDNN's fused kernel makes one. On
    4-D channels-last inputs with the TensorFlow backend (and no mask or renorm) the fused
    kernel is used; anything else falls back to the Keras computation. The class keeps the
    Keras name, so `.keras` files written with the stock layer load unchanged.

    In training under a tf.distribute strategy with several replicas, the statistics are
    those of the global batch (synchronised BatchNorm, whatever `synchronized` says):

    ```none
    mean = all_reduce_sum(sum_b x) / (R * n)
    var  = all_reduce_sum(sum_b (x - mean)**2) / (R * n)      (two passes, as on one device)
    ```

    so that R replicas normalise, update the moving averages and differentiate exactly as
    one device does on the whole batch (the all-reduces pass gradients back).
    """

    @staticmethod
    def _replica_context():
        """The replica context when several replicas train in sync, else None."""
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync < 2:
            return None
        return context

    def _fused(self, inputs, mask):
        axis = self.axis[0] if isinstance(self.axis, (list, tuple)) else self.axis
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and len(inputs.shape) == 4 and axis in (-1, 3) and self.scale and self.center
                and self.compute_dtype != "float64")

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and self._replica_context() is not None:
            return self._synchronised_call(inputs, mask)
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)  # statistics in float32 also under mixed precision
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)
            # The kernel returns the unbiased variance, n / (n - 1) times the batch variance
            # that the Keras layer averages.
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=False)
        return tf.cast(outputs, self.compute_dtype)

    def _synchronised_call(self, inputs, mask):
        """Training step of one replica, normalised with the global batch's statistics."""
        import tensorflow as tf

        axis = self.axis[0] if isinstance(self.axis, (list, tuple)) else self.axis
        if mask is not None or self.renorm or axis % len(inputs.shape) != len(inputs.shape) - 1:
            raise ValueError("synchronised BatchNormalization takes channels-last inputs "
                             "without mask or renorm")
        context = self._replica_context()
        # Statistics in float32 also under mixed precision (and in float64 under float64).
        dtype = tf.float64 if self.compute_dtype == "float64" else tf.float32
        x = tf.cast(inputs, dtype)
        axes = list(range(len(x.shape) - 1))  # all but the channels
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], dtype)
        total, count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                          [tf.reduce_sum(x, axis=axes), count])
        mean = total / count
        squares = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                     tf.reduce_sum(tf.square(x - mean), axis=axes))
        variance = squares / count
        momentum = self.momentum
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            batch = tf.cast(tf.stop_gradient(batch), moving.dtype)
            moving.assign(moving * momentum + batch * (1.0 - momentum))
        scale = tf.cast(self.gamma, dtype) if self.scale else None
        offset = tf.cast(self.beta, dtype) if self.center else None
        outputs = tf.nn.batch_normalization(x, mean, variance, offset, scale, self.epsilon)
        return tf.cast(outputs, self.compute_dtype)


def _conv_bn_relu(filters, kernel_size, strides, padding):
    return [
        layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False),
        BatchNormalization(),
        layers.ReLU(),
    ]


def _deconv_bn_relu(filters, kernel_size, strides, padding):
    return [
        layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding=padding,
                               use_bias=False),
        BatchNormalization(),
        layers.ReLU(),
    ]


def build_encoder(arch, latent_dim, image_shape=(64, 64, 1)):
    """Builds the encoder network of an architecture family.

    Args:
      arch: one of ``ARCHITECTURES``.
      latent_dim: number of latent dimensions D.
      image_shape: (64, 64, C).

    Returns:
      A ``keras.Sequential`` mapping images [B, 64, 64, C] to [B, 2D]
      (location, then log-scale).
    """
    _check(arch, image_shape)
    image_shape = tuple(image_shape)
    out = 2 * latent_dim
    if arch == "mlp":
        stack = [
            layers.Flatten(),
            layers.Dense(1200, activation="relu"),
            layers.Dense(1200, activation="relu"),
            layers.Dense(out),
        ]
    elif arch == "conv":
        stack = []
        for filters in (32, 32, 64, 64):
            stack += _conv_bn_relu(filters, 4, 2, "same")  # 64 -> 32 -> 16 -> 8 -> 4
        stack += _conv_bn_relu(512, 4, 1, "valid")  # 4 -> 1
        stack += [layers.Conv2D(out, 1), layers.Flatten()]
    else:  # burgess
        stack = [
            layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")
            for filters in (32, 32, 64, 64)
        ]
        stack += [layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dense(out)]
    return keras.Sequential([keras.Input(image_shape), *stack], name=f"{arch}_encoder")


def build_decoder(arch, latent_dim, image_shape=(64, 64, 1)):
    """Builds the decoder network of an architecture family.

    Args:
      arch: one of ``ARCHITECTURES``.
      latent_dim: number of latent dimensions D.
      image_shape: (64, 64, C) of the images to produce.

    Returns:
      A ``keras.Sequential`` mapping latents [B, D] to logits [B, 64, 64, C].
    """
    _check(arch, image_shape)
    image_shape = tuple(image_shape)
    channels = image_shape[-1]
    if arch == "mlp":
        stack = [layers.Dense(1200, activation="tanh") for _ in range(3)]
        stack += [layers.Dense(IMAGE_SIZE * IMAGE_SIZE * channels), layers.Reshape(image_shape)]
    elif arch == "conv":
        stack = [layers.Reshape((1, 1, latent_dim))]
        stack += _deconv_bn_relu(512, 1, 1, "valid")
        stack += _deconv_bn_relu(64, 4, 1, "valid")  # 1 -> 4
        for filters in (64, 32, 32):
            stack += _deconv_bn_relu(filters, 4, 2, "same")  # 4 -> 8 -> 16 -> 32
        stack += [layers.Conv2DTranspose(channels, 4, strides=2, padding="same")]  # 32 -> 64
    else:  # burgess
        stack = [
            layers.Dense(256, activation="relu"),
            layers.Dense(1024, activation="relu"),
            layers.Reshape((4, 4, 64)),
        ]
        stack += [
            layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu")
            for filters in (64, 32, 32)  # 4 -> 8 -> 16 -> 32
        ]
        stack += [layers.Conv2DTranspose(channels, 4, strides=2, padding="same")]  # 32 -> 64
    return keras.Sequential([keras.Input((latent_dim,)), *stack], name=f"{arch}_decoder")


def build_discriminator(latent_dim, hidden_layers=6, units=1000):
    """FactorVAE's discriminator: an MLP from latents to one logit.

    Kim and Mnih's: ``hidden_layers`` dense layers of ``units`` with LeakyReLU(0.2), then
    one logit l(z) for "z was drawn from q(z)" against "from prod_d q(z_d)" (their two
    softmax outputs carry the same information: l is their difference).

    Args:
      latent_dim: number of latent dimensions D.
      hidden_layers: number of hidden layers (6 in the paper).
      units: units per hidden layer (1000 in the paper).

    Returns:
      A ``keras.Sequential`` mapping latents [B, D] to logits [B, 1].
    """
    stack = []
    for _ in range(hidden_layers):
        stack += [layers.Dense(units), layers.LeakyReLU(negative_slope=0.2)]
    return keras.Sequential([keras.Input((latent_dim,)), *stack, layers.Dense(1)],
                            name="discriminator")
