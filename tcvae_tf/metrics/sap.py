"""SAP: the Separated Attribute Predictability score (Kumar et al. 2018).

Each latent alone predicts each factor; SAP is the gap between the best and the second
best latent, averaged over factors:

```none
S_jk = accuracy on the test sample of a linear classifier of v_k from z_j   (discrete factors)
S_jk = Cov(z_j, v_k)^2 / (Var z_j Var v_k)     on the training sample       (continuous)
SAP  = mean_k ( S_(1)k - S_(2)k )
```

These are disentanglement_lib's definitions (``evaluation/metrics/sap_score.py``): a
LinearSVC(C=0.01, class_weight="balanced") per latent and factor, the factor classes treated
as discrete, 10,000 training and 5,000 test images; a latent with variance below 1e-12
scores 0 in the continuous form.

References:
  Kumar, Sattigeri, Balakrishnan. Variational Inference of Disentangled Latent Concepts
  from Unlabeled Observations. ICLR 2018.
"""

import numpy as np

from tcvae_tf.metrics.utils import check_split, fit_quietly

DEFAULT_NUM_TRAIN = 10000
DEFAULT_NUM_TEST = 5000
SVC_C = 0.01


def score_matrix(train_codes, train_factors, test_codes, test_factors,
                 continuous_factors=False, progress=None):
    """S [D, K]: how well latent j alone predicts factor k.

    Args:
      train_codes, test_codes: float arrays [N_train, D], [N_test, D].
      train_factors, test_factors: integer arrays [N_train, K], [N_test, K].
      continuous_factors: treat the factor classes as numbers (squared correlation on the
        training sample) instead of classes (linear classifier accuracy on the test sample).
      progress: optional callable(done, total) counting latents.

    Returns:
      (score [D, K], converged): converged is False when some classifier stopped at its
      iteration limit.
    """
    num_codes, num_factors = train_codes.shape[1], train_factors.shape[1]
    score = np.zeros((num_codes, num_factors))
    converged = True
    for j in range(num_codes):
        code = train_codes[:, j]
        for k in range(num_factors):
            if continuous_factors:
                covariance = np.cov(code, train_factors[:, k], ddof=1)
                if covariance[0, 0] > 1e-12:
                    score[j, k] = covariance[0, 1] ** 2 / (covariance[0, 0] * covariance[1, 1])
                continue
            from sklearn.svm import LinearSVC

            # dual=False: liblinear's primal solver, deterministic and converging on one
            # feature (disentanglement_lib ran liblinear's dual solver, the default then).
            model, ok = fit_quietly(LinearSVC(C=SVC_C, class_weight="balanced", dual=False),
                                    code[:, None], train_factors[:, k])
            converged &= ok
            score[j, k] = np.mean(model.predict(test_codes[:, j:j + 1]) == test_factors[:, k])
        if progress is not None:
            progress(j + 1, num_codes)
    return score, converged


def sap(train_codes, train_factors, test_codes, test_factors, continuous_factors=False,
        progress=None):
    """SAP score of a code.

    Where this differs from disentanglement_lib, and why: the LinearSVC runs liblinear's
    primal solver (``dual=False``), which is deterministic and converges on one feature;
    disentanglement_lib used the dual solver, scikit-learn's default of its time, which
    shuffles with a random state and can stop at its iteration limit.

    Known values: a code independent of the factors scores about 0 (every latent predicts
    a factor at its chance accuracy, about the frequency of one class). Factors copied into
    the code score mean_k (a_k - c_k): a_k the accuracy a linear classifier on the copied
    number reaches (1 for two-class factors; less for many classes, since a one-vs-rest
    linear rule on one number cannot single out the middle classes) and c_k the chance
    accuracy of the next latent (1/2 for a balanced binary factor). So the discrete score
    of a perfect code is 1 - chance, not 1. The continuous form gives 1 for copied factors
    when the other latents are independent of them.

    Args:
      train_codes: float array [N_train, D], posterior means of a random training sample.
      train_factors: integer array [N_train, K], their factor classes.
      test_codes: float array [N_test, D].
      test_factors: integer array [N_test, K].
      continuous_factors: see ``score_matrix``.
      progress: optional callable(done, total) counting latents.

    Returns:
      dict with "sap" (float), "score_matrix" ([D][K]), "gap_per_factor" ([K]),
      "continuous_factors" and "converged" (False if a classifier hit its iteration limit).

    Raises:
      ValueError: bad shapes, NaN/inf codes, fewer than 2 latents, too few samples, a factor
        with a single value in the training sample.

    Example:
      >>> sap(codes[:10000], classes[:10000], codes[10000:], classes[10000:])["sap"]
    """
    train_codes, train_factors, test_codes, test_factors = check_split(
        train_codes, train_factors, test_codes, test_factors)
    if train_codes.shape[1] < 2:
        raise ValueError("SAP needs at least 2 latents (it is a gap between the best two)")
    score, converged = score_matrix(train_codes, train_factors, test_codes, test_factors,
                                    continuous_factors=continuous_factors, progress=progress)
    ordered = np.sort(score, axis=0)
    gap = ordered[-1] - ordered[-2]
    return {
        "sap": float(gap.mean()),
        "score_matrix": score.tolist(),
        "gap_per_factor": gap.tolist(),
        "continuous_factors": bool(continuous_factors),
        "converged": bool(converged),
    }
