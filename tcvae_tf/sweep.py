"""Sweeps: many training runs over a grid of settings, scheduled by Ray Tune.

```none
sweep(dataset, grid, fixed, out)
  trials = cross product of the grid      one ordinary run folder each: out/<name-value_...>
  finished trials (trial.json) are skipped, and so are failed ones whose failure repeats;
  the others train (or resume) in Ray workers:
    training.train(config)                the same code as `tcvae-tf train`
    evaluation.evaluate(run)              the same code as `tcvae-tf evaluate`
    curves.update_curve(run)              histogram MIG of the kept snapshots
  out/results.csv, results.json, summary.png, curves.csv   rewritten after each trial ends
```

Ray only schedules. The state is in the run folders, so a sweep that was stopped in any
way (Ctrl-C, SIGKILL, the machine's end) resumes by running the same command again:
finished trials are neither retrained nor re-evaluated, unfinished ones continue from
their last checkpoint. ``out/sweep.json`` records the grid and the fixed options; a
different grid or option into the same folder is refused.

A trial that dies (its worker killed, out of memory) is retried from its last checkpoint.
One whose training stopped on a non-finite loss is not: a retry resumes from the same
checkpoint with the same seed and fails at the same step. Its trial.json records the
failure as one that repeats, and a rerun keeps the trial as failed unless asked to retry
it (``retry_failed``); trial.json files of earlier versions record no such failure, so
their failed trials resume as they always did.

Ray is imported only when trials have to run (``pip install "tcvae-tf[sweep]"``).

References:
  Liaw et al. Tune: A Research Platform for Distributed Model Selection and Training.
  2018. (Ray Tune)
"""

import dataclasses
import itertools
import math
import os
import re
import time

from tcvae_tf import runs
from tcvae_tf.files import atomic_write, atomic_write_text
from tcvae_tf.training import format_duration
from tcvae_tf.zoo import portable

SPEC_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
CURVES_CSV = "curves.csv"
SUMMARY_PNG = "summary.png"
RAY_DIR = ".ray"
SPEC_FORMAT = 1
MAX_FAILURES = 2  # retries of a trial that died, each resuming from its last checkpoint
# Restarts of Ray Tune after it failed as a whole (e.g. Ray's memory monitor killed the
# trials' workers, which Ray Tune does not count as a trial failure), each resuming the
# unfinished trials from their checkpoints.
MAX_RESTARTS = 3
# The results columns after the grid values: (column, section of metrics.json, key).
METRIC_COLUMNS = (
    ("mig_sampling", "mig_sampling", "mig"),
    ("mig_histogram", "mig_histogram", "mig"),
    ("mig_sampling_all_factors", "mig_sampling", "mig_all_factors"),
    ("mig_histogram_all_factors", "mig_histogram", "mig_all_factors"),
    ("log_likelihood", "elbo", "log_likelihood"),
    ("kl", "elbo", "kl"),
    ("mutual_information", "elbo", "mutual_information"),
    ("total_correlation", "elbo", "total_correlation"),
    ("dimensionwise_kl", "elbo", "dimensionwise_kl"),
    ("elbo", "elbo", "elbo"),
    ("active_units", "active_units", "active_units"),
    ("sap", "sap", "sap"),
    ("modularity", "modularity_explicitness", "modularity"),
    ("explicitness", "modularity_explicitness", "explicitness_test"),
    ("factorvae_score", "factorvae_score", "eval_accuracy"),
    ("betavae_score", "betavae_score", "eval_accuracy"),
    ("dci_disentanglement", "dci", "disentanglement"),
)
STATUS_COLUMNS = ("status", "steps", "total_steps")
TAIL_COLUMNS = ("seconds", "run", "error")


class _EngineFailure(RuntimeError):
    """Ray Tune itself failed (not one trial); the message is its error's first line."""


class SweepError(RuntimeError):
    """A sweep that cannot start or continue; the message is one line for the user."""


@dataclasses.dataclass
class Trial:
    """One point of the grid: its name, its grid values and its full TrainConfig."""

    name: str
    values: dict
    config: object  # training.TrainConfig

    @property
    def run_dir(self):
        return self.config.out

    @property
    def shown_values(self):
        """The grid values as the result files show them: an absolute path (a
        ``--grid data_path=...``) as its file name, so nothing of the machine is in them."""
        return portable(dict(self.values))


def _value_text(value):
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", text)


def trial_name(values):
    """The run-folder name of a trial: ``name-value`` pairs joined by ``_``, in grid order."""
    return "_".join(f"{name}-{_value_text(value)}" for name, value in values.items()) or "trial"


