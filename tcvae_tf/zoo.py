"""The model zoo: published encoders and decoders in TF Serving's layout, with model cards.

```none
ROOT/index.json                        {"format": 1, "models": {NAME: {"versions": [1, 2],
                                        "latest": 2, ...summary of the latest version}}}
ROOT/NAME/card.json                    {"format": 1, "name": NAME, "versions": {"1": {...}}}
ROOT/NAME/encoder/<version>/saved_model.pb, variables/, assets.extra/signatures.json
ROOT/NAME/decoder/<version>/...
```

A card entry records, per version, the dataset and its source, the full training
config (the run's config.json), the metrics (the run's metrics.json, if any, and only
if it was computed on the run's current model.keras), library versions, the date,
parameter counts, latent_dim, image_shape, the posterior parameterisation
(``log_scale`` is the log of the posterior's standard deviation) and the sha256 of every
file of both SavedModels. Versions are integers and a published version is never
overwritten; new versions are built in a temporary folder inside ROOT and renamed into
place, and card/index are replaced atomically. Writing ``index.json`` is the commit point
of a publish: version folders and card entries that the index does not list were left by
an interrupted publish, and the next publish of that name removes them (with staging
folders no running publisher holds) before it picks its version. Loading checks a
SavedModel's files against the card first: a damaged one is refused with the message
``verify`` prints.

The root is, in order: the ``root`` argument, ``$TCVAE_TF_ZOO``, the repository's
``zoo/`` folder (next to the ``tcvae_tf`` package), ``./zoo``.

Example:

```python
from tcvae_tf import zoo

encoder = zoo.load_encoder("dsprites-btcvae-b6")        # latest version
out = encoder(images)                                   # float32 [B, 64, 64, 1] in [0, 1]
out["mean"], out["log_scale"], out["sample"]            # each [B, D]
images = zoo.load_decoder("dsprites-btcvae-b6")(out["mean"])["probs"]
```

Importing this module does not import TensorFlow.
"""

import contextlib
import datetime
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

from tcvae_tf import export, runs
from tcvae_tf.files import (
    atomic_write_text,
    fsync_folder,
    fsync_tree,
    lock_folder,
    sha256_file,
    unlock_folder,
)

INDEX_FILE = "index.json"
CARD_FILE = "card.json"
FORMAT = 1
NETWORKS = ("encoder", "decoder")
ENV_VAR = "TCVAE_TF_ZOO"
METRICS_FILE = "metrics.json"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TMP_PREFIX = ".tmp-"
_VERSION_PATTERN = re.compile(r"^[1-9][0-9]*$")
_INTERRUPTED = "left by an interrupted publish; the next export of {name} removes it"
# The fields of a card entry that hold an object, and those that hold a number, as loading
# and `zoo show` read them: "a.b" is the field b of the object a, "a.*" every field of a. A
# field may be missing or null unless it is in _ENTRY_REQUIRED.
_ENTRY_OBJECTS = ("dataset", "config", "config.train", "metrics", "library_versions", "model",
                  "model_config", "parameters", "parameters.encoder", "parameters.decoder",
                  "posterior", "signatures", "paths", "files", "study", "study.group",
                  "study.this_trial", "study.group_statistics", "study.group_statistics.*")
_ENTRY_NUMBERS = ("study.this_trial.*", "study.group_statistics.*.mean",
                  "study.group_statistics.*.sd", "study.group_statistics.*.n")
_ENTRY_REQUIRED = ("study.group_statistics.*.mean", "study.group_statistics.*.n")


class ZooError(LookupError):
    """An unknown model name or version; the message lists what the zoo holds."""


class DamagedModelError(ValueError):
    """A published SavedModel whose files do not match its card, or that does not load.

    The message is one line naming the file, the same as ``verify`` reports.
    """


# -- locations and registry files ---------------------------------------------------------


def default_root():
    """The zoo folder used when none is given.

    Returns:
      ``Path``: ``$TCVAE_TF_ZOO`` if set, else the repository's ``zoo/`` folder (next to
      the ``tcvae_tf`` package directory) if it exists, else ``./zoo``.
    """
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    import tcvae_tf

    repository_zoo = Path(tcvae_tf.__file__).resolve().parents[1] / "zoo"
    if repository_zoo.is_dir():
        return repository_zoo
    return Path("zoo")


def resolve_root(root=None):
    """``Path(root)``, or ``default_root()`` when root is None."""
    return Path(root) if root is not None else default_root()


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _is_version(value):
    """Whether a registry value is a version number (an int, or its digits as a JSON key)."""
    return (isinstance(value, int | str) and not isinstance(value, bool)
            and _VERSION_PATTERN.match(str(value)) is not None)


