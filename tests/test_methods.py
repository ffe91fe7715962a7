"""The method registry: every method's round trip, FactorVAE's and DIP-VAE's maths, files
written before the registry, and the errors of bad method options."""

import io
import json
import os
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tcvae_tf import distribute, evaluation, export, methods, objectives, training, zoo
from tcvae_tf.cli.main import cli
from tcvae_tf.model import BetaTCVAE, DisentangledVAE

REPOSITORY_ZOO = Path(__file__).resolve().parents[1] / "zoo"
# A small discriminator keeps FactorVAE's tests fast; the default is 6 x 1000.
SMALL = {"factorvae": {"discriminator_layers": 2, "discriminator_units": 32}}


@pytest.fixture(scope="module")
def images(small_dsprites):
    rng = np.random.default_rng(0)
    return small_dsprites.images[rng.choice(small_dsprites.num_images, 32, replace=False)] \
        .astype("float32")


def _optimizers(model):
    found = [model.optimizer]
    if hasattr(model, "discriminator_optimizer"):
        found.append(model.discriminator_optimizer)
    return found


def _assert_same_state(first, second):
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for optimizer_a, optimizer_b in zip(_optimizers(first), _optimizers(second), strict=True):
        assert len(optimizer_a.variables) == len(optimizer_b.variables) > 2
        for a, b in zip(optimizer_a.variables, optimizer_b.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# -- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("objective", methods.names())
def test_every_method_saves_reloads_resumes_and_exports(tmp_path, objective, images):
    keras.utils.set_random_seed(0)
    model = DisentangledVAE(latent_dim=2, arch="burgess", objective=objective,
                            options=SMALL.get(objective), dataset_size=1536, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(16), epochs=1,
                        verbose=0).history
    assert set(history) == {methods.LOGGED_NAMES.get(term, term)
                            for term in (*methods.BASE_TERMS, *model.method.logged)}
    assert all(np.isfinite(values[-1]) for values in history.values())
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.get_config() == model.get_config()
    assert reloaded.options == methods.resolve_options(objective, SMALL.get(objective))
    _assert_same_state(model, reloaded)
    assert int(reloaded.optimizer.iterations) == 2
    # Resumed: the next step of the reloaded model is the next step of the original.
    model.train_on_batch(images[:16])
    reloaded.train_on_batch(images[:16])
    _assert_same_state(model, reloaded)

    description = export.export_model(reloaded, tmp_path / "encoder", tmp_path / "decoder")
    encoder = tf.saved_model.load(str(tmp_path / "encoder"))
    assert set(encoder.signatures) == {"serving_default", "encode"}
    out = encoder.signatures["encode"](images=tf.constant(images[:3]))
    assert set(out) == {"mean", "log_scale", "sample"} and out["mean"].shape == (3, 2)
    np.testing.assert_allclose(out["mean"], reloaded.encode(images[:3])[0], atol=1e-5)
    decoder = tf.saved_model.load(str(tmp_path / "decoder"))
    assert set(decoder.signatures["decode"](latents=tf.zeros([1, 2]))) == {"logits", "probs"}
    assert description["encoder"]["inputs"]["images"]["shape"] == [None, 64, 64, 1]


def test_unknown_methods_and_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown objective 'nope'; choose one of tcvae, "
                                         "betavae, vae, factorvae, dipvae1, dipvae2$"):
        methods.get("nope")
    with pytest.raises(ValueError, match=r"^gamma is an option of tcvae \(weight of the "
                                         r"dimension-wise KL\) and factorvae \(weight of the TC "
                                         r"estimated by the discriminator\), not of dipvae2$"):
        methods.resolve_options("dipvae2", {"gamma": 3.0})
    with pytest.raises(ValueError, match="^lambda_od is an option of dipvae1 and dipvae2, "
                                         "not of tcvae$"):
        methods.resolve_options("tcvae", {"lambda_od": 3.0})
    with pytest.raises(ValueError, match="^--gamma must be >= 0, got -1$"):
        methods.resolve_options("factorvae", {"gamma": -1}, flag=True)
    with pytest.raises(ValueError, match="^discriminator_units must be >= 1, got 0$"):
        methods.resolve_options("factorvae", {"discriminator_units": 0})
    with pytest.raises(ValueError, match="^unknown kl 'exact'; choose one of sampled, analytic$"):
        methods.resolve_options("dipvae1", {"kl": "exact"})


