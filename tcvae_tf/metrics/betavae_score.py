"""The beta-VAE score (Higgins et al. 2017): a linear classifier of the shared factor.

```none
one point : fix factor k (uniform); draw B = 64 pairs of images (x1_b, x2_b) that share
            v_k, every other factor random;  feature = mean_b | z(x1_b) - z(x2_b) |   [D]
score     = accuracy of a logistic regression predicting k from the feature
            (trained on 10,000 points, evaluated on 5,000 new ones)
```

These are disentanglement_lib's definitions and sizes (``evaluation/metrics/beta_vae.py``,
``compute_beta_vae_sklearn`` with the study's configuration: batch 64, 10,000 training
points, 5,000 evaluation points, scikit-learn's LogisticRegression with its defaults).

References:
  Higgins et al. beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework. ICLR 2017.
"""

import numpy as np

from tcvae_tf.metrics.utils import (
    RowEncoder,
    check_intervention_dataset,
    check_positive_int,
    codes_of_rows,
    fit_quietly,
)

DEFAULT_BATCH_SIZE = 64
DEFAULT_NUM_TRAIN = 10000
DEFAULT_NUM_EVAL = 5000
_POINTS_PER_CHUNK = 500


def difference_features(dataset, rows_to_codes, batch_size, num_points, rng, progress=None,
                        done=0, total=0):
    """Training points of the beta-VAE score.

    Returns:
      (features float64 [num_points, D], labels int64 [num_points]: the shared factor).
    """
    num_factors = len(dataset.factor_sizes)
    features, labels = [], []
    for start in range(0, num_points, _POINTS_PER_CHUNK):
        count = min(_POINTS_PER_CHUNK, num_points - start)
        points = np.arange(count)
        fixed = rng.integers(0, num_factors, count)                       # [P]
        first = dataset.sample_factors(count * batch_size, rng).reshape(
            count, batch_size, num_factors)                                # [P, B, K]
        second = dataset.sample_factors(count * batch_size, rng).reshape(
            count, batch_size, num_factors)
        second[points, :, fixed] = first[points, :, fixed]
        difference = (codes_of_rows(rows_to_codes, dataset.index_from_classes(first))
                      - codes_of_rows(rows_to_codes, dataset.index_from_classes(second)))
        features.append(np.abs(difference).mean(axis=1))                   # [P, D]
        labels.append(fixed)
        if progress is not None:
            progress(done + start + count, total)
    return np.concatenate(features), np.concatenate(labels)


def betavae_score(encode, dataset, seed=0, batch_size=DEFAULT_BATCH_SIZE,
                  num_train=DEFAULT_NUM_TRAIN, num_eval=DEFAULT_NUM_EVAL, encode_rows=None,
                  encode_batch_size=256, progress=None):
    """The beta-VAE score of an encoder on a ground-truth dataset.

    Where this differs from disentanglement_lib, and why: random draws come from numpy's
    Generator seeded with ``seed``, in batches of points; LogisticRegression has
    scikit-learn's current defaults (lbfgs, multinomial; disentanglement_lib ran with those
    of its time, liblinear one-vs-rest); each image is encoded once (``RowEncoder``).

    Known values: a code whose latents each copy one factor scores 1; a code independent
    of the factors, or constant, scores about the chance level 1/K.

    Args:
      encode: callable mapping float32 images [B, H, W, C] in [0, 1] to codes [B, D]
        (posterior means); may be None when ``encode_rows`` is given.
      dataset: a full factorial GroundTruthDataset whose factors each take at least two
        values.
      seed: seed of every random draw and of the classifier.
      batch_size: pairs of images per point.
      num_train: points that train the classifier.
      num_eval: new points it is evaluated on.
      encode_rows: optional callable mapping dataset row indices [n] to codes [n, D], used
        instead of ``encode``.
      encode_batch_size: images per ``encode`` call.
      progress: optional callable(done, total) counting points.

    Returns:
      dict with "train_accuracy", "eval_accuracy" (floats), "converged" (False if the
      regression stopped at its iteration limit) and the settings "batch_size",
      "num_train", "num_eval", "seed".

    Raises:
      ValueError: a dataset that is not a full factorial grid, a factor with one value,
        non-positive sizes, too few training points to see two factors, NaN/inf codes.

    Example:
      >>> betavae_score(lambda x: encoder(x)["mean"].numpy(), dataset)["eval_accuracy"]
    """
    from sklearn.linear_model import LogisticRegression

    check_intervention_dataset(dataset)
    batch_size = check_positive_int("batch_size", batch_size)
    num_train = check_positive_int("num_train", num_train)
    num_eval = check_positive_int("num_eval", num_eval)
    rows_to_codes = encode_rows or RowEncoder(dataset, encode, encode_batch_size)
    rng = np.random.default_rng(seed)
    total = num_train + num_eval
    train_features, train_labels = difference_features(
        dataset, rows_to_codes, batch_size, num_train, rng, progress, 0, total)
    if len(np.unique(train_labels)) < 2:
        raise ValueError(f"too few training points: num_train={num_train} fixed a single "
                         f"factor; the classifier needs points of at least two")
    model, converged = fit_quietly(LogisticRegression(random_state=seed), train_features,
                                   train_labels)
    eval_features, eval_labels = difference_features(
        dataset, rows_to_codes, batch_size, num_eval, rng, progress, num_train, total)
    return {
        "train_accuracy": float(np.mean(model.predict(train_features) == train_labels)),
        "eval_accuracy": float(np.mean(model.predict(eval_features) == eval_labels)),
        "converged": bool(converged),
        "batch_size": batch_size, "num_train": num_train, "num_eval": num_eval, "seed": seed,
    }
