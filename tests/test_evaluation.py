"""Evaluation: loading runs and zoo models, encoding a dataset, metrics.json and the CLI."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tcvae_tf import evaluation, runs, training, zoo
from tcvae_tf import metrics as metrics_lib
from tcvae_tf.cli.main import cli
from tcvae_tf.data import dsprites_subgrid
from tcvae_tf.metrics import mig_histogram, mig_sampling

FACTOR_NAMES = ["shape", "scale", "orientation", "pos_x", "pos_y"]
NUM_SAMPLES = 300  # Monte-Carlo samples: enough to run every code path, cheap on 1536 images


def make_run(folder):
    """A run folder written by training: a tiny burgess model, 5 steps on 512 images."""
    config = training.TrainConfig(dataset="dsprites-small", arch="burgess", batch_size=64,
                                  steps=5, latent_dim=3, subset=512, checkpoint_every=5,
                                  out=str(folder))
    training.train(config, verbose=0, echo=lambda message: None)
    return training.load_model(str(folder))


def numbers(value):
    """Every number in a nested JSON value."""
    if isinstance(value, dict):
        return [x for item in value.values() for x in numbers(item)]
    if isinstance(value, list):
        return [x for item in value for x in numbers(item)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


@pytest.fixture(scope="module")
def dataset():
    return dsprites_subgrid()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluation") / "run"
    return folder, make_run(folder)


@pytest.fixture(scope="module")
def evaluated(run):
    """The run evaluated once through the CLI: (run folder, CLI output, metrics.json)."""
    folder, _ = run
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--num-samples",
                                      str(NUM_SAMPLES), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder, result.output, json.loads((folder / evaluation.METRICS_FILE).read_text())


# -- encoding ---------------------------------------------------------------------------------


def test_encode_dataset_matches_the_model(run, dataset):
    folder, model = run
    evaluable = evaluation.load_evaluable(folder)
    images = dataset.images[:37]  # 3 batches of 16: the last one is ragged
    loc, log_scale, log_likelihood = evaluation.encode_dataset(
        evaluable, images, batch_size=16, seed=5)
    expected_loc, expected_log_scale = model.encode(images.astype("float32"))
    np.testing.assert_allclose(loc, expected_loc.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_scale, expected_log_scale.numpy(), atol=1e-5)
    # Brute force: batch b draws its noise with the stateless seed [seed, b].
    expected = []
    for b, start in enumerate(range(0, 37, 16)):
        batch = images[start:start + 16].astype("float32")
        mean, log_std = model.encode(batch)
        noise = tf.random.stateless_normal(mean.shape, seed=tf.constant([5, b], tf.int64))
        logits = model.decode(mean + tf.exp(log_std) * noise)
        expected.append(-model.reconstruction_nll(batch, logits).numpy())
    np.testing.assert_allclose(log_likelihood, np.concatenate(expected), rtol=1e-5)
    assert loc.dtype == log_scale.dtype == log_likelihood.dtype == np.float32


def test_encode_dataset_seeds_progress_and_options(run, dataset):
    evaluable = evaluation.load_evaluable(run[0])
    images = dataset.images[:40]
    calls = []
    first = evaluation.encode_dataset(evaluable, images, batch_size=16, seed=1,
                                      progress=lambda done, total: calls.append((done, total)))
    again = evaluation.encode_dataset(evaluable, images, batch_size=16, seed=1)
    other = evaluation.encode_dataset(evaluable, images, batch_size=16, seed=2)
    assert calls == [(16, 40), (32, 40), (40, 40)]
    np.testing.assert_array_equal(first.log_likelihood, again.log_likelihood)
    assert not np.allclose(first.log_likelihood, other.log_likelihood)
    codes_only = evaluation.encode_dataset(evaluable, images, with_log_likelihood=False)
    assert codes_only.log_likelihood is None
    np.testing.assert_allclose(codes_only.loc, first.loc, atol=1e-5)
    # Float images in [0, 1] and uint8 images give the same codes.
    floats = evaluation.encode_dataset(evaluable, images.astype("float32"),
                                       with_log_likelihood=False)
    np.testing.assert_allclose(floats.loc, first.loc, atol=1e-5)


def test_encode_dataset_scales_integer_images_by_pixel_max(run, dataset):
    evaluable = evaluation.load_evaluable(run[0])
    binary = dataset.images[:8]
    reference = evaluation.encode_dataset(evaluable, binary, with_log_likelihood=False)
    scaled = evaluation.encode_dataset(evaluable, binary * np.uint8(255), pixel_max=255,
                                       with_log_likelihood=False)
    np.testing.assert_allclose(scaled.loc, reference.loc, atol=1e-5)


def test_encode_dataset_errors(run, dataset):
    evaluable = evaluation.load_evaluable(run[0])
    with pytest.raises(ValueError, match=r"takes images \[N, 64, 64, 1\], got shape"):
        evaluation.encode_dataset(evaluable, np.zeros((4, 32, 32, 1), np.uint8))
    with pytest.raises(ValueError, match="no images"):
        evaluation.encode_dataset(evaluable, np.zeros((0, 64, 64, 1), np.uint8))
    with pytest.raises(ValueError, match="batch size must be a positive integer"):
        evaluation.encode_dataset(evaluable, dataset.images[:4], batch_size=0)

    def nan_encoder(images):
        loc = tf.zeros([tf.shape(images)[0], 2])
        return loc + float("nan") * tf.cast(tf.range(2) == 1, tf.float32), loc

    broken = evaluation.Evaluable("broken", "run", {}, {}, nan_encoder, lambda z: z,
                                  latent_dim=2, image_shape=(64, 64, 1))
    with pytest.raises(ValueError, match=r"broken returned NaN or inf codes for 4 of 4 images "
                                         r"\(first: image 0\)"):
        evaluation.encode_dataset(broken, dataset.images[:4], with_log_likelihood=False)


# -- metrics ----------------------------------------------------------------------------------


def test_mig_factors():
    assert evaluation.mig_factors(FACTOR_NAMES, "dsprites") == [1, 2, 3, 4]
    assert evaluation.mig_factors(FACTOR_NAMES, "dsprites-small") == [1, 2, 3, 4]
    assert evaluation.mig_factors(["a", "b"], "other") == [0, 1]
    assert evaluation.mig_factors(FACTOR_NAMES, "dsprites", ["pos_y", "shape"]) == [0, 4]
    assert evaluation.mig_factors(FACTOR_NAMES, None, ["2", 3]) == [2, 3]
    with pytest.raises(ValueError, match="unknown factor 'colour'; the dataset has shape"):
        evaluation.mig_factors(FACTOR_NAMES, "dsprites", ["colour"])
    with pytest.raises(ValueError, match="factor index 5 is out of range"):
        evaluation.mig_factors(FACTOR_NAMES, "dsprites", [5])
    with pytest.raises(ValueError, match="listed twice"):
        evaluation.mig_factors(FACTOR_NAMES, "dsprites", ["scale", 1])


def test_headline_mig_equals_a_run_over_those_factors_only(dataset):
    """One estimator run over all factors gives the subset MIG of a run over the subset."""
    rng = np.random.default_rng(0)
    classes = dataset.factor_classes
    # An identity code of scale, orientation and pos_x, a pure-noise latent, no pos_y.
    loc = np.concatenate([classes[:, 1:4] / np.array([1.0, 3.0, 7.0]),
                          rng.normal(size=(len(classes), 1))], axis=1)
    log_scale = np.full(loc.shape, math.log(0.05))
    result = evaluation.compute_metrics(
        loc, log_scale, classes, metrics=["mig_sampling", "mig_histogram"],
        factor_names=FACTOR_NAMES, dataset_name="dsprites-small", num_samples=NUM_SAMPLES)
    subset = mig_sampling(loc, log_scale, classes, num_samples=NUM_SAMPLES, seed=0,
                          factors=[1, 2, 3, 4])
    everything = mig_sampling(loc, log_scale, classes, num_samples=NUM_SAMPLES, seed=0)
    section = result["mig_sampling"]
    assert section["mig"] == pytest.approx(subset["mig"], abs=1e-12)
    assert section["mig_all_factors"] == pytest.approx(everything["mig"], abs=1e-12)
    assert section["factors"] == ["scale", "orientation", "pos_x", "pos_y"]
    assert section["all_factors"] == FACTOR_NAMES
    # Three of the four factors are coded one-to-one, pos_y not at all.
    assert 0.6 < section["mig"] < 0.8
    histogram = mig_histogram(loc, classes, num_samples=10000, factors=[1, 2, 3, 4])
    assert result["mig_histogram"]["mig"] == pytest.approx(histogram["mig"], abs=1e-12)
    assert set(result["seconds"]) == {"mig_sampling", "mig_histogram"}


def test_compute_metrics_rejects_bad_codes(dataset):
    classes = dataset.factor_classes
    loc = np.zeros((len(classes), 2))
    with pytest.raises(ValueError, match="the codes have 1536 rows but factor_classes has 1535"):
        evaluation.compute_metrics(loc, loc, classes[:-1])
    bad = loc.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"loc holds NaN or inf values in 1 of 1536 rows "
                                         r"\(first: row 7\)"):
        evaluation.compute_metrics(bad, loc, classes)
    with pytest.raises(ValueError, match="same shape"):
        evaluation.compute_metrics(loc, loc[:, :1], classes)
    with pytest.raises(ValueError, match=r"log_likelihood must be an array \[n\] with "
                                         r"1 <= n <= 1536"):
        evaluation.compute_metrics(loc, loc, classes, metrics=["elbo"],
                                   log_likelihood=np.zeros(1537))
    with pytest.raises(ValueError, match="unknown metric 'fid'; choose from mig_sampling"):
        evaluation.compute_metrics(loc, loc, classes, metrics=["fid"])
    with pytest.raises(ValueError, match="no metric requested"):
        evaluation.compute_metrics(loc, loc, classes, metrics=[])


# -- evaluate and metrics.json -----------------------------------------------------------------


def test_evaluate_writes_metrics_json(evaluated, dataset):
    folder, output, metrics = evaluated
    for key in ("model", "data", "factors", "settings", "mig_sampling", "mig_histogram", "elbo",
                "active_units", "notes", "seconds", "date", "library_versions"):
        assert key in metrics, key
    assert metrics["model"]["kind"] == "run" and metrics["model"]["path"] == str(folder)
    # what the numbers were computed on: export refuses them once model.keras changes
    assert metrics["model"]["fingerprint"] == runs.model_fingerprint(folder)
    assert metrics["model"]["fingerprint"]["file"] == "model.keras"
    # The full dataset, although the run trained on a 512-image subset.
    assert metrics["data"] == json.loads(json.dumps(dataset.describe()))
    assert metrics["factors"] == ["scale", "orientation", "pos_x", "pos_y"]
    assert metrics["settings"]["num_samples"] == NUM_SAMPLES
    for name in ("mig_sampling", "mig_histogram"):
        section = metrics[name]
        assert 0.0 <= section["mig"] <= 1.0 and 0.0 <= section["mig_all_factors"] <= 1.0
        assert section["factors"] == metrics["factors"]
        assert section["all_factors"] == FACTOR_NAMES
    elbo = metrics["elbo"]
    for key in ("log_likelihood", "mutual_information", "total_correlation", "dimensionwise_kl",
                "kl", "elbo"):
        assert math.isfinite(elbo[key]), key
    assert elbo["elbo"] == pytest.approx(elbo["log_likelihood"] - elbo["kl"])
    assert elbo["log_likelihood"] < 0
    assert elbo["log_likelihood_images"] == metrics["settings"]["log_likelihood_images"] == 1536
    assert 0 < elbo["log_likelihood_standard_error"] < abs(elbo["log_likelihood"])
    assert metrics["active_units"]["latent_dim"] == 3
    assert "tensorflow" in metrics["library_versions"]
    values = numbers(metrics)
    assert values and all(math.isfinite(x) for x in values)
    # The table names every headline number.
    assert "MIG, sampling (scale, orientation, pos_x, pos_y)" in output
    assert "MIG, histogram (all 5 factors)" in output
    assert "total correlation" in output and "active units" in output
    assert f"{metrics['mig_sampling']['mig']:.4f}" in output
    assert f"metrics written to {folder / evaluation.METRICS_FILE}" in output


def test_evaluate_python_api_matches_the_cli(evaluated):
    folder, _, metrics = evaluated
    result = evaluation.evaluate(folder, num_samples=NUM_SAMPLES)
    for name in evaluation.METRICS:
        assert result[name] == metrics[name], name


def test_log_likelihood_on_a_random_subset(run, dataset):
    folder, _ = run
    result = evaluation.evaluate(folder, metrics=["elbo"], num_samples=100, seed=4,
                                 log_likelihood_images=200)
    chosen = np.sort(np.random.default_rng(4).choice(dataset.num_images, 200, replace=False))
    brute = evaluation.encode_dataset(evaluation.load_evaluable(folder),
                                      dataset.images[chosen], seed=4).log_likelihood
    elbo = result["elbo"]
    assert elbo["log_likelihood_images"] == 200
    assert elbo["log_likelihood"] == pytest.approx(brute.astype(np.float64).mean(), rel=1e-9)
    assert elbo["log_likelihood_standard_error"] == pytest.approx(
        brute.std(ddof=1) / math.sqrt(200), rel=1e-4)
    assert elbo["num_images"] == dataset.num_images  # the KL terms use every image
    assert set(result["seconds"]) >= {"encode", "log_likelihood", "elbo"}
    with pytest.raises(ValueError, match="log_likelihood_images must be a positive integer"):
        evaluation.evaluate(folder, metrics=["elbo"], log_likelihood_images=0)


def test_cli_metric_selection_and_json(evaluated, tmp_path):
    folder, _, full = evaluated
    out = tmp_path / "selected.json"
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--metric", "active_units",
                                      "--metric", "mig_histogram", "--json", str(out),
                                      "--factor", "pos_x", "--quiet"])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    # the full evaluation stays in metrics.json; the partial one goes beside it
    assert json.loads((folder / evaluation.METRICS_FILE).read_text()) == full
    beside = folder / "metrics-mig_histogram+active_units.json"
    assert written == json.loads(beside.read_text())
    assert f"metrics written to {beside}" in result.output
    assert "mig_sampling" not in written and "elbo" not in written
    assert written["settings"]["metrics"] == ["mig_histogram", "active_units"]
    assert written["mig_histogram"]["factors"] == ["pos_x"]
    assert "MIG, histogram (pos_x)" in result.output
    assert "ELBO" not in result.output


def test_run_metrics_path_never_replaces_a_full_evaluation(tmp_path):
    full = tmp_path / evaluation.METRICS_FILE
    assert evaluation.run_metrics_path(tmp_path, ["elbo"]) == str(full)
    full.write_text("{}")
    assert evaluation.run_metrics_path(tmp_path, evaluation.METRICS) == str(full)
    assert evaluation.run_metrics_path(tmp_path, ["active_units", "elbo"]) == str(
        tmp_path / "metrics-elbo+active_units.json")


def test_minibatch_saturation_is_computed_only_on_request(run, dataset):
    folder, _ = run
    result = evaluation.evaluate(folder, metrics=["minibatch_saturation"], seed=2)
    encoding = evaluation.encode_dataset(evaluation.load_evaluable(folder), dataset.images,
                                         with_log_likelihood=False)
    expected = metrics_lib.minibatch_saturation(
        encoding.loc, encoding.log_scale, batch_sizes=(256,), num_batches=4, seed=2)
    assert result["minibatch_saturation"] == expected
    assert set(result["minibatch_saturation"]["mss"]) == {"256"}  # 2048 > the 1536 images
    rows = dict(evaluation.summary_rows(result))
    assert "own-posterior share of log q(z), MWS, M = 256 (median / mean)" in rows
    assert "minibatch_saturation" not in evaluation.METRICS


def test_cli_errors_are_one_line(run, tmp_path):
    runner = CliRunner()
    empty_zoo = tmp_path / "zoo"
    no_model = tmp_path / "no-model"
    no_model.mkdir()
    (no_model / training.CONFIG_FILE).write_text((run[0] / training.CONFIG_FILE).read_text())
    cases = [
        ([str(no_model)], "holds no model"),
        (["no-such-model", "--zoo-root", str(empty_zoo)],
         "'no-such-model' is neither a run folder nor a zoo model"),
        ([str(tmp_path)], f"{tmp_path} is not a run folder (no config.json)"),
        ([str(run[0]), "--version", "2"], "a version applies to zoo models only"),
        ([str(run[0]), "--factor", "colour"], "unknown factor 'colour'"),
        ([str(run[0]), "--source", "official"], "dsprites-small is only rendered"),
    ]
    for arguments, message in cases:
        result = runner.invoke(cli, ["evaluate", *arguments, "--quiet"])
        assert result.exit_code == 1, (arguments, result.output)
        assert message in result.output, (arguments, result.output)
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1
        assert "Traceback" not in result.output
    result = runner.invoke(cli, ["evaluate", str(run[0]), "--metric", "fid"])
    assert result.exit_code == 2 and "'fid' is not one of" in result.output


def test_zoo_model_is_evaluated_without_writing_into_the_zoo(run, tmp_path, monkeypatch):
    folder, model = run
    root = tmp_path / "zoo"
    zoo.publish(folder, "tiny-eval", root=root)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    evaluable = evaluation.load_evaluable("tiny-eval", zoo_root=root)
    assert (evaluable.kind, evaluable.version, evaluable.latent_dim) == ("zoo", 1, 3)
    assert evaluable.config["dataset"] == "dsprites-small"
    images = dsprites_subgrid().images[:20]
    from_zoo = evaluation.encode_dataset(evaluable, images, batch_size=8, seed=3)
    from_run = evaluation.encode_dataset(evaluation.load_evaluable(folder), images, batch_size=8,
                                         seed=3)
    for zoo_value, run_value in zip(from_zoo, from_run, strict=True):
        np.testing.assert_allclose(zoo_value, run_value, rtol=1e-4, atol=1e-3)

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "zoo-metrics.json"
    result = CliRunner().invoke(cli, ["evaluate", "tiny-eval", "--zoo-root", str(root),
                                      "--metric", "active_units", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["model"]["kind"] == "zoo"
    assert json.loads(out.read_text())["model"]["version"] == 1
    assert "tiny-eval (zoo v1)" in result.output
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
    assert not list(Path(tmp_path).glob("**/metrics.json"))
    # A run folder of the same name wins over the zoo model.
    (tmp_path / "tiny-eval").mkdir()
    for name in (training.CONFIG_FILE, training.MODEL_FILE):
        (tmp_path / "tiny-eval" / name).write_bytes((folder / name).read_bytes())
    assert evaluation.load_evaluable("tiny-eval", zoo_root=root).kind == "run"


def test_format_summary_of_a_partial_result():
    result = {"model": {"ref": "r", "kind": "run"},
              "data": {"name": "d", "source": "rendered", "num_images": 4},
              "active_units": {"active_units": 2, "latent_dim": 5, "threshold": 0.01},
              "notes": ["trained on the official source, evaluated on rendered"]}
    text = evaluation.format_summary(result)
    assert "active units (variance > 0.01)" in text and "2 / 5" in text
    assert "MIG" not in text
    assert text.endswith("note: trained on the official source, evaluated on rendered")


def test_format_summary_leaves_a_space_after_every_label():
    result = {"model": {"ref": "r", "kind": "run"},
              "data": {"name": "d", "source": "rendered", "num_images": 1536},
              "sap": {"sap": 0.1}, "dci": {"disentanglement": 0.2},
              "seconds": {"encode": 0.9, "images_encoded": 1536, "sap": 1.0, "dci": 2.0}}
    lines = evaluation.format_summary(result).splitlines()
    assert "encoding  1536 images in 0.9 s" in lines
    assert any(line.startswith("SAP       ") for line in lines)


# -- the standard metrics and the registry ------------------------------------------------------

SMALL_SETTINGS = ["dci.num_train=300", "dci.num_test=100", "sap.num_train=300",
                  "sap.num_test=100", "modularity_explicitness.num_train=300",
                  "modularity_explicitness.num_test=100", "factorvae_score.num_train=200",
                  "factorvae_score.num_eval=100", "betavae_score.num_train=200",
                  "betavae_score.num_eval=100"]


def test_cli_metric_all_prints_every_metric_with_settings_and_times(run, tmp_path):
    folder, _ = run
    out = tmp_path / "all.json"
    arguments = ["evaluate", str(folder), "--metric", "all", "--num-samples", "200",
                 "--json", str(out), "--quiet"]
    for setting in SMALL_SETTINGS:
        arguments += ["--setting", setting]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["settings"]["metrics"] == list(evaluation.ALL_METRICS)
    assert set(evaluation.ALL_METRICS) <= set(written["seconds"])
    assert written["dci"]["settings"] == {"num_train": 300, "num_test": 100,
                                          "booster": "histogram", "seed": 0}
    assert written["settings"]["metric_settings"]["factorvae_score"]["num_train"] == 200
    for label in ("DCI disentanglement", "SAP score", "modularity", "FactorVAE score",
                  "beta-VAE score", "own-posterior share", "MIG, sampling"):
        assert label in result.output, label
    assert "300 train / 100 test images, histogram gradient-boosted trees, seed 0 (" in (
        result.output)
    assert "encoding" in result.output and " s)" in result.output
    # "all" holds the default set: it is a full evaluation, written to metrics.json
    assert evaluation.run_metrics_path(folder, ["all"]) == str(folder / evaluation.METRICS_FILE)


def test_metrics_of_means_encode_only_the_images_they_draw(run, dataset):
    folder, _ = run
    options = {"sap": {"num_train": 100, "num_test": 50},
               "betavae_score": {"batch_size": 4, "num_train": 20, "num_eval": 10}}
    lazy = evaluation.evaluate(folder, metrics=["sap", "betavae_score"], options=options)
    assert 0 < lazy["seconds"]["images_encoded"] < dataset.num_images
    full = evaluation.evaluate(folder, metrics=["active_units", "sap", "betavae_score"],
                               options=options)
    assert "images_encoded" not in full["seconds"]
    assert lazy["sap"]["sap"] == pytest.approx(full["sap"]["sap"], abs=1e-6)
    assert lazy["betavae_score"]["eval_accuracy"] == pytest.approx(
        full["betavae_score"]["eval_accuracy"], abs=1e-6)


def test_cli_setting_errors_are_one_line(run):
    runner = CliRunner()
    for metric, setting, message in (
            ("sap", "dci.trees=3", "unknown setting 'trees' of metric dci"),
            ("sap", "dci=3", "a setting is METRIC.SETTING=VALUE"),
            ("sap", "dci.num_train=5", "a setting of dci is given but dci is not computed"),
            ("sap", "fid.x=1", "unknown metric 'fid'; choose from"),
            # values of the wrong type: refused before anything loads, not a traceback (or
            # a silent True) after the encoding
            ("sap", "sap.num_train=abc", "setting sap.num_train must be an integer >= 1"),
            ("sap", "sap.num_train=2.5", "setting sap.num_train must be an integer >= 1"),
            ("sap", "sap.continuous_factors=yes", "must be true or false, got 'yes'"),
            ("mig_histogram", "mig_histogram.num_images=0", "must be an integer >= 1, got 0"),
            ("minibatch_saturation", "minibatch_saturation.batch_sizes=256,x",
             "must be integers >= 1 separated by commas"),
            ("dci", "dci.booster=exat", "must be one of histogram, exact, got 'exat'")):
        result = runner.invoke(cli, ["evaluate", str(run[0]), "--metric", metric, "--setting",
                                     setting, "--quiet"])
        assert result.exit_code == 1, (setting, result.output)
        assert message in result.output and result.output.count("\n") == 1, result.output


def test_a_factor_without_a_mig_is_refused(run):
    result = CliRunner().invoke(cli, ["evaluate", str(run[0]), "--metric", "sap", "--factor",
                                      "pos_x", "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output == ("Error: --factor is only used by mig_sampling and mig_histogram, "
                             "neither of which is computed\n")
    with pytest.raises(ValueError, match="the factors argument is only used by mig_sampling"):
        evaluation.evaluate(str(run[0]), metrics=["sap"], factors=["pos_x"])


# Runs `tcvae-tf evaluate` in a fresh interpreter; prints its output and whether it imported
# TensorFlow.
EVALUATE_SCRIPT = """
import sys
from click.testing import CliRunner
from tcvae_tf.cli.main import cli
result = CliRunner().invoke(cli, ["evaluate", *sys.argv[1:]])
print(result.exit_code, "tensorflow" in sys.modules, result.output.strip())
"""


@pytest.mark.parametrize("arguments,message", [
    # a value equal to the default, given on the command line, is refused too
    (["--metric", "sap", "--num-samples", "10000"],
     "--num-samples is only used by mig_sampling and elbo, neither of which is computed"),
    (["--metric", "mig_sampling", "--metric", "dci", "--log-likelihood-images", "50"],
     "--log-likelihood-images is only used by elbo, which is not computed"),
    (["--metric", "elbo", "--num-samples", "50", "--factor", "pos_x"],
     "--factor is only used by mig_sampling and mig_histogram, neither of which is computed"),
])
def test_options_no_chosen_metric_reads_are_refused_before_anything_loads(tmp_path, arguments,
                                                                          message):
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", EVALUATE_SCRIPT, str(tmp_path / "no-run"), *arguments,
         "--zoo-root", str(tmp_path / "zoo"), "--quiet"],
        capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip().splitlines()[-1] == f"1 False Error: {message}"


@pytest.mark.parametrize("arguments", [
    [],  # the default set reads every such option
    ["--metric", "all"],
    ["--metric", "mig_histogram", "--factor", "pos_x"],
    ["--metric", "elbo", "--num-samples", "50", "--log-likelihood-images", "50"],
    ["--metric", "sap"],  # the options at their defaults are not refused
])
def test_options_a_chosen_metric_reads_are_accepted(tmp_path, arguments):
    if not arguments or arguments[1] == "all":
        arguments = [*arguments, "--num-samples", "50", "--log-likelihood-images", "50",
                     "--factor", "pos_x"]
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "no-run"), *arguments,
                                      "--zoo-root", str(tmp_path / "zoo"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "is neither a run folder nor a zoo model" in result.output  # past the check


def test_json_that_cannot_be_written_fails_before_the_evaluation(run, tmp_path, monkeypatch):
    def evaluate(*args, **kwargs):
        raise AssertionError("evaluated although --json cannot be written")

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["evaluate", str(run[0]), "--json",
                                      str(tmp_path / "file" / "m.json"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: cannot write {tmp_path / 'file' / 'm.json'}: "
                             f"{tmp_path / 'file'} is not a folder that can be written\n")


def test_a_read_only_run_folder_still_gets_json_written(run, tmp_path, monkeypatch):
    folder, _ = run
    write_metrics = evaluation.write_metrics

    def read_only_run(result, path):
        if Path(path).parent == folder:
            raise PermissionError(13, "Permission denied")
        return write_metrics(result, path)

    monkeypatch.setattr(evaluation, "write_metrics", read_only_run)
    out = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--metric", "active_units",
                                      "--json", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert json.loads(out.read_text())["active_units"]["latent_dim"] == 3
    assert f"metrics written to {out}" in result.output
    assert result.output.endswith("Permission denied\n")


def test_a_laplace_prior_is_refused_not_measured_against_a_normal(tmp_path, monkeypatch):
    from tcvae_tf.model import BetaTCVAE

    (tmp_path / "config.json").write_text('{"train": {}}')
    model = BetaTCVAE(latent_dim=2, arch="burgess", dataset_size=64, prior="laplace")
    evaluable = evaluation.load_run(str(tmp_path), model=model)
    assert (evaluable.posterior, evaluable.prior) == ("normal", "laplace")
    monkeypatch.setattr(evaluation, "load_evaluable", lambda ref, **kw: evaluable)
    with pytest.raises(ValueError, match="normal posterior and a laplace prior"):
        evaluation.evaluate(str(tmp_path), metrics=["elbo"])


@pytest.mark.parametrize(("trained", "given", "expected"), [
    (dict(source="rendered", data_path=None), dict(data_path="d.npz"), ("auto", "d.npz")),
    (dict(source="rendered", data_path=None), dict(), ("rendered", None)),
    (dict(source="tfds", data_path="/tfds"), dict(data_path="/other"), ("tfds", "/other")),
    (dict(source="official", data_path="a.npz"), dict(), ("official", "a.npz")),
    (dict(source="official", data_path="a.npz"), dict(source="rendered"), ("rendered", None)),
])
def test_the_evaluation_data_source(monkeypatch, trained, given, expected):
    """A file given for a model of rendered images is read (as the official npz), not refused."""
    from types import SimpleNamespace

    from tcvae_tf import data as data_lib

    calls = []

    def load_dataset(name, source, path, **options):
        calls.append((source, path))
        return SimpleNamespace(images=np.zeros((1, 64, 64, 1), np.uint8))

    monkeypatch.setattr(data_lib, "load_dataset", load_dataset)
    evaluable = SimpleNamespace(name="m", config=dict(dataset="dsprites", **trained), data={},
                                image_shape=(64, 64, 1))
    evaluation.load_evaluation_dataset(evaluable, **given)
    assert calls == [expected]
