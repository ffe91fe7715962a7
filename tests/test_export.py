"""SavedModel export: signatures, plain-TensorFlow loading, agreement with the Keras model."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tcvae_tf import export
from tcvae_tf.model import BetaTCVAE

LATENT_DIM = 3
SAMPLE_REPEATS = 2000

# Runs in a fresh interpreter that never imports tcvae_tf: loads both SavedModels with
# plain TensorFlow, records every signature's inputs/outputs and evaluates them.
PLAIN_TF_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    encoder_dir, decoder_dir, inputs_path, outputs_path, report_path = sys.argv[1:]
    inputs = np.load(inputs_path)
    outputs, report = {}, {}
    for kind, folder, feed in (("encoder", encoder_dir, inputs["images"]),
                               ("decoder", decoder_dir, inputs["latents"])):
        loaded = tf.saved_model.load(folder)
        report[kind] = {}
        for key, function in loaded.signatures.items():
            specs = function.structured_input_signature[1]
            report[kind][key] = {
                "inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in specs.items()},
                "outputs": {k: [v.dtype.name, v.shape.as_list()]
                            for k, v in function.structured_outputs.items()},
            }
            (input_name,) = specs
            result = function(**{input_name: tf.constant(feed)})
            for name, value in result.items():
                outputs[f"{kind}/{key}/{name}"] = value.numpy()
        if kind == "encoder":
            repeated = np.repeat(feed[:2], REPEATS, axis=0)
            result = loaded.signatures["serving_default"](images=tf.constant(repeated))
            for name, value in result.items():
                outputs[f"repeated/{name}"] = value.numpy()
    report["tcvae_tf_imported"] = any(m.startswith("tcvae_tf") for m in sys.modules)
    np.savez(outputs_path, **outputs)
    with open(report_path, "w") as handle:
        json.dump(report, handle)
""").replace("REPEATS", str(SAMPLE_REPEATS))


