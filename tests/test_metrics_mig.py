"""Tests of the MIG estimators: behaviour on synthetic ground truth, brute-force pieces, errors."""

import math

import numpy as np
import pytest

from tcvae_tf.metrics import mig_histogram, mig_sampling
from tcvae_tf.metrics.mig import _full_factorial_rows, _stratified_rows
from tcvae_tf.metrics.utils import discrete_mutual_information, histogram_discretize

SIZES = (4, 5, 6)


def factor_grid(sizes):
    """All combinations of factor classes in row-major order, int64 [prod(sizes), K]."""
    grids = np.meshgrid(*[np.arange(size) for size in sizes], indexing="ij")
    return np.stack(grids, axis=-1).reshape(-1, len(sizes)).astype(np.int64)


def standardized(classes):
    return (classes - classes.mean(axis=0)) / classes.std(axis=0)


@pytest.fixture(scope="module")
def classes():
    return factor_grid(SIZES)


def identity_posteriors(classes, noise=1e-3, scale=0.05, seed=0):
    rng = np.random.default_rng(seed)
    loc = standardized(classes) + noise * rng.standard_normal(classes.shape)
    return loc, np.full(loc.shape, math.log(scale))


# --------------------------------------------------------------------------- sampling


def test_sampling_identity_code_has_high_mig(classes):
    loc, log_scale = identity_posteriors(classes)
    result = mig_sampling(loc, log_scale, classes, num_samples=2000)
    assert result["mig"] > 0.9
    assert result["estimator"] == "sampling"
    assert result["factors"] == [0, 1, 2]
    assert np.array(result["mutual_information"]).shape == (3, 3)


def test_sampling_mutual_information_approaches_factor_entropy(classes):
    # Each latent a noisy copy of one factor with a tiny posterior scale: I(z_k; v_k) is
    # log |V_k| and the other latents carry no information about v_k.
    loc, log_scale = identity_posteriors(classes, noise=1e-4, scale=1e-3, seed=1)
    result = mig_sampling(loc, log_scale, classes, num_samples=2000, seed=3)
    mutual_information = np.array(result["mutual_information"])
    np.testing.assert_allclose(np.diag(mutual_information), np.log(SIZES), atol=0.02)
    assert np.all(mutual_information[~np.eye(3, dtype=bool)] < 0.02)
    np.testing.assert_allclose(result["factor_entropy"], np.log(SIZES))


def test_sampling_constant_code_gives_zero(classes):
    loc = np.zeros((len(classes), 4))
    # All posteriors equal: every conditional mixture is the full mixture. The estimate is
    # not exactly 0 because a value's samples number 166 or 167 of 1000 and H(z | v_k)
    # weights the values equally.
    result = mig_sampling(loc, np.zeros_like(loc), classes, num_samples=1000)
    assert abs(result["mig"]) < 1e-3
    assert np.max(result["mutual_information"]) < 1e-3


def test_sampling_entropy_of_identical_posteriors_matches_closed_form(classes):
    # All posteriors N(0.3, 0.5^2): H(z_j) = 0.5 * log(2 pi e 0.25), Monte-Carlo mean.
    loc = np.full((len(classes), 2), 0.3)
    log_scale = np.full_like(loc, math.log(0.5))
    result = mig_sampling(loc, log_scale, classes, num_samples=4000, seed=5)
    expected = 0.5 * math.log(2 * math.pi * math.e * 0.25)
    np.testing.assert_allclose(result["entropy_z"], expected, atol=0.05)


def test_sampling_duplicated_latent_closes_the_gap(classes):
    # Two latents copy factor 0; nothing else informative: the gap of factor 0 vanishes.
    rng = np.random.default_rng(2)
    copy = standardized(classes)[:, :1]
    loc = np.concatenate([copy, copy, 0.01 * rng.standard_normal((len(classes), 1))], axis=1)
    log_scale = np.full(loc.shape, math.log(0.05))
    result = mig_sampling(loc, log_scale, classes, num_samples=2000, factors=[0])
    mutual_information = np.array(result["mutual_information"])[0]
    assert mutual_information[0] > 0.9 * math.log(SIZES[0])
    assert mutual_information[1] > 0.9 * math.log(SIZES[0])
    assert abs(result["normalized_gap"][0]) < 0.05
    assert abs(result["mig"]) < 0.05


