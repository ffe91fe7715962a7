"""DCI: disentanglement, completeness and informativeness (Eastwood & Williams 2018).

One gradient-boosted tree classifier per factor predicts the factor from the whole code;
its feature importances form the importance matrix R [D, K] (latent j, factor k), each
column summing to 1:

```none
P_jk            = R_jk / sum_k' R_jk'                      (latent j's importance over factors)
disentanglement = sum_j rho_j (1 - H_K(P_j.)),   rho_j = sum_k R_jk / sum_jk R_jk
completeness    = sum_k rho_k (1 - H_D(R_.k / sum_j R_jk)),   rho_k = sum_j R_jk / sum_jk R_jk
informativeness = mean_k accuracy of classifier k (train and test samples)
```

H_n is the entropy in base n (so in [0, 1]); 1e-11 is added to every importance first.
These are disentanglement_lib's definitions (``evaluation/metrics/dci.py``): gradient-boosted
trees with scikit-learn's default settings, 10,000 training and 5,000 test images, and
"informativeness" reported as classification accuracy, not as an error.

References:
  Eastwood, Williams. A Framework for the Quantitative Evaluation of Disentangled
  Representations. ICLR 2018.
  Locatello et al. Challenging Common Assumptions in the Unsupervised Learning of
  Disentangled Representations. ICML 2019.
"""

import numpy as np

from tcvae_tf.metrics.utils import check_split, normalized_entropy

BOOSTERS = ("histogram", "exact")
DEFAULT_NUM_TRAIN = 10000
DEFAULT_NUM_TEST = 5000
# scikit-learn's GradientBoostingClassifier defaults, which disentanglement_lib uses.
NUM_TREES = 100
TREE_DEPTH = 3
LEARNING_RATE = 0.1


def _booster(kind, seed):
    """A classifier with GradientBoostingClassifier's default ensemble (100 x depth 3, 0.1)."""
    if kind == "exact":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(n_estimators=NUM_TREES, max_depth=TREE_DEPTH,
                                          learning_rate=LEARNING_RATE, random_state=seed)
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=NUM_TREES, max_depth=TREE_DEPTH, max_leaf_nodes=None, min_samples_leaf=1,
        learning_rate=LEARNING_RATE, l2_regularization=0.0, early_stopping=False,
        random_state=seed)


def _histogram_importances(model, num_features):
    """Total split gain of each feature over every tree of a HistGradientBoostingClassifier.

    scikit-learn offers no feature importances for histogram boosting; the gain of each
    split (the loss reduction the grower chose it for) is read from the fitted trees, the
    quantity that LightGBM and XGBoost call "gain" importance.
    """
    predictors = getattr(model, "_predictors", None)
    if predictors is None:
        raise RuntimeError("this scikit-learn's HistGradientBoostingClassifier keeps no trees "
                           "to read split gains from; use dci(..., booster='exact')")
    gains = np.zeros(num_features)
    for iteration in predictors:
        for tree in iteration:
            nodes = tree.nodes
            split = nodes["is_leaf"] == 0
            np.add.at(gains, nodes["feature_idx"][split], np.maximum(nodes["gain"][split], 0.0))
    return gains


def importance_matrix(train_codes, train_factors, test_codes, test_factors, seed=0,
                      booster="histogram", progress=None):
    """Fits one boosted classifier per factor: importances and accuracies.

    Args:
      train_codes, test_codes: float arrays [N_train, D], [N_test, D].
      train_factors, test_factors: integer arrays [N_train, K], [N_test, K].
      seed: random_state of the classifiers.
      booster: "histogram" or "exact" (see ``dci``).
      progress: optional callable(done, total) counting factors.

    Returns:
      (importance [D, K] with columns summing to 1 (or 0 when a classifier made no split),
      train_accuracy [K], test_accuracy [K]).
    """
    from threadpoolctl import threadpool_limits

    num_codes, num_factors = train_codes.shape[1], train_factors.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_accuracy, test_accuracy = np.zeros(num_factors), np.zeros(num_factors)
    # One OpenMP thread for fitting and predicting: the histogram trees are small, and on a
    # busy machine (a training job beside the evaluation) OpenMP's waiting threads made
    # them 10-30x slower. The exact booster is single-threaded anyway.
    with threadpool_limits(limits=1, user_api="openmp"):
        for k in range(num_factors):
            model = _booster(booster, seed).fit(train_codes, train_factors[:, k])
            if booster == "exact":
                raw = np.abs(model.feature_importances_)
            else:
                raw = _histogram_importances(model, num_codes)
            total = raw.sum()
            importance[:, k] = raw / total if total > 0 else 0.0
            train_accuracy[k] = np.mean(model.predict(train_codes) == train_factors[:, k])
            test_accuracy[k] = np.mean(model.predict(test_codes) == test_factors[:, k])
            if progress is not None:
                progress(k + 1, num_factors)
    return importance, train_accuracy, test_accuracy


