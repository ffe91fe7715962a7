"""Run folders: the one module that reads and writes them.

A run folder holds::

    config.json                  the TrainConfig, the data, the total steps, library versions
    history.csv                  one row per checkpoint window, keyed by step
    tensorboard/                 every loss term, per window and per step
    checkpoints/last.keras       weights, optimizer state and step (written atomically)
    snapshots/step-NNNNNNN.weights.h5   weights kept every ``keep_every`` steps (optional)
    model.keras                  the final model
    samples.png                  reconstructions and prior samples at the end of training
    traversals.png/.gif, reconstructions.png, latent_factors.png   ``tcvae-tf plot``'s figures
    metrics.json                 ``tcvae-tf evaluate``'s results on the final model
    metrics-NAME+NAME.json       results of a choice of metrics, beside a full metrics.json
    curve.csv                    histogram MIG of the snapshots, keyed by step (optional)
    trial.json                   a sweep trial's state and results (sweeps only)

Training, evaluation, export, plots and sweeps go through these functions, so a run
written by any earlier version of the library keeps loading and resuming: every file
is optional except config.json, and readers accept missing columns and keys.

Importing this module does not import TensorFlow.
"""

import csv
import glob
import json
import os
import re
import shutil
import zipfile
import zlib

from tcvae_tf.files import atomic_write, atomic_write_text, sha256_file
from tcvae_tf.methods.base import LOGGED_NAMES

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = os.path.join(CHECKPOINT_DIR, "last.keras")
SNAPSHOT_DIR = "snapshots"
MODEL_FILE = "model.keras"
SAMPLES_FILE = "samples.png"
# ``tcvae-tf plot``'s figures in a run folder, by kind (file names without extension).
PLOT_NAMES = {"traversals": "traversals", "reconstructions": "reconstructions",
              "latent-factors": "latent_factors"}
PLOT_EXTENSIONS = (".png", ".gif")
METRICS_FILE = "metrics.json"
PARTIAL_METRICS_PATTERN = "metrics-*.json"
CURVE_FILE = "curve.csv"
CURVE_LOCK_FILE = ".curve.lock"  # held while curve.csv is rewritten (``curves.update_curve``)
TRIAL_FILE = "trial.json"
_SNAPSHOT_PATTERN = re.compile(r"step-(\d+)\.weights\.h5$")
_TEMPORARY_PREFIX = ".tmp-"


class RunError(RuntimeError):
    """A run folder that cannot be used as asked; the message is one line for the user."""


def is_run(run_dir):
    """True when ``run_dir`` holds a run (a config.json)."""
    return os.path.isfile(os.path.join(run_dir, CONFIG_FILE))


def read_json(path):
    """Reads a JSON file of a run folder; raises RunError naming it when it is damaged."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON: {error}") from None


def write_json(path, data):
    """Writes JSON atomically (indented, with a final newline)."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_config(run_dir):
    """Reads a run's config.json as a dict; raises RunError when it is missing."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    return read_json(path)


def write_config(run_dir, record):
    """Writes a run's config.json atomically."""
    return write_json(os.path.join(run_dir, CONFIG_FILE), record)


