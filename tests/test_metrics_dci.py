"""DCI on synthetic ground truth: known values, invariances, seeds and errors."""

import numpy as np
import pytest

from tcvae_tf.metrics import dci
from tcvae_tf.metrics.dci import completeness_per_factor, disentanglement_per_code

SIZES = np.array([2, 3])  # few classes: one boosted tree per class and round
NUM_TRAIN, NUM_TEST = 240, 120


def factors(num, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, size, num) for size in SIZES], axis=1)


def split(code_of, seed=0):
    """(train codes, train factors, test codes, test factors) for codes = code_of(factors, rng)."""
    rng = np.random.default_rng(seed + 100)
    train, test = factors(NUM_TRAIN, seed), factors(NUM_TEST, seed + 1)
    return code_of(train, rng), train, code_of(test, rng), test


def identity(v, rng):
    return v / (SIZES - 1) + 0.01 * rng.normal(size=v.shape)


@pytest.fixture(scope="module")
def copied():
    return dci(*split(identity))


def test_importance_formulas_on_known_matrices():
    # A permutation matrix: every latent codes one factor.
    assert disentanglement_per_code(np.eye(3)) == pytest.approx([1, 1, 1], abs=1e-9)
    assert completeness_per_factor(np.eye(3)) == pytest.approx([1, 1, 1], abs=1e-9)
    # One latent spread evenly over two factors: D = 0 for it; each factor is complete.
    importance = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert disentanglement_per_code(importance)[0] == pytest.approx(0, abs=1e-9)
    assert completeness_per_factor(importance) == pytest.approx([1, 1], abs=1e-9)


def test_copied_factors_score_one(copied):
    assert copied["disentanglement"] > 0.95
    assert copied["completeness"] > 0.95
    assert copied["informativeness_train"] == 1.0
    assert copied["informativeness_test"] == 1.0
    importance = np.array(copied["importance"])
    assert importance.shape == (2, 2)
    np.testing.assert_allclose(importance.sum(axis=0), 1.0)
    assert copied["booster"] == "histogram"


def test_exact_booster_agrees_on_copied_factors(copied):
    exact = dci(*split(identity), booster="exact")
    assert exact["booster"] == "exact"
    for key in ("disentanglement", "completeness", "informativeness_test"):
        assert exact[key] == pytest.approx(copied[key], abs=0.03), key


def test_independent_code_is_at_chance():
    result = dci(*split(lambda v, rng: rng.normal(size=(len(v), 3))))
    # Chance: the mean frequency of each factor's most common class, about (1/2 + 1/3) / 2.
    test = factors(NUM_TEST, 1)
    chance = np.mean([np.bincount(test[:, k]).max() / NUM_TEST for k in range(2)])
    assert abs(result["informativeness_test"] - chance) < 0.12
    assert result["informativeness_train"] > result["informativeness_test"]  # overfits noise
    assert result["disentanglement"] < 0.2 and result["completeness"] < 0.2


def test_latent_mixing_two_factors_is_not_disentangled():
    def mixed(v, rng):  # latent 0 holds both factors (a unique number per pair), latent 1 noise
        return np.stack([v[:, 0] * 3 + v[:, 1] + 0.01 * rng.normal(size=len(v)),
                         rng.normal(size=len(v))], axis=1)

    result = dci(*split(mixed))
    assert result["disentanglement"] < 0.15   # the informative latent serves two factors
    assert result["completeness"] > 0.8       # each factor is read from one latent
    assert result["informativeness_test"] == 1.0


def test_duplicated_and_constant_latents(copied):
    duplicated = dci(*split(lambda v, rng: identity(v, rng)[:, [0, 0, 1]]))
    assert duplicated["disentanglement"] > 0.95  # every latent still codes one factor
    assert duplicated["informativeness_test"] == 1.0
    constant = dci(*split(lambda v, rng: np.concatenate(
        [identity(v, rng), np.full((len(v), 2), 0.5)], axis=1)))
    importance = np.array(constant["importance"])
    np.testing.assert_array_equal(importance[2:], 0.0)  # never split on
    np.testing.assert_allclose(importance[:2], copied["importance"], atol=1e-12)
    for key in ("disentanglement", "completeness", "informativeness_test"):
        # equal but for the 1e-11 that every importance gets before the entropies
        assert constant[key] == pytest.approx(copied[key], abs=1e-6), key


def test_invariant_to_permuting_and_scaling_latents():
    train_codes, train_factors, test_codes, test_factors = split(
        lambda v, rng: np.concatenate([identity(v, rng), rng.normal(size=(len(v), 1))], 1))
    reference = dci(train_codes, train_factors, test_codes, test_factors)
    order, scale = [2, 0, 1], np.array([3.0, 0.5, 10.0])
    moved = dci(train_codes[:, order] * scale, train_factors, test_codes[:, order] * scale,
                test_factors)
    for key in ("disentanglement", "completeness", "informativeness_test"):
        assert moved[key] == pytest.approx(reference[key], abs=1e-9), key
    np.testing.assert_allclose(np.array(moved["importance"]),
                               np.array(reference["importance"])[order], atol=1e-9)


def test_seeds_reproduce_exactly(copied):
    again = dci(*split(identity), seed=0)
    assert again == copied


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0][:, 0], *a[1:]), r"train_codes must be a 2-D array"),
    (lambda a: (np.where(np.arange(a[0].size).reshape(a[0].shape) == 5, np.nan, a[0]),
                *a[1:]), r"train_codes contains NaN or inf values \(1 of"),
    (lambda a: (a[0], a[1][:-1], *a[2:]), r"train_factors has 239 rows but the code has 240"),
    (lambda a: (a[0], a[1].astype(float), *a[2:]), r"must hold integer class labels"),
    (lambda a: (a[0], np.stack([a[1][:, 0], np.zeros_like(a[1][:, 1])], 1), *a[2:]),
     r"factor 1 takes a single value in the training sample"),
    (lambda a: (a[0][:1], a[1][:1], *a[2:]), r"too few training samples: 1 \(at least 2\)"),
    (lambda a: (a[0][:, :1], a[1], a[2][:, :1], a[3]), r"DCI needs at least 2 latents"),
    (lambda a: (a[0], a[1][:, :1], a[2], a[3][:, :1]), r"DCI needs at least 2 factors"),
    (lambda a: (a[0], a[1], a[2][:, :1], a[3]), r"train_codes has 2 latents but test_codes has 1"),
])
def test_errors_are_one_line(change, message):
    arguments = change(split(identity))
    with pytest.raises(ValueError, match=message) as error:
        dci(*arguments)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown booster 'lasso'; choose from histogram, exact"):
        dci(*split(identity), booster="lasso")