def disentanglement_per_code(importance):
    """1 - H_K of each latent's importance over factors: [D]."""
    return 1.0 - normalized_entropy(importance, axis=1)


def completeness_per_factor(importance):
    """1 - H_D of each factor's importance over latents: [K]."""
    return 1.0 - normalized_entropy(importance, axis=0)


def _weights(importance, axis):
    total = importance.sum()
    if total == 0:  # no classifier made a split: every latent and factor weighs the same
        importance = np.ones_like(importance)
        total = importance.sum()
    return importance.sum(axis=axis) / total


def dci(train_codes, train_factors, test_codes, test_factors, seed=0, booster="histogram",
        progress=None):
    """DCI disentanglement, completeness and informativeness of a code.

    Disentanglement_lib's DCI (see the module docstring) with one difference by default:

    - ``booster="histogram"`` fits scikit-learn's HistGradientBoostingClassifier with the
      ensemble of GradientBoostingClassifier's defaults (100 rounds of depth-3 trees,
      learning rate 0.1, no regularisation, no early stopping; features binned into 255
      quantiles) and takes each latent's importance as its total split gain. Why: the exact
      GradientBoostingClassifier fits one tree per class per round, 11,300 trees for
      dSprites' 113 factor classes; on 10,000 images it took 7.5 minutes for the five
      factors, and 20-30 times as long as the histogram trees in the same process
      (benchmarks/dci_boosters.py), far over the 3-minute budget of a whole evaluation.
    - ``booster="exact"`` is disentanglement_lib's GradientBoostingClassifier() and its
      impurity-based ``feature_importances_``.

    Both give the same scores on codes whose latents each follow one factor; on entangled
    codes the gain and impurity importances can differ by a few hundredths.

    Chance level: a code independent of the factors has test informativeness equal to the
    frequency of each factor's most common class (1/|V_k| for uniform factors), and
    disentanglement and completeness near 0 (the importances of noise spread over every
    latent and factor).

    Args:
      train_codes: float array [N_train, D], posterior means of a random training sample.
      train_factors: integer array [N_train, K], their factor classes.
      test_codes: float array [N_test, D].
      test_factors: integer array [N_test, K].
      seed: random_state of the classifiers (the scores are a function of the inputs and
        the seed).
      booster: "histogram" (default) or "exact", see above.
      progress: optional callable(done, total) counting the factors fitted.

    Returns:
      dict with "disentanglement", "completeness", "informativeness_train",
      "informativeness_test" (floats), "importance" ([D][K], columns sum to 1),
      "disentanglement_per_code" ([D]), "completeness_per_factor" ([K]),
      "train_accuracy" and "test_accuracy" ([K]) and "booster".

    Raises:
      ValueError: bad shapes, NaN/inf codes, fewer than 2 latents or factors, too few
        samples, a factor with a single value in the training sample, unknown booster.

    Example:
      >>> scores = dci(codes[:10000], classes[:10000], codes[10000:], classes[10000:])
      >>> scores["disentanglement"], scores["completeness"], scores["informativeness_test"]
    """
    if booster not in BOOSTERS:
        raise ValueError(f"unknown booster {booster!r}; choose from {', '.join(BOOSTERS)}")
    train_codes, train_factors, test_codes, test_factors = check_split(
        train_codes, train_factors, test_codes, test_factors)
    if train_codes.shape[1] < 2:
        raise ValueError("DCI needs at least 2 latents (completeness is an entropy over them)")
    if train_factors.shape[1] < 2:
        raise ValueError("DCI needs at least 2 factors (disentanglement is an entropy over "
                         "them)")
    importance, train_accuracy, test_accuracy = importance_matrix(
        train_codes, train_factors, test_codes, test_factors, seed=seed, booster=booster,
        progress=progress)
    per_code = disentanglement_per_code(importance)
    per_factor = completeness_per_factor(importance)
    return {
        "disentanglement": float(np.sum(per_code * _weights(importance, axis=1))),
        "completeness": float(np.sum(per_factor * _weights(importance, axis=0))),
        "informativeness_train": float(train_accuracy.mean()),
        "informativeness_test": float(test_accuracy.mean()),
        "importance": importance.tolist(),
        "disentanglement_per_code": per_code.tolist(),
        "completeness_per_factor": per_factor.tolist(),
        "train_accuracy": train_accuracy.tolist(),
        "test_accuracy": test_accuracy.tolist(),
        "booster": booster,
    }