def _read_card_file(path):
    """Reads a card.json, checking its shape (ValueError naming the file if it is wrong)."""
    card = _read_json(path)
    versions = card.get("versions") if isinstance(card, dict) else None
    if not isinstance(versions, dict) or not all(
            _is_version(key) and isinstance(entry, dict) for key, entry in versions.items()):
        raise ValueError(f"{path} is not a model card (an object whose \"versions\" maps "
                         f"version numbers to objects)")
    checks = ([(field, dict, "an object") for field in _ENTRY_OBJECTS]
              + [(field, int | float, "a number") for field in _ENTRY_NUMBERS])
    for key, entry in versions.items():
        for field, kind, what in checks:
            for name, value in _entry_fields(entry, field):
                if value is None and field in _ENTRY_REQUIRED:
                    problem = "is missing"
                elif isinstance(value, bool) or not isinstance(value, kind | None):
                    problem = f"is not {what}"
                else:
                    continue
                raise ValueError(f"{path} is not a model card (the {name!r} of version {key} "
                                 f"{problem})")
    return card


def _entry_fields(entry, field):
    """(name, value) of each field of a card entry that ``field`` ("a.b", "a.*") names.

    A missing field has the value None; fields under a value that is not an object have
    none (the check of that value reports it).
    """
    found = [("", entry)]
    for part in field.split("."):
        found = [(f"{name}.{key}" if name else key, item)
                 for name, value in found if isinstance(value, dict)
                 for key, item in (value.items() if part == "*" else [(part, value.get(part))])]
    return found


def _write_text(path, text):
    atomic_write_text(path, text, prefix=_TMP_PREFIX)


def _write_json(path, data):
    _write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_index(root=None):
    """Reads ``ROOT/index.json``.

    Args:
      root: zoo folder (default: ``default_root()``).

    Returns:
      ``{"format": 1, "models": {name: {"versions": [...], "latest": int, ...}}}``; an
      empty registry when the zoo or its index does not exist yet.
    """
    path = resolve_root(root) / INDEX_FILE
    if not path.is_file():
        return {"format": FORMAT, "models": {}}
    index = _read_json(path)
    if not isinstance(index, dict) or not isinstance(index.get("models"), dict):
        raise ValueError(f"{path} has no \"models\" mapping")
    for name, entry in index["models"].items():
        versions = entry.get("versions", []) if isinstance(entry, dict) else None
        if not isinstance(versions, list) or not all(_is_version(v) for v in versions):
            raise ValueError(f"{path}: the entry of {name!r} is not an object with a list of "
                             f"version numbers")
    return index


def _describe_names(root, index):
    names = sorted(index["models"])
    if not names:
        return f"the zoo at {root} is empty"
    return f"the zoo at {root} holds: {', '.join(names)}"


def _index_entry(name, root):
    index = read_index(root)
    entry = index["models"].get(name)
    if entry is None:
        listing = _describe_names(resolve_root(root), index)
        raise ZooError(f"unknown model {name!r}; {listing}")
    return entry


def list_models(root=None):
    """Lists the published models.

    Args:
      root: zoo folder (default: ``default_root()``).

    Returns:
      A list (sorted by name) of dicts ``{name, versions, latest, path, dataset,
      objective, options, beta, arch, latent_dim, date, mig}`` (the summary fields
      describe the latest version; missing ones are None). ``options`` are the method's
      headline options (e.g. ``{"beta": 6.0}``, ``{"gamma": 35.0}``); ``beta`` is kept
      for the listings of earlier versions.
    """
    from tcvae_tf import methods

    root = resolve_root(root)
    rows = []
    for name, entry in sorted(read_index(root)["models"].items()):
        row = {"name": name, "versions": list(entry.get("versions", [])),
               "latest": entry.get("latest"), "path": str(root / name)}
        for key in ("dataset", "objective", "arch", "latent_dim", "date", "mig"):
            row[key] = entry.get(key)
        objective, options = model_options(entry)
        row["options"] = methods.headline(objective, options)
        row["beta"] = row["options"].get("beta")
        rows.append(row)
    return rows


def resolve_version(name, version=None, root=None):
    """The version number to use for ``name``.

    Args:
      name: model name.
      version: an integer version, or None for the latest.
      root: zoo folder (default: ``default_root()``).

    Returns:
      int.

    Raises:
      ZooError: unknown name or version (the message lists what exists).
    """
    entry = _index_entry(name, root)
    versions = [int(v) for v in entry.get("versions", [])]
    if not versions:
        raise ZooError(f"model {name!r} has no published versions")
    if version is None:
        return max(versions)
    if int(version) not in versions:
        listed = ", ".join(str(v) for v in sorted(versions))
        raise ZooError(f"model {name!r} has no version {version}; published versions: {listed}")
    return int(version)


def read_card(name, root=None):
    """Reads a model's card.

    Args:
      name: model name.
      root: zoo folder (default: ``default_root()``).

    Returns:
      ``{"format": 1, "name": name, "versions": {"1": entry, ...}}``; an entry holds
      ``dataset``, ``config`` (the run's config.json), ``metrics``, ``library_versions``,
      ``date``, ``parameters``, ``latent_dim``, ``image_shape``, ``posterior``,
      ``signatures``, ``paths`` and ``files`` (path relative to ROOT/NAME -> sha256).

    Raises:
      ZooError: unknown name.
    """
    root = resolve_root(root)
    _index_entry(name, root)
    path = root / name / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (model {name!r} is listed in the index)")
    return _read_card_file(path)


