"""Evaluation of trained models: load a run or a zoo model, encode its dataset, measure it.

```none
evaluate(ref) = load_evaluable(ref)        a run folder (config.json + model) or a zoo name
              -> load_evaluation_dataset    the dataset the model was trained on, in full
              -> encode_dataset             loc, log_scale [N, D] of every image, and
                                            log p(x|z), z ~ q(z|x), of random images
              -> the metric registry        each metric by name: MIG (sampling, histogram),
                                            ELBO decomposition, active units, SAP, modularity
                                            and explicitness, FactorVAE and beta-VAE scores,
                                            DCI, minibatch saturation
```

The metrics are entries of ``tcvae_tf.metrics.registry``: each says what it needs (the
posteriors of every image, the means of random images, or the encoder with the dataset),
computes its section of metrics.json and gives its rows of the summary table.

The dataset is always the full one, even when training used a random subset: the
sampling MIG needs the full factorial grid, and published numbers are computed on it.

On dSprites the paper's MIG averages over scale, orientation, pos_x and pos_y (shape is
excluded); both MIG estimators report that number as "mig" and the average over every
factor as "mig_all_factors".

Importing this module does not import TensorFlow.

References:
  Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in VAEs. NeurIPS 2018.
  Locatello et al. Challenging Common Assumptions in the Unsupervised Learning of
  Disentangled Representations. ICML 2019.
"""

import datetime
import json
import os
import time
from typing import NamedTuple

import numpy as np

from tcvae_tf.files import atomic_write
from tcvae_tf.metrics import registry

# The default set: the paper's metrics and the fast ones. The others (DCI, the minibatch
# saturation diagnostic) are computed when asked for, by name or with "all".
METRICS = registry.DEFAULT_METRICS
ALL_METRICS = registry.ALL_METRICS
OPTIONAL_METRICS = tuple(name for name in ALL_METRICS if name not in METRICS)
SATURATION_BATCH_SIZES = registry.get("minibatch_saturation").settings["batch_sizes"]
SATURATION_BATCHES = registry.get("minibatch_saturation").settings["num_batches"]
METRICS_FILE = "metrics.json"
DEFAULT_BATCH_SIZE = 1024
DEFAULT_NUM_SAMPLES = 10000
# disentanglement_lib's number of images and bins for the histogram MIG
HISTOGRAM_IMAGES = registry.get("mig_histogram").settings["num_images"]
HISTOGRAM_BINS = registry.get("mig_histogram").settings["num_bins"]
ACTIVE_UNITS_THRESHOLD = registry.get("active_units").settings["threshold"]
# Factors of the published dSprites MIG (Chen et al. 2018): every factor but shape.
PAPER_MIG_FACTORS = {
    "dsprites": ("scale", "orientation", "pos_x", "pos_y"),
    "dsprites-small": ("scale", "orientation", "pos_x", "pos_y"),
}
# The arguments of ``evaluate`` that only some metrics read, and those metrics: given for a
# choice of metrics that reads none of them, they are refused, not ignored.
METRIC_ARGUMENTS = {
    "num_samples": ("mig_sampling", "elbo"),
    "log_likelihood_images": ("elbo",),
    "factors": registry.MIG_METRICS,
}


class Encoding(NamedTuple):
    """Posterior parameters (and optionally log-likelihoods) of every image of a dataset.

    Attributes:
      loc: float32 [N, D], posterior means.
      log_scale: float32 [N, D], log standard deviations of the posteriors.
      log_likelihood: float32 [N], log p(x_n|z_n) with one z_n ~ q(z|x_n), or None.
    """

    loc: np.ndarray
    log_scale: np.ndarray
    log_likelihood: np.ndarray | None


