"""Disentanglement against training steps: the histogram MIG of a run's kept snapshots.

Training with ``--keep-every N`` keeps the weights every N steps in ``snapshots/``;
``update_curve(run)`` measures each snapshot not yet in ``curve.csv`` with
disentanglement_lib's histogram MIG (the posterior means of the same 10,000 random
images for every snapshot, 20 bins) and rewrites ``curve.csv`` (step, mig_histogram,
mig_histogram_all_factors). Sweeps call it after each trial; it is cheap (one encoder
pass over 10,000 images per snapshot).
"""

import os

import numpy as np

from tcvae_tf import runs
from tcvae_tf.files import locked


def snapshot_migs(run_dir, steps=None, seed=0, echo=None):
    """The histogram MIG of a run's snapshots, written nowhere.

    Args:
      run_dir: a run folder.
      steps: the snapshot steps to measure (None: every snapshot).
      seed: seed of the image choice and of the metric.
      echo: optional callable(str), told of each snapshot measured.

    Returns:
      Rows sorted by step: dicts with "step", "mig_histogram" (the headline factors, e.g.
      the paper's four on dSprites) and "mig_histogram_all_factors".

    Raises:
      ValueError: a step with no snapshot.
    """
    from tcvae_tf import evaluation

    kept = dict(runs.snapshots(run_dir))
    steps = sorted(kept) if steps is None else sorted(steps)
    missing = [step for step in steps if step not in kept]
    if missing:
        raise ValueError(f"{run_dir} has no snapshot of step {missing[0]} (it has "
                         f"{', '.join(map(str, sorted(kept))) or 'none'})")
    if not steps:
        return []
    model = runs.load_model(run_dir)
    evaluable = evaluation.load_run(run_dir, model=model)
    dataset = evaluation.load_evaluation_dataset(evaluable)
    count = min(evaluation.HISTOGRAM_IMAGES, dataset.num_images)
    chosen = np.sort(np.random.default_rng(seed).choice(dataset.num_images, count,
                                                        replace=False))
    images = dataset.images[chosen]
    factor_names = [str(name) for name in dataset.factor_names]
    rows = []
    for step in steps:
        model.load_weights(kept[step])
        encoding = evaluation.encode_dataset(evaluable, images, with_log_likelihood=False,
                                             pixel_max=dataset.pixel_max)
        section = evaluation.compute_metrics(
            encoding.loc, encoding.log_scale, dataset.factor_classes[chosen],
            metrics=("mig_histogram",), factor_names=factor_names,
            dataset_name=dataset.name, seed=seed)["mig_histogram"]
        rows.append({"step": step, "mig_histogram": section["mig"],
                     "mig_histogram_all_factors": section["mig_all_factors"]})
        if echo is not None:
            echo(f"step {step}: histogram MIG {section['mig']:.4f}")
    return rows


def update_curve(run_dir, seed=0, echo=None):
    """Measures the snapshots of ``run_dir`` missing from its curve.csv and rewrites it.

    Args:
      run_dir: a run folder.
      seed: seed of the image choice and of the metric.
      echo: optional callable(str), told of each snapshot measured.

    Returns:
      The curve's rows, sorted by step (see ``snapshot_migs``).
    """
    rows = {row["step"]: row for row in runs.read_curve(run_dir)}
    todo = [step for step, _ in runs.snapshots(run_dir) if step not in rows]
    measured = snapshot_migs(run_dir, todo, seed=seed, echo=echo)
    if todo:
        # A trial's end and `sweep --report` may measure one run at once: each adds its
        # rows to what the file holds when it writes, so neither drops the other's.
        with locked(os.path.join(run_dir, runs.CURVE_LOCK_FILE)):
            rows = {row["step"]: row for row in runs.read_curve(run_dir)}
            rows.update((row["step"], row) for row in measured)
            runs.write_curve(run_dir, rows.values())
    return sorted(rows.values(), key=lambda row: row["step"])