@pytest.fixture(scope="module")
def trained_model():
    keras.utils.set_random_seed(0)
    model = BetaTCVAE(latent_dim=LATENT_DIM, arch="burgess", dataset_size=64, beta=6)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(0).random((64, 64, 64, 1)).round().astype("float32")
    model.fit(images, batch_size=16, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    encoder_dir, decoder_dir = folder / "encoder" / "1", folder / "decoder" / "1"
    description = export.export_model(trained_model, encoder_dir, decoder_dir)
    return encoder_dir, decoder_dir, description


@pytest.fixture(scope="module")
def plain_tf_results(exported, tmp_path_factory):
    """Outputs and signature report of a subprocess that loads the SavedModels."""
    encoder_dir, decoder_dir, _ = exported
    folder = tmp_path_factory.mktemp("plain")
    rng = np.random.default_rng(1)
    inputs = {"images": rng.random((8, 64, 64, 1)).round().astype("float32"),
              "latents": rng.normal(size=(8, LATENT_DIM)).astype("float32")}
    np.savez(folder / "inputs.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, "-c", PLAIN_TF_SCRIPT, str(encoder_dir), str(decoder_dir),
         str(folder / "inputs.npz"), str(folder / "outputs.npz"), str(folder / "report.json")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = dict(np.load(folder / "outputs.npz"))
    report = json.loads((folder / "report.json").read_text())
    return inputs, outputs, report


def test_plain_tensorflow_loads_without_tcvae_tf(plain_tf_results):
    _, _, report = plain_tf_results
    assert report["tcvae_tf_imported"] is False


def test_signature_names_and_shapes(plain_tf_results):
    _, _, report = plain_tf_results
    latents = ["float32", [None, LATENT_DIM]]
    images = ["float32", [None, 64, 64, 1]]
    assert set(report["encoder"]) == {"serving_default", "encode"}
    assert set(report["decoder"]) == {"serving_default", "decode"}
    for key in ("serving_default", "encode"):
        assert report["encoder"][key] == {
            "inputs": {"images": images},
            "outputs": {"mean": latents, "log_scale": latents, "sample": latents}}
    for key in ("serving_default", "decode"):
        assert report["decoder"][key] == {
            "inputs": {"latents": latents},
            "outputs": {"logits": images, "probs": images}}


def test_outputs_match_keras_model(trained_model, plain_tf_results):
    inputs, outputs, _ = plain_tf_results
    mean, log_scale = (t.numpy() for t in trained_model.encode(inputs["images"]))
    logits = trained_model.decode(inputs["latents"]).numpy()
    probs = 1.0 / (1.0 + np.exp(-logits))
    for key in ("serving_default", "encode"):
        np.testing.assert_allclose(outputs[f"encoder/{key}/mean"], mean, atol=1e-5)
        np.testing.assert_allclose(outputs[f"encoder/{key}/log_scale"], log_scale, atol=1e-5)
    for key in ("serving_default", "decode"):
        np.testing.assert_allclose(outputs[f"decoder/{key}/logits"], logits, atol=1e-5)
        np.testing.assert_allclose(outputs[f"decoder/{key}/probs"], probs, atol=1e-5)


def test_sample_is_mean_plus_standard_deviation_times_normal_noise(plain_tf_results):
    _, outputs, _ = plain_tf_results
    mean, log_scale = outputs["repeated/mean"], outputs["repeated/log_scale"]
    # Every row of the first (second) half encodes the same image.
    np.testing.assert_allclose(mean, np.repeat(mean[[0, SAMPLE_REPEATS]], SAMPLE_REPEATS, 0),
                               atol=1e-5)
    noise = (outputs["repeated/sample"] - mean) / np.exp(log_scale)  # [2 * R, D]
    count = noise.size
    assert abs(noise.mean()) < 5 / np.sqrt(count)
    assert abs(noise.std() - 1.0) < 0.03
    assert abs(np.mean(np.abs(noise) < 1.0) - 0.6827) < 0.02
    assert abs(np.corrcoef(noise.T)[0, 1]) < 0.06
    # Two calls draw different noise.
    first = outputs["encoder/serving_default/sample"]
    second = outputs["encoder/encode/sample"]
    assert not np.allclose(first, second)


def test_saved_model_cli_shows_the_signatures(exported):
    encoder_dir, decoder_dir, _ = exported
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed next to the Python interpreter")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    shown = {}
    for kind, folder in (("encoder", encoder_dir), ("decoder", decoder_dir)):
        completed = subprocess.run([str(cli), "show", "--dir", str(folder), "--all"], env=env,
                                   capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-3000:]
        shown[kind] = completed.stdout
    for key in ("serving_default", "encode"):
        assert f"signature_def['{key}']" in shown["encoder"]
    for key in ("serving_default", "decode"):
        assert f"signature_def['{key}']" in shown["decoder"]
    for name in ("inputs['images']", "outputs['mean']", "outputs['log_scale']",
                 "outputs['sample']", "shape: (-1, 64, 64, 1)", f"shape: (-1, {LATENT_DIM})"):
        assert name in shown["encoder"]
    for name in ("inputs['latents']", "outputs['logits']", "outputs['probs']"):
        assert name in shown["decoder"]
    assert "tensorflow/serving/predict" in shown["encoder"]


def test_description_says_log_scale_is_log_standard_deviation(exported):
    encoder_dir, decoder_dir, description = exported
    assert "standard deviation" in description["posterior"]["log_scale"]
    written = json.loads((encoder_dir / export.DESCRIPTION_FILE).read_text())
    assert written["network"] == "encoder"
    assert written["outputs"]["log_scale"]["shape"] == [None, LATENT_DIM]
    assert "standard deviation" in written["outputs"]["log_scale"]["meaning"]
    decoder_written = json.loads((decoder_dir / export.DESCRIPTION_FILE).read_text())
    assert list(decoder_written["outputs"]) == ["logits", "probs"]


def test_wrong_input_shape_is_rejected_by_the_signature(exported):
    encoder_dir, _, _ = exported
    loaded = tf.saved_model.load(str(encoder_dir))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.zeros([2, 32, 32, 1]))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.zeros([2, 64, 64, 1], tf.uint8))