class Evaluable:
    """A trained encoder/decoder pair, from a run folder or from the zoo.

    Attributes:
      name: the run folder's name or the zoo model's name.
      kind: "run" or "zoo".
      config: the training config (TrainConfig as a dict: dataset, source, data_path, ...).
      data: the description of the training data recorded at training time.
      latent_dim: D.
      image_shape: (64, 64, C).
      likelihood: "bernoulli" or "gaussian", the decoder's p(x|z).
      posterior: "normal" or "laplace", the family of q(z|x).
      prior: "normal" or "laplace", the family of p(z).
      path: the run folder, or the zoo model's folder.
      version: the zoo version (None for runs).

    Example:

    ```python
    model = load_evaluable("runs/dsprites-tcvae-beta6-mlp-seed0")
    loc, log_scale = model.encode(images)          # float32 [B, 64, 64, 1] in [0, 1]
    probs = tf.sigmoid(model.decode(loc))
    ```
    """

    def __init__(self, name, kind, config, data, encoder, decoder, latent_dim, image_shape,
                 likelihood="bernoulli", posterior="normal", path=None, version=None,
                 prior="normal"):
        self.name = name
        self.kind = kind
        self.config = dict(config or {})
        self.data = dict(data or {})
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.likelihood = likelihood
        self.posterior = posterior
        self.prior = prior
        self.path = None if path is None else os.fspath(path)
        self.version = version
        self._encoder = encoder
        self._decoder = decoder
        self._steps = {}
        self.fingerprint = None  # a run's runs.model_fingerprint, taken when it was loaded

    def __repr__(self):
        version = f", version={self.version}" if self.version is not None else ""
        return f"Evaluable({self.name!r}, kind={self.kind!r}{version})"

    def encode(self, images):
        """Maps images float [B, 64, 64, C] in [0, 1] to (loc, log_scale), tensors [B, D]."""
        import tensorflow as tf

        loc, log_scale = self._encoder(tf.cast(images, tf.float32))
        return tf.cast(loc, tf.float32), tf.cast(log_scale, tf.float32)

    def decode(self, latents):
        """Maps latents [B, D] to the likelihood's logits, a tensor [B, 64, 64, C]."""
        import tensorflow as tf

        return tf.cast(self._decoder(tf.cast(latents, tf.float32)), tf.float32)

    def log_likelihood(self, images, logits):
        """log p(x|z) per image [B] for images [B, 64, 64, C] and decoder logits.

        ```none
        bernoulli: log p(x|z) = -sum_pixels sigmoid_cross_entropy(labels=x, logits)
        ```
        """
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        if self.likelihood == "bernoulli":
            per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
            return -tf.reduce_sum(per_pixel, axis=[1, 2, 3])
        from tcvae_tf import distributions

        return distributions.likelihood(logits, self.likelihood).log_prob(images)

    def describe(self):
        """What was evaluated, for result files: reference, kind, name, version, path, setup."""
        summary = {"kind": self.kind, "name": self.name, "version": self.version,
                   "path": self.path, "latent_dim": self.latent_dim,
                   "posterior": self.posterior, "likelihood": self.likelihood}
        for key in ("arch", "seed"):
            if key in self.config:
                summary[key] = self.config[key]
        if self.config:
            from tcvae_tf import methods

            summary["objective"], summary["options"] = methods.split_record(self.config)
        if self.fingerprint is not None:
            summary["fingerprint"] = self.fingerprint
        return summary

    def encoding_step(self, dtype, with_log_likelihood, pixel_max=1):
        """The compiled per-batch function of ``encode_dataset`` (built once per setting).

        Args:
          dtype: the dtype of the image batches; they are cast to float32 inside.
          with_log_likelihood: also decode one posterior sample and return log p(x|z).
          pixel_max: integer images are divided by this (1 for binary images).

        Returns:
          A ``tf.function`` (images [B, 64, 64, C], seed int64 [2]) -> (loc, log_scale) or
          (loc, log_scale, log_likelihood).
        """
        import tensorflow as tf

        key = (np.dtype(dtype).name, bool(with_log_likelihood), float(pixel_max))
        if key in self._steps:
            return self._steps[key]
        signature = [tf.TensorSpec([None, *self.image_shape], tf.as_dtype(np.dtype(dtype))),
                     tf.TensorSpec([2], tf.int64)]

        @tf.function(input_signature=signature)
        def step(images, seed):
            images = tf.cast(images, tf.float32)
            if pixel_max != 1:
                images = images * (1.0 / pixel_max)
            loc, log_scale = self.encode(images)
            if not with_log_likelihood:
                return loc, log_scale
            noise = tf.random.stateless_normal(tf.shape(loc), seed=seed)
            logits = self.decode(loc + tf.exp(log_scale) * noise)
            return loc, log_scale, self.log_likelihood(images, logits)

        self._steps[key] = step
        return step


# -- loading ---------------------------------------------------------------------------------


def load_run(run_dir, model=None):
    """An ``Evaluable`` of a run folder's model (or of ``model``, e.g. with other weights)."""
    from tcvae_tf import runs

    record = runs.read_config(run_dir)
    # what export checks metrics.json against: the file loaded next (a given model: none)
    fingerprint = runs.model_fingerprint(run_dir) if model is None else None
    model = runs.load_model(run_dir) if model is None else model
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    evaluable = Evaluable(
        name=name, kind="run", config=record.get("train", {}), data=record.get("data", {}),
        encoder=lambda images: model.encode(images, training=False),
        decoder=lambda latents: model.decode(latents, training=False),
        latent_dim=model.latent_dim, image_shape=model.image_shape,
        likelihood=model.likelihood, posterior=model.posterior, path=run_dir,
        prior=model.prior)
    evaluable.fingerprint = fingerprint
    return evaluable


