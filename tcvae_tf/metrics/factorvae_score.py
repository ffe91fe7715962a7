"""The FactorVAE score (Kim & Mnih 2018): a majority-vote classifier of the fixed factor.

```none
s_d^2         = Var z_d over random images (10,000), latents with s_d < 0.05 pruned
one point     : fix factor k (uniform), draw a batch of B = 64 images sharing v_k, the
                others random; d* = argmin_d Var_batch(z_d) / s_d^2 over the kept latents
votes[k, d*] += 1                                  (10,000 training points)
classifier    : latent d votes for factor argmax_k votes[k, d]
accuracy      = sum_d votes[classifier(d), d] / sum votes     (training and 5,000 new points)
```

These are disentanglement_lib's definitions and sizes (``evaluation/metrics/factor_vae.py``
with the study's configuration: batch 64, 10,000 training points, 5,000 evaluation points,
10,000 images for the variances, pruning threshold 0.05).

References:
  Kim, Mnih. Disentangling by Factorising. ICML 2018.
"""

import numpy as np

from tcvae_tf.metrics.utils import (
    RowEncoder,
    check_intervention_dataset,
    check_positive_int,
    codes_of_rows,
)

DEFAULT_BATCH_SIZE = 64
DEFAULT_NUM_TRAIN = 10000
DEFAULT_NUM_EVAL = 5000
DEFAULT_NUM_VARIANCE_ESTIMATE = 10000
DEFAULT_PRUNE_THRESHOLD = 0.05
_POINTS_PER_CHUNK = 500  # points whose batches are encoded and reduced together


def _votes(dataset, rows_to_codes, batch_size, num_points, rng, global_variance, active,
           progress=None, done=0, total=0):
    """votes [K, D]: how often each latent had the smallest normalised variance per factor."""
    num_factors = len(dataset.factor_sizes)
    votes = np.zeros((num_factors, len(global_variance)), np.int64)
    kept = np.flatnonzero(active)
    for start in range(0, num_points, _POINTS_PER_CHUNK):
        count = min(_POINTS_PER_CHUNK, num_points - start)
        points = np.arange(count)
        fixed = rng.integers(0, num_factors, count)                     # [P]
        classes = dataset.sample_factors(count * batch_size, rng).reshape(
            count, batch_size, num_factors)                              # [P, B, K]
        classes[points, :, fixed] = classes[points, 0, fixed][:, None]
        codes = codes_of_rows(rows_to_codes, dataset.index_from_classes(classes))  # [P, B, D]
        local_variance = codes[:, :, kept].var(axis=1, ddof=1)          # [P, D_kept]
        chosen = kept[np.argmin(local_variance / global_variance[kept], axis=1)]
        np.add.at(votes, (fixed, chosen), 1)
        if progress is not None:
            progress(done + start + count, total)
    return votes


def _accuracy(votes, classifier):
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / max(votes.sum(), 1))


def factorvae_score(encode, dataset, seed=0, batch_size=DEFAULT_BATCH_SIZE,
                    num_train=DEFAULT_NUM_TRAIN, num_eval=DEFAULT_NUM_EVAL,
                    num_variance_estimate=DEFAULT_NUM_VARIANCE_ESTIMATE,
                    prune_threshold=DEFAULT_PRUNE_THRESHOLD, encode_rows=None,
                    encode_batch_size=256, progress=None):
    """The FactorVAE score of an encoder on a ground-truth dataset.

    Where this differs from disentanglement_lib, and why:

    - "num_active_dims" is the number of latents kept by the pruning; disentanglement_lib
      returns the length of its boolean mask, i.e. always D.
    - Votes are recorded against the latent's own index (disentanglement_lib indexes the
      vote matrix by the position among the kept latents); the accuracies are the same.
    - Random draws come from numpy's Generator seeded with ``seed``, in batches of points.
    - Each image is encoded once (``RowEncoder``): the encoder is deterministic, so this
      only saves time.

    Known values: a code whose latents each copy one factor scores 1; a code independent
    of the factors scores about the chance level 1/K (slightly more over few points, since
    each latent takes its majority factor); constant latents are pruned, and a code with
    no latent left scores 0.

    Args:
      encode: callable mapping float32 images [B, H, W, C] in [0, 1] to codes [B, D]
        (posterior means); may be None when ``encode_rows`` is given.
      dataset: a full factorial GroundTruthDataset (``sample_factors``,
        ``index_from_classes``) whose factors each take at least two values.
      seed: seed of every random draw.
      batch_size: images per point, sharing the fixed factor.
      num_train: points that train the classifier.
      num_eval: new points it is evaluated on.
      num_variance_estimate: random images for each latent's global variance.
      prune_threshold: latents whose global standard deviation is below it are ignored.
      encode_rows: optional callable mapping dataset row indices [n] to codes [n, D], used
        instead of ``encode`` (the evaluation passes the codes it has already computed).
      encode_batch_size: images per ``encode`` call.
      progress: optional callable(done, total) counting points.

    Returns:
      dict with "train_accuracy", "eval_accuracy" (floats), "num_active_dims" (int),
      "active_dims" ([D] booleans), "global_variances" ([D]), "classifier" ([D], the
      factor each latent votes for), "train_votes" and "eval_votes" ([K][D]), and the
      settings "batch_size", "num_train", "num_eval", "num_variance_estimate",
      "prune_threshold", "seed".

    Raises:
      ValueError: a dataset that is not a full factorial grid, a factor with one value, a
        batch of fewer than 2 images, non-positive sample sizes, codes with NaN/inf.

    Example:
      >>> factorvae_score(lambda x: encoder(x)["mean"].numpy(), dataset)["eval_accuracy"]
    """
    check_intervention_dataset(dataset)
    batch_size = check_positive_int("batch_size", batch_size, minimum=2)
    num_train = check_positive_int("num_train", num_train)
    num_eval = check_positive_int("num_eval", num_eval)
    num_variance_estimate = check_positive_int("num_variance_estimate", num_variance_estimate,
                                               minimum=2)
    prune_threshold = float(prune_threshold)
    if not np.isfinite(prune_threshold) or prune_threshold < 0:
        raise ValueError(f"prune_threshold must be a finite non-negative number, got "
                         f"{prune_threshold}")
    rows_to_codes = encode_rows or RowEncoder(dataset, encode, encode_batch_size)
    rng = np.random.default_rng(seed)

    rows = dataset.index_from_classes(dataset.sample_factors(num_variance_estimate, rng))
    global_variance = codes_of_rows(rows_to_codes, rows).var(axis=0, ddof=1)   # [D]
    active = np.sqrt(global_variance) >= prune_threshold
    result = {"num_active_dims": int(active.sum()), "active_dims": active.tolist(),
              "global_variances": global_variance.tolist()}
    settings = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
                "num_variance_estimate": num_variance_estimate,
                "prune_threshold": prune_threshold, "seed": seed}
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, **result, "classifier": None,
                "train_votes": None, "eval_votes": None, **settings}

    total = num_train + num_eval
    train_votes = _votes(dataset, rows_to_codes, batch_size, num_train, rng, global_variance,
                         active, progress, 0, total)
    classifier = np.argmax(train_votes, axis=0)                            # [D]
    eval_votes = _votes(dataset, rows_to_codes, batch_size, num_eval, rng, global_variance,
                        active, progress, num_train, total)
    return {
        "train_accuracy": _accuracy(train_votes, classifier),
        "eval_accuracy": _accuracy(eval_votes, classifier),
        **result,
        "classifier": classifier.tolist(),
        "train_votes": train_votes.tolist(),
        "eval_votes": eval_votes.tolist(),
        **settings,
    }