def plan(dataset, grid, fixed, out, make_config=None):
    """Expands a grid into trials and validates every one before anything runs.

    Args:
      dataset: the dataset name.
      grid: dict option name -> list of values (already of the option's type), in order.
      fixed: dict of the other options, shared by all trials.
      out: the sweep folder.
      make_config: callable(dataset=, out=, **options) -> TrainConfig (default: the
        TrainConfig constructor; the CLI passes the one of `train`'s options).

    Returns:
      A list of ``Trial`` in grid order (the last option varies fastest).

    Raises:
      SweepError: an empty grid axis, a repeated value (or file name of a path), an option
        both in the grid and fixed, two trials with one folder name, or a trial whose
        settings the training refuses (the message names it).
    """
    from tcvae_tf import training

    make_config = make_config or training.TrainConfig
    for name, values in grid.items():
        if name in ("dataset", "out"):
            raise SweepError(f"--grid {name}: a sweep has one {name}")
        if name in fixed:
            raise SweepError(f"{name} is both in the grid and fixed")
        if not values:
            raise SweepError(f"--grid {name}: no values")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"--grid {name}: a value is repeated")
        if len(set(map(repr, portable(list(values))))) != len(values):
            raise SweepError(f"--grid {name}: two values have the same file name, which the "
                             f"results show in place of the path")
    trials = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination, strict=True))
        name = trial_name(values)
        try:
            config = make_config(dataset=dataset, out=os.path.join(out, name),
                                 **fixed, **values)
            if config.data_path:
                # Ray runs a trial in a working folder of its own: a relative path would
                # be looked up there.
                config.data_path = os.path.abspath(config.data_path)
            config.validate()
        except TypeError as error:
            raise SweepError(f"trial {name}: {error}") from None
        except ValueError as error:
            raise SweepError(f"trial {name}: {error}") from None
        trials.append(Trial(name, values, config))
    names = [trial.name for trial in trials]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise SweepError(f"two trials would share the run folder {twice}: give grid values "
                         f"that differ in their letters, digits and . + = -")
    return trials


def _spec(dataset, grid, fixed):
    return {"format": SPEC_FORMAT, "dataset": dataset,
            "grid": {name: list(values) for name, values in grid.items()},
            "fixed": dict(sorted(fixed.items()))}


def claim_folder(out, dataset, grid, fixed):
    """Writes ``out/sweep.json``, or checks that the one there describes the same sweep.

    Raises:
      SweepError: ``out`` holds a different sweep (the message names the first difference).
    """
    spec = _spec(dataset, grid, fixed)
    path = os.path.join(out, SPEC_FILE)
    if os.path.isfile(path):
        stored = runs.read_json(path)
        for key in ("dataset", "grid", "fixed"):
            before, now = stored.get(key), spec[key]
            if key == "fixed":
                # Options added or dropped by another version of tcvae-tf do not count, nor
                # do options not given now (None: the method's default, which an earlier
                # version wrote out).
                shared = {name for name in set(before or {}) & set(now)
                          if now[name] is not None}
                before = {name: before[name] for name in shared}
                now = {name: now[name] for name in shared}
            if key == "grid" and before == now and list(before or {}) != list(now):
                # The same values in another order name every trial differently: all
                # would train again in new folders.
                raise SweepError(f"{out} holds another sweep (grid differs: the options "
                                 f"were in the order {', '.join(before)}, now "
                                 f"{', '.join(now)}); give the --grid options in that order")
            if before != now:
                differences = _first_difference(before, now)
                raise SweepError(f"{out} holds another sweep ({key} differs: {differences}); "
                                 f"give another --out or the same grid and options")
        return stored
    if os.path.isdir(out) and os.listdir(out):
        raise SweepError(f"{out} is not empty and holds no sweep; give another --out")
    os.makedirs(out, exist_ok=True)
    runs.write_json(path, spec)
    return spec


def _first_difference(stored, wanted):
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            if stored.get(key) != wanted.get(key):
                return f"{key} was {stored.get(key)!r}, now {wanted.get(key)!r}"
    return f"was {stored!r}, now {wanted!r}"


# -- one trial (runs inside a Ray worker) ------------------------------------------------


def is_finished(trial):
    record = runs.read_trial(trial.run_dir)
    return bool(record) and record.get("status") == "finished"


def fails_again(error):
    """True when a retry of the trial would fail the same way: its training stopped on a
    non-finite loss (a retry resumes from the same checkpoint with the same seed)."""
    from tcvae_tf.training import NonFiniteLoss

    return isinstance(error, NonFiniteLoss)