def card_entry(name, version=None, root=None):
    """The card entry of one version (default: the latest).

    Args:
      name: model name.
      version: int or None.
      root: zoo folder.

    Returns:
      The version's dict from ``read_card(name)["versions"]``.
    """
    version = resolve_version(name, version, root)
    card = read_card(name, root)
    entry = card["versions"].get(str(version))
    if entry is None:
        path = resolve_root(root) / name / CARD_FILE
        raise ValueError(f"{path} has no entry for version {version}")
    return entry


def saved_model_path(name, network, version=None, root=None):
    """``ROOT/NAME/<network>/<version>`` of a published SavedModel (network: encoder/decoder)."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    version = resolve_version(name, version, root)
    return resolve_root(root) / name / network / str(version)


# -- loading --------------------------------------------------------------------------------


class SavedModelFunction:
    """A published SavedModel signature as a Python callable.

    Calling it with one array (numpy or tensor) returns the signature's dict of tensors.
    Float inputs of another precision are cast to float32; inputs of another kind or
    shape raise a ValueError naming what the signature expects.

    Attributes:
      name, version, network: what was loaded.
      path: the SavedModel folder.
      saved_model: the object returned by ``tf.saved_model.load``.
      input_name: "images" or "latents".
      input_shape: the signature's input shape, e.g. [None, 64, 64, 1].
      output_names: e.g. ("log_scale", "mean", "sample").
    """

    def __init__(self, name, version, network, path, saved_model, signature_key):
        self.name = name
        self.version = version
        self.network = network
        self.path = Path(path)
        self.saved_model = saved_model
        self.function = saved_model.signatures[signature_key]
        (self.input_name, spec), = self.function.structured_input_signature[1].items()
        self.input_shape = spec.shape.as_list()
        self.output_names = tuple(sorted(self.function.structured_outputs))

    def __call__(self, inputs):
        import tensorflow as tf

        tensor = tf.convert_to_tensor(inputs)
        if tensor.dtype.is_floating and tensor.dtype != tf.float32:
            tensor = tf.cast(tensor, tf.float32)
        expected = ["batch" if size is None else size for size in self.input_shape]
        if tensor.dtype != tf.float32:
            raise ValueError(f"{self.name} v{self.version} {self.network} takes float32 "
                             f"{self.input_name} {expected}, got {tensor.dtype.name}"
                             + (" (scale images to [0, 1] first)"
                                if self.input_name == export.ENCODER_INPUT else ""))
        if not tf.TensorShape(self.input_shape).is_compatible_with(tensor.shape):
            raise ValueError(f"{self.name} v{self.version} {self.network} takes "
                             f"{self.input_name} of shape {expected}, got {tensor.shape.as_list()}")
        return self.function(**{self.input_name: tensor})

    def __repr__(self):
        return (f"SavedModelFunction({self.name!r}, version={self.version}, "
                f"network={self.network!r}, path={str(self.path)!r})")


def checked_saved_model_path(name, network, version=None, root=None):
    """``saved_model_path`` of a SavedModel whose files match the card's checksums.

    Every loader of a published model goes through this check, so a damaged model is
    refused with the same one-line message as ``verify`` gives (naming the file).

    Args:
      name: model name.
      network: "encoder" or "decoder".
      version: int, or None for the latest.
      root: zoo folder (default: ``default_root()``).

    Returns:
      (version, ``Path`` of ROOT/NAME/<network>/<version>).

    Raises:
      ZooError: unknown name or version.
      DamagedModelError: a file is missing, damaged or not listed in the card.
    """
    version = resolve_version(name, version, root)
    path = saved_model_path(name, network, version, root)
    entry = card_entry(name, version, root)
    problems = _file_problems(resolve_root(root) / name, network, version,
                              entry.get("files") or {}, f"{name} v{version} {network}")
    if problems:
        more = (f" (and {len(problems) - 1} more problem(s): tcvae-tf zoo verify {name})"
                if len(problems) > 1 else "")
        raise DamagedModelError(problems[0] + more)
    return version, path


def _load(name, network, signature_key, version, root):
    import tensorflow as tf

    version, path = checked_saved_model_path(name, network, version, root)
    try:
        saved_model = tf.saved_model.load(str(path))
    except Exception as error:  # any load failure of a checksummed model: one line
        raise DamagedModelError(_load_failure(f"{name} v{version} {network}", path,
                                              error)) from None
    return SavedModelFunction(name, version, network, path, saved_model, signature_key)


def _load_failure(label, folder, error):
    """The one-line problem of a SavedModel that does not load (as ``verify`` words it)."""
    message = str(error).strip().splitlines()
    return f"{label}: {folder} does not load: {message[0] if message else type(error).__name__}"


def load_encoder(name, version=None, root=None):
    """Loads a published encoder.

    Args:
      name: model name, e.g. "dsprites-btcvae-b6".
      version: int, or None for the latest.
      root: zoo folder (default: ``default_root()``).

    Returns:
      A callable: images float32 [B, 64, 64, C] in [0, 1] (numpy or tensor) ->
      ``{"mean", "log_scale", "sample"}``, tensors [B, D]; ``log_scale`` is the log of
      the posterior's standard deviation.

    Raises:
      ZooError: unknown name or version.
      DamagedModelError: a file differs from the card, or the SavedModel does not load.
    """
    return _load(name, "encoder", export.ENCODER_SIGNATURE, version, root)


def load_decoder(name, version=None, root=None):
    """Loads a published decoder.

    Args:
      name: model name.
      version: int, or None for the latest.
      root: zoo folder (default: ``default_root()``).

    Returns:
      A callable: latents float32 [B, D] -> ``{"logits", "probs"}``, tensors
      [B, 64, 64, C] (``probs = sigmoid(logits)``).

    Raises:
      ZooError: unknown name or version.
      DamagedModelError: a file differs from the card, or the SavedModel does not load.
    """
    return _load(name, "decoder", export.DECODER_SIGNATURE, version, root)


def encoder_layer(name, version=None, root=None, trainable=False):
    """A published encoder as a Keras layer for downstream models.

    Args:
      name: model name.
      version: int, or None for the latest.
      root: zoo folder (default: ``default_root()``).
      trainable: fine-tune the encoder's weights (default: frozen).

    Returns:
      ``keras.layers.TFSMLayer`` (endpoint "serving_default") mapping images
      [B, 64, 64, C] to the dict ``{"mean", "log_scale", "sample"}``, each [B, D].

    Example:

    ```python
    images = keras.Input((64, 64, 1))
    latents = zoo.encoder_layer("dsprites-btcvae-b6")(images)["mean"]
    logits = keras.layers.Dense(3)(latents)
    head = keras.Model(images, logits)
    ```
    """
    import keras

    _, path = checked_saved_model_path(name, "encoder", version, root)
    return keras.layers.TFSMLayer(str(path), call_endpoint="serving_default",
                                  trainable=trainable)


# -- publishing -------------------------------------------------------------------------


def _check_name(name):
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
                         f"(starting with a letter or digit), at most 100 characters")


def _version_folders(model_dir):
    """The ``NETWORK/<digits>`` folders under ROOT/NAME: what TF Serving reads as versions."""
    return [entry for network in NETWORKS if (model_dir / network).is_dir()
            for entry in sorted((model_dir / network).iterdir())
            if entry.is_dir() and entry.name.isascii() and entry.name.isdigit()]


def _card_versions(model_dir):
    path = model_dir / CARD_FILE
    if not path.is_file():
        return set()
    return {int(v) for v in _read_card_file(path)["versions"]}


def _published_versions(name, root):
    """The versions of ``name`` that ``index.json`` lists: the published ones."""
    return {int(v) for v in read_index(root)["models"].get(name, {}).get("versions", [])}


def _taken_versions(name, root):
    model_dir = root / name
    return (_published_versions(name, root) | _card_versions(model_dir)
            | {int(folder.name) for folder in _version_folders(model_dir)})


def _check_free(name, version, root, taken):
    if version in taken:
        raise FileExistsError(
            f"{name} version {version} is already published in {root}; versions are never "
            f"overwritten (next free version: {max(taken) + 1})")


@contextlib.contextmanager
def _locked(root, shared=False):
    """Serialises writers of one zoo (an advisory lock on the root folder).

    With ``shared``, a reader's lock: readers run together, but never during a write, so
    they do not see a publish half done.
    """
    fd = lock_folder(root, shared=shared)
    try:
        yield
    finally:
        unlock_folder(fd)


@contextlib.contextmanager
def _staging_folder(root, name):
    """A new folder ``ROOT/.tmp-NAME-*`` to build a version in; removed at the end.

    It is locked for as long as it is in use, so ``_recover`` tells it from a staging
    folder whose publisher died. It is created under the zoo's lock, which ``_recover``
    holds too: ``_recover`` never sees it before it is locked.
    """
    with _locked(root):
        staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-", dir=root))
        fd = lock_folder(staging)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        unlock_folder(fd)


def _abandoned(staging):
    """Whether no running publisher holds a staging folder (always False without fcntl)."""
    fd = lock_folder(staging, wait=False)
    unlock_folder(fd)
    return fd is not None


def _recover(name, root):
    """Removes what interrupted publishes left in a zoo; call it under ``_locked(root)``.

    Writing ``index.json`` is the commit point of a publish, so what the index does not
    list was never published: NAME's version folders and card entries of unlisted
    versions (a card that then holds none is removed, and NAME's folders if they are
    left empty), staging folders ``ROOT/.tmp-*`` that no running publisher holds, and the
    ``.tmp-*.json`` files of interrupted card and index writes (written only under the
    lock). Nothing the index lists is touched.

    Args:
      name: the model being published.
      root: zoo folder.

    Returns:
      The removed paths.
    """
    listed = {str(version) for version in _published_versions(name, root)}
    model_dir = root / name
    removed = []
    for folder in (root, model_dir):
        if folder.is_dir():
            removed += [path for path in sorted(folder.glob(f"{_TMP_PREFIX}*.json"))
                        if path.is_file()]
    removed += [path for path in sorted(root.glob(f"{_TMP_PREFIX}*"))
                if path.is_dir() and not path.is_symlink() and _abandoned(path)]
    removed += [path for path in _version_folders(model_dir) if path.name not in listed]
    card_path = model_dir / CARD_FILE
    card = _read_card_file(card_path) if card_path.is_file() else None
    unlisted = [key for key in card["versions"] if str(int(key)) not in listed] if card else []
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if unlisted:
        for key in unlisted:
            del card["versions"][key]
        if card["versions"]:
            _write_json(card_path, card)
        else:
            card_path.unlink()
        removed.append(card_path)
    if not listed:
        for folder in (*(model_dir / network for network in NETWORKS), model_dir):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
    for folder in {path.parent for path in removed}:
        fsync_folder(folder)
    return removed


def _file_checksums(folder, prefix):
    """{prefix/relative/path: sha256} for every file under ``folder``."""
    sums = {}
    for directory, _, files in sorted(os.walk(folder)):
        for file_name in sorted(files):
            path = Path(directory) / file_name
            relative = path.relative_to(folder).as_posix()
            sums[f"{prefix}/{relative}"] = sha256_file(path)
    return sums


def _scalar_metric(metrics, keys=("mig_sampling", "mig_histogram", "mig")):
    """A headline MIG number for listings, if the metrics hold one."""
    for key in keys:
        value = (metrics or {}).get(key)
        if isinstance(value, dict):
            value = value.get("mig", value.get("value"))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def portable(value):
    """A copy of a card entry with every absolute path replaced by its last component.

    Cards travel with the zoo, so nothing of the machine that made them may stay in them:
    a run folder becomes its name, a data file its file name.
    """
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str) and (value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value)):
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1] or None
    return value


def _card_entry(model, run_dir, config, metrics, version, description, files):
    from tcvae_tf.training import library_versions

    def count(network):
        return {"total": int(network.count_params()),
                "trainable": sum(math.prod(v.shape) for v in network.trainable_variables)}

    encoder, decoder = count(model.encoder), count(model.decoder)
    model_config = model.get_config()
    return portable({
        "version": version,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": os.path.basename(os.path.abspath(run_dir)),
        "dataset": config.get("data"),
        "config": config,
        "metrics": metrics,
        "library_versions": {"export": library_versions(),
                             "training": config.get("library_versions")},
        "model": {key: model_config.get(key) for key in (
            "arch", "objective", "options", "dataset_size", "posterior", "prior",
            "likelihood")},
        "model_config": model_config,
        "parameters": {"encoder": encoder, "decoder": decoder,
                       "total": encoder["total"] + decoder["total"]},
        "latent_dim": int(model.latent_dim),
        "image_shape": [int(s) for s in model.image_shape],
        "posterior": description["posterior"],
        "signatures": {network: description[network] for network in NETWORKS},
        "paths": {network: f"{network}/{version}" for network in NETWORKS},
        "files": files,
    })


def model_options(record):
    """(objective, options) of a card's ``model`` part or an index entry, of any version
    (version-1 cards hold the options flat)."""
    from tcvae_tf import methods

    return methods.split_record(record or {})


def _index_summary(entry):
    from tcvae_tf import methods

    model = entry.get("model", {})
    dataset = entry.get("dataset") or {}
    objective, options = model_options(model)
    return {"dataset": dataset.get("name"), "objective": objective,
            "options": methods.headline(objective, options), "arch": model.get("arch"),
            "latent_dim": entry.get("latent_dim"), "date": entry.get("date"),
            "mig": _scalar_metric(entry.get("metrics"))}


def check_metrics_fingerprint(metrics, run_dir, metrics_path=None):
    """Refuses metrics that were not computed on the run's current model.

    ``tcvae-tf evaluate`` records ``runs.model_fingerprint(run_dir)`` in metrics.json (under
    "model"); a run trained again since (``--overwrite``, ``--resume``) has another
    model.keras, and metrics without a fingerprint come from an older version.

    Args:
      metrics: the parsed metrics.json.
      run_dir: the run folder.
      metrics_path: the file, for the message (default RUN/metrics.json).

    Raises:
      ValueError: one line, saying to re-run ``tcvae-tf evaluate RUN``.
    """
    metrics_path = metrics_path or Path(run_dir) / METRICS_FILE
    recorded = ((metrics or {}).get("model") or {}).get("fingerprint")
    rerun = f"re-run `tcvae-tf evaluate {run_dir}` before exporting"
    if recorded is None:
        raise ValueError(f"{metrics_path} does not record which model it was computed on "
                         f"(an older evaluation); {rerun}")
    current = runs.model_fingerprint(run_dir)
    if recorded != current:
        raise ValueError(f"{metrics_path} was computed on another model than the run's "
                         f"current {(current or {}).get('file', 'model')}; {rerun}")


def publish(run_dir, name, version=None, root=None, study=None):
    """Exports a training run into the zoo as ``name`` (a new version).

    Builds both SavedModels in a temporary folder inside ROOT, renames them to
    ``ROOT/NAME/{encoder,decoder}/<version>``, then rewrites ``card.json`` and
    ``index.json`` atomically; the index write commits the version. An existing version
    is never touched. What an interrupted earlier publish left (version folders and card
    entries the index does not list, abandoned staging folders) is removed first, under
    the zoo's lock, so its version number is free again.

    Args:
      run_dir: a finished run folder (``model.keras`` and ``config.json``; its
        ``metrics.json`` is copied into the card when present, and must have been
        computed on the current model.keras: see ``check_metrics_fingerprint``).
      name: model name, e.g. "dsprites-btcvae-b6".
      version: a positive integer, or None for the next free one.
      root: zoo folder (default: ``default_root()``); created if missing.
      study: a study (sweep folder or its committed results) that the run is a trial of:
        the card gains a ``study`` entry (see ``tcvae_tf.sweep.study_entry``), with the
        study's path when it lies inside the zoo.

    Returns:
      The published version (int).

    Raises:
      FileExistsError: the version is already published.
      FileNotFoundError: the run has no model.keras / config.json.
      ValueError: invalid name or version; metrics.json not computed on model.keras.
      tcvae_tf.sweep.SweepError: the run is not a finished trial of ``study``.
    """
    from tcvae_tf import sweep, training

    _check_name(name)
    root = resolve_root(root)
    if version is not None:
        if isinstance(version, bool) or int(version) != version or version < 1:
            raise ValueError(f"version must be a positive integer, got {version!r}")
        version = int(version)
        _check_free(name, version, root, _published_versions(name, root))
    config_path = Path(run_dir) / training.CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist (not a run folder)")
    config = _read_json(config_path)
    metrics_path = Path(run_dir) / METRICS_FILE
    metrics = _read_json(metrics_path) if metrics_path.is_file() else None
    if metrics is not None and (Path(run_dir) / runs.MODEL_FILE).is_file():
        check_metrics_fingerprint(metrics, run_dir, metrics_path)
    study_record = None
    if study is not None:
        study_record = sweep.study_entry(study, run_dir, metrics)
        inside = os.path.relpath(os.path.abspath(study), os.path.abspath(root))
        if not inside.startswith(".."):
            study_record["path"] = Path(inside).as_posix()
    model = export.load_run_model(run_dir)

    root.mkdir(parents=True, exist_ok=True)
    with _staging_folder(root, name) as staging:
        description = export.export_model(model, staging / "encoder", staging / "decoder")
        fsync_tree(staging)
        with _locked(root):
            _recover(name, root)
            taken = _taken_versions(name, root)
            if version is None:
                version = max(taken, default=0) + 1
            _check_free(name, version, root, taken)
            files = {}
            for network in NETWORKS:
                files.update(_file_checksums(staging / network, f"{network}/{version}"))
            entry = _card_entry(model, run_dir, config, metrics, version, description, files)
            if study_record is not None:
                entry["study"] = portable(study_record)
            _install(root, name, version, staging, entry)
    return version


def _install(root, name, version, staging, entry):
    """Renames the staged SavedModels into place and registers them; undone on failure.

    A crash (no undo) leaves folders and a card entry that the index does not list:
    ``_recover`` removes them.
    """
    model_dir = root / name
    card_path = model_dir / CARD_FILE
    old_card = card_path.read_text() if card_path.is_file() else None
    card = (_read_card_file(card_path) if old_card is not None
            else {"format": FORMAT, "name": name, "versions": {}})
    moved = []
    created = [folder for folder in (model_dir, *(model_dir / n for n in NETWORKS))
               if not folder.exists()]
    try:
        for network in NETWORKS:
            (model_dir / network).mkdir(parents=True, exist_ok=True)
            target = model_dir / network / str(version)
            os.rename(staging / network, target)
            moved.append((target, staging / network))
            fsync_folder(model_dir / network)
        card["versions"][str(version)] = entry
        card["versions"] = dict(sorted(card["versions"].items(), key=lambda kv: int(kv[0])))
        _write_json(card_path, card)
        index = read_index(root)
        index.setdefault("format", FORMAT)
        versions = sorted(set(index["models"].get(name, {}).get("versions", [])) | {version})
        index["models"][name] = {"versions": versions, "latest": max(versions),
                                 **_index_summary(card["versions"][str(max(versions))])}
        index["models"] = dict(sorted(index["models"].items()))
        _write_json(root / INDEX_FILE, index)
    except BaseException:
        for target, origin in reversed(moved):
            os.rename(target, origin)
        if old_card is None:
            card_path.unlink(missing_ok=True)
        else:
            _write_text(card_path, old_card)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return version


# -- checking and serving ---------------------------------------------------------------


def _file_problems(model_dir, network, version, files, label):
    """One-line problems with the files of one published SavedModel (empty: intact).

    Args:
      model_dir: ROOT/NAME.
      network: "encoder" or "decoder".
      version: int.
      files: the card entry's ``files`` (path relative to ROOT/NAME -> sha256).
      label: the start of every message, e.g. "NAME v1 encoder".

    Returns:
      A list naming each missing, damaged (sha256 differs from the card) or unlisted file.
    """
    folder = model_dir / network / str(version)
    prefix = f"{network}/{version}/"
    listed = {path for path in files if path.startswith(prefix)}
    problems = []
    if not listed:
        problems.append(f"{label}: {model_dir / CARD_FILE} lists no files for {folder}")
    for relative in sorted(listed):
        path = model_dir / relative
        if not path.is_file():
            problems.append(f"{label}: {path} is missing")
        elif sha256_file(path) != files[relative]:
            problems.append(f"{label}: {path} is damaged (sha256 differs from the card)")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.relative_to(model_dir).as_posix() not in listed:
            problems.append(f"{label}: {path} is not listed in the card")
    return problems


def _check_signatures(saved_model, network, entry, label):
    """Problems with a loaded SavedModel's signatures (names, shapes, a call on zeros)."""
    import tensorflow as tf

    problems = []
    latent_dim, image_shape = entry.get("latent_dim"), entry.get("image_shape")
    if network == "encoder":
        input_name, input_shape = export.ENCODER_INPUT, [None, *image_shape]
        outputs = {name: [None, latent_dim] for name in export.ENCODER_OUTPUTS}
    else:
        input_name, input_shape = export.DECODER_INPUT, [None, latent_dim]
        outputs = {name: [None, *image_shape] for name in export.DECODER_OUTPUTS}
    for key in export.SIGNATURE_KEYS[network]:
        if key not in saved_model.signatures:
            problems.append(f"{label}: signature {key!r} is missing")
            continue
        function = saved_model.signatures[key]
        inputs = function.structured_input_signature[1]
        if list(inputs) != [input_name] or inputs[input_name].shape.as_list() != input_shape:
            problems.append(f"{label}: signature {key!r} takes "
                            f"{ {k: v.shape.as_list() for k, v in inputs.items()} }, "
                            f"expected {input_name} {input_shape}")
            continue
        got = function(**{input_name: tf.zeros([2, *input_shape[1:]], tf.float32)})
        for name, shape in outputs.items():
            if name not in got:
                problems.append(f"{label}: signature {key!r} has no output {name!r}")
            elif got[name].shape.as_list() != [2, *shape[1:]]:
                problems.append(f"{label}: signature {key!r} output {name!r} has shape "
                                f"{got[name].shape.as_list()[1:]} per example, expected "
                                f"{shape[1:]}")
            elif not bool(tf.reduce_all(tf.math.is_finite(got[name]))):
                problems.append(f"{label}: signature {key!r} output {name!r} is not finite")
    return problems


