"""The metric registry: lookups, settings, dispatch through compute_metrics, the table."""

import dataclasses
import re

import numpy as np
import pytest

from tcvae_tf import evaluation
from tcvae_tf.data.ground_truth import GroundTruthDataset
from tcvae_tf.metrics import registry, utils

SIZES = (2, 3, 4)
SMALL = {  # disentanglement_lib's sizes are 10000 / 5000; these keep the test fast
    "sap": {"num_train": 200, "num_test": 100},
    "modularity_explicitness": {"num_train": 200, "num_test": 100},
    "dci": {"num_train": 200, "num_test": 100},
    "factorvae_score": {"batch_size": 16, "num_train": 100, "num_eval": 50,
                        "num_variance_estimate": 200},
    "betavae_score": {"batch_size": 8, "num_train": 100, "num_eval": 50},
    "minibatch_saturation": {"batch_sizes": (8,), "num_batches": 2},
}


@pytest.fixture(scope="module")
def toy():
    """A full factorial toy dataset and an identity code of it (means and log-scales)."""
    classes = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"),
                       -1).reshape(-1, len(SIZES))
    dataset = GroundTruthDataset("toy", classes.astype(np.uint8)[:, None, None, :], classes,
                                 classes.astype(float), ["a", "b", "c"], SIZES, "synthetic")
    loc = classes / (np.array(SIZES) - 1.0)
    return dataset, loc, np.full(loc.shape, np.log(0.05))


@pytest.fixture(scope="module")
def everything(toy):
    dataset, loc, log_scale = toy
    return evaluation.compute_metrics(
        loc, log_scale, dataset.factor_classes, metrics="all", factor_names=dataset.factor_names,
        num_samples=200, dataset=dataset, options=SMALL,
        log_likelihood=np.full(len(loc), -10.0))


def test_every_entry_is_complete():
    assert evaluation.ALL_METRICS == registry.ALL_METRICS == tuple(registry.REGISTRY)
    assert set(evaluation.METRICS) <= set(evaluation.ALL_METRICS)
    assert evaluation.METRICS[:4] == ("mig_sampling", "mig_histogram", "elbo", "active_units")
    assert "dci" in evaluation.OPTIONAL_METRICS
    assert "minibatch_saturation" in evaluation.OPTIONAL_METRICS
    for name, metric in registry.REGISTRY.items():
        assert metric.name == name and metric.needs in registry.NEEDS and metric.label
        assert callable(metric.compute) and callable(metric.rows) and callable(metric.describe)


def test_lookups_by_name():
    assert registry.resolve("all") == registry.ALL_METRICS
    assert registry.resolve(["dci", "sap", "mig_sampling"]) == ("mig_sampling", "sap", "dci")
    with pytest.raises(ValueError) as error:
        registry.resolve(["sap", "fid"])
    message = str(error.value)
    assert message.startswith("unknown metric 'fid'; choose from mig_sampling, mig_histogram")
    assert message.endswith("minibatch_saturation (or all)") and "\n" not in message
    with pytest.raises(ValueError, match="no metric requested"):
        registry.resolve([])


def test_settings():
    settings = registry.check_options({"dci": {"num_train": 50}}, ["dci", "sap"])
    assert settings["dci"] == {"num_train": 50, "num_test": 5000, "booster": "histogram"}
    assert settings["sap"]["num_train"] == 10000
    with pytest.raises(ValueError, match="unknown setting 'trees' of metric dci; its settings: "
                                         "num_train, num_test, booster"):
        registry.check_options({"dci": {"trees": 5}}, ["dci"])
    with pytest.raises(ValueError, match="a setting of dci is given but dci is not computed"):
        registry.check_options({"dci": {"num_train": 5}}, ["sap"])
    assert registry.parse_setting("dci.num_train=2000") == ("dci", "num_train", 2000)
    assert registry.parse_setting("sap.continuous_factors=true") == (
        "sap", "continuous_factors", True)
    assert registry.parse_setting("dci.booster=exact") == ("dci", "booster", "exact")
    with pytest.raises(ValueError, match="a setting is METRIC.SETTING=VALUE"):
        registry.parse_setting("dci=3")
    assert registry.parse_setting(" sap . num_train = 100") == ("sap", "num_train", 100)
    assert registry.parse_setting("minibatch_saturation.batch_sizes=256, 2048") == (
        "minibatch_saturation", "batch_sizes", (256, 2048))


