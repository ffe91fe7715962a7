"""Modularity and explicitness on synthetic ground truth: known values, invariances, errors."""

import numpy as np
import pytest
from factor_splits import factor_split

from tcvae_tf.metrics import modularity_explicitness
from tcvae_tf.metrics.modularity import modularity

SIZES = np.array([2, 3, 4])
NUM_TRAIN, NUM_TEST = 600, 300


def split(code_of, seed=0):
    return factor_split(code_of, SIZES, NUM_TRAIN, NUM_TEST, seed)


def identity(v, rng):
    return v / (SIZES - 1) + 0.01 * rng.normal(size=v.shape)


@pytest.fixture(scope="module")
def copied():
    return modularity_explicitness(*split(identity))


def test_modularity_formula():
    score, per_code = modularity(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))
    # latent 0: one factor only; latent 1: two factors equally, 1 - 0.25*1/(0.25*2) = 0.5;
    # latent 2: no information, 0 by convention.
    np.testing.assert_allclose(per_code, [1.0, 0.5, 0.0])
    assert score == pytest.approx(0.5)


def test_copied_factors(copied):
    assert copied["modularity"] > 0.99
    assert copied["explicitness_train"] > 0.99 and copied["explicitness_test"] > 0.99
    assert copied["converged"] and copied["num_bins"] == 20
    assert np.array(copied["mutual_information"]).shape == (3, 3)


def test_independent_code_has_chance_explicitness():
    result = modularity_explicitness(*split(lambda v, rng: rng.normal(size=(len(v), 3))))
    assert result["explicitness_test"] == pytest.approx(0.5, abs=0.06)
    # The noise of the estimated information spreads over the factors: modularity is not 0.
    assert 0 < result["modularity"] < 1


def test_latent_mixing_two_factors_has_modularity_zero():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 2, (NUM_TRAIN + NUM_TEST, 2))  # two binary factors
    # One latent holds both (a unique number per pair): I(z; v_0) = I(z; v_1) = log 2.
    codes = (2 * factors[:, 0] + factors[:, 1] + 0.01 * rng.normal(size=len(factors)))[:, None]
    result = modularity_explicitness(codes[:NUM_TRAIN], factors[:NUM_TRAIN],
                                     codes[NUM_TRAIN:], factors[NUM_TRAIN:])
    assert result["modularity"] < 0.03  # 0 but for the empirical frequencies
    assert result["explicitness_test"] > 0.7  # still informative about both


def test_duplicated_and_constant_latents(copied):
    duplicated = modularity_explicitness(*split(lambda v, rng: identity(v, rng)[:, [0, 0, 1, 2]]))
    assert duplicated["modularity"] > 0.99  # each latent still depends on one factor
    assert duplicated["explicitness_test"] == pytest.approx(copied["explicitness_test"], abs=0.01)
    constant = modularity_explicitness(*split(lambda v, rng: np.concatenate(
        [identity(v, rng), np.full((len(v), 1), 2.0)], axis=1)))
    # A constant latent has modularity 0 (no information) and lowers the mean; it is
    # standardised to 0, not NaN, so explicitness is unchanged.
    assert constant["modularity_per_code"][3] == 0.0
    assert constant["modularity"] == pytest.approx(copied["modularity"] * 3 / 4, abs=1e-12)
    assert constant["explicitness_test"] == pytest.approx(copied["explicitness_test"], abs=1e-6)


def test_invariant_to_permuting_and_scaling_latents():
    train, train_factors, test, test_factors = split(
        lambda v, rng: np.concatenate([identity(v, rng), rng.normal(size=(len(v), 1))], 1))
    reference = modularity_explicitness(train, train_factors, test, test_factors)
    order, scale = [3, 1, 0, 2], np.array([5.0, 0.1, 2.0, 30.0])
    moved = modularity_explicitness(train[:, order] * scale, train_factors,
                                    test[:, order] * scale, test_factors)
    for key in ("modularity", "explicitness_train", "explicitness_test"):
        assert moved[key] == pytest.approx(reference[key], abs=1e-6), key
    assert modularity_explicitness(train, train_factors, test, test_factors) == reference


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0][None], *a[1:]), r"train_codes must be a 2-D array"),
    (lambda a: (np.where(a[0] > 0.99, np.nan, a[0]), *a[1:]), r"train_codes contains NaN"),
    (lambda a: (a[0], a[1], a[2], np.concatenate([a[3][:, :2], np.zeros_like(a[3][:, :1])], 1)),
     r"factor 2 takes a single value in the test sample"),
    (lambda a: (a[0], a[1][:, :1], a[2], a[3][:, :1]), r"modularity needs at least 2 factors"),
    (lambda a: (a[0][:1], a[1][:1], *a[2:]), r"too few training samples"),
])
def test_errors_are_one_line(change, message):
    with pytest.raises(ValueError, match=message) as error:
        modularity_explicitness(*change(split(identity)))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        modularity_explicitness(*split(identity), num_bins=0)


@pytest.mark.parametrize("num_factors", [2, 3, 5, 8])
def test_a_latent_carrying_two_factors_equally(num_factors):
    information = np.zeros((1, num_factors))
    information[0, :2] = 0.7
    score, per_latent = modularity(information)
    assert score == pytest.approx(1.0 - 1.0 / (num_factors - 1))
    assert per_latent[0] == pytest.approx(score)