def _verify_model(name, entry_in_index, root, load):
    import tensorflow as tf

    problems = []
    model_dir = root / name
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        return [f"{name}: {card_path} is missing"]
    try:
        card = _read_card_file(card_path)
    except ValueError as error:
        return [f"{name}: {error}"]
    card_versions = {int(v) for v in card["versions"]}
    index_versions = {int(v) for v in entry_in_index.get("versions", [])}
    interrupted = _INTERRUPTED.format(name=name)
    for version in sorted(index_versions - card_versions):
        problems.append(f"{name}: version {version} is in {INDEX_FILE} but not in {card_path}")
    for version in sorted(card_versions - index_versions):
        problems.append(f"{name}: version {version} is in {card_path} but not in {INDEX_FILE}, "
                        f"{interrupted}")
    for folder in _version_folders(model_dir):
        if folder.name not in {str(version) for version in index_versions}:
            problems.append(f"{name}: {folder} is not listed in {INDEX_FILE}, {interrupted}")
    for version in sorted(index_versions & card_versions):
        entry = card["versions"][str(version)]
        files = entry.get("files", {})
        for network in NETWORKS:
            label = f"{name} v{version} {network}"
            folder = model_dir / network / str(version)
            if not folder.is_dir():
                problems.append(f"{label}: {folder} is missing")
                continue
            damaged = _file_problems(model_dir, network, version, files, label)
            problems.extend(damaged)
            if damaged or not load:
                continue
            try:
                saved_model = tf.saved_model.load(str(folder))
                problems.extend(_check_signatures(saved_model, network, entry, label))
            except Exception as error:  # any load failure is a problem to report
                problems.append(_load_failure(label, folder, error))
    return problems


