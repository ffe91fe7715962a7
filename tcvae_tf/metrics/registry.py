"""The metric registry: every metric `tcvae-tf evaluate` knows, one entry each.

An entry names the metric, says what it needs, computes its section of metrics.json from
a `MetricInputs` and turns that section into the rows of the summary table:

```none
needs = "posteriors"   loc and log_scale of every image of the dataset (MIG sampling, ELBO)
        "means"        posterior means of random images (histogram MIG, DCI, SAP, ...)
        "encoder"      an encoder and the dataset, to draw images by their factors
                       (FactorVAE and beta-VAE scores)
```

Adding a metric is one module in `tcvae_tf.metrics` and one `Metric(...)` line in
`REGISTRY`. Lookups by an unknown name raise a one-line ValueError listing the known ones.

Importing this module imports neither TensorFlow nor scikit-learn.
"""

import dataclasses
import importlib
import math
import numbers
from collections.abc import Callable

import numpy as np

from tcvae_tf.metrics import (
    active_units,
    betavae_score,
    dci,
    elbo_decomposition,
    factorvae_score,
    mig_histogram,
    mig_sampling,
    minibatch_saturation,
    modularity_explicitness,
    sap,
)
from tcvae_tf.metrics.utils import train_test_rows

# The modules (the package's names dci, sap, ... are the functions), for their defaults.
betavae_module = importlib.import_module("tcvae_tf.metrics.betavae_score")
dci_module = importlib.import_module("tcvae_tf.metrics.dci")
factorvae_module = importlib.import_module("tcvae_tf.metrics.factorvae_score")
modularity_module = importlib.import_module("tcvae_tf.metrics.modularity")
sap_module = importlib.import_module("tcvae_tf.metrics.sap")

POSTERIORS, MEANS, ENCODER = "posteriors", "means", "encoder"
NEEDS = (POSTERIORS, MEANS, ENCODER)
ALL = "all"  # the name that asks for every registered metric
# The metrics whose headline number averages over chosen factors (--factor).
MIG_METRICS = ("mig_sampling", "mig_histogram")


class MetricInputs:
    """What the metrics of one evaluation may use.

    Args:
      factor_classes: int array [N, K], the factor classes of every image of the dataset.
      factor_names: the K factor names.
      rows_to_codes: callable mapping dataset rows [n] to posterior means [n, D] (a
        ``tcvae_tf.metrics.utils.RowEncoder``).
      headline_factors: indices of the factors of the headline MIG.
      seed: seed of every metric.
      num_samples: Monte-Carlo samples of the sampling MIG and the ELBO decomposition.
      loc, log_scale: float arrays [N, D], the posteriors of every image, or None when no
        metric needs them.
      log_likelihood: optional array [n] of log p(x|z) of random images (for the ELBO).
      dataset: the GroundTruthDataset, or None (the "encoder" metrics need it).
      progress: optional callable(stage, done, total).
    """

    def __init__(self, factor_classes, factor_names, rows_to_codes, headline_factors, seed=0,
                 num_samples=10000, loc=None, log_scale=None, log_likelihood=None,
                 dataset=None, progress=None):
        self.factor_classes = np.asarray(factor_classes)
        self.factor_names = [str(name) for name in factor_names]
        self.rows_to_codes = rows_to_codes
        self.headline_factors = list(headline_factors)
        self.seed = seed
        self.num_samples = num_samples
        self.loc = loc
        self.log_scale = log_scale
        self.log_likelihood = log_likelihood
        self.dataset = dataset
        self.progress = progress

    @property
    def num_images(self):
        return len(self.factor_classes)

    def posteriors(self):
        """(loc, log_scale) of every image; ValueError if they were not computed."""
        if self.loc is None or self.log_scale is None:
            raise ValueError("this metric needs the posteriors of every image")
        return self.loc, self.log_scale

    def stage(self, name):
        """A progress callable(done, total) for stage ``name``, or None."""
        if self.progress is None:
            return None
        return lambda done, total: self.progress(name, done, total)

    def split(self, num_train, num_test):
        """Posterior means and factor classes of a random training and test sample.

        The two samples share no image (`utils.train_test_rows`); rows are uniform, from a
        generator seeded with the evaluation's seed: every metric that asks for the same
        sizes gets the same images. Factors that take a single value over the
        dataset are left out.

        Returns:
          (train_codes, train_factors, test_codes, test_factors, factor_names, notes).
        """
        rng = np.random.default_rng(self.seed)
        train_rows, test_rows = train_test_rows(self.num_images, num_train, num_test, rng)
        varying = [k for k in range(self.factor_classes.shape[1])
                   if len(np.unique(self.factor_classes[:, k])) > 1]
        notes = [f"factor {self.factor_names[k]!r} excluded: it takes a single value"
                 for k in range(self.factor_classes.shape[1]) if k not in varying]
        classes = self.factor_classes[:, varying]
        return (self.rows_to_codes(train_rows), classes[train_rows],
                self.rows_to_codes(test_rows), classes[test_rows],
                [self.factor_names[k] for k in varying], notes)

    def require_dataset(self, name):
        if self.dataset is None:
            raise ValueError(f"{name} draws images by their factors: it needs the dataset")
        return self.dataset