def _load_zoo(name, zoo_root, version):
    from tcvae_tf import zoo

    version = zoo.resolve_version(name, version, zoo_root)
    entry = zoo.card_entry(name, version, zoo_root)
    encoder_function = zoo.load_encoder(name, version, zoo_root)
    decoder_function = zoo.load_decoder(name, version, zoo_root)

    def encoder(images):
        outputs = encoder_function(images)
        return outputs["mean"], outputs["log_scale"]

    def decoder(latents):
        return decoder_function(latents)["logits"]

    run_config = entry.get("config") or {}
    train_config = run_config.get("train", {})
    model_config = entry.get("model") or {}
    latent_dim = entry.get("latent_dim") or train_config.get("latent_dim")
    if latent_dim is None:
        raise ValueError(f"the card of zoo model {name!r} v{version} records no latent_dim")
    return Evaluable(
        name=name, kind="zoo", config=train_config,
        data=entry.get("dataset") or run_config.get("data") or {},
        encoder=encoder, decoder=decoder, latent_dim=latent_dim,
        image_shape=entry.get("image_shape") or (64, 64, 1),
        likelihood=model_config.get("likelihood") or "bernoulli",
        posterior=model_config.get("posterior") or "normal",
        path=os.fspath(zoo.resolve_root(zoo_root) / name), version=version,
        prior=model_config.get("prior") or "normal")


def load_evaluable(ref, zoo_root=None, version=None):
    """Loads a trained model from a run folder or from the zoo.

    A run folder (a folder holding config.json) wins over a zoo model of the same name.

    Args:
      ref: a run folder, or the name of a zoo model.
      zoo_root: zoo folder (default: ``tcvae_tf.zoo.default_root()``, i.e. ``$TCVAE_TF_ZOO``
        or the repository's zoo).
      version: zoo version (default: the latest); not allowed for run folders.

    Returns:
      An ``Evaluable``.

    Raises:
      FileNotFoundError: ``ref`` is neither a run folder nor a zoo model.
      tcvae_tf.training.TrainingError: the run folder holds no model.
      tcvae_tf.zoo.ZooError: unknown zoo version.
      ValueError: ``version`` given for a run folder.

    Example:
      >>> load_evaluable("dsprites-btcvae-b6", version=1).kind
      'zoo'
    """
    from tcvae_tf import training

    ref = os.fspath(ref)
    if os.path.isfile(os.path.join(ref, training.CONFIG_FILE)):
        if version is not None:
            raise ValueError(f"a version applies to zoo models only; {ref} is a run folder")
        return load_run(ref)
    from tcvae_tf import zoo

    try:
        zoo.resolve_version(ref, None, zoo_root)
    except zoo.ZooError as error:
        if os.path.isdir(ref):
            raise FileNotFoundError(
                f"{ref} is not a run folder (no {training.CONFIG_FILE})") from None
        raise FileNotFoundError(
            f"{ref!r} is neither a run folder nor a zoo model: {error}") from None
    return _load_zoo(ref, zoo_root, version)


def load_evaluation_dataset(evaluable, source=None, data_path=None, echo=None):
    """Loads the full dataset a model was trained on.

    Args:
      evaluable: an ``Evaluable``.
      source: data source overriding the training config's (auto, rendered, official, tfds).
      data_path: path of the dataset file overriding the training config's (which is only
        used when ``source`` is not overridden). Given without ``source`` for a model trained
        on the rendered dSprites (which reads no file), it is read as ``source="auto"``
        reads a file: as the official npz.
      echo: optional callable(str) told which source is used and of slow steps (the
        first use of the rendered dSprites renders and caches it).

    Returns:
      A ``tcvae_tf.data`` GroundTruthDataset (never the training subset).

    Raises:
      ValueError: the config names no dataset, or the images do not fit the model.
    """
    from tcvae_tf import data as data_lib

    name = evaluable.config.get("dataset") or evaluable.data.get("name")
    if not name:
        raise ValueError(f"{evaluable.name}: the training config names no dataset")
    if data_path is None and source is None:
        data_path = evaluable.config.get("data_path")  # the file belongs to the config's source
    trained_source = evaluable.config.get("source") or "auto"
    if source is None and data_path is not None and trained_source == "rendered":
        source = "auto"  # a file for a model of rendered images: taken as auto takes a file
    source = source or trained_source
    path = data_path
    options = {} if echo is None else {"log": echo}
    dataset = data_lib.load_dataset(name, source=source, path=path, **options)
    image_shape = tuple(dataset.images.shape[1:])
    if image_shape != evaluable.image_shape:
        raise ValueError(f"{name} has images of shape {image_shape} but {evaluable.name} takes "
                         f"{evaluable.image_shape}")
    return dataset


# -- encoding --------------------------------------------------------------------------------


def _first_bad_row(*arrays):
    bad = np.zeros(len(arrays[0]), bool)
    for array in arrays:
        finite = np.isfinite(array)
        bad |= ~(finite.all(axis=1) if finite.ndim > 1 else finite)
    return bad


