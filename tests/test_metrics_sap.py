"""SAP on synthetic ground truth: known values, invariances and errors."""

import numpy as np
import pytest
from factor_splits import factor_split

from tcvae_tf.metrics import sap

SIZES = np.array([2, 2])  # two-class factors: one number separates them with a threshold
NUM_TRAIN, NUM_TEST = 400, 200


def split(code_of, seed=0):
    return factor_split(code_of, SIZES, NUM_TRAIN, NUM_TEST, seed)


def identity(v, rng):
    return v + 0.05 * rng.normal(size=v.shape)


def both(code_of):
    """(discrete SAP, continuous SAP) of the same split."""
    arguments = split(code_of)
    return sap(*arguments)["sap"], sap(*arguments, continuous_factors=True)["sap"]


def test_copied_factors():
    result = sap(*split(identity))
    score = np.array(result["score_matrix"])
    np.testing.assert_array_equal(np.diag(score), 1.0)  # each latent predicts its factor
    # The best latent is exact; the second is at chance (1/2 for balanced binary factors),
    # so the discrete score of a perfect code is 1 - 1/2.
    assert result["sap"] == pytest.approx(0.5, abs=0.08)
    assert result["converged"] and not result["continuous_factors"]
    assert sap(*split(identity), continuous_factors=True)["sap"] > 0.98


def test_independent_code_scores_zero():
    discrete, continuous = both(lambda v, rng: rng.normal(size=(len(v), 3)))
    assert abs(discrete) < 0.08 and continuous < 0.05


def test_latent_mixing_two_factors():
    # z0 = v0 + v1: each factor is read from it with accuracy 3/4 and squared correlation 1/2.
    discrete, continuous = both(lambda v, rng: np.stack(
        [v[:, 0] + v[:, 1] + 0.05 * rng.normal(size=len(v)), rng.normal(size=len(v))], 1))
    assert discrete == pytest.approx(0.25, abs=0.08)
    assert continuous == pytest.approx(0.5, abs=0.08)


def test_duplicated_latent_has_no_gap_for_its_factor():
    result = sap(*split(lambda v, rng: identity(v, rng)[:, [0, 0, 1]]),
                 continuous_factors=True)
    assert result["gap_per_factor"][0] == pytest.approx(0.0, abs=0.01)
    assert result["gap_per_factor"][1] > 0.98
    assert result["sap"] == pytest.approx(0.5, abs=0.01)


def test_constant_latents_change_nothing():
    train, train_factors, test, test_factors = split(identity)
    with_constants = [np.concatenate([codes, np.full((len(codes), 2), 3.0)], axis=1)
                      for codes in (train, test)]
    # Continuous: a constant latent scores 0, below every other, so nothing changes.
    reference = sap(train, train_factors, test, test_factors, continuous_factors=True)
    padded = sap(with_constants[0], train_factors, with_constants[1], test_factors,
                 continuous_factors=True)
    assert padded["sap"] == pytest.approx(reference["sap"], abs=1e-12)
    assert np.array(padded["score_matrix"])[2:].max() == 0.0
    # Discrete: a constant latent predicts one class, a chance accuracy like the other
    # latent's, so the second best (and the score) moves only within chance.
    reference = sap(train, train_factors, test, test_factors)
    padded = sap(with_constants[0], train_factors, with_constants[1], test_factors)
    assert padded["sap"] == pytest.approx(reference["sap"], abs=0.05)
    assert np.array(padded["score_matrix"])[2:].max() < 0.6


def test_invariances():
    train, train_factors, test, test_factors = split(
        lambda v, rng: np.concatenate([identity(v, rng), rng.normal(size=(len(v), 1))], 1))
    order, scale = [2, 0, 1], np.array([-4.0, 0.25, 7.0])
    for continuous in (False, True):
        reference = sap(train, train_factors, test, test_factors, continuous_factors=continuous)
        permuted = sap(train[:, order], train_factors, test[:, order], test_factors,
                       continuous_factors=continuous)
        assert permuted["sap"] == pytest.approx(reference["sap"], abs=1e-12)
    # The squared correlation ignores scale and sign; the linear classifiers are regularised
    # (C = 0.01), so the discrete score is not scale-invariant and is not tested for it.
    reference = sap(train, train_factors, test, test_factors, continuous_factors=True)
    scaled = sap(train * scale, train_factors, test * scale, test_factors,
                 continuous_factors=True)
    assert scaled["sap"] == pytest.approx(reference["sap"], abs=1e-9)
    # No random draw: the same inputs give the same result.
    assert sap(train, train_factors, test, test_factors) == sap(train, train_factors, test,
                                                                test_factors)


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0].ravel(), *a[1:]), r"train_codes must be a 2-D array"),
    (lambda a: (a[0], a[1], np.full_like(a[2], np.inf), a[3]), r"test_codes contains NaN or inf"),
    (lambda a: (a[0], np.zeros_like(a[1]), *a[2:]),
     r"factor 0 takes a single value in the training sample"),
    (lambda a: (a[0][:1], a[1][:1], *a[2:]), r"too few training samples: 1 \(at least 2\)"),
    (lambda a: (a[0], a[1], a[2][:0], a[3][:0]), r"test_codes is empty"),
    (lambda a: (a[0][:, :1], a[1], a[2][:, :1], a[3]), r"SAP needs at least 2 latents"),
])
def test_errors_are_one_line(change, message):
    with pytest.raises(ValueError, match=message) as error:
        sap(*change(split(identity)))
    assert "\n" not in str(error.value)
