"""Tests of the own-posterior share of minibatch estimates of log q(z)."""

import math

import numpy as np
import pytest

from tcvae_tf.metrics import minibatch_saturation
from tcvae_tf.metrics.saturation import _log_weights, own_shares


def brute_force_shares(z, loc, log_scale, weights):
    """w_ii q(z_i|x_i) / sum_j w_ij q(z_i|x_j), joint and per dimension, by loops."""
    size, dims = z.shape

    def density(i, j, d):
        scale = math.exp(log_scale[j, d])
        standard = (z[i, d] - loc[j, d]) / scale
        return math.exp(-0.5 * standard**2) / (scale * math.sqrt(2 * math.pi))

    joint = np.empty(size)
    per_dimension = np.empty((size, dims))
    for i in range(size):
        terms = [weights[i, j] * math.prod(density(i, j, d) for d in range(dims))
                 for j in range(size)]
        joint[i] = terms[i] / sum(terms)
        for d in range(dims):
            terms = [weights[i, j] * density(i, j, d) for j in range(size)]
            per_dimension[i, d] = terms[i] / sum(terms)
    return joint, per_dimension


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_shares_match_brute_force(estimator):
    rng = np.random.default_rng(3)
    loc = rng.normal(0, 1, (5, 3))
    log_scale = rng.uniform(-1.5, 0.5, (5, 3))
    z = loc + np.exp(log_scale) * rng.standard_normal((5, 3))
    log_weights = _log_weights(estimator, 5, 40)
    joint, per_dimension = own_shares(z, loc, log_scale, log_weights)
    expected_joint, expected_per_dimension = brute_force_shares(z, loc, log_scale,
                                                                np.exp(log_weights))
    np.testing.assert_allclose(joint, expected_joint, rtol=1e-12)
    np.testing.assert_allclose(per_dimension, expected_per_dimension, rtol=1e-12)


def test_weights_are_the_paper_estimators():
    # MSS with M = 7, N = 50, K = 6: 1/N on the diagonal, (N - K)/(N K) on the next
    # column (cyclically), 1/K elsewhere
    expected = np.full((7, 7), 1 / 6)
    rows = np.arange(7)
    expected[rows, rows] = 1 / 50
    expected[rows, (rows + 1) % 7] = 44 / 300
    np.testing.assert_allclose(np.exp(_log_weights("mss", 7, 50)).sum(axis=1), np.ones(7))
    np.testing.assert_allclose(_log_weights("mss", 7, 50), np.log(expected), rtol=1e-12)
    np.testing.assert_allclose(_log_weights("mws", 7, 50), np.full((7, 7), -math.log(350)))


def test_identical_posteriors_give_the_weight_of_the_own_image():
    # every q(z_i|x_j) is the same, so the share is w_ii / sum_j w_ij:
    # 1/M for MWS, (1/N) / 1 for MSS
    loc, log_scale = np.zeros((100, 4)), np.zeros((100, 4))
    result = minibatch_saturation(loc, log_scale, batch_sizes=(10,), num_batches=2)
    mws, mss = result["mws"]["10"], result["mss"]["10"]
    assert mws["joint_median"] == pytest.approx(0.1) and mws["joint_mean"] == pytest.approx(0.1)
    np.testing.assert_allclose(mws["per_dimension_median"], [0.1] * 4)
    assert mss["joint_median"] == pytest.approx(1 / 100)


def test_separated_sharp_posteriors_saturate_both_estimators_and_broad_ones_do_not():
    rng = np.random.default_rng(0)
    loc = rng.uniform(-3, 3, (500, 5))
    sharp = minibatch_saturation(loc, np.full((500, 5), -8.0), batch_sizes=(64,), num_batches=2)
    broad = minibatch_saturation(loc, np.full((500, 5), 1.0), batch_sizes=(64,), num_batches=2)
    for estimator in ("mws", "mss"):
        assert sharp[estimator]["64"]["joint_median"] > 0.999
        assert min(sharp[estimator]["64"]["per_dimension_median"]) > 0.999
        assert broad[estimator]["64"]["joint_median"] < 0.2
    # for overlapping posteriors MSS's own weight 1/N against 1/(M - 1) for the others
    # scales the small shares by about (M - 1)/N = 0.126 relative to MWS
    ratio = broad["mss"]["64"]["joint_mean"] / broad["mws"]["64"]["joint_mean"]
    assert 0.08 < ratio < 0.2


def test_larger_batches_lower_the_share():
    rng = np.random.default_rng(1)
    loc = rng.normal(0, 1, (4000, 2))
    result = minibatch_saturation(loc, np.full((4000, 2), -2.5), batch_sizes=(32, 1024),
                                  num_batches=1, estimators=("mws",))
    assert result["mws"]["1024"]["joint_mean"] < result["mws"]["32"]["joint_mean"]
    assert set(result) == {"dataset_size", "num_batches", "seed", "mws"}


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_sizes": (1,)}, "batch size 1 is outside 2 .. 20"),
    ({"batch_sizes": (21,)}, "batch size 21 is outside"),
    ({"batch_sizes": (4,), "estimators": ("iwae",)}, "unknown estimator 'iwae'"),
    ({"batch_sizes": (4,), "num_batches": 0}, "num_batches must be at least 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        minibatch_saturation(np.zeros((20, 2)), np.zeros((20, 2)), **kwargs)
