"""Modularity and explicitness (Ridgeway & Mozer 2018).

```none
m_jk         = I(c_j; v_k)       c_j: latent j in 20 equal-width bins, training sample (nats)
modularity_j = 1 - sum_{k != k*} m_jk^2 / ( m_jk*^2 (K - 1) ),   k* = argmax_k m_jk
               (0 for a latent with no information about any factor)
modularity   = mean_j modularity_j
explicitness = mean_k mean_c AUC( one-vs-rest ROC of class c of factor k, from a logistic
               regression of v_k on the standardised code )
```

These are disentanglement_lib's definitions (``evaluation/metrics/modularity_explicitness.py``):
20 bins, scikit-learn's LogisticRegression() with its defaults, codes standardised with the
training sample's mean and standard deviation, 10,000 training and 5,000 test images.

References:
  Ridgeway, Mozer. Learning Deep Disentangled Embeddings With the F-Statistic Loss.
  NeurIPS 2018.
"""

import numpy as np

from tcvae_tf.metrics.utils import (
    DEFAULT_NUM_BINS,
    check_positive_int,
    check_split,
    fit_quietly,
    histogram_discretize,
    mutual_information_matrix,
    standardize,
)

DEFAULT_NUM_TRAIN = 10000
DEFAULT_NUM_TEST = 5000


def modularity(mutual_information):
    """Mean modularity of the latents from the mutual information matrix [D, K] (K >= 2)."""
    squared = np.square(np.asarray(mutual_information, np.float64))
    peak = squared.max(axis=1)
    rest = squared.sum(axis=1) - peak
    informative = peak > 0
    per_code = np.zeros(len(squared))
    per_code[informative] = 1.0 - rest[informative] / (
        peak[informative] * (squared.shape[1] - 1.0))
    return float(per_code.mean()), per_code


def _mean_auc(labels, probabilities, classes):
    """Macro average over classes of the one-vs-rest ROC AUC; classes absent (or alone) in
    ``labels`` are left out, where the AUC is undefined."""
    from sklearn.metrics import roc_auc_score

    scores = []
    for column, value in enumerate(classes):
        positive = labels == value
        if 0 < positive.sum() < len(labels):
            scores.append(roc_auc_score(positive, probabilities[:, column]))
    return float(np.mean(scores)) if scores else float("nan")


def explicitness_per_factor(train_codes, train_labels, test_codes, test_labels):
    """AUC of a logistic regression of one factor on standardised codes.

    Returns:
      (train_auc, test_auc, converged).
    """
    from sklearn.linear_model import LogisticRegression

    model, converged = fit_quietly(LogisticRegression(), train_codes, train_labels)
    train_auc = _mean_auc(train_labels, model.predict_proba(train_codes), model.classes_)
    test_auc = _mean_auc(test_labels, model.predict_proba(test_codes), model.classes_)
    return train_auc, test_auc, converged


def modularity_explicitness(train_codes, train_factors, test_codes, test_factors,
                            num_bins=DEFAULT_NUM_BINS):
    """Modularity and explicitness of a code.

    Where this differs from disentanglement_lib, and why:

    - A constant latent is standardised with scale 1 (it stays 0); disentanglement_lib
      divides by its zero standard deviation and the regression fails on the NaNs.
    - Each class's AUC is computed against the classifier's own classes, and classes that
      do not occur in an evaluated sample are left out of the average (their AUC is
      undefined); disentanglement_lib binarises the evaluated labels by themselves, which
      fails when the test sample lacks a class seen in training.
    - LogisticRegression() has scikit-learn's current defaults (lbfgs, multinomial);
      disentanglement_lib ran with the defaults of its time (liblinear, one-vs-rest).

    Known values: a code independent of the factors has explicitness 0.5 (chance AUC); its
    modularity is not 0: the noise in the estimated mutual information is spread over the
    factors in proportion to their numbers of classes. Factors copied one per latent give
    modularity 1 and explicitness near 1; a latent that carries two of the K factors equally
    (and nothing of the others) has modularity 1 - 1/(K-1): 0 with two factors, 0.75 with
    dSprites' five. Constant latents count as modularity 0 (disentanglement_lib's rule), so
    they lower the average.

    Args:
      train_codes: float array [N_train, D], posterior means of a random training sample.
      train_factors: integer array [N_train, K], their factor classes.
      test_codes: float array [N_test, D].
      test_factors: integer array [N_test, K].
      num_bins: equal-width bins per latent for the mutual information.

    Returns:
      dict with "modularity", "explicitness_train", "explicitness_test" (floats),
      "modularity_per_code" ([D]), "mutual_information" ([D][K], nats),
      "explicitness_train_per_factor", "explicitness_test_per_factor" ([K]), "num_bins" and
      "converged" (False if a regression stopped at its iteration limit).

    Raises:
      ValueError: bad shapes, NaN/inf codes, fewer than 2 factors, too few samples, a factor
        with a single value in the training sample, or in the test sample.

    Example:
      >>> result = modularity_explicitness(codes[:10000], classes[:10000], codes[10000:],
      ...                                  classes[10000:])
      >>> result["modularity"], result["explicitness_test"]
    """
    num_bins = check_positive_int("num_bins", num_bins)
    train_codes, train_factors, test_codes, test_factors = check_split(
        train_codes, train_factors, test_codes, test_factors)
    num_factors = train_factors.shape[1]
    if num_factors < 2:
        raise ValueError("modularity needs at least 2 factors")
    for k in range(num_factors):
        if len(np.unique(test_factors[:, k])) < 2:
            raise ValueError(f"factor {k} takes a single value in the test sample; the AUC "
                             f"of explicitness needs at least two")
    mutual_information = mutual_information_matrix(
        histogram_discretize(train_codes, num_bins), train_factors)
    score, per_code = modularity(mutual_information)

    train_standard, mean, scale = standardize(train_codes)
    test_standard, _, _ = standardize(test_codes, mean, scale)
    train_auc, test_auc = np.zeros(num_factors), np.zeros(num_factors)
    converged = True
    for k in range(num_factors):
        train_auc[k], test_auc[k], ok = explicitness_per_factor(
            train_standard, train_factors[:, k], test_standard, test_factors[:, k])
        converged &= ok
    return {
        "modularity": score,
        "explicitness_train": float(train_auc.mean()),
        "explicitness_test": float(test_auc.mean()),
        "modularity_per_code": per_code.tolist(),
        "mutual_information": mutual_information.tolist(),
        "explicitness_train_per_factor": train_auc.tolist(),
        "explicitness_test_per_factor": test_auc.tolist(),
        "num_bins": num_bins,
        "converged": bool(converged),
    }