@pytest.mark.parametrize("arguments,message", [
    (["--objective", "nope"],
     "unknown objective 'nope'; choose one of tcvae, betavae, vae, factorvae, dipvae1, dipvae2"),
    (["--objective", "dipvae2", "--gamma", "3"],
     "--gamma is an option of tcvae (weight of the dimension-wise KL) and factorvae (weight of "
     "the TC estimated by the discriminator), not of dipvae2"),
    (["--lambda-od", "3"], "--lambda-od is an option of dipvae1 and dipvae2, not of tcvae"),
    (["--objective", "vae", "--beta", "4"], "--beta is an option of tcvae (weight of the total "
     "correlation) and betavae (weight of the KL), not of vae"),
    (["--objective", "factorvae", "--gamma", "-1"], "--gamma must be >= 0, got -1"),
    (["--objective", "dipvae1", "--lambda-od", "-0.5"], "--lambda-od must be >= 0, got -0.5"),
    (["--objective", "betavae", "--beta", "nan"], "--beta must be a finite number, got nan"),
    (["--objective", "factorvae", "--warmup-steps", "10"],
     "--warmup-steps is an option of tcvae, betavae, vae, not of factorvae"),
    (["--objective", "factorvae", "--batch-size", "7"],
     "factorvae splits each batch into two halves: give an even batch size of at least 4, "
     "got 7"),
])
def test_bad_method_options_on_the_command_line(tmp_path, arguments, message):
    result = CliRunner().invoke(cli, ["train", "dsprites-small", "--steps", "1", "--out",
                                      str(tmp_path / "run"), *arguments])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {message}"
    assert not os.path.exists(tmp_path / "run")


def test_the_method_decides_the_training_defaults():
    assert (training.TrainConfig().lr, training.TrainConfig().batch_size) == (1e-3, 2048)
    factor = training.TrainConfig(objective="factorvae")
    assert (factor.lr, factor.batch_size) == (1e-4, 64)
    assert factor.options["gamma"] == 35.0 and factor.options["discriminator_units"] == 1000
    assert factor.default_out() == os.path.join("runs", "dsprites-factorvae-gamma35-mlp-seed0")
    assert training.TrainConfig().default_out() == os.path.join(
        "runs", "dsprites-tcvae-beta6-mlp-seed0")
    dip = training.TrainConfig(objective="dipvae2", options={"lambda_od": 5})
    assert dip.options == {"lambda_od": 5, "lambda_d_factor": 1.0, "kl": "analytic"}


# -- FactorVAE --------------------------------------------------------------------------------


def test_permute_dims_keeps_the_marginals_and_breaks_the_dependence():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2000, 1))
    z = np.concatenate([base, base + 0.1 * rng.normal(size=(2000, 1)), -2.0 * base], axis=1)
    assert np.corrcoef(z.T)[0, 1] > 0.99  # strongly dependent dimensions
    seed = tf.constant([7, 3], tf.int64)
    permuted = objectives.permute_dims(tf.constant(z, tf.float32), seed).numpy()
    z32 = z.astype("float32")
    for d in range(3):  # each column is a permutation of its own column: marginals kept
        np.testing.assert_array_equal(np.sort(permuted[:, d]), np.sort(z32[:, d]))
    correlation = np.corrcoef(permuted.T)
    assert np.all(np.abs(correlation[np.triu_indices(3, 1)]) < 0.1)
    # Independent permutations per dimension, a function of the seed only.
    orders = [np.argsort(np.argsort(permuted[:, d])) for d in range(3)]
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(
        permuted, objectives.permute_dims(tf.constant(z, tf.float32), seed).numpy())
    other = objectives.permute_dims(tf.constant(z, tf.float32), tf.constant([7, 4], tf.int64))
    assert not np.array_equal(permuted, other.numpy())