def clear(run_dir):
    """Empties a run folder: everything the old run (and its evaluations, figures and
    sweeps) wrote goes, the folder itself stays.

    Used when a run starts afresh in a folder that held one (``--overwrite``): no
    metrics, figures, TensorBoard events or snapshots of the old run may survive.

    Raises:
      RunError: ``run_dir`` holds no run (a folder of other files is never emptied).
    """
    if not os.path.isdir(run_dir):
        return
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); not emptying it")
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def remove_training_files(run_dir):
    """Deletes what training writes (config, history, TensorBoard, checkpoints, snapshots)
    and nothing else: the undo of a run that failed before its first checkpoint."""
    for name in (CONFIG_FILE, HISTORY_FILE, TENSORBOARD_DIR, CHECKPOINT_DIR, SNAPSHOT_DIR):
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def remove_results(run_dir):
    """Deletes the final model and what was made from it: the metrics files, samples.png,
    the figures of ``tcvae-tf plot`` and model.keras (the last); returns the names removed.

    The undo of a run's end when a finished run trains further: its last checkpoint holds
    the same weights, and the old model's files must not pass for the longer run's result.
    """
    derived = sorted(os.path.basename(path) for path in glob.glob(
        os.path.join(glob.escape(run_dir), PARTIAL_METRICS_PATTERN)))
    figures = [name + extension for name in PLOT_NAMES.values() for extension in PLOT_EXTENSIONS]
    removed = []
    for name in (METRICS_FILE, *derived, SAMPLES_FILE, *figures, MODEL_FILE):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def remove_temporaries(run_dir):
    """Deletes ``.tmp-*`` files left by writes that a crash interrupted; returns their paths.

    Only called when no other process writes the run (at the start of training).
    """
    found = []
    for folder in (run_dir, os.path.join(run_dir, CHECKPOINT_DIR),
                   os.path.join(run_dir, SNAPSHOT_DIR)):
        found += glob.glob(os.path.join(glob.escape(folder), _TEMPORARY_PREFIX + "*"))
    for path in found:
        if os.path.isfile(path):
            os.remove(path)
    return found


# -- models and checkpoints --------------------------------------------------------------


def save_model(model, path):
    """Saves a Keras model (with optimizer state) to ``path`` through a rename."""
    atomic_write(path, model.save)


def save_checkpoint(model, run_dir):
    """Writes ``checkpoints/last.keras``."""
    save_model(model, os.path.join(run_dir, CHECKPOINT_FILE))


def has_checkpoint(run_dir):
    return os.path.isfile(os.path.join(run_dir, CHECKPOINT_FILE))


def load_model(run_dir, prefer_checkpoint=False):
    """Loads the model of a run folder (``model.keras``, else the last checkpoint).

    Raises:
      RunError: the run holds no model, or the file is damaged (not a complete archive).
    """
    import keras

    from tcvae_tf import model as _model  # noqa: F401  (registers BetaTCVAE)

    candidates = [MODEL_FILE, CHECKPOINT_FILE]
    if prefer_checkpoint:
        candidates.reverse()
    for name in candidates:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            try:
                return keras.models.load_model(path)
            except Exception:
                if not _is_damaged_archive(path):
                    raise
            hint = "; start the run again with --overwrite" if name == CHECKPOINT_FILE else ""
            raise RunError(f"{path} is damaged and cannot be read{hint}") from None
    raise RunError(f"{run_dir} holds no model ({MODEL_FILE} or {CHECKPOINT_FILE})")


def _is_damaged_archive(path):
    """True when the .keras file (a zip archive) is cut short or fails its checksums."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is not None
    except (zipfile.BadZipFile, EOFError, zlib.error):
        return True


def model_fingerprint(run_dir):
    """Identifies the model a run folder holds now: the sha256 of its model file.

    The file is the one ``load_model`` loads: ``model.keras``, else the last checkpoint.
    Evaluation records this in metrics.json ("model" -> "fingerprint"), and export
    refuses metrics whose fingerprint differs from the run's current ``model.keras``, so
    a run trained again since keeps no stale numbers. A copied or moved run folder keeps
    its fingerprint. Hashing reads the whole file: about 1 s for the 170 MB model.keras
    of the MLP (weights and Adam state) on a 2-core machine.

    Returns:
      ``{"file": "model.keras", "sha256": hex}`` (file relative to the run folder, in
      POSIX form), or None when the run holds no model.
    """
    for name in (MODEL_FILE, CHECKPOINT_FILE):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return {"file": name.replace(os.sep, "/"), "sha256": sha256_file(path)}
    return None


def checkpoint_step(run_dir):
    """The optimizer step of the last checkpoint (0 when there is none)."""
    if not has_checkpoint(run_dir):
        return 0
    return int(load_model(run_dir, prefer_checkpoint=True).optimizer.iterations.numpy())


def snapshot_path(run_dir, step):
    return os.path.join(run_dir, SNAPSHOT_DIR, f"step-{int(step):07d}.weights.h5")


def save_snapshot(model, run_dir, step):
    """Keeps the weights at ``step`` (no optimizer state) for later evaluation."""
    atomic_write(snapshot_path(run_dir, step), model.save_weights, suffix=".weights.h5")


def snapshots(run_dir):
    """Sorted list of (step, path) of the run's kept weights."""
    folder = os.path.join(run_dir, SNAPSHOT_DIR)
    found = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            match = _SNAPSHOT_PATTERN.fullmatch(name)
            if match:
                found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