def encode_dataset(evaluable, dataset, batch_size=DEFAULT_BATCH_SIZE, with_log_likelihood=True,
                   seed=0, progress=None, pixel_max=None):
    """Encodes every image of a dataset in batches under ``tf.function``.

    Images stay uint8 in memory and are scaled to float32 in [0, 1] one batch at a time. The
    log-likelihood is a one-sample estimate of E_q(z|x) log p(x|z):

    ```none
    z_n ~ q(z|x_n) = Normal(loc_n, exp(log_scale_n))
    log_likelihood_n = log p(x_n|z_n)   (Bernoulli: -sum_pixels sigmoid_cross_entropy)
    ```

    Args:
      evaluable: an ``Evaluable``.
      dataset: a GroundTruthDataset (its ``images``) or an image array [N, 64, 64, C],
        integers 0..pixel_max or floats in [0, 1].
      batch_size: images per call.
      with_log_likelihood: also decode one posterior sample per image.
      seed: seed of the posterior samples (batch b uses the stateless seed [seed, b]).
      progress: optional callable(done, total) called after every batch, counting images.
      pixel_max: largest pixel value of integer images (default: the dataset's
        ``pixel_max``, else 1 for binary images).

    Returns:
      An ``Encoding`` (loc, log_scale float32 [N, D]; log_likelihood float32 [N] or None).

    Raises:
      ValueError: wrong image shape, empty dataset, bad batch size, a sample needed from a
        non-Normal posterior, or NaN/inf codes or log-likelihoods.

    Example:
      >>> loc, log_scale, log_likelihood = encode_dataset(model, dataset, batch_size=1024)
    """
    import tensorflow as tf

    images = getattr(dataset, "images", dataset)
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        images = np.asarray(images)
    if len(images.shape) != 4 or tuple(images.shape[1:]) != evaluable.image_shape:
        expected = ", ".join(str(size) for size in evaluable.image_shape)
        raise ValueError(f"{evaluable.name} takes images [N, {expected}], got shape "
                         f"{tuple(images.shape)}")
    num_images = int(images.shape[0])
    if num_images == 0:
        raise ValueError("the dataset holds no images")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if with_log_likelihood and evaluable.posterior != "normal":
        raise ValueError(f"{evaluable.name} has a {evaluable.posterior} posterior; the "
                         f"log-likelihood estimate samples a normal posterior")
    if pixel_max is None:
        pixel_max = getattr(dataset, "pixel_max", 1)
    if not np.issubdtype(images.dtype, np.integer):
        pixel_max = 1
    step = evaluable.encoding_step(images.dtype, with_log_likelihood, pixel_max)

    loc = np.empty((num_images, evaluable.latent_dim), np.float32)
    log_scale = np.empty_like(loc)
    log_likelihood = np.empty(num_images, np.float32) if with_log_likelihood else None
    for index, start in enumerate(range(0, num_images, batch_size)):
        stop = min(start + batch_size, num_images)
        outputs = step(tf.convert_to_tensor(images[start:stop]),
                       tf.constant([seed, index], tf.int64))
        loc[start:stop] = outputs[0].numpy()
        log_scale[start:stop] = outputs[1].numpy()
        if with_log_likelihood:
            log_likelihood[start:stop] = outputs[2].numpy()
        if progress is not None:
            progress(stop, num_images)

    bad = _first_bad_row(loc, log_scale)
    if bad.any():
        raise ValueError(f"the encoder of {evaluable.name} returned NaN or inf codes for "
                         f"{int(bad.sum())} of {num_images} images (first: image "
                         f"{int(np.argmax(bad))})")
    if with_log_likelihood:
        bad = _first_bad_row(log_likelihood)
        if bad.any():
            raise ValueError(f"the log-likelihood of {evaluable.name} is NaN or inf for "
                             f"{int(bad.sum())} of {num_images} images (first: image "
                             f"{int(np.argmax(bad))})")
    return Encoding(loc, log_scale, log_likelihood)


# -- metrics ---------------------------------------------------------------------------------


def check_metrics(metrics):
    """Returns ``metrics`` as a tuple in registry order ("all": every metric); a one-line
    ValueError for unknown names (listing the known ones) or no name."""
    return registry.resolve(metrics)


def check_metric_arguments(metrics, given, labels=None):
    """Refuses arguments that none of the chosen metrics reads.

    Args:
      metrics: the metric names computed, or "all".
      given: names from ``METRIC_ARGUMENTS`` that were given.
      labels: optional ``{name: label}`` naming them in the message (e.g. the command
        line's "--num-samples"; default: "the NAME argument").

    Raises:
      ValueError: (one line) an unknown metric, or an argument none of ``metrics`` reads,
        naming the metrics that read it.

    Example:
      >>> check_metric_arguments(["elbo"], ["num_samples", "log_likelihood_images"])
      >>> check_metric_arguments(["sap"], ["log_likelihood_images"])
      Traceback (most recent call last):
      ValueError: the log_likelihood_images argument is only used by elbo, which is not
      computed
    """
    metrics = check_metrics(metrics)
    for name in given:
        users = METRIC_ARGUMENTS[name]
        if set(users) & set(metrics):
            continue
        label = (labels or {}).get(name, f"the {name} argument")
        if len(users) == 1:
            raise ValueError(f"{label} is only used by {users[0]}, which is not computed")
        which = "neither" if len(users) == 2 else "none"
        raise ValueError(f"{label} is only used by {', '.join(users[:-1])} and {users[-1]}, "
                         f"{which} of which is computed")