def repeated_failure(trial):
    """The recorded error of a trial whose failure repeats when retried (see
    ``fails_again``), else None; trial.json files of earlier versions record none."""
    record = runs.read_trial(trial.run_dir) or {}
    if record.get("status") == "failed" and record.get("repeats"):
        return record.get("error") or "failed"
    return None


def to_run(trials, retry_failed=False):
    """The trials that a run of the sweep trains: the unfinished ones, except those whose
    failure repeats (unless ``retry_failed``)."""
    return [trial for trial in trials if not is_finished(trial)
            and (retry_failed or repeated_failure(trial) is None)]


def run_trial(config_dict, report=None, log=None):
    """Trains (or resumes), evaluates and records one trial; the body of a Ray trial.

    Args:
      config_dict: the trial's TrainConfig as a dict (``out`` is its run folder).
      report: optional callable(dict) told of progress after each checkpoint window and
        of the end: the final row, or the error (``error``) of a failure that repeats.
      log: optional callable(str) for one-line messages.

    Returns:
      The trial's record (what trial.json holds).

    Raises:
      Whatever the training or the evaluation raised, after recording it in trial.json
      (``status`` failed, or stopped for an interruption, and ``error``, its first line;
      ``repeats`` true when ``fails_again``).
    """
    from tcvae_tf import curves, evaluation, training

    config = training.TrainConfig(**config_dict)
    run_dir = config.out
    log = log or (lambda message: None)
    previous = runs.read_trial(run_dir) or {}
    seconds = float(previous.get("seconds", 0.0))
    started = time.perf_counter()
    record = {"status": "running", "seconds": seconds}

    def on_window(step, total_steps, images_per_second, logs):
        record.update(steps=step, total_steps=total_steps,
                      seconds=round(seconds + time.perf_counter() - started, 1))
        runs.write_trial(run_dir, record)
        if report is not None:
            report({"step": step, "total_steps": total_steps,
                    "images_per_second": images_per_second or 0.0, "done": False})

    try:
        training.train(config, resume=runs.is_run(run_dir), verbose=0, echo=log,
                       on_window=on_window)
        result = evaluation.evaluate(run_dir)
        evaluation.write_metrics(result, os.path.join(run_dir, runs.METRICS_FILE))
        curves.update_curve(run_dir)
    except BaseException as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        record.update(status="failed" if isinstance(error, Exception) else "stopped",
                      error=message,
                      seconds=round(seconds + time.perf_counter() - started, 1))
        if fails_again(error):
            record["repeats"] = True
        runs.write_trial(run_dir, record)
        if record.get("repeats") and report is not None:
            report({"step": record.get("steps", 0), "total_steps": record.get("total_steps", 0),
                    "images_per_second": 0.0, "done": True, "error": message})
        raise
    steps = int(runs.read_config(run_dir).get("total_steps", 0))
    record.update(status="finished", steps=steps, total_steps=steps, error=None,
                  seconds=round(seconds + time.perf_counter() - started, 1))
    record.pop("error")
    runs.write_trial(run_dir, record)
    if report is not None:
        report({"step": steps, "total_steps": steps, "images_per_second": 0.0, "done": True})
    return record


# -- results ------------------------------------------------------------------------------


def result_rows(trials, out):
    """One dict per trial: grid values, status, steps, the metrics, seconds, run folder and
    the error of a trial that failed (the sweep folder in it relative)."""
    rows = []
    for trial in trials:
        row = trial.shown_values
        record = runs.read_trial(trial.run_dir) or {}
        history = runs.read_history(trial.run_dir)
        row["status"] = record.get("status") or ("started" if history else "pending")
        row["steps"] = record.get("steps", history[-1]["step"] if history else 0)
        row["total_steps"] = record.get("total_steps")
        metrics = runs.read_metrics(trial.run_dir) if row["status"] == "finished" else None
        for column, section, key in METRIC_COLUMNS:
            row[column] = ((metrics or {}).get(section) or {}).get(key)
        row["seconds"] = record.get("seconds")
        row["run"] = os.path.relpath(trial.run_dir, out)
        error = record.get("error") if row["status"] != "finished" else None
        row["error"] = error.replace(out + os.sep, "") if error else None
        rows.append(row)
    return rows


def _csv_text(rows, columns):
    def cell(value):
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.6g}"
        text = str(value)
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text

    lines = [",".join(columns)]
    lines += [",".join(cell(row.get(column)) for column in columns) for row in rows]
    return "\n".join(lines) + "\n"