def test_wrong_image_shape_fails_with_a_message_naming_the_expected_shape(exported):
    encoder_dir, decoder_dir, _ = exported
    loaded = tf.saved_model.load(str(encoder_dir))
    for call in (lambda images: loaded.signatures["serving_default"](images=images),
                 lambda images: loaded.signatures["encode"](images=images)):
        for shape in ([1, 32, 32, 1], [1, 64, 64, 3], [64, 64, 1]):
            with pytest.raises(tf.errors.InvalidArgumentError) as raised:
                call(tf.zeros(shape))
            message = str(raised.value)
            assert "images must be float32 [batch, 64, 64, 1]; got shape" in message
            assert "reshape" not in message.lower()
    assert loaded.signatures["serving_default"](images=tf.zeros([2, 64, 64, 1]))["mean"].shape \
        == [2, LATENT_DIM]
    decoder = tf.saved_model.load(str(decoder_dir))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"latents must be float32 \[batch, {LATENT_DIM}\]; got shape"):
        decoder.signatures["decode"](latents=tf.zeros([2, LATENT_DIM + 1]))


def stored_values(folder):
    """The number of float values in a SavedModel's variables checkpoint."""
    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    return sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
               if key.endswith("VARIABLE_VALUE"))


def test_each_weight_is_stored_once(trained_model, exported):
    encoder_dir, decoder_dir, _ = exported
    assert stored_values(encoder_dir) == trained_model.encoder.count_params()
    assert stored_values(decoder_dir) == trained_model.decoder.count_params()


def test_export_refuses_an_existing_folder(trained_model, exported, tmp_path):
    encoder_dir, _, _ = exported
    before = sorted(p.name for p in encoder_dir.iterdir())
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export.export_model(trained_model, encoder_dir, tmp_path / "decoder")
    assert sorted(p.name for p in encoder_dir.iterdir()) == before
    assert not (tmp_path / "decoder").exists()


def test_export_run_needs_a_final_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.keras"):
        export.export_run(tmp_path, tmp_path / "encoder", tmp_path / "decoder")


def test_batchnorm_runs_in_inference_mode(tmp_path):
    keras.utils.set_random_seed(0)
    model = BetaTCVAE(latent_dim=2, arch="conv", dataset_size=64)
    # Moving statistics far from a batch's own statistics: training-mode BatchNorm
    # would give different outputs.
    for layer in model.encoder.layers + model.decoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 4.0, "float32"))
    export.export_model(model, tmp_path / "encoder", tmp_path / "decoder")
    # the moving statistics are stored, once
    assert stored_values(tmp_path / "encoder") == model.encoder.count_params()
    assert stored_values(tmp_path / "decoder") == model.decoder.count_params()
    images = np.random.default_rng(2).random((4, 64, 64, 1)).astype("float32")
    latents = np.random.default_rng(3).normal(size=(4, 2)).astype("float32")
    encoder = tf.saved_model.load(str(tmp_path / "encoder"))
    decoder = tf.saved_model.load(str(tmp_path / "decoder"))
    mean, _ = model.encode(images, training=False)
    trained_mean, _ = model.encode(images, training=True)
    exported_mean = encoder.signatures["encode"](images=tf.constant(images))["mean"].numpy()
    np.testing.assert_allclose(exported_mean, mean.numpy(), atol=1e-5)
    assert not np.allclose(exported_mean, trained_mean.numpy(), atol=1e-3)
    np.testing.assert_allclose(
        decoder.signatures["decode"](latents=tf.constant(latents))["logits"].numpy(),
        model.decode(latents, training=False).numpy(), atol=1e-5)


def test_laplace_posterior_samples_laplace_noise(tmp_path):
    keras.utils.set_random_seed(0)
    model = BetaTCVAE(latent_dim=2, arch="burgess", dataset_size=64, posterior="laplace",
                      prior="laplace")
    description = export.export_model(model, tmp_path / "encoder", tmp_path / "decoder")
    assert description["posterior"]["family"] == "laplace"
    encoder = tf.saved_model.load(str(tmp_path / "encoder"))
    images = np.repeat(np.random.default_rng(4).random((1, 64, 64, 1)), 4000, axis=0)
    out = encoder.signatures["serving_default"](images=tf.constant(images, tf.float32))
    noise = ((out["sample"] - out["mean"]) / tf.exp(out["log_scale"])).numpy()
    # Laplace(0, 1): E|eps| = 1, Var(eps) = 2; a Normal would give 0.80 and 1.
    assert abs(np.mean(np.abs(noise)) - 1.0) < 0.05
    assert abs(noise.var() - 2.0) < 0.2
    assert np.all(np.isfinite(noise))
