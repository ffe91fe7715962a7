"""The Keras model: architectures, train/test steps, saving and reloading."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tcvae_tf import architectures
from tcvae_tf.model import BetaTCVAE


def _binary_images(n, seed=0):
    rng = np.random.default_rng(seed)
    # Blocky random images: a learnable structure, binary like dSprites.
    coarse = rng.random((n, 8, 8, 1)) > 0.7
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype("float32")


@pytest.mark.parametrize("arch", architectures.ARCHITECTURES)
def test_architectures_shapes(arch):
    encoder = architectures.build_encoder(arch, 4, (64, 64, 2))
    decoder = architectures.build_decoder(arch, 4, (64, 64, 2))
    params = encoder(np.zeros((3, 64, 64, 2), "float32"))
    logits = decoder(np.zeros((3, 4), "float32"))
    assert params.shape == (3, 8)
    assert logits.shape == (3, 64, 64, 2)


def test_architecture_errors():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; choose one of mlp"):
        architectures.build_encoder("resnet", 4)
    with pytest.raises(ValueError, match="64x64xC"):
        architectures.build_decoder("mlp", 4, (32, 32, 1))


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown objective 'nope'; choose one of tcvae, "
                                         "betavae, vae, factorvae, dipvae1, dipvae2"):
        BetaTCVAE(objective="nope")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        BetaTCVAE(beta=-1.0)
    with pytest.raises(ValueError, match="unknown estimator"):
        BetaTCVAE(estimator="exact")
    with pytest.raises(ValueError, match="beta is an option of tcvae .* and betavae .*, "
                                         "not of vae"):
        BetaTCVAE(objective="vae", beta=9.0)


def _fit(model, images, steps, batch_size=32):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    dataset = tf.data.Dataset.from_tensor_slices(images).repeat().batch(batch_size)
    return model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0).history


@pytest.mark.parametrize("objective,options", [
    ("tcvae", {"estimator": "mws", "beta": 2.0}), ("tcvae", {"estimator": "mss", "beta": 2.0}),
    ("betavae", {"beta": 2.0}), ("vae", {})])
def test_training_lowers_the_loss(objective, options):
    keras.utils.set_random_seed(1)
    images = _binary_images(256)
    model = BetaTCVAE(latent_dim=4, arch="burgess", objective=objective, options=options,
                      dataset_size=256)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    history = _fit(model, images, steps=60)
    after = model.evaluate(images, batch_size=64, verbose=0, return_dict=True)
    assert set(history) >= {"loss", "reconstruction", "kl", "minibatch_mi", "minibatch_tc",
                            "minibatch_dwkl"}
    assert after["loss"] < 0.95 * before["loss"]
    assert all(np.isfinite(v) for v in after.values())


def test_terms_add_up_for_the_vae():
    keras.utils.set_random_seed(2)
    images = _binary_images(64)
    model = BetaTCVAE(latent_dim=3, arch="burgess", objective="vae", dataset_size=64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    terms = model.loss_terms(images)
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + terms["kl"], rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], terms["mi"] + terms["tc"] + terms["dwkl"], rtol=1e-5)


def test_analytic_kl_option():
    keras.utils.set_random_seed(3)
    images = _binary_images(32)
    model = BetaTCVAE(latent_dim=3, arch="burgess", objective="betavae", kl="analytic",
                      beta=4.0, dataset_size=32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    terms = model.loss_terms(images)
    loc, log_scale = model.encode(images)
    expected = tf.reduce_mean(tf.reduce_sum(
        0.5 * (tf.square(loc) + tf.exp(2 * log_scale) - 1.0) - log_scale, axis=-1))
    np.testing.assert_allclose(terms["kl"], expected, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + 4.0 * terms["kl"],
                               rtol=1e-5)


def test_gradients_are_finite():
    images = _binary_images(16)
    model = BetaTCVAE(latent_dim=3, arch="mlp", estimator="mss", dataset_size=100)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with tf.GradientTape() as tape:
        loss = model.loss_terms(images, training=True)["loss"]
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)


@pytest.mark.parametrize("arch", ["conv", "burgess"])
def test_save_and_reload_give_identical_outputs(tmp_path, arch):
    keras.utils.set_random_seed(4)
    images = _binary_images(64)
    model = BetaTCVAE(latent_dim=3, arch=arch, beta=6.0, gamma=0.5, dataset_size=64,
                      estimator="mss", beta_warmup_steps=10)
    _fit(model, images, steps=3)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.get_config() == model.get_config()
    for original, copy in zip(model.encode(images), reloaded.encode(images), strict=True):
        np.testing.assert_array_equal(original.numpy(), copy.numpy())
    latents = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(model.decode(latents), reloaded.decode(latents))
    assert int(reloaded.optimizer.iterations) == 3


def test_config_round_trip():
    model = BetaTCVAE(latent_dim=5, arch="burgess", objective="betavae", beta=3.0, kl="analytic",
                      dataset_size=100, beta_warmup_steps=7)
    clone = BetaTCVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_normalization_equals_the_keras_layer(training):
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(2.0, 3.0, size=(6, 5, 4, 3)).astype("float32"))
    weights = [rng.uniform(0.5, 2.0, 3).astype("float32"),  # gamma
               rng.normal(size=3).astype("float32"),  # beta
               np.array([1.0, -1.0, 0.5], "float32"),  # moving mean
               np.array([2.0, 0.5, 1.5], "float32")]  # moving variance
    fused, stock = architectures.BatchNormalization(), keras.layers.BatchNormalization()
    for layer in (fused, stock):
        layer.build(x.shape)
        layer.set_weights(weights)
    gradients = []
    for layer in (fused, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.sin(y))
        gradients.append(tape.gradient(loss, [x, *layer.trainable_weights]))
        layer.outputs_seen = y.numpy()
    np.testing.assert_allclose(fused.outputs_seen, stock.outputs_seen, rtol=1e-5, atol=1e-5)
    for got, want in zip(gradients[0], gradients[1], strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    for got, want in zip(fused.non_trainable_weights, stock.non_trainable_weights, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    if training:  # the moving averages moved towards the batch statistics
        assert not np.allclose(fused.moving_mean.numpy(), [1.0, -1.0, 0.5])


def test_conv_model_keeps_the_keras_batch_normalization_layout(tmp_path):
    encoder = architectures.build_encoder("conv", 3)
    batch_norms = [layer for layer in encoder.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(isinstance(layer, architectures.BatchNormalization)
                               for layer in batch_norms)
    # Weights saved from the stock Keras layer load into the fused one by layer path.
    stock = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.BatchNormalization()])
    stock.layers[0].moving_mean.assign([3.0, 4.0])
    stock.save(tmp_path / "stock.keras")
    fused = keras.Sequential([keras.Input((8, 8, 2)), architectures.BatchNormalization()])
    fused.load_weights(tmp_path / "stock.keras")
    np.testing.assert_array_equal(fused.layers[0].moving_mean.numpy(), [3.0, 4.0])