def check_normal_families(evaluable, purpose):
    """Refuses a model whose posterior or prior is not normal.

    Args:
      evaluable: an ``Evaluable``.
      purpose: what assumes normal ones, ending the message, e.g. "the metrics assume
        normal ones".

    Raises:
      ValueError: (one line) naming the model's posterior and prior families.
    """
    if evaluable.posterior != "normal" or evaluable.prior != "normal":
        raise ValueError(f"{evaluable.name} has a {evaluable.posterior} posterior and a "
                         f"{evaluable.prior} prior; {purpose}")


def run_metrics_path(run_dir, metrics):
    """Where an evaluation of a run folder is written, so that no full evaluation is lost.

    Any set of metrics that holds the default set goes to ``metrics.json`` (what
    ``tcvae-tf export`` puts in the card). Any other choice goes there only while no
    ``metrics.json`` exists, and otherwise to ``metrics-<name>+<name>.json`` beside it.
    """
    metrics = check_metrics(metrics)
    path = os.path.join(os.fspath(run_dir), METRICS_FILE)
    if set(METRICS) <= set(metrics) or not os.path.exists(path):
        return path
    return os.path.join(os.fspath(run_dir), f"metrics-{'+'.join(metrics)}.json")


def mig_factors(factor_names, dataset_name=None, factors=None):
    """Indices of the factors the headline MIG averages over.

    Args:
      factor_names: names of all K factors of the dataset.
      dataset_name: e.g. "dsprites"; picks the published factor set when there is one.
      factors: explicit factor names or indices (overrides the default).

    Returns:
      A sorted list of factor indices.

    Raises:
      ValueError: unknown, repeated or out-of-range factors.

    Example:
      >>> mig_factors(["shape", "scale", "orientation", "pos_x", "pos_y"], "dsprites")
      [1, 2, 3, 4]
    """
    names = [str(name) for name in factor_names]
    if factors is None:
        wanted = PAPER_MIG_FACTORS.get(dataset_name)
        if wanted is None or not set(wanted) <= set(names):
            return list(range(len(names)))
        factors = wanted
    indices = []
    for factor in factors:
        if isinstance(factor, str) and not factor.lstrip("-").isdigit():
            if factor not in names:
                raise ValueError(f"unknown factor {factor!r}; the dataset has "
                                 f"{', '.join(names)}")
            index = names.index(factor)
        else:
            index = int(factor)
            if not 0 <= index < len(names):
                raise ValueError(f"factor index {index} is out of range for {len(names)} "
                                 f"factors ({', '.join(names)})")
        if index in indices:
            raise ValueError(f"factor {names[index]!r} is listed twice")
        indices.append(index)
    if not indices:
        raise ValueError("no factor given for MIG")
    return sorted(indices)


def _validate_codes(loc, log_scale, factor_classes, log_likelihood):
    loc = np.asarray(loc)
    log_scale = np.asarray(log_scale)
    factor_classes = np.asarray(factor_classes)
    if loc.ndim != 2 or loc.shape[0] == 0 or loc.shape[1] == 0:
        raise ValueError(f"loc must be a non-empty array [N, D], got shape {loc.shape}")
    if log_scale.shape != loc.shape:
        raise ValueError(f"loc and log_scale must have the same shape, got {loc.shape} and "
                         f"{log_scale.shape}")
    if factor_classes.ndim != 2:
        raise ValueError(f"factor_classes must be an array [N, K], got shape "
                         f"{factor_classes.shape}")
    if len(factor_classes) != len(loc):
        raise ValueError(f"the codes have {len(loc)} rows but factor_classes has "
                         f"{len(factor_classes)}")
    if log_likelihood is not None:
        log_likelihood = np.asarray(log_likelihood)
        if log_likelihood.ndim != 1 or not 0 < len(log_likelihood) <= len(loc):
            raise ValueError(f"log_likelihood must be an array [n] with 1 <= n <= {len(loc)} "
                             f"(one value per image), got shape {log_likelihood.shape}")
    for name, array in (("loc", loc), ("log_scale", log_scale),
                        ("log_likelihood", log_likelihood)):
        if array is not None and not np.all(np.isfinite(array)):
            bad = _first_bad_row(array)
            raise ValueError(f"{name} holds NaN or inf values in {int(bad.sum())} of {len(bad)} "
                             f"rows (first: row {int(np.argmax(bad))})")
    return loc, log_scale, factor_classes, log_likelihood