@dataclasses.dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
      name: the name used by ``--metric`` and as the key of its section in metrics.json.
      label: a short human name (progress bars, tables).
      needs: "posteriors", "means" or "encoder" (see the module docstring).
      compute: callable(MetricInputs, **settings) -> the section (a JSON-ready dict).
      rows: callable(section) -> [(label, value text)], its lines of the summary table.
      describe: callable(section) -> one line naming its settings.
      settings: the adjustable settings and their defaults (disentanglement_lib's sizes);
        ``evaluate(..., options={name: {...}})`` overrides them with values of the
        default's type (an integer setting is a count, >= 1).
      choices: the allowed values of a text setting, by name.
      default: part of the default set of ``tcvae-tf evaluate``.
    """

    name: str
    label: str
    needs: str
    compute: Callable
    rows: Callable
    describe: Callable
    settings: dict = dataclasses.field(default_factory=dict)
    choices: dict = dataclasses.field(default_factory=dict)
    default: bool = False


def _number(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# -- MIG (the paper's metric, two estimators) -----------------------------------------------


def mig_section(raw, chosen, factor_names, seed):
    """Splits a MIG result computed over all factors into the headline and all-factor MIGs."""
    used = list(raw["factors"])
    gaps = np.asarray(raw["normalized_gap"], np.float64)
    positions = [used.index(k) for k in chosen if k in used]
    if not positions:
        raise ValueError("none of the MIG factors takes more than one value in the data")
    section = {key: value for key, value in raw.items() if key not in ("factors", "factor_names")}
    section.update(
        mig=float(np.mean(gaps[positions])),
        mig_all_factors=float(np.mean(gaps)),
        factors=[factor_names[used[p]] for p in positions],
        all_factors=[factor_names[k] for k in used],
        seed=seed,
    )
    return section


def _compute_mig_sampling(inputs):
    loc, log_scale = inputs.posteriors()
    raw = mig_sampling(loc, log_scale, inputs.factor_classes, num_samples=inputs.num_samples,
                       seed=inputs.seed, factor_names=inputs.factor_names,
                       progress=inputs.stage("mig_sampling"))
    return mig_section(raw, inputs.headline_factors, inputs.factor_names, inputs.seed)


def _compute_mig_histogram(inputs, num_images=10000, num_bins=20):
    # The rows mig_histogram itself would choose from the full code, so that the result
    # does not depend on whether every image was encoded.
    count = min(int(num_images), inputs.num_images)
    if count < inputs.num_images:
        rows = np.random.default_rng(inputs.seed).choice(inputs.num_images, count,
                                                         replace=False)
    else:
        rows = np.arange(inputs.num_images)
    raw = mig_histogram(inputs.rows_to_codes(rows), inputs.factor_classes[rows],
                        num_bins=num_bins, seed=inputs.seed, factor_names=inputs.factor_names)
    return mig_section(raw, inputs.headline_factors, inputs.factor_names, inputs.seed)


def _mig_rows(label):
    def rows(section):
        lines = [(f"{label} ({', '.join(section['factors'])})", _number(section["mig"]))]
        if section["all_factors"] != section["factors"]:
            lines.append((f"{label} (all {len(section['all_factors'])} factors)",
                          _number(section["mig_all_factors"])))
        return lines

    return rows


# -- ELBO, active units, saturation ----------------------------------------------------------


def _compute_elbo(inputs):
    loc, log_scale = inputs.posteriors()
    section = elbo_decomposition(loc, log_scale, num_samples=inputs.num_samples,
                                 seed=inputs.seed, progress=inputs.stage("elbo"))
    if inputs.log_likelihood is not None:
        values = np.asarray(inputs.log_likelihood, np.float64)
        section["log_likelihood"] = float(values.mean())
        section["log_likelihood_standard_error"] = float(
            values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0)
        section["log_likelihood_images"] = int(len(values))
        section["elbo"] = section["log_likelihood"] - section["kl"]
    section["seed"] = inputs.seed
    return section


def _elbo_rows(elbo):
    rows = []
    if "log_likelihood" in elbo:
        error = elbo.get("log_likelihood_standard_error")
        rows.append((f"log-likelihood E log p(x|z) ({elbo['log_likelihood_images']} images"
                     + (f", +-{error:.2f})" if error is not None else ")"),
                     _number(elbo["log_likelihood"], 3)))
    rows += [
        ("KL(q(z|x) || p(z)), analytic", _number(elbo["kl"], 3)),
        ("  index-code MI", _number(elbo["mutual_information"], 3)),
        ("  total correlation", _number(elbo["total_correlation"], 3)),
        ("  dimension-wise KL", _number(elbo["dimensionwise_kl"], 3)),
        ("  MI + TC + DWKL (sampled KL)", _number(elbo["sampled_kl"], 3)),
    ]
    if "elbo" in elbo:
        rows.append(("ELBO", _number(elbo["elbo"], 3)))
    return rows


def _compute_active_units(inputs, threshold=0.01):
    loc, _ = inputs.posteriors()
    section = active_units(loc, threshold=threshold)
    section["latent_dim"] = int(loc.shape[1])
    return section


def _compute_saturation(inputs, batch_sizes=(256, 2048), num_batches=4):
    loc, log_scale = inputs.posteriors()
    sizes = [size for size in batch_sizes if size <= len(loc)] or [len(loc)]
    return minibatch_saturation(loc, log_scale, batch_sizes=sizes, num_batches=num_batches,
                                seed=inputs.seed)


def _saturation_rows(saturation):
    rows = []
    for estimator in ("mws", "mss"):
        for size, shares in saturation.get(estimator, {}).items():
            rows.append((f"own-posterior share of log q(z), {estimator.upper()}, M = {size} "
                         "(median / mean)",
                         f"{_number(shares['joint_median'], 3)} / "
                         f"{_number(shares['joint_mean'], 3)}"))
    return rows


# -- disentanglement_lib's metrics -----------------------------------------------------------


def _split_section(inputs, settings, compute):
    """Runs a metric of a training and a test sample of means; adds names and settings."""
    train_codes, train_factors, test_codes, test_factors, names, notes = inputs.split(
        settings["num_train"], settings["num_test"])
    section = compute(train_codes, train_factors, test_codes, test_factors)
    section["factor_names"] = names
    section["notes"] = notes
    section["settings"] = {**settings, "seed": inputs.seed}
    return section


def _compute_dci(inputs, num_train=dci_module.DEFAULT_NUM_TRAIN,
                 num_test=dci_module.DEFAULT_NUM_TEST, booster="histogram"):
    settings = {"num_train": num_train, "num_test": num_test, "booster": booster}
    return _split_section(inputs, settings, lambda *split: dci(
        *split, seed=inputs.seed, booster=booster, progress=inputs.stage("dci")))


def _compute_sap(inputs, num_train=sap_module.DEFAULT_NUM_TRAIN,
                 num_test=sap_module.DEFAULT_NUM_TEST, continuous_factors=False):
    settings = {"num_train": num_train, "num_test": num_test,
                "continuous_factors": continuous_factors}
    return _split_section(inputs, settings, lambda *split: sap(
        *split, continuous_factors=continuous_factors, progress=inputs.stage("sap")))


def _compute_modularity(inputs, num_train=modularity_module.DEFAULT_NUM_TRAIN,
                        num_test=modularity_module.DEFAULT_NUM_TEST, num_bins=20):
    settings = {"num_train": num_train, "num_test": num_test, "num_bins": num_bins}
    return _split_section(inputs, settings, lambda *split: modularity_explicitness(
        *split, num_bins=num_bins))


def _compute_factorvae(inputs, batch_size=factorvae_module.DEFAULT_BATCH_SIZE,
                       num_train=factorvae_module.DEFAULT_NUM_TRAIN,
                       num_eval=factorvae_module.DEFAULT_NUM_EVAL,
                       num_variance_estimate=factorvae_module.DEFAULT_NUM_VARIANCE_ESTIMATE,
                       prune_threshold=factorvae_module.DEFAULT_PRUNE_THRESHOLD):
    dataset = inputs.require_dataset("factorvae_score")
    section = factorvae_score(
        None, dataset, seed=inputs.seed, batch_size=batch_size, num_train=num_train,
        num_eval=num_eval, num_variance_estimate=num_variance_estimate,
        prune_threshold=prune_threshold, encode_rows=inputs.rows_to_codes,
        progress=inputs.stage("factorvae_score"))
    keys = ("batch_size", "num_train", "num_eval", "num_variance_estimate", "prune_threshold",
            "seed")
    section["settings"] = {key: section.pop(key) for key in keys}
    section["factor_names"] = list(inputs.factor_names)
    return section


def _compute_betavae(inputs, batch_size=betavae_module.DEFAULT_BATCH_SIZE,
                     num_train=betavae_module.DEFAULT_NUM_TRAIN,
                     num_eval=betavae_module.DEFAULT_NUM_EVAL):
    dataset = inputs.require_dataset("betavae_score")
    section = betavae_score(None, dataset, seed=inputs.seed, batch_size=batch_size,
                            num_train=num_train, num_eval=num_eval,
                            encode_rows=inputs.rows_to_codes,
                            progress=inputs.stage("betavae_score"))
    section["settings"] = {key: section.pop(key)
                           for key in ("batch_size", "num_train", "num_eval", "seed")}
    return section


def _split_text(section, extra=""):
    settings = section.get("settings", {})
    return (f"{settings.get('num_train')} train / {settings.get('num_test')} test images"
            f"{extra}, seed {settings.get('seed')}")


def _points_text(section, unit="images", extra=""):
    settings = section.get("settings", {})
    return (f"{settings.get('num_train')} train / {settings.get('num_eval')} eval points of "
            f"{settings.get('batch_size')} {unit}{extra}, seed {settings.get('seed')}")


# -- the registry ----------------------------------------------------------------------------

REGISTRY = {metric.name: metric for metric in (
    Metric("mig_sampling", "sampling MIG", POSTERIORS, _compute_mig_sampling,
           _mig_rows("MIG, sampling"),
           lambda s: f"{s.get('num_samples')} posterior samples, seed {s.get('seed')}",
           default=True),
    Metric("mig_histogram", "histogram MIG", MEANS, _compute_mig_histogram,
           _mig_rows("MIG, histogram"),
           lambda s: f"{s.get('num_samples')} images, {s.get('num_bins')} bins",
           settings={"num_images": 10000, "num_bins": 20}, default=True),
    Metric("elbo", "ELBO decomposition", POSTERIORS, _compute_elbo, _elbo_rows,
           lambda s: f"{s.get('num_samples')} samples against {s.get('num_images')} "
                     f"posteriors, seed {s.get('seed')}",
           default=True),
    Metric("active_units", "active units", POSTERIORS, _compute_active_units,
           lambda s: [(f"active units (variance > {s['threshold']:g})",
                       f"{s['active_units']} / {s['latent_dim']}")],
           lambda s: f"variance of the means over all images > {s.get('threshold'):g}",
           settings={"threshold": 0.01}, default=True),
    Metric("sap", "SAP", MEANS, _compute_sap,
           lambda s: [("SAP score", _number(s["sap"]))],
           lambda s: _split_text(s, ", LinearSVC per latent and factor"
                                 + (", continuous factors"
                                    if s.get("settings", {}).get("continuous_factors") else "")),
           settings={"num_train": sap_module.DEFAULT_NUM_TRAIN,
                     "num_test": sap_module.DEFAULT_NUM_TEST, "continuous_factors": False},
           default=True),
    Metric("modularity_explicitness", "modularity", MEANS, _compute_modularity,
           lambda s: [("modularity", _number(s["modularity"])),
                      ("explicitness (test AUC)", _number(s["explicitness_test"]))],
           lambda s: _split_text(s, f", {s.get('num_bins')} bins, logistic regression"),
           settings={"num_train": modularity_module.DEFAULT_NUM_TRAIN,
                     "num_test": modularity_module.DEFAULT_NUM_TEST, "num_bins": 20},
           default=True),
    Metric("factorvae_score", "FactorVAE score", ENCODER, _compute_factorvae,
           lambda s: [("FactorVAE score (eval accuracy)", _number(s["eval_accuracy"])),
                      ("  latents kept (std >= "
                       f"{s.get('settings', {}).get('prune_threshold', 0.05):g})",
                       f"{s['num_active_dims']} / {len(s['active_dims'])}")],
           lambda s: _points_text(s, extra=", majority vote"),
           settings={"batch_size": factorvae_module.DEFAULT_BATCH_SIZE,
                     "num_train": factorvae_module.DEFAULT_NUM_TRAIN,
                     "num_eval": factorvae_module.DEFAULT_NUM_EVAL,
                     "num_variance_estimate": factorvae_module.DEFAULT_NUM_VARIANCE_ESTIMATE,
                     "prune_threshold": factorvae_module.DEFAULT_PRUNE_THRESHOLD},
           default=True),
    Metric("betavae_score", "beta-VAE score", ENCODER, _compute_betavae,
           lambda s: [("beta-VAE score (eval accuracy)", _number(s["eval_accuracy"]))],
           lambda s: _points_text(s, "image pairs", ", logistic regression"),
           settings={"batch_size": betavae_module.DEFAULT_BATCH_SIZE,
                     "num_train": betavae_module.DEFAULT_NUM_TRAIN,
                     "num_eval": betavae_module.DEFAULT_NUM_EVAL},
           default=True),
    Metric("dci", "DCI", MEANS, _compute_dci,
           lambda s: [("DCI disentanglement", _number(s["disentanglement"])),
                      ("DCI completeness", _number(s["completeness"])),
                      ("DCI informativeness (test accuracy)",
                       _number(s["informativeness_test"]))],
           lambda s: _split_text(s, f", {s.get('booster')} gradient-boosted trees"),
           settings={"num_train": dci_module.DEFAULT_NUM_TRAIN,
                     "num_test": dci_module.DEFAULT_NUM_TEST, "booster": "histogram"},
           choices={"booster": dci_module.BOOSTERS}),
    # A diagnostic of the training objective, not of the codes: only on request.
    Metric("minibatch_saturation", "minibatch saturation", POSTERIORS, _compute_saturation,
           _saturation_rows,
           lambda s: f"{s.get('num_batches')} random batches per size, seed {s.get('seed')}",
           settings={"batch_sizes": (256, 2048), "num_batches": 4}),
)}

ALL_METRICS = tuple(REGISTRY)
DEFAULT_METRICS = tuple(name for name, metric in REGISTRY.items() if metric.default)


def get(name):
    """The registered metric ``name``; a one-line ValueError listing the known ones."""
    metric = REGISTRY.get(name)
    if metric is None:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(REGISTRY)} "
                         f"(or {ALL})")
    return metric


def resolve(names):
    """Metric names in registry order; "all" expands to every metric.

    Raises:
      ValueError: an unknown name, or no name at all.
    """
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError(f"no metric requested; choose from {', '.join(REGISTRY)} "
                         f"(or {ALL})")
    if ALL in names:
        return tuple(REGISTRY)
    for name in names:
        get(name)
    return tuple(name for name in REGISTRY if name in names)


def parse_setting(text):
    """Parses "METRIC.SETTING=VALUE" (the CLI's --setting) into (metric, setting, value).

    VALUE is read as an integer, a float, true/false, or else kept as text; values
    separated by commas as a tuple of them.

    Example:
      >>> parse_setting("dci.num_train=2000")
      ('dci', 'num_train', 2000)
      >>> parse_setting("minibatch_saturation.batch_sizes=256,2048")
      ('minibatch_saturation', 'batch_sizes', (256, 2048))
    """
    key, equals, value = str(text).partition("=")
    metric, dot, setting = (part.strip() for part in key.partition("."))
    if not equals or not dot or not metric or not setting:
        raise ValueError(f"a setting is METRIC.SETTING=VALUE (e.g. dci.num_train=2000), got "
                         f"{text!r}")
    if "," in value:
        return metric, setting, tuple(_parse_value(item) for item in value.split(","))
    return metric, setting, _parse_value(value)


def _parse_value(text):
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _is_count(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
            and math.isfinite(value) and float(value).is_integer() and value >= 1)


def check_setting(name, setting, value):
    """A setting's value as the type of its default; a one-line ValueError otherwise.

    Integers (counts) must be >= 1 (2e3 is read as 2000), numbers finite, a tuple of
    counts may be given as one count, and text one of the metric's ``choices``.
    """
    metric = get(name)
    default = metric.settings[setting]
    if isinstance(default, bool):
        if isinstance(value, bool | np.bool_):
            return bool(value)
        expected = "true or false"
    elif isinstance(default, int):
        if _is_count(value):
            return int(value)
        expected = "an integer >= 1"
    elif isinstance(default, float):
        if (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
                and math.isfinite(value)):
            return float(value)
        expected = "a number"
    elif isinstance(default, tuple):
        values = tuple(value) if isinstance(value, list | tuple) else (value,)
        if values and all(_is_count(item) for item in values):
            return tuple(int(item) for item in values)
        expected = "integers >= 1 separated by commas"
    else:
        choices = metric.choices.get(setting)
        if isinstance(value, str) and (choices is None or value in choices):
            return value
        expected = "text" if choices is None else f"one of {', '.join(choices)}"
    raise ValueError(f"setting {name}.{setting} must be {expected}, got {value!r}")


def check_options(options, names):
    """Checks ``{metric: {setting: value}}`` against the registered settings.

    Returns:
      ``{metric: settings}`` with the defaults filled in, for every name in ``names``.

    Raises:
      ValueError: an unknown metric or setting, a setting of a metric not in ``names``, or
        a value not of the default's type (see ``check_setting``).
    """
    options = dict(options or {})
    for name, values in options.items():
        metric = get(name)
        unknown = sorted(set(values) - set(metric.settings))
        if unknown:
            known = ", ".join(metric.settings) or "none"
            raise ValueError(f"unknown setting {unknown[0]!r} of metric {name}; its settings: "
                             f"{known}")
        if name not in names:
            raise ValueError(f"a setting of {name} is given but {name} is not computed")
    return {name: {**REGISTRY[name].settings,
                   **{setting: check_setting(name, setting, value)
                      for setting, value in options.get(name, {}).items()}}
            for name in names}