def write_results(trials, out, grid):
    """Rewrites results.csv, results.json and summary.png atomically; returns the rows."""
    import json

    rows = result_rows(trials, out)
    columns = [*grid, *STATUS_COLUMNS, *(c for c, _, _ in METRIC_COLUMNS), *TAIL_COLUMNS]
    atomic_write_text(os.path.join(out, RESULTS_CSV), _csv_text(rows, columns))
    atomic_write_text(os.path.join(out, RESULTS_JSON),
                      json.dumps({"grid": portable(grid), "columns": columns, "trials": rows},
                                 indent=2) + "\n")
    write_summary(rows, grid, os.path.join(out, SUMMARY_PNG))
    write_curves(trials, out, grid)
    atomic_write_text(os.path.join(out, REPORT_MD), report(rows, grid))
    return rows


REPORT_COLUMNS = ("mig_sampling", "mig_histogram", "log_likelihood", "kl",
                  "mutual_information", "total_correlation", "dimensionwise_kl", "elbo")


def report(rows, grid, seed_name="seed"):
    """report.md: the per-trial table, mean +/- sd per group and, with two groups, how far
    apart their MIGs are in units of the seed-to-seed spread. Trials that did not finish
    are named with their status (and the error of a failed one)."""
    finished = sum(row["status"] == "finished" for row in rows)
    per_trial, per_group = markdown_tables(rows, grid, REPORT_COLUMNS, seed_name)
    unfinished = [", ".join(f"{name}={row[name]}" for name in grid) + f" ({row['status']}"
                  + (f": {row['error']})" if row.get("error") else ")")
                  for row in rows if row["status"] != "finished"]
    missing = (f" Not finished, so in no table below: {'; '.join(unfinished)}."
               if unfinished else "")
    parts = [f"# Sweep results\n\n{finished} of {len(rows)} trials finished.{missing}\n",
             "## Per trial\n", per_trial, "", "## Mean +/- sample sd over seeds\n",
             per_group, ""]
    labels = list(dict.fromkeys(_group_label(row, grid, seed_name) for row in rows))
    if len(labels) == 2:
        parts.append("## Separation\n")
        for column in ("mig_sampling", "mig_histogram"):
            statistics = group_statistics(rows, grid, column, seed_name)
            counts = [statistics.get(label, (0, 0, 0))[2] for label in labels]
            if min(counts) < 2:
                parts.append(f"- {column}: needs two finished seeds in each group (n = "
                             f"{counts[0]}, {counts[1]})")
                continue
            found = separation(rows, grid, column, *labels, seed_name=seed_name)
            parts.append(f"- {column}: {labels[0]} minus {labels[1]} = "
                         f"{found['difference']:.4g}, {found['difference_in_sd']:.3g} pooled "
                         f"sd (pooled sd {found['pooled_sd']:.3g}); Welch t = "
                         f"{found['welch_t']:.3g} (n = {found['n'][0]}, {found['n'][1]})")
        parts.append("")
    return "\n".join(parts)


def write_curves(trials, out, grid):
    """Rewrites curves.csv: the histogram MIG against steps of every trial (grid values,
    step, the curve's columns, run folder), from the trials' curve.csv files."""
    rows = []
    for trial in trials:
        for point in runs.read_curve(trial.run_dir):
            rows.append({**trial.shown_values, **point,
                         "run": os.path.relpath(trial.run_dir, out)})
    names = sorted({key for row in rows for key in row} - {*grid, "step", "run"})
    atomic_write_text(os.path.join(out, CURVES_CSV),
                      _csv_text(rows, [*grid, "step", *names, "run"]))


def _group_label(row, grid, seed_name="seed"):
    return ", ".join(f"{name}={row[name]}" for name in grid if name != seed_name) or "all"


def group_statistics(rows, grid, column, seed_name="seed"):
    """Mean, sample standard deviation and count of ``column`` per group of grid values
    other than the seed, over finished trials; a dict group-label -> (mean, sd, n)."""
    groups = {}
    for row in rows:
        if row.get(column) is None or row["status"] != "finished":
            continue
        groups.setdefault(_group_label(row, grid, seed_name), []).append(float(row[column]))
    statistics = {}
    for label, values in groups.items():
        mean = sum(values) / len(values)
        sd = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
              if len(values) > 1 else float("nan"))
        statistics[label] = (mean, sd, len(values))
    return statistics


def read_results(folder):
    """(grid names, rows) of a study's results.csv (a sweep folder, or the copy committed
    with a study); the values stay strings, empty cells are None."""
    import csv

    path = os.path.join(folder, RESULTS_CSV)
    if not os.path.isfile(path):
        raise SweepError(f"{folder} holds no {RESULTS_CSV} (not a sweep or study folder)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = [{key: (value if value != "" else None) for key, value in row.items()}
                for row in reader]
    if STATUS_COLUMNS[0] not in header or "run" not in header:
        raise SweepError(f"{path} has no {STATUS_COLUMNS[0]} or run column")
    return header[:header.index(STATUS_COLUMNS[0])], rows