def compute_metrics(loc, log_scale, factor_classes, metrics=METRICS, log_likelihood=None,
                    factor_names=None, dataset_name=None, factors=None,
                    num_samples=DEFAULT_NUM_SAMPLES, seed=0, progress=None, dataset=None,
                    options=None):
    """Computes metrics from the posteriors of every image of a dataset.

    Each name is looked up in ``tcvae_tf.metrics.registry``:

    - ``mig_sampling``: the paper's estimator on the stochastic posteriors of all N images
      (needs a full factorial ``factor_classes``), ``num_samples`` samples.
    - ``mig_histogram``: disentanglement_lib's estimator on the means of 10000 random
      images, 20 bins.
    - ``elbo``: MI, TC, DWKL (``num_samples`` samples against all N posteriors), the
      analytic KL over all N images, and with ``log_likelihood`` the mean log p(x|z), its
      standard error and ELBO = mean log p(x|z) - KL.
    - ``active_units``: latents whose posterior mean has variance > 0.01.
    - ``sap``, ``modularity_explicitness``, ``dci``: disentanglement_lib's metrics on the
      means of 10000 training and 5000 test images drawn at random.
    - ``factorvae_score``, ``betavae_score``: disentanglement_lib's intervention metrics;
      they need ``dataset`` (the images are drawn by their factors; their codes are looked
      up in ``loc``, which must hold every row of ``dataset`` in order).
    - ``minibatch_saturation`` (only on request): the share of each sample's own posterior
      in the MWS and MSS minibatch estimates of log q(z), for batches of 256 and 2048
      random images (`tcvae_tf.metrics.minibatch_saturation`).

    Both MIG sections hold "mig" (over ``mig_factors(...)``, the published factor set on
    dSprites), "mig_all_factors", "factors" (names used for "mig") and "all_factors" (the
    rows of their per-factor arrays). Each MIG estimator runs once, over every factor. The
    sections of disentanglement_lib's metrics hold their "settings".

    Args:
      loc: array [N, D], posterior means.
      log_scale: array [N, D], posterior log standard deviations.
      factor_classes: integer array [N, K], the factor classes of the same images.
      metrics: names from ``ALL_METRICS``, or "all".
      log_likelihood: optional array [n], per-image log p(x|z) of all N images or of a
        random subset of them (for the ELBO: its mean estimates E log p(x|z)).
      factor_names: names of the K factors (default "factor0", ...).
      dataset_name: the dataset's name (chooses the default MIG factors).
      factors: factor names or indices for the headline MIG (default: ``mig_factors``).
      num_samples: Monte-Carlo samples of the sampling MIG and the ELBO decomposition.
      seed: seed of every random choice.
      progress: optional callable(stage, done, total), stage a metric name.
      dataset: the GroundTruthDataset of the codes (for the "encoder" metrics).
      options: ``{metric: {setting: value}}`` overriding the registered settings, e.g.
        ``{"dci": {"num_train": 2000}}``.

    Returns:
      A dict: one section per metric, and "seconds" per metric.

    Raises:
      ValueError: mismatched lengths, NaN/inf codes, unknown metrics, settings or factors.
    """
    from tcvae_tf.metrics.utils import RowEncoder

    metrics = check_metrics(metrics)
    settings = registry.check_options(options, metrics)
    loc, log_scale, factor_classes, log_likelihood = _validate_codes(
        loc, log_scale, factor_classes, log_likelihood)
    num_factors = factor_classes.shape[1]
    if factor_names is None:
        factor_names = [f"factor{k}" for k in range(num_factors)]
    factor_names = [str(name) for name in factor_names]
    if len(factor_names) != num_factors:
        raise ValueError(f"{len(factor_names)} factor names for {num_factors} factors")
    if dataset is not None and dataset.num_images != len(loc):
        raise ValueError(f"the codes have {len(loc)} rows but the dataset has "
                         f"{dataset.num_images} images")
    inputs = registry.MetricInputs(
        factor_classes, factor_names, RowEncoder(dataset, codes=loc),
        mig_factors(factor_names, dataset_name, factors), seed=seed, num_samples=num_samples,
        loc=loc, log_scale=log_scale, log_likelihood=log_likelihood, dataset=dataset,
        progress=progress)
    return run_metrics(inputs, metrics, settings)


def run_metrics(inputs, metrics, settings=None):
    """Computes registered metrics from a ``registry.MetricInputs``.

    Args:
      inputs: what the metrics may use.
      metrics: names from ``ALL_METRICS`` (checked).
      settings: ``{metric: {setting: value}}`` for every name (default: the registered
        settings).

    Returns:
      A dict: one section per metric, and "seconds" per metric.
    """
    metrics = check_metrics(metrics)
    settings = settings or registry.check_options(None, metrics)
    results = {"seconds": {}}
    for name in metrics:
        start = time.perf_counter()
        results[name] = registry.get(name).compute(inputs, **settings[name])
        results["seconds"][name] = round(time.perf_counter() - start, 3)
    return results


# -- the whole evaluation --------------------------------------------------------------------