def test_the_discriminator_tc_is_the_mean_log_density_ratio():
    """With the exact log density ratio as its logit (D = q / (q + prod q)), the estimate is
    mean log(D / (1 - D)) over samples of q(z), and tends to the Gaussian's TC."""
    covariance = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, -0.5], [0.0, -0.5, 1.0]])
    precision = np.linalg.inv(covariance)
    log_det = np.linalg.slogdet(covariance)[1]
    # log N(z; 0, S) - sum_d log N(z_d; 0, S_dd), here with unit variances.
    joint = tf.constant(precision - np.eye(3), tf.float32)

    def log_ratio(z):
        return -0.5 * tf.reduce_sum(tf.matmul(z, joint) * z, axis=1, keepdims=True) \
            - 0.5 * log_det

    model = DisentangledVAE(latent_dim=3, arch="burgess", objective="factorvae",
                            options={**SMALL["factorvae"], "gamma": 2.0, "kl": "sampled"})
    model.discriminator = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(log_ratio)])
    z = np.random.default_rng(2).multivariate_normal(np.zeros(3), covariance, size=20000)
    z = tf.constant(z, tf.float32)
    terms = model.method.regulariser(model, z, z, tf.zeros_like(z), {"kl": tf.constant(0.5)},
                                     0.0, distribute.ReplicaBatch(20000))
    probability = 1.0 / (1.0 + np.exp(-log_ratio(z).numpy()[:, 0].astype("float64")))  # D
    expected = np.mean(np.log(probability / (1.0 - probability)))
    np.testing.assert_allclose(terms["tc_discriminator"], expected, rtol=1e-4)
    true_tc = -0.5 * log_det  # KL(N(0, S) || N(0, diag S)) for unit variances
    np.testing.assert_allclose(terms["tc_discriminator"], true_tc, rtol=0.05)
    np.testing.assert_allclose(terms["regulariser"], 0.5 + 2.0 * terms["tc_discriminator"],
                               rtol=1e-6)


def test_the_discriminator_loss_and_accuracy():
    real = tf.constant([2.0, -1.0, 3.0, 0.5])
    fake = tf.constant([-2.0, 1.0])
    expected = 0.5 * (np.mean(np.log1p(np.exp(-real.numpy())))
                      + np.mean(np.log1p(np.exp(fake.numpy()))))
    np.testing.assert_allclose(objectives.discriminator_loss(real, fake), expected, rtol=1e-6)
    np.testing.assert_allclose(objectives.discriminator_accuracy(real, fake), 0.5 * (0.75 + 0.5))


def test_factorvae_with_gamma_zero_takes_the_vae_step(images):
    """gamma = 0: the encoder's and decoder's update is the VAE's on the even half."""
    keras.utils.set_random_seed(4)
    factor = DisentangledVAE(latent_dim=2, arch="burgess", objective="factorvae", seed=5,
                             options={**SMALL["factorvae"], "gamma": 0.0, "kl": "sampled"},
                             dataset_size=1536)
    vae = DisentangledVAE(latent_dim=2, arch="burgess", objective="vae", seed=5,
                          dataset_size=1536)
    vae.encoder.set_weights(factor.encoder.get_weights())
    vae.decoder.set_weights(factor.decoder.get_weights())
    before = factor.encoder.get_weights() + factor.decoder.get_weights()
    for model in (factor, vae):
        model.compile(optimizer=keras.optimizers.SGD(1e-4))
    factor.train_on_batch(images[:16])
    vae.train_on_batch(images[:16:2])
    after = factor.encoder.get_weights() + factor.decoder.get_weights()
    expected = vae.encoder.get_weights() + vae.decoder.get_weights()
    for start, got, want in zip(before, after, expected, strict=True):
        # atol: one float32 spacing of weights near 0.1 (the updates are differences of them)
        np.testing.assert_allclose(got - start, want - start, rtol=1e-3, atol=1e-8)
    assert any(np.abs(got - start).max() > 0 for start, got in zip(before, after, strict=True))
    assert int(factor.discriminator_optimizer.iterations) == 1


# -- DIP-VAE ----------------------------------------------------------------------------------


def _numpy_dip(loc, log_scale=None):
    mean = loc.mean(axis=0)
    covariance = sum(np.outer(row - mean, row - mean) for row in loc) / len(loc)
    if log_scale is not None:
        covariance = covariance + np.diag(np.exp(2.0 * log_scale).mean(axis=0))
    dims = covariance.shape[0]
    off = sum(covariance[i, j] ** 2 for i in range(dims) for j in range(dims) if i != j)
    diagonal = sum((covariance[i, i] - 1.0) ** 2 for i in range(dims))
    return covariance, off, diagonal


@pytest.mark.parametrize("with_variance", [False, True])
def test_dip_penalties_against_numpy(with_variance):
    rng = np.random.default_rng(3)
    loc = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    log_scale = rng.uniform(-2.0, 0.5, size=(50, 4))
    covariance, off, diagonal = _numpy_dip(loc, log_scale if with_variance else None)
    got = objectives.dip_covariance(loc.astype("float32"), log_scale.astype("float32")
                                    if with_variance else None)
    np.testing.assert_allclose(got, covariance, rtol=1e-4, atol=1e-5)
    penalties = objectives.dip_penalties(got)
    np.testing.assert_allclose(penalties["off_diagonal"], off, rtol=1e-4)
    np.testing.assert_allclose(penalties["diagonal"], diagonal, rtol=1e-4)

    objective = "dipvae2" if with_variance else "dipvae1"
    model = DisentangledVAE(latent_dim=4, arch="burgess", objective=objective,
                            options={"lambda_od": 3.0, "kl": "sampled"})
    terms = model.method.regulariser(model, None, tf.constant(loc, tf.float32),
                                     tf.constant(log_scale, tf.float32),
                                     {"kl": tf.constant(2.0)}, 0.0, distribute.ReplicaBatch(50))
    factor = 1.0 if with_variance else 10.0  # disentanglement_lib's lambda_d / lambda_od
    np.testing.assert_allclose(terms["regulariser"],
                               2.0 + 3.0 * off + factor * 3.0 * diagonal, rtol=1e-4)