def _config_value(train, name):
    return train.get(name, (train.get("options") or {}).get(name))


def _same(value, text):
    if value is None or text is None:
        return value is None and text is None
    try:
        return float(value) == float(text)
    except (TypeError, ValueError):
        return str(value) == str(text)


def study_entry(folder, run_dir, metrics=None, seed_name="seed"):
    """The ``study`` entry of a zoo card: which trial of a study a run is, and the study's
    mean and sample sd per metric over the finished trials of its group (its grid values
    other than the seed).

    Args:
      folder: the study (a sweep folder, or the copy of its results committed with it).
      run_dir: a run folder that is one of the study's trials.
      metrics: the run's metrics.json (a dict), checked against the trial's row.

    Raises:
      SweepError: no results, the run is not a finished trial of the study, its grid
        values or its MIG differ from the trial's row (one line each).
    """
    grid, rows = read_results(folder)
    name = os.path.basename(os.path.normpath(run_dir))
    row = next((r for r in rows if os.path.basename(os.path.normpath(r["run"] or "")) == name),
               None)
    study = os.path.basename(os.path.normpath(folder))
    if row is None:
        raise SweepError(f"{name} is not a trial of the study {study}")
    if row[STATUS_COLUMNS[0]] != "finished":
        raise SweepError(f"trial {name} of the study {study} has not finished")
    train = runs.read_config(run_dir)["train"]
    for column in grid:
        if not _same(portable(_config_value(train, column)), row[column]):
            raise SweepError(f"{run_dir} has {column}={_config_value(train, column)}, the "
                             f"study's trial {name} {column}={row[column]}")
    mig = (metrics or {}).get("mig_sampling", {}).get("mig")
    if mig is not None and row.get("mig_sampling") is not None and not math.isclose(
            float(mig), float(row["mig_sampling"]), rel_tol=1e-5):
        raise SweepError(f"the study's sampling MIG of {name} ({row['mig_sampling']}) is not "
                         f"the run's ({mig}): the study was measured on another model")
    columns = [column for column, _, _ in METRIC_COLUMNS if row.get(column) is not None]
    label = ", ".join(f"{column}={row[column]}" for column in grid if column != seed_name) \
        or "all"
    summary = {}
    for column in columns:
        mean, sd, count = group_statistics(rows, grid, column, seed_name)[label]
        summary[column] = {"mean": mean, "sd": None if math.isnan(sd) else sd, "n": count}
    return {
        "name": study,
        "trial": name,
        "seed": _config_value(train, seed_name),
        "group": {column: row[column] for column in grid if column != seed_name},
        "this_trial": {column: float(row[column]) for column in columns},
        "group_statistics": summary,
    }


def markdown_tables(rows, grid, columns, seed_name="seed", digits=4):
    """Two Markdown tables of finished trials: one row per trial, and mean +/- sd (n) per
    group of grid values other than the seed."""
    def number(value):
        return "" if value is None else f"{float(value):.{digits}g}"

    names = [name for name in grid]
    lines = ["| " + " | ".join([*names, *columns]) + " |",
             "| " + " | ".join("---" for _ in [*names, *columns]) + " |"]
    for row in rows:
        if row["status"] == "finished":
            lines.append("| " + " | ".join([*(str(row[n]) for n in names),
                                             *(number(row.get(c)) for c in columns)]) + " |")
    group_names = [name for name in grid if name != seed_name]
    summary = ["| " + " | ".join([*(group_names or ["trials"]), *columns]) + " |",
               "| " + " | ".join("---" for _ in [*(group_names or ["x"]), *columns]) + " |"]
    statistics = {column: group_statistics(rows, grid, column, seed_name) for column in columns}
    labels = list(next(iter(statistics.values()), {}).keys()) if columns else []
    for label in labels:
        cells = [label] if not group_names else [part.split("=", 1)[1]
                                                 for part in label.split(", ")]
        for column in columns:
            if label not in statistics[column]:
                cells.append("")
                continue
            mean, sd, count = statistics[column][label]
            spread = "" if math.isnan(sd) else f" +/- {sd:.2g}"
            cells.append(f"{mean:.{digits}g}{spread} (n={count})")
        summary.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), "\n".join(summary)