def test_sampling_latent_permutation_leaves_mig_unchanged(classes):
    loc, log_scale = identity_posteriors(classes, noise=0.05, scale=0.3)
    permutation = [2, 0, 1]
    first = mig_sampling(loc, log_scale, classes, num_samples=2000)
    second = mig_sampling(loc[:, permutation], log_scale[:, permutation], classes,
                          num_samples=2000)
    assert abs(first["mig"] - second["mig"]) < 0.02
    np.testing.assert_allclose(np.array(second["mutual_information"]),
                               np.array(first["mutual_information"])[:, permutation], atol=0.06)


def test_sampling_row_order_does_not_matter(classes):
    # The same seed picks the same images through the factor grid, whatever the row order.
    loc, log_scale = identity_posteriors(classes, noise=0.05, scale=0.3)
    order = np.random.default_rng(4).permutation(len(classes))
    first = mig_sampling(loc, log_scale, classes, num_samples=500)
    second = mig_sampling(loc[order], log_scale[order], classes[order], num_samples=500)
    np.testing.assert_allclose(second["mutual_information"], first["mutual_information"],
                               atol=1e-5)


def test_sampling_factor_selection_names_and_single_valued_factor(classes):
    loc, log_scale = identity_posteriors(classes)
    with_color = np.concatenate([np.zeros((len(classes), 1), np.int64), classes], axis=1)
    names = ["color", "a", "b", "c"]
    result = mig_sampling(loc, log_scale, with_color, num_samples=500, factor_names=names)
    assert result["factors"] == [1, 2, 3]
    assert result["factor_names"] == ["a", "b", "c"]
    assert len(result["notes"]) == 1 and "color" in result["notes"][0]
    reference = mig_sampling(loc, log_scale, classes, num_samples=500)
    assert result["mig"] == pytest.approx(reference["mig"], abs=1e-9)

    selected = mig_sampling(loc, log_scale, with_color, num_samples=500, factors=[2, 3],
                            factor_names=names)
    assert selected["factors"] == [2, 3]
    assert selected["factor_names"] == ["b", "c"]
    assert len(selected["normalized_gap"]) == 2


def test_sampling_raises_num_samples_to_largest_factor_and_reports_progress(classes):
    loc, log_scale = identity_posteriors(classes)
    calls = []
    result = mig_sampling(loc, log_scale, classes, num_samples=3,
                          progress=lambda done, total: calls.append((done, total)))
    assert result["num_samples"] == max(SIZES)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert calls[-1][0] == calls[-1][1]
    # H(z): 6 samples x 120 images; H(z|v_k): |V_k| groups of (6/|V_k| samples x 120/|V_k|).
    expected = 6 * 120 + sum(6 * 120 // size for size in SIZES)
    assert calls[-1][1] == expected


def test_stratified_rows_balance_every_factor(classes):
    rows_of = _full_factorial_rows(classes, SIZES)
    sample_codes, rows = _stratified_rows(rows_of, SIZES, 61, np.random.default_rng(0))
    np.testing.assert_array_equal(classes[rows], sample_codes)
    for k, size in enumerate(SIZES):
        counts = np.bincount(sample_codes[:, k], minlength=size)
        assert counts.max() - counts.min() <= 1


def test_sampling_rejects_bad_inputs(classes):
    loc, log_scale = identity_posteriors(classes)
    with pytest.raises(ValueError, match="not a full factorial"):
        mig_sampling(loc[1:], log_scale[1:], classes[1:], num_samples=10)
    duplicated = classes.copy()
    duplicated[0] = duplicated[1]
    with pytest.raises(ValueError, match="not a full factorial"):
        mig_sampling(loc, log_scale, duplicated, num_samples=10)
    with pytest.raises(ValueError, match="rows"):
        mig_sampling(loc, log_scale, classes[:-1], num_samples=10)
    with pytest.raises(ValueError, match="same shape"):
        mig_sampling(loc, log_scale[:, :2], classes, num_samples=10)
    bad = loc.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="loc contains NaN"):
        mig_sampling(bad, log_scale, classes, num_samples=10)
    with pytest.raises(ValueError, match="log_scale contains NaN"):
        mig_sampling(loc, np.where(bad == bad, log_scale, np.inf), classes, num_samples=10)
    with pytest.raises(ValueError, match="integer"):
        mig_sampling(loc, log_scale, classes.astype(float), num_samples=10)
    with pytest.raises(ValueError, match="out of range"):
        mig_sampling(loc, log_scale, classes, num_samples=10, factors=[3])
    with pytest.raises(ValueError, match="factor_names"):
        mig_sampling(loc, log_scale, classes, num_samples=10, factor_names=["a"])
    with pytest.raises(ValueError, match="num_samples"):
        mig_sampling(loc, log_scale, classes, num_samples=0)