def verify(name=None, root=None, load=True):
    """Checks published models: registry consistency, checksums, loading and signatures.

    Args:
      name: one model, or None for every model in the index.
      root: zoo folder (default: ``default_root()``).
      load: also load each SavedModel and call its signatures on a zero batch.

    Returns:
      A list of one-line problems (empty: everything is fine); a damaged or missing
      file is named by its path.

    Raises:
      ZooError: ``name`` is not in the index.
    """
    root = resolve_root(root)
    if not root.is_dir():
        return _verify(name, root, load)
    with _locked(root, shared=True):  # not while a publish is half done
        return _verify(name, root, load)


def _verify(name, root, load):
    """``verify`` without the lock (its callers hold it)."""
    try:
        index = read_index(root)
    except ValueError as error:
        return [str(error)]
    if name is not None:
        names = [name]
        _index_entry(name, root)
    else:
        names = sorted(index["models"])
    problems = []
    if name is None and root.is_dir():
        for folder in sorted(root.iterdir()):
            if (folder.name not in index["models"] and not folder.name.startswith(".")
                    and any((folder / network).is_dir() for network in NETWORKS)):
                problems.append(f"{folder.name}: {folder} is not listed in {INDEX_FILE}, "
                                f"{_INTERRUPTED.format(name=folder.name)}")
    for model_name in names:
        problems.extend(_verify_model(model_name, index["models"][model_name], root, load))
    return problems