@pytest.mark.parametrize(("metric", "setting", "value", "expected"), [
    ("sap", "num_train", "abc", "an integer >= 1"),
    ("sap", "num_train", 0, "an integer >= 1"),
    ("sap", "num_train", 2.5, "an integer >= 1"),
    ("sap", "num_train", True, "an integer >= 1"),
    ("mig_histogram", "num_images", 0, "an integer >= 1"),
    ("sap", "continuous_factors", "yes", "true or false"),
    ("active_units", "threshold", "abc", "a number"),
    ("active_units", "threshold", float("nan"), "a number"),
    ("dci", "booster", "exat", "one of histogram, exact"),
    ("minibatch_saturation", "batch_sizes", (256, "x"), "integers >= 1 separated by commas"),
])
def test_a_setting_of_the_wrong_type_is_refused(metric, setting, value, expected):
    message = f"setting {metric}.{setting} must be {expected}, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.check_options({metric: {setting: value}}, [metric])


def test_settings_are_read_as_the_defaults_type():
    settings = registry.check_options(
        {"dci": {"num_train": 2e3, "booster": "exact"},
         "minibatch_saturation": {"batch_sizes": 256},
         "active_units": {"threshold": 1},
         "sap": {"num_test": np.int64(50)}},
        ["active_units", "sap", "dci", "minibatch_saturation"])
    assert settings["dci"] == {"num_train": 2000, "num_test": 5000, "booster": "exact"}
    assert type(settings["dci"]["num_train"]) is int
    assert settings["minibatch_saturation"]["batch_sizes"] == (256,)
    assert settings["active_units"]["threshold"] == 1.0
    assert type(settings["sap"]["num_test"]) is int
    for name, metric in registry.REGISTRY.items():  # every default passes its own check
        assert registry.check_options(None, [name])[name] == metric.settings
        for setting, value in metric.settings.items():
            assert registry.check_setting(name, setting, value) == value


def test_compute_metrics_dispatches_every_metric(everything):
    assert set(everything["seconds"]) == set(registry.ALL_METRICS)
    # An identity code of every factor: every score at its best.
    assert everything["mig_histogram"]["mig"] > 0.9
    assert everything["dci"]["disentanglement"] > 0.9
    assert everything["modularity_explicitness"]["modularity"] > 0.9
    assert everything["factorvae_score"]["eval_accuracy"] == 1.0
    assert everything["betavae_score"]["eval_accuracy"] == 1.0
    assert everything["sap"]["settings"] == {"num_train": 200, "num_test": 100,
                                             "continuous_factors": False, "seed": 0}
    assert everything["dci"]["factor_names"] == ["a", "b", "c"]
    assert everything["factorvae_score"]["settings"]["num_variance_estimate"] == 200
    assert everything["elbo"]["log_likelihood"] == -10.0


def test_the_table_shows_numbers_settings_and_times(everything):
    result = {"model": {"ref": "toy", "kind": "run"},
              "data": {"name": "toy", "source": "synthetic", "num_images": 24}, **everything}
    rows = dict(evaluation.summary_rows(result))
    for label in ("DCI disentanglement", "SAP score", "modularity", "explicitness (test AUC)",
                  "FactorVAE score (eval accuracy)", "beta-VAE score (eval accuracy)"):
        assert label in rows, label
    assert rows["FactorVAE score (eval accuracy)"] == "1.0000"
    text = evaluation.format_summary(result)
    assert "200 train / 100 test images, histogram gradient-boosted trees, seed 0" in text
    assert "100 train / 50 eval points of 16 images, majority vote, seed 0" in text
    for name, metric in registry.REGISTRY.items():
        assert f"{metric.label}" in text, name
    # A card's metrics from before the registry (no new sections) still make a table.
    old = {key: result[key] for key in ("model", "data", "mig_sampling", "elbo")}
    assert "MIG, sampling" in evaluation.format_summary(old)


def test_encoder_metrics_need_the_dataset(toy):
    dataset, loc, log_scale = toy
    with pytest.raises(ValueError, match="factorvae_score draws images by their factors: it "
                                         "needs the dataset"):
        evaluation.compute_metrics(loc, log_scale, dataset.factor_classes,
                                   metrics=["factorvae_score"])
    with pytest.raises(ValueError, match="the codes have 23 rows but the dataset has 24"):
        evaluation.compute_metrics(loc[:-1], log_scale[:-1], dataset.factor_classes[:-1],
                                   metrics=["sap"], dataset=dataset)


def test_a_new_metric_is_one_registry_entry(toy, monkeypatch):
    dataset, loc, log_scale = toy

    def spread(inputs, power=2):
        codes = inputs.rows_to_codes(np.arange(inputs.num_images))
        return {"spread": float(np.sum(codes.std(axis=0) ** power)), "settings": {"power": power}}

    entry = registry.Metric("spread", "spread", registry.MEANS, spread,
                            lambda s: [("spread of the codes", f"{s['spread']:.3f}")],
                            lambda s: f"power {s['settings']['power']}", settings={"power": 2})
    monkeypatch.setitem(registry.REGISTRY, "spread", entry)
    result = evaluation.compute_metrics(loc, log_scale, dataset.factor_classes,
                                        metrics=["spread"], options={"spread": {"power": 1}})
    assert result["spread"] == {"spread": pytest.approx(loc.std(axis=0).sum()),
                                "settings": {"power": 1}}
    assert dict(evaluation.summary_rows(result))["spread of the codes"] == (
        f"{loc.std(axis=0).sum():.3f}")
    assert dataclasses.replace(entry, default=True).default