def evaluate(ref, metrics=METRICS, num_samples=DEFAULT_NUM_SAMPLES, seed=0, zoo_root=None,
             version=None, source=None, data_path=None, batch_size=DEFAULT_BATCH_SIZE,
             factors=None, log_likelihood_images=DEFAULT_NUM_SAMPLES, progress=None,
             echo=None, options=None):
    """Evaluates a run or a zoo model on the full dataset it was trained on.

    When a metric needs the posteriors of every image (the sampling MIG, the ELBO
    decomposition, active units), every image is encoded once first and all other metrics
    take their codes from that encoding. Otherwise only the images the metrics draw are
    encoded, each once. Each metric is then computed by its registry entry (see
    ``compute_metrics``). For the ELBO, the reconstruction term E log p(x|z) is the mean
    of one-sample estimates log p(x_n|z_n), z_n ~ q(z|x_n), over ``log_likelihood_images``
    random images (decoding costs several encoder passes: the whole of dSprites takes
    minutes more for the conv decoder); its standard error is reported with it.

    Args:
      ref: a run folder or a zoo model name (a run folder wins).
      metrics: names from ``ALL_METRICS``, or "all" (default: ``METRICS``, the paper's
        metrics and the fast ones).
      num_samples: Monte-Carlo samples of the sampling MIG and the ELBO decomposition.
      seed: seed of the posterior samples and of every metric.
      zoo_root: zoo folder for zoo names.
      version: zoo version (default: the latest).
      source: data source overriding the training config's.
      data_path: dataset file overriding the training config's.
      batch_size: images per encoder call.
      factors: factor names or indices of the headline MIG (default: the published set).
      log_likelihood_images: images decoded for E log p(x|z) (None: all of them).
      progress: optional callable(stage, done, total); stage is "encode", "decode" (the
        log-likelihood pass) or a metric name.
      echo: optional callable(str) for one-line messages about the data loading.
      options: ``{metric: {setting: value}}`` overriding a metric's registered settings
        (e.g. ``{"dci": {"num_train": 2000}}``); recorded in each section's settings.

    Returns:
      A JSON-ready dict: "model" (what was evaluated), "data" (the dataset's describe()),
      "factors" (names of the headline MIG), "settings", one section per metric, "notes",
      "seconds", "date" and "library_versions".

    Raises:
      FileNotFoundError, ValueError, tcvae_tf.training.TrainingError,
      tcvae_tf.zoo.ZooError: with one-line messages; ValueError before anything loads for
        unknown metrics, settings of the wrong type, or ``factors`` without a MIG
        (``check_metric_arguments``), and before the dataset loads for a model whose
        posterior or prior is not normal.

    Example:
      >>> result = evaluate("runs/dsprites-tcvae-beta6-mlp-seed0", metrics=["mig_sampling"])
      >>> result["mig_sampling"]["mig"]
    """
    from tcvae_tf import training
    from tcvae_tf.metrics.utils import RowEncoder

    metrics = check_metrics(metrics)
    metric_settings = registry.check_options(options, metrics)
    # num_samples and log_likelihood_images always hold a number: the command line, which
    # tells a given one from its default, refuses those (check_metric_arguments too)
    check_metric_arguments(metrics, [] if factors is None else ["factors"])
    for label, value in (("num_samples", num_samples),
                         ("log_likelihood_images", log_likelihood_images)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    evaluable = load_evaluable(ref, zoo_root=zoo_root, version=version)
    check_normal_families(evaluable, "the metrics assume normal ones (the ELBO terms are "
                                     "computed against N(0, I))")
    start = time.perf_counter()
    dataset = load_evaluation_dataset(evaluable, source=source, data_path=data_path, echo=echo)
    seconds = {"load_data": round(time.perf_counter() - start, 3)}
    notes = []
    trained_source = evaluable.data.get("source")
    if trained_source and dataset.source != trained_source:
        notes.append(f"trained on the {trained_source} source, evaluated on {dataset.source}")
    factor_names = [str(name) for name in dataset.factor_names]
    chosen = mig_factors(factor_names, dataset.name, factors)

    def stage(name):
        return None if progress is None else (lambda done, total: progress(name, done, total))

    needs = {registry.get(name).needs for name in metrics}
    loc = log_scale = None
    if registry.POSTERIORS in needs:
        start = time.perf_counter()
        encoding = encode_dataset(evaluable, dataset, batch_size=batch_size,
                                  with_log_likelihood=False, progress=stage("encode"))
        seconds["encode"] = round(time.perf_counter() - start, 3)
        seconds["images_per_second"] = round(
            dataset.num_images / max(seconds["encode"], 1e-9), 1)
        loc, log_scale = encoding.loc, encoding.log_scale
        rows_to_codes = RowEncoder(dataset, codes=loc)
    else:
        step = evaluable.encoding_step(np.float32, False)
        seed_tensor = None

        def encode(images):
            nonlocal seed_tensor
            import tensorflow as tf

            if seed_tensor is None:
                seed_tensor = tf.constant([seed, 0], tf.int64)
            return step(tf.convert_to_tensor(images), seed_tensor)[0].numpy()

        rows_to_codes = RowEncoder(dataset, encode, batch_size=batch_size)
    log_likelihood = None
    if "elbo" in metrics:
        start = time.perf_counter()
        images = dataset.images
        if log_likelihood_images is not None and log_likelihood_images < dataset.num_images:
            chosen_images = np.random.default_rng(seed).choice(
                dataset.num_images, int(log_likelihood_images), replace=False)
            images = dataset.images[np.sort(chosen_images)]
        log_likelihood = encode_dataset(
            evaluable, images, batch_size=batch_size, seed=seed, progress=stage("decode"),
            pixel_max=dataset.pixel_max).log_likelihood
        seconds["log_likelihood"] = round(time.perf_counter() - start, 3)

    inputs = registry.MetricInputs(
        dataset.factor_classes, factor_names, rows_to_codes, chosen, seed=seed,
        num_samples=num_samples, loc=loc, log_scale=log_scale, log_likelihood=log_likelihood,
        dataset=dataset, progress=progress)
    computed = run_metrics(inputs, metrics, metric_settings)
    seconds.update(computed.pop("seconds"))
    if loc is None:
        seconds["encode"] = round(rows_to_codes.seconds, 3)
        seconds["images_encoded"] = int(rows_to_codes.num_encoded)

    model = {"ref": os.fspath(ref), **evaluable.describe()}
    histogram = metric_settings.get("mig_histogram", {"num_images": HISTOGRAM_IMAGES,
                                                      "num_bins": HISTOGRAM_BINS})
    return {
        "model": model,
        "data": dataset.describe(),
        "factors": [factor_names[k] for k in chosen],
        "settings": {
            "metrics": list(metrics), "num_samples": int(num_samples), "seed": int(seed),
            "batch_size": int(batch_size),
            "histogram_images": min(histogram["num_images"], dataset.num_images),
            "histogram_bins": histogram["num_bins"],
            "active_units_threshold": metric_settings.get(
                "active_units", {"threshold": ACTIVE_UNITS_THRESHOLD})["threshold"],
            "log_likelihood": ("mean over random images of log p(x|z), one z ~ q(z|x) each"
                               if "elbo" in metrics else None),
            "log_likelihood_images": (
                int(min(log_likelihood_images or dataset.num_images, dataset.num_images))
                if "elbo" in metrics else None),
            "dataset": dataset.name, "num_images": int(dataset.num_images),
            "metric_settings": metric_settings,
        },
        **computed,
        "notes": notes,
        "seconds": seconds,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "library_versions": training.library_versions(),
    }


# -- results ---------------------------------------------------------------------------------


def to_json(value):
    """Converts numpy arrays/scalars (recursively) to plain Python for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_metrics(result, path):
    """Writes an evaluation result as indented JSON, atomically (temporary file + rename)."""
    text = json.dumps(to_json(result), indent=2, allow_nan=False) + "\n"

    def write(tmp):
        with open(tmp, "w") as handle:
            handle.write(text)

    return atomic_write(path, write)


def summary_rows(result):
    """The headline numbers of an evaluation as (label, value) rows of text, in registry
    order; sections of unknown or older layouts are skipped."""
    rows = []
    for name, metric in registry.REGISTRY.items():
        section = result.get(name)
        if not isinstance(section, dict) or not section:
            continue
        try:
            rows += metric.rows(section)
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def settings_rows(result):
    """(metric label, its settings, seconds) of every metric in an evaluation result."""
    rows = []
    seconds = result.get("seconds") or {}
    for name, metric in registry.REGISTRY.items():
        section = result.get(name)
        if not isinstance(section, dict) or not section:
            continue
        try:
            text = metric.describe(section)
        except (KeyError, TypeError, ValueError):
            text = "-"
        took = seconds.get(name)
        rows.append((metric.label, text, "-" if took is None else f"{took:.1f} s"))
    return rows


def format_summary(result):
    """A readable table of an evaluation result: model, data, headline numbers, then each
    metric's settings and time."""
    model, data = result.get("model", {}), result.get("data", {})
    version = f" v{model['version']}" if model.get("version") is not None else ""
    header = [
        ("model", f"{model.get('ref', model.get('name'))} ({model.get('kind')}{version})"),
        ("data", f"{data.get('name')} ({data.get('source')}), {data.get('num_images')} images"),
    ]
    rows = summary_rows(result)
    width = max(len(label) for label, _ in header + rows) + 2
    lines = [f"{label:<{width}}{value}" for label, value in header]
    lines.append("-" * (width + 12))
    lines += [f"{label:<{width}}{value:>10}" for label, value in rows]
    settings = settings_rows(result)
    if settings:
        seconds = result.get("seconds") or {}
        labels = [label for label, _, _ in settings]
        if "encode" in seconds:
            labels.append("encoding")
        label_width = max(len(label) for label in labels) + 2
        lines.append("-" * (width + 12))
        if "encode" in seconds:
            encoded = seconds.get("images_encoded", data.get("num_images"))
            lines.append(f"{'encoding':<{label_width}}{encoded} images in "
                         f"{seconds['encode']:.1f} s")
        lines += [f"{label:<{label_width}}{text} ({took})" for label, text, took in settings]
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)