def test_dip_penalties_vanish_on_an_identity_covariance():
    rng = np.random.default_rng(4)
    loc = rng.normal(size=(64, 3))
    loc -= loc.mean(axis=0)
    # Whiten: (1/M) loc^T loc = I exactly (up to rounding).
    loc = loc @ np.linalg.inv(np.linalg.cholesky(loc.T @ loc / len(loc)).T)
    for penalty in objectives.dip_penalties(objectives.dip_covariance(loc)).values():
        assert abs(float(penalty)) < 1e-8
    # DIP-VAE-II: Cov[mu] = 0.75 I plus posterior variances 0.25 is the identity again.
    log_scale = np.full_like(loc, np.log(0.5))
    covariance = objectives.dip_covariance(np.sqrt(0.75) * loc, log_scale)
    for penalty in objectives.dip_penalties(covariance).values():
        assert abs(float(penalty)) < 1e-8


# -- files written before the registry -------------------------------------------------------


def _legacy_model_config(objective, **overrides):
    """A model config as the code before the method registry wrote it: every option flat."""
    config = {
        "name": "beta_tcvae", "trainable": True,
        "dtype": {"module": "keras", "class_name": "DTypePolicy",
                  "config": {"name": "float32"}, "registered_name": None},
        "latent_dim": 2, "arch": "burgess", "image_shape": [64, 64, 1],
        "objective": objective, "alpha": 1.0, "beta": 1.0 if objective == "vae" else 6.0,
        "gamma": 1.0, "estimator": "mws", "dataset_size": 1536, "posterior": "normal",
        "prior": "normal", "likelihood": "bernoulli", "kl": "sampled",
        "beta_warmup_steps": 0, "gamma_warmup_steps": 0, "seed": 0,
    }
    config.update(overrides)
    return config


def _write_legacy_model(model, path, legacy_config):
    """Saves ``model`` with the model part of its config.json replaced by ``legacy_config``.

    The weights file is what the model writes; for tcvae, betavae and vae its layout is the
    one the earlier code wrote (checked below).
    """
    buffer = io.BytesIO()
    model.save(str(path))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    record = json.loads(members["config.json"])
    assert record["registered_name"] == "tcvae_tf>BetaTCVAE"
    record.update(module="tcvae_tf.model", class_name="BetaTCVAE", config=legacy_config)
    members["config.json"] = json.dumps(record).encode()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    path.write_bytes(buffer.getvalue())
    return members


def _weights_layout(members):
    import h5py

    found = []
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as weights:
        weights.visititems(lambda name, item: found.append((name, item.shape))
                           if isinstance(item, h5py.Dataset) else None)
    return dict(found)