def separation(rows, grid, column, first, second, seed_name="seed"):
    """How far apart two groups' means of ``column`` are over seeds.

    Returns:
      A dict: both means, sample standard deviations and counts, the difference of the
      means, the pooled standard deviation, the difference in units of it, and Welch's t
      statistic:

      ```none
      pooled_sd = sqrt(((n1 - 1) sd1^2 + (n2 - 1) sd2^2) / (n1 + n2 - 2))
      welch_t   = (mean1 - mean2) / sqrt(sd1^2 / n1 + sd2^2 / n2)
      ```

      (with n1 == n2 the pooled sd is sqrt((sd1^2 + sd2^2) / 2)). A group of one value
      adds no term to the pooled sd, which needs three values in all; Welch's t needs two
      in each group (else nan).
    """
    statistics = group_statistics(rows, grid, column, seed_name)
    (mean1, sd1, n1), (mean2, sd2, n2) = statistics[first], statistics[second]
    # the sums of squared deviations from each group's mean, over n1 + n2 - 2 degrees of freedom
    squares = sum((n - 1) * sd ** 2 for sd, n in ((sd1, n1), (sd2, n2)) if n > 1)
    pooled = math.sqrt(squares / (n1 + n2 - 2)) if n1 + n2 > 2 else float("nan")
    spread = math.sqrt(sd1 ** 2 / n1 + sd2 ** 2 / n2)
    difference = mean1 - mean2
    return {"mean": (mean1, mean2), "sd": (sd1, sd2), "n": (n1, n2),
            "difference": difference, "pooled_sd": pooled,
            "difference_in_sd": difference / pooled if pooled > 0 else float("nan"),
            "welch_t": difference / spread if spread > 0 else float("nan")}


SUMMARY_METRICS = ("mig_sampling", "mig_histogram", "total_correlation", "log_likelihood")