# --------------------------------------------------------------------------- histogram


def test_histogram_identity_code_has_high_mig(classes):
    codes, _ = identity_posteriors(classes, noise=0.01)
    result = mig_histogram(codes, classes)
    assert result["mig"] > 0.9
    assert result["estimator"] == "histogram"
    assert result["num_bins"] == 20
    np.testing.assert_allclose(result["factor_entropy"], np.log(SIZES))


def test_histogram_constant_code_gives_zero(classes):
    result = mig_histogram(np.ones((len(classes), 3)), classes)
    assert result["mig"] == 0.0


def test_histogram_duplicated_latent_gives_zero(classes):
    codes = standardized(classes)
    duplicated = np.concatenate([codes[:, :1], codes[:, :1]], axis=1)
    result = mig_histogram(duplicated, classes, factors=[0])
    assert result["mutual_information"][0][0] == pytest.approx(math.log(SIZES[0]))
    assert abs(result["mig"]) < 1e-12


def test_histogram_latent_permutation_leaves_mig_unchanged(classes):
    codes = np.random.default_rng(1).standard_normal((len(classes), 4)) + np.pad(
        standardized(classes), ((0, 0), (0, 1)))
    permutation = [3, 1, 0, 2]
    first = mig_histogram(codes, classes)
    second = mig_histogram(codes[:, permutation], classes)
    assert second["mig"] == pytest.approx(first["mig"], abs=1e-12)


def test_histogram_subset_is_seeded_and_sized():
    classes = factor_grid((3, 6, 8, 8))
    codes = np.random.default_rng(0).standard_normal((len(classes), 3))
    first = mig_histogram(codes, classes, num_samples=500, seed=7)
    again = mig_histogram(codes, classes, num_samples=500, seed=7)
    other = mig_histogram(codes, classes, num_samples=500, seed=8)
    assert first["num_samples"] == 500
    assert first["mig"] == again["mig"]
    assert first["mig"] != other["mig"]
    assert mig_histogram(codes, classes, num_samples=10**6)["num_samples"] == len(classes)


def test_discrete_mutual_information_matches_brute_force():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 300)
    b = (a + rng.integers(0, 3, 300)) % 5 + 10  # dependent, labels not starting at 0
    expected = 0.0
    for value_a in np.unique(a):
        for value_b in np.unique(b):
            p_ab = np.mean((a == value_a) & (b == value_b))
            if p_ab > 0:
                expected += p_ab * math.log(p_ab / (np.mean(a == value_a) * np.mean(b == value_b)))
    assert discrete_mutual_information(a, b) == pytest.approx(expected, rel=1e-12)
    counts = np.bincount(a) / len(a)
    entropy = -np.sum(counts * np.log(counts))
    assert discrete_mutual_information(a, a) == pytest.approx(entropy, rel=1e-12)


def test_histogram_discretize_uses_equal_width_bins():
    codes = np.array([[0.0, 5.0], [0.49, 5.0], [0.5, 5.0], [1.0, 5.0], [0.999, 5.0]])
    discretized = histogram_discretize(codes, num_bins=2)
    np.testing.assert_array_equal(discretized[:, 0], [1, 1, 2, 2, 2])
    assert len(np.unique(discretized[:, 1])) == 1
    wide = histogram_discretize(np.linspace(-3, 7, 1000)[:, None], num_bins=20)
    np.testing.assert_array_equal(np.bincount(wide[:, 0])[1:], np.full(20, 50))


def test_histogram_rejects_bad_inputs(classes):
    codes = standardized(classes)
    with pytest.raises(ValueError, match="rows"):
        mig_histogram(codes[:-1], classes)
    bad = codes.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="codes contains NaN"):
        mig_histogram(bad, classes)
    with pytest.raises(ValueError, match="num_bins"):
        mig_histogram(codes, classes, num_bins=0)
    with pytest.raises(ValueError, match="single value|more than one value"):
        mig_histogram(codes, np.zeros((len(codes), 1), np.int64))