@pytest.mark.parametrize("objective,overrides,options", [
    ("tcvae", {}, {"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "estimator": "mws",
                   "beta_warmup_steps": 0, "gamma_warmup_steps": 0}),
    ("betavae", {"kl": "analytic", "beta": 4.0},
     {"beta": 4.0, "kl": "analytic", "beta_warmup_steps": 0}),
    ("vae", {"beta_warmup_steps": 3}, {"kl": "sampled", "beta_warmup_steps": 3}),
])
def test_model_files_written_before_the_registry_load(tmp_path, images, objective, overrides,
                                                       options):
    legacy = _legacy_model_config(objective, **overrides)
    model = BetaTCVAE.from_config(legacy)
    assert (model.objective, model.options) == (objective, options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.train_on_batch(images[:8])
    members = _write_legacy_model(model, tmp_path / "old.keras", legacy)
    # The earlier layout: the encoder's and decoder's weights, then one Adam: iterations,
    # learning rate and two moments per variable, encoder first.
    layout = _weights_layout(members)
    assert {name.split("/")[0] for name in layout} == {"encoder", "decoder", "optimizer"}
    shapes = [tuple(v.shape) for v in (*model.encoder.trainable_variables,
                                       *model.decoder.trainable_variables)]
    assert [layout[f"optimizer/vars/{i}"] for i in range(2 + 2 * len(shapes))] == \
        [(), (), *[shape for shape in shapes for _ in range(2)]]
    reloaded = keras.models.load_model(tmp_path / "old.keras")
    assert isinstance(reloaded, BetaTCVAE) and reloaded.options == options
    _assert_same_state(model, reloaded)


def test_a_run_folder_written_before_the_registry_evaluates_resumes_and_exports(
        tmp_path, images):
    run = tmp_path / "old-run"
    legacy_train = {
        "dataset": "dsprites-small", "objective": "tcvae", "alpha": 1.0, "beta": 6.0,
        "gamma": 1.0, "estimator": "mws", "kl": "sampled", "arch": "burgess", "latent_dim": 2,
        "batch_size": 16, "lr": 0.001, "epochs": None, "steps": 2, "beta_warmup_steps": 0,
        "gamma_warmup_steps": 0, "seed": 0, "source": "rendered", "data_path": None,
        "subset": None, "precision": "fp32", "jit_compile": "auto", "checkpoint_every": 2,
        "out": str(run)}
    config = training.TrainConfig.from_dict(legacy_train)
    assert config.options == methods.default_options("tcvae")
    model = DisentangledVAE.from_config(_legacy_model_config("tcvae"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(16), epochs=1, verbose=0)
    os.makedirs(run / "checkpoints")
    for name in ("model.keras", "checkpoints/last.keras"):
        _write_legacy_model(model, run / name, _legacy_model_config("tcvae"))
    (run / "config.json").write_text(json.dumps({"train": legacy_train, "total_steps": 2}))
    (run / "history.csv").write_text("step,dwkl,kl,loss,mi,reconstruction,tc\n"
                                     "2,1,2,3,4,5,6\n")

    evaluable = evaluation.load_evaluable(str(run))
    described = evaluable.describe()
    assert (described["objective"], described["options"]["beta"]) == ("tcvae", 6.0)

    training.train(training.TrainConfig(out=str(run), steps=4), resume=True, verbose=0,
                   echo=lambda _: None)
    stored = json.loads((run / "config.json").read_text())["train"]
    assert stored["objective"] == "tcvae" and stored["options"]["beta"] == 6.0
    assert "alpha" not in stored
    assert int(training.load_model(str(run)).optimizer.iterations) == 4

    result = CliRunner().invoke(cli, ["evaluate", str(run), "--metric", "active_units",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["export", str(run), "--name", "old", "--zoo-root",
                                      str(tmp_path / "zoo")])
    assert result.exit_code == 0, result.output
    assert zoo.list_models(tmp_path / "zoo")[0]["options"] == {"beta": 6.0}


def test_the_published_v1_models_load_and_evaluate(small_dsprites):
    rows = {row["name"]: row for row in zoo.list_models(REPOSITORY_ZOO)}
    expected = {"dsprites-btcvae-b6": ("tcvae", "beta-TCVAE (tcvae): alpha=1, beta=6, gamma=1, "
                                                "estimator=mws"),
                "dsprites-betavae-b6": ("betavae", "beta-VAE (betavae): beta=6, kl=sampled")}
    listing = CliRunner().invoke(cli, ["zoo", "list", "--zoo-root", str(REPOSITORY_ZOO)])
    assert listing.exit_code == 0, listing.output
    for name, (objective, options) in expected.items():
        assert (rows[name]["objective"], rows[name]["options"]) == (objective, {"beta": 6.0})
        assert rows[name]["beta"] == 6.0
        assert any(line.startswith(name) and "beta=6" in line
                   for line in listing.output.splitlines())
        shown = CliRunner().invoke(cli, ["zoo", "show", name, "--version", "1", "--zoo-root",
                                         str(REPOSITORY_ZOO)])
        assert f"objective   {options}" in shown.output, shown.output
        evaluable = evaluation.load_evaluable(name, zoo_root=REPOSITORY_ZOO, version=1)
        assert evaluable.describe()["objective"] == objective
        loc, log_scale, log_likelihood = evaluation.encode_dataset(
            evaluable, small_dsprites.images[:64], batch_size=32)
        assert loc.shape == (64, 10)
        assert np.all(np.isfinite(loc)) and np.all(np.isfinite(log_likelihood))


def test_the_readme_lists_every_method_and_option():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, method in methods.METHODS.items():
        assert f"| {method.title} | `{name}` |" in readme, name
        for option in method.options:
            assert f"`{option.flag}`" in readme, option.flag