def serving_config(root=None, base_path_prefix=None, all_versions=False):
    """A TF Serving ``models.config`` (text proto) serving every published model.

    Args:
      root: zoo folder (default: ``default_root()``).
      base_path_prefix: write base paths under this folder instead of the zoo's
        absolute path, e.g. "/models" when the zoo is mounted there in a container.
      all_versions: serve every version (default: TF Serving serves the latest).

    Returns:
      The text of the config: one entry ``NAME-encoder`` / ``NAME-decoder`` per model,
      ``base_path`` = ``<root or prefix>/NAME/<network>``, platform "tensorflow".
    """
    root = resolve_root(root)
    base = str(base_path_prefix) if base_path_prefix else str(root.resolve())
    lines = ["model_config_list {"]
    for model_name in sorted(read_index(root)["models"]):
        for network in NETWORKS:
            base_path = f"{base.rstrip('/')}/{model_name}/{network}"
            lines += ["  config {",
                      f'    name: "{model_name}-{network}"',
                      f'    base_path: "{base_path}"',
                      '    model_platform: "tensorflow"']
            if all_versions:
                lines.append("    model_version_policy { all {} }")
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- adding metrics to a published card -------------------------------------------------------


def update_metrics(name, metrics, version=None, root=None, replace=False):
    """Adds the metrics of an evaluation of a published model to its card.

    Only the ``metrics`` of that version's card entry change (and the index's summary of
    it); the SavedModels, their ``files`` checksums and every other field stay as they
    are. The files are checked against the card first, so metrics are only added to an
    intact model. ``metrics`` must be the result of ``tcvae-tf evaluate NAME --version V
    --json FILE`` (``tcvae_tf.evaluation.evaluate``) on this very zoo model and version.

    Each metric section of ``metrics`` is added to the card's metrics; a section the card
    already has is kept unless ``replace``. What was added is recorded in the card's
    ``metrics["evaluations"]`` (date, model, data, settings, seconds, library versions).
    Absolute paths are reduced to their last component (``portable``), as in every card.

    Args:
      name: model name.
      metrics: an evaluation result (dict).
      version: the version whose card entry is updated (default: the latest).
      root: zoo folder (default: ``default_root()``).
      replace: replace sections the card already holds.

    Returns:
      ``{"version": int, "added": [...], "replaced": [...], "kept": [...]}`` (metric names).

    Raises:
      ZooError: unknown name or version.
      ValueError: the metrics are no evaluation result, were computed on another model,
        version or dataset, hold no metric, or the model's files do not match its card.
    """
    from tcvae_tf.metrics import registry

    root = resolve_root(root)
    version = resolve_version(name, version, root)
    model = metrics.get("model") if isinstance(metrics, dict) else None
    if not isinstance(model, dict):
        raise ValueError("the metrics are not an evaluation result (no \"model\" section); "
                         f"write one with `tcvae-tf evaluate {name} --json FILE`")
    if (model.get("kind"), model.get("name"), model.get("version")) != ("zoo", name, version):
        what = (f"zoo model {model.get('name')} v{model.get('version')}"
                if model.get("kind") == "zoo" else f"{model.get('kind')} {model.get('name')}")
        raise ValueError(f"the metrics were computed on {what}, not on zoo model {name} "
                         f"v{version}; compute them with `tcvae-tf evaluate {name} --version "
                         f"{version} --json FILE`")
    sections = [key for key in registry.REGISTRY if isinstance(metrics.get(key), dict)]
    if not sections:
        raise ValueError("the evaluation result holds no metric")
    with _locked(root):
        problems = _verify(name, root, load=False)
        if problems:
            raise ValueError(f"{problems[0]}; the card is not changed "
                             f"(tcvae-tf zoo verify {name})")
        card_path = root / name / CARD_FILE
        card = _read_card_file(card_path)
        entry = card["versions"][str(version)]
        trained_on = (entry.get("dataset") or {}).get("name")
        evaluated_on = (metrics.get("data") or {}).get("name")
        if trained_on and evaluated_on and trained_on != evaluated_on:
            raise ValueError(f"the metrics were computed on {evaluated_on}, but {name} "
                             f"v{version} was trained on {trained_on}")
        card_metrics = dict(entry.get("metrics") or {})
        report = {"version": version, "added": [], "replaced": [], "kept": []}
        for key in sections:
            status = "replaced" if key in card_metrics else "added"
            if status == "replaced" and not replace:
                report["kept"].append(key)
                continue
            card_metrics[key] = portable(metrics[key])
            report[status].append(key)
        changed = report["added"] + report["replaced"]
        if not changed:
            return report
        seconds = metrics.get("seconds") or {}
        card_metrics["evaluations"] = [*card_metrics.get("evaluations", []), portable({
            "metrics": changed,
            "date": metrics.get("date"),
            "model": model,
            "data": metrics.get("data"),
            "factors": metrics.get("factors"),
            "settings": metrics.get("settings"),
            "seconds": {key: value for key, value in seconds.items()
                        if key not in registry.REGISTRY or key in changed},
            "library_versions": metrics.get("library_versions"),
        })]
        card["versions"][str(version)] = {**entry, "metrics": card_metrics}
        _write_json(card_path, card)
        index = read_index(root)
        summary = index["models"].get(name)
        latest = str(max(int(v) for v in card["versions"]))
        if summary is not None and latest == str(version):
            summary.update(_index_summary(card["versions"][latest]))
            _write_json(root / INDEX_FILE, index)
    return report