def write_summary(rows, grid, path, seed_name="seed"):
    """Each headline metric per trial, grouped by the grid values other than the seed:
    one marker per seed, the group's mean and +/- one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = []
    for row in rows:
        label = ", ".join(f"{name}={row[name]}" for name in grid if name != seed_name) or "all"
        if label not in labels:
            labels.append(label)
    seeds = sorted({row.get(seed_name) for row in rows}, key=str)
    markers = "osD^v<>pPX*h"
    fig, axes = plt.subplots(1, len(SUMMARY_METRICS),
                             figsize=(3.2 * len(SUMMARY_METRICS), 3.4), squeeze=False)
    for ax, column in zip(axes[0], SUMMARY_METRICS, strict=True):
        statistics = group_statistics(rows, grid, column, seed_name)
        for row in rows:
            if row.get(column) is None or row["status"] != "finished":
                continue
            x = labels.index(", ".join(f"{n}={row[n]}" for n in grid if n != seed_name)
                             or "all")
            seed_index = seeds.index(row.get(seed_name))
            ax.plot(x + 0.08 * (seed_index - (len(seeds) - 1) / 2), row[column],
                    markers[seed_index % len(markers)], color="C0", alpha=0.8,
                    label=f"{seed_name} {row.get(seed_name)}")
        for label, (mean, sd, _) in statistics.items():
            x = labels.index(label)
            ax.errorbar(x + 0.3, mean, yerr=0 if math.isnan(sd) else sd, fmt="_", color="C3",
                        capsize=4, markersize=14)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, fontsize=7, ha="right")
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_title(column, fontsize=9)
    handles, names = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="upper right", fontsize=7)
    fig.suptitle("per trial (markers: seeds), mean +/- sd (red)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


# -- the driver ---------------------------------------------------------------------------


class _Progress:
    """Prints a line per trial report (steps, images/s, ETA) and one for the sweep."""

    def __init__(self, trials, echo):
        self.trials = {trial.name: trial for trial in trials}
        self.echo = echo
        self.state = {}

    def trial_line(self, name, report):
        self.state[name] = report
        step, total = report["step"], report["total_steps"]
        if report.get("error"):
            self.echo(f"[{name}] failed: {report['error']}; not retried, since it would fail "
                      f"the same way again")
        elif report.get("done"):
            self.echo(f"[{name}] finished and evaluated ({total} steps)")
        else:
            rate = report.get("images_per_second") or 0.0
            batch = self.trials[name].config.batch_size
            eta = (total - step) * batch / rate if rate else float("nan")
            self.echo(f"[{name}] step {step}/{total} | {rate:,.0f} img/s | ETA "
                      f"{format_duration(eta) if rate else '?'}")

    def sweep_line(self, finished, failed, total, running):
        self.echo(f"[sweep] {finished}/{total} trials finished, {running} running"
                  + (f", {failed} failed" if failed else ""))


def run(dataset, grid, fixed, out, address=None, max_concurrent=None, cpus_per_trial=None,
        gpus_per_trial=0, make_config=None, echo=print, report_only=False,
        retry_failed=False):
    """Runs (or resumes) a sweep; see the module docstring.

    Args:
      dataset: dataset name.
      grid: dict option -> list of values (typed), e.g. {"objective": ["tcvae", "betavae"],
        "seed": [0, 1, 2]}.
      fixed: dict of every other option, shared by all trials.
      out: the sweep folder.
      address: None for a Ray instance embedded in this process (local), "auto" or
        "ray://HOST:PORT" for an existing cluster.
      max_concurrent: at most this many trials at once (None: as the resources allow).
      cpus_per_trial: CPUs reserved per trial (default: all of this machine's CPUs when
        local, 1 on a cluster); TensorFlow in the trial uses that many threads.
      gpus_per_trial: GPUs reserved per trial.
      make_config: see ``plan``.
      echo: callable(str) for progress lines.
      report_only: only rewrite the result files from the run folders as they are (while
        the sweep runs elsewhere, or to see an interrupted one), after measuring the
        snapshots of unfinished trials not yet in their curves; nothing trains, Ray is not
        started, and unfinished trials are no error.
      retry_failed: also train the trials whose failure repeats (see ``fails_again``),
        which a rerun otherwise keeps as failed; each resumes from its last checkpoint.

    Returns:
      The result rows (see ``result_rows``).

    Raises:
      SweepError: a bad grid, a folder holding another sweep, Ray missing, or failed trials
        (after every other trial ran; the rows are written either way).
    """
    out = os.path.abspath(out)
    trials = plan(dataset, grid, fixed, out, make_config)
    claim_folder(out, dataset, grid, fixed)
    unfinished = [trial for trial in trials if not is_finished(trial)]
    pending = to_run(trials, retry_failed)
    names = {trial.name for trial in pending}
    kept = [trial for trial in unfinished if trial.name not in names]
    done = len(trials) - len(unfinished)
    echo(f"sweep {out}: {len(trials)} trials, {done} finished, "
         + (f"{len(kept)} failed earlier, " if kept else "") + f"{len(pending)} to run")
    if report_only:
        _measure_new_snapshots(unfinished, echo)
    rows = write_results(trials, out, grid)
    if report_only:
        for row in rows:
            total = f"/{row['total_steps']}" if row.get("total_steps") else ""
            error = f" ({row['error']})" if row.get("error") else ""
            echo(f"[{row['run']}] {row['status']}, step {row['steps']}{total}{error}")
        echo(f"results rewritten: {os.path.join(out, RESULTS_CSV)}")
        return rows
    for trial in kept:
        echo(f"[{trial.name}] failed earlier ({repeated_failure(trial)}); kept as failed, "
             f"since it would fail the same way again (--retry-failed trains it again)")
    for restart in range(MAX_RESTARTS + 1):
        if not pending:
            break
        try:
            _run_with_ray(trials, pending, out, grid, address, max_concurrent,
                          cpus_per_trial, gpus_per_trial, echo)
            break
        except _EngineFailure as error:
            pending = to_run(trials, retry_failed)
            if restart == MAX_RESTARTS:
                write_results(trials, out, grid)
                raise SweepError(f"Ray Tune failed {MAX_RESTARTS + 1} times ({error}); "
                                 f"run the same command again to resume the {len(pending)} "
                                 f"unfinished trials") from None
            echo(f"[sweep] Ray Tune failed ({error}); restarting it for the {len(pending)} "
                 f"unfinished trials, each from its last checkpoint "
                 f"(restart {restart + 1} of {MAX_RESTARTS})")
    rows = write_results(trials, out, grid)
    failed = [row["run"] for row in rows if row["status"] != "finished"]
    if failed:
        record = runs.read_trial(os.path.join(out, failed[0])) or {}
        why = record.get("error") or record.get("status") or "not started"
        repeating = sum(repeated_failure(trial) is not None for trial in trials)
        if not repeating:
            advice = "run the same command again to resume them"
        elif repeating == len(failed):
            advice = ("they would fail the same way again, so a rerun keeps them as failed "
                      "(--retry-failed trains them again)")
        else:
            advice = (f"run the same command again to resume the other "
                      f"{len(failed) - repeating} ({repeating} would fail the same way again "
                      f"and stay failed without --retry-failed)")
        raise SweepError(f"{len(failed)} of {len(rows)} trials did not finish ({failed[0]}: "
                         f"{why}); {advice}")
    echo(f"sweep finished: {os.path.join(out, RESULTS_CSV)}")
    return rows


def _measure_new_snapshots(unfinished, echo):
    """The histogram MIG of the snapshots that the ``unfinished`` trials kept since their
    curve was last written (a trial measures its own at its end, skipping these): so that a report
    shows MIG against steps while trials still train. 10,000 images a snapshot."""
    from tcvae_tf import curves

    for trial in unfinished:
        if not runs.snapshots(trial.run_dir):
            continue
        name = os.path.basename(trial.run_dir)
        curves.update_curve(trial.run_dir, echo=lambda message, name=name: echo(
            f"[{name}] snapshot {message}"))


def reap(driver_pid, interval=1.0):
    """Waits for the process ``driver_pid`` to end, then ends what it left behind.

    Ray's local head processes (GCS, raylet, workers, agents) are children of the driver; a
    driver killed with SIGKILL leaves some of them running under init. This watcher,
    started by the driver in a session of its own, records the driver's descendants every
    ``interval`` seconds and, once the driver is gone, terminates those still alive (then
    kills them after a grace period). Process identity is checked by creation time, so a
    reused pid is never touched.
    """
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    known = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        try:
            for child in driver.children(recursive=True):
                if child.pid != os.getpid():
                    known.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    alive = [process for process in known.values() if process.is_running()]
    for process in alive:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _start_reaper():
    """Starts ``reap(os.getpid())`` in a process of its own session."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", f"from tcvae_tf.sweep import reap; reap({os.getpid()})"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def _trainable(config):
    """The Ray Tune function trainable: one trial, reported through ``tune.report``."""
    from ray import tune

    config = config["trial"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = config.get("threads")
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    try:
        run_trial(config["train"], report=lambda metrics: tune.report(metrics))
    except Exception as error:
        if not fails_again(error):
            raise  # Ray Tune retries the trial (``MAX_FAILURES``)
        # Recorded in trial.json and reported as the end; ending normally, the trial is not
        # retried.


def _run_with_ray(trials, pending, out, grid, address, max_concurrent, cpus_per_trial,
                  gpus_per_trial, echo):
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
        from ray import tune
    except ImportError:
        raise SweepError('sweeps need Ray Tune: pip install "tcvae-tf[sweep]"') from None

    local = address is None
    if cpus_per_trial is None:
        cpus_per_trial = os.cpu_count() or 1 if local else 1
    progress = _Progress(trials, echo)
    by_name = {trial.name: trial for trial in trials}

    class Reporter(tune.Callback):
        """Progress lines from the trials' reports; results rewritten when a trial ends."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.trial_line(trial.config["trial"]["name"], result)

        def _ended(self, trials, ended):
            rows = write_results(list(by_name.values()), out, grid)
            finished = sum(row["status"] == "finished" for row in rows)
            failed = sum(row["status"] == "failed" for row in rows)
            running = sum(t.status == "RUNNING" and t is not ended for t in trials)
            progress.sweep_line(finished, failed, len(rows), running)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trials, trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            name = trial.config["trial"]["name"]
            error = (runs.read_trial(by_name[name].run_dir) or {}).get("error")
            progress.echo(f"[{name}] failed: {error or 'see the Ray logs'}")
            self._ended(trials, trial)

    started_ray = False
    if not ray.is_initialized():
        # The trials' own output (TensorFlow's logs) stays in Ray's log folder; progress
        # and errors reach the driver through tune.report and the run folders.
        options = dict(include_dashboard=False, log_to_driver=False,
                       configure_logging=True, logging_level="WARNING")
        if local:
            options.update(num_cpus=os.cpu_count() or 1, object_store_memory=80 * 2**20)
            _start_reaper()
        else:
            options["address"] = address
        ray.init(**options)
        started_ray = True
    try:
        trainable = tune.with_resources(_trainable, {"cpu": cpus_per_trial,
                                                     "gpu": gpus_per_trial})
        space = {"trial": tune.grid_search([
            {"name": trial.name, "train": dataclasses.asdict(trial.config),
             "threads": int(cpus_per_trial) if local else None} for trial in pending])}
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent or 0,
                trial_dirname_creator=lambda trial: trial.config["trial"]["name"]),
            run_config=tune.RunConfig(
                name=f"sweep-{int(time.time())}", storage_path=os.path.join(out, RAY_DIR),
                verbose=0, callbacks=[Reporter()],
                # A trial killed from outside (e.g. by Ray's memory monitor) is retried;
                # it resumes from its checkpoint. One whose failure repeats ends normally
                # (``_trainable``) and is not.
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)))
        try:
            tuner.fit()
        except Exception as error:  # a trial's own error is recorded, not raised: Ray failed
            text = " ".join(str(error).split("\n", 1)[0].split())[:200] or type(error).__name__
            raise _EngineFailure(text) from error
    finally:
        if started_ray:
            ray.shutdown()