# -- history ----------------------------------------------------------------------------


def append_history(run_dir, step, logs):
    """Appends one row (the step and the window's values) to history.csv.

    The columns are fixed by the file's first row; a value the header lacks is dropped
    and a column the row lacks is left empty, so runs of every version stay readable. A
    run resumed from a history written under the short names (``mi``, ``tc``, ``dwkl``)
    keeps writing its minibatch estimates into those columns.
    """
    path = os.path.join(run_dir, HISTORY_FILE)
    header = None
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        with open(path) as handle:
            header = next(csv.reader(handle))
    with open(path, "a") as handle:
        if header is None:
            header = ["step", *sorted(logs)]
            handle.write(",".join(header) + "\n")
        values = {"step": str(int(step)), **{k: f"{float(v):.6g}" for k, v in logs.items()}}
        for short, logged in LOGGED_NAMES.items():
            if logged in values and logged not in header and short in header:
                values[short] = values.pop(logged)
        handle.write(",".join(values.get(name, "") for name in header) + "\n")


def read_history(run_dir):
    """The rows of history.csv as dicts of floats (step as int); [] when there is none.

    Columns of earlier versions come under today's names (``tc`` as ``minibatch_tc``).
    """
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                if key is None or value in (None, ""):
                    continue
                key = LOGGED_NAMES.get(key, key)
                parsed[key] = int(value) if key == "step" else float(value)
            if "step" in parsed:
                rows.append(parsed)
    return rows


def truncate_history(run_dir, last_step):
    """Drops history rows after ``last_step`` (rows written after the checkpoint resumed)."""
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        lines = handle.read().splitlines()
    if not lines:
        return
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= last_step]
    if len(kept) != len(lines):
        atomic_write_text(path, "\n".join(kept) + "\n")


# -- results ----------------------------------------------------------------------------


def read_metrics(run_dir):
    """The run's metrics.json as a dict, or None."""
    path = os.path.join(run_dir, METRICS_FILE)
    return read_json(path) if os.path.isfile(path) else None


def read_trial(run_dir):
    """A sweep trial's trial.json as a dict, or None."""
    path = os.path.join(run_dir, TRIAL_FILE)
    return read_json(path) if os.path.isfile(path) else None


def write_trial(run_dir, record):
    return write_json(os.path.join(run_dir, TRIAL_FILE), record)


def read_curve(run_dir):
    """curve.csv as a list of dicts (step int, values float); [] when there is none."""
    path = os.path.join(run_dir, CURVE_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as handle:
        return [{key: int(value) if key == "step" else float(value)
                 for key, value in row.items()} for row in csv.DictReader(handle)]


def write_curve(run_dir, rows):
    """Writes curve.csv (rows sorted by step) atomically."""
    rows = sorted(rows, key=lambda row: row["step"])
    names = ["step", *sorted({key for row in rows for key in row} - {"step"})]
    lines = [",".join(names)]
    for row in rows:
        lines.append(",".join(str(row["step"]) if name == "step" else
                              ("" if name not in row else f"{row[name]:.6g}") for name in names))
    atomic_write_text(os.path.join(run_dir, CURVE_FILE), "\n".join(lines) + "\n")