# The MetricInputs attribute through which each of evaluation.METRIC_ARGUMENTS reaches the
# metrics.
ARGUMENT_INPUTS = {"num_samples": "num_samples", "log_likelihood_images": "log_likelihood",
                   "factors": "headline_factors"}


def test_the_arguments_of_some_metrics_name_every_metric_that_reads_them(toy):
    """evaluate refuses such an argument when no chosen metric is listed for it: the lists
    must hold exactly the metrics that read it, and the default set reads every one."""
    dataset, loc, log_scale = toy
    read = set()

    class RecordingInputs(registry.MetricInputs):
        def __getattribute__(self, name):
            read.add(name)
            return super().__getattribute__(name)

    settings = registry.check_options(SMALL, registry.ALL_METRICS)
    readers = {attribute: set() for attribute in ARGUMENT_INPUTS.values()}
    for name in registry.ALL_METRICS:
        inputs = RecordingInputs(
            dataset.factor_classes, dataset.factor_names, utils.RowEncoder(dataset, codes=loc),
            [0, 1, 2], num_samples=200, loc=loc, log_scale=log_scale,
            log_likelihood=np.full(len(loc), -10.0), dataset=dataset)
        read.clear()
        registry.get(name).compute(inputs, **settings[name])
        for attribute in readers:
            if attribute in read:
                readers[attribute].add(name)
    assert set(evaluation.METRIC_ARGUMENTS) == set(ARGUMENT_INPUTS)
    for argument, users in evaluation.METRIC_ARGUMENTS.items():
        assert set(users) == readers[ARGUMENT_INPUTS[argument]], argument
    # every argument is accepted by the default set and by "all"
    evaluation.check_metric_arguments(evaluation.METRICS, list(evaluation.METRIC_ARGUMENTS))
    evaluation.check_metric_arguments("all", list(evaluation.METRIC_ARGUMENTS))


@pytest.mark.parametrize("metrics,given,message", [
    (["sap"], ["num_samples"], "the num_samples argument is only used by mig_sampling and "
                               "elbo, neither of which is computed"),
    (["mig_sampling", "dci"], ["log_likelihood_images"],
     "the log_likelihood_images argument is only used by elbo, which is not computed"),
    (["elbo"], ["num_samples", "factors"], "the factors argument is only used by mig_sampling "
                                           "and mig_histogram, neither of which is computed"),
])
def test_an_argument_no_chosen_metric_reads_is_refused(metrics, given, message):
    with pytest.raises(ValueError) as error:
        evaluation.check_metric_arguments(metrics, given)
    assert str(error.value) == message
    label = {name: f"--{name}" for name in given}
    with pytest.raises(ValueError, match=f"^--{message.split()[1]} is only used by"):
        evaluation.check_metric_arguments(metrics, given, label)
    evaluation.check_metric_arguments(metrics, [])  # nothing given: nothing refused


@pytest.mark.parametrize("num_rows,num_train,num_test", [(100, 60, 40), (1000, 30, 20),
                                                           (24, 200, 100), (2, 5, 5)])
def test_training_and_test_samples_share_no_image(num_rows, num_train, num_test):
    train, test = utils.train_test_rows(num_rows, num_train, num_test,
                                        np.random.default_rng(0))
    assert train.shape == (num_train,) and test.shape == (num_test,)
    assert train.dtype == test.dtype == np.int64
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert 0 <= min(train.min(), test.min()) and max(train.max(), test.max()) < num_rows
    if num_train + num_test <= num_rows:  # enough rows: no image twice
        assert len(set(train.tolist()) | set(test.tolist())) == num_train + num_test
    with pytest.raises(ValueError, match="at least 2 images"):
        utils.train_test_rows(1, num_train, num_test, np.random.default_rng(0))


def test_a_noise_code_scores_chance_on_a_dataset_smaller_than_the_samples():
    # 300 images, 2,000 training and 1,000 test draws: drawn independently, every test
    # image would be a training image and the boosted trees would recall its class.
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 10, size=(300, 2))
    noise = rng.normal(size=(300, 4))
    result = evaluation.compute_metrics(
        noise, np.zeros_like(noise), classes, metrics=["dci"], factor_names=["a", "b"],
        options={"dci": {"num_train": 2000, "num_test": 1000}})["dci"]
    assert result["informativeness_train"] > 0.5  # the trees memorise their training rows
    assert result["informativeness_test"] < 0.2  # chance is about 0.1
