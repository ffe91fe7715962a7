"""Tests of the aggregate-posterior kernel, the ELBO decomposition and active units."""

import math

import numpy as np
import pytest

from tcvae_tf.metrics import active_units, elbo_decomposition
from tcvae_tf.metrics.elbo_decomposition import analytic_kl, log_mixture_density


def logsumexp(values, axis):
    peak = values.max(axis=axis, keepdims=True)
    return np.squeeze(np.log(np.exp(values - peak).sum(axis=axis, keepdims=True)) + peak, axis)


def brute_force_mixture(z, loc, log_scale):
    """float64 log q(z) and log q(z_d) of the mixture of N diagonal Normals: ([S], [S, D])."""
    # [S, N, D] indexed by [sample s, component n, dim d].
    standardized = (z[:, None, :] - loc[None]) / np.exp(log_scale[None])
    log_q = -0.5 * standardized**2 - log_scale[None] - 0.5 * math.log(2 * math.pi)
    log_n = math.log(loc.shape[0])
    return logsumexp(log_q.sum(axis=2), axis=1) - log_n, logsumexp(log_q, axis=1) - log_n


@pytest.fixture(scope="module")
def mixture_case():
    rng = np.random.default_rng(0)
    loc = rng.normal(0.0, 2.0, (301, 4))
    log_scale = rng.uniform(-3.0, 1.0, (301, 4))
    rows = rng.integers(0, 301, 45)
    noise = rng.standard_normal((45, 4))
    z = loc[rows] + np.exp(log_scale[rows]) * noise
    own = -0.5 * noise**2 - log_scale[rows] - 0.5 * math.log(2 * math.pi)
    return z, loc, log_scale, own


@pytest.mark.parametrize("use_reference", [True, False])
def test_mixture_kernel_matches_brute_force_across_chunks(mixture_case, use_reference):
    z, loc, log_scale, own = mixture_case
    expected_joint, expected_per_dim = brute_force_mixture(z, loc, log_scale)
    # 45 samples in chunks of at most 16 and 301 components in chunks of at most 100: no
    # chunk size divides its total.
    joint, per_dim = log_mixture_density(
        z, loc, log_scale, reference=own if use_reference else None, joint=True,
        sample_chunk=16, data_chunk=100)
    np.testing.assert_allclose(per_dim, expected_per_dim, rtol=0, atol=2e-5)
    np.testing.assert_allclose(joint, expected_joint, rtol=0, atol=2e-5)
    _, per_dim_only = log_mixture_density(z, loc, log_scale, reference=None, sample_chunk=7,
                                           data_chunk=64)
    np.testing.assert_allclose(per_dim_only, expected_per_dim, rtol=0, atol=2e-5)


@pytest.mark.parametrize("offset", [-300.0, 300.0])
def test_mixture_kernel_recovers_from_a_bad_reference(mixture_case, offset):
    # A reference far above the terms underflows every sum, far below overflows: the kernel
    # falls back to the max-shifted logsumexp.
    z, loc, log_scale, own = mixture_case
    expected_joint, expected_per_dim = brute_force_mixture(z, loc, log_scale)
    joint, per_dim = log_mixture_density(z, loc, log_scale, reference=own + offset, joint=True,
                                          sample_chunk=16, data_chunk=100)
    np.testing.assert_allclose(per_dim, expected_per_dim, rtol=0, atol=2e-5)
    np.testing.assert_allclose(joint, expected_joint, rtol=0, atol=2e-5)


def as_float32(array):
    return np.asarray(array, np.float32).astype(np.float64)


def test_mixture_kernel_handles_very_concentrated_posteriors():
    # Scales from 1e-4 to 1: each sample sits in its own component, far from the others.
    # The kernel computes in float32, so the inputs are float32 values.
    rng = np.random.default_rng(1)
    loc = as_float32(rng.normal(0.0, 3.0, (50, 3)))
    log_scale = as_float32(rng.uniform(math.log(1e-4), 0.0, (50, 3)))
    z = as_float32(loc + np.exp(log_scale) * rng.standard_normal((50, 3)))
    own = -0.5 * ((z - loc) / np.exp(log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
    expected_joint, expected_per_dim = brute_force_mixture(z, loc, log_scale)
    joint, per_dim = log_mixture_density(z, loc, log_scale, reference=own, joint=True)
    np.testing.assert_allclose(per_dim, expected_per_dim, rtol=1e-6, atol=2e-5)
    np.testing.assert_allclose(joint, expected_joint, rtol=1e-6, atol=2e-5)


def test_mixture_kernel_reports_progress(mixture_case):
    z, loc, log_scale, _ = mixture_case
    calls = []
    log_mixture_density(z, loc, log_scale, sample_chunk=16, data_chunk=100,
                         progress=lambda done, total: calls.append((done, total)))
    # 3 sample chunks (16, 16, 13) x 4 data chunks (100, 100, 100, 1).
    sizes = [s * n for s in (16, 16, 13) for n in (100, 100, 100, 1)]
    assert calls == [(done, 45 * 301) for done in np.cumsum(sizes)]


def test_identical_posteriors_have_no_mi_or_tc_and_dwkl_is_the_kl():
    # q(z|x_n) = N(m, s^2) for every n: q(z) = q(z|x), a product over dimensions, so MI and
    # TC vanish exactly and DWKL is a Monte-Carlo estimate of the analytic KL.
    num_images = 200
    loc = np.tile([[0.5, -1.0, 2.0]], (num_images, 1))
    log_scale = np.tile(np.log([[0.5, 1.5, 0.2]]), (num_images, 1))
    result = elbo_decomposition(loc, log_scale, num_samples=4000, seed=1)
    assert abs(result["mutual_information"]) < 1e-5
    assert abs(result["total_correlation"]) < 1e-5
    kl = analytic_kl(loc[:1], log_scale[:1])[0]
    assert result["kl"] == pytest.approx(kl, rel=1e-6)  # from the float32 values
    # Standard deviation of log q(z|x) - log p(z) here is about 2.8: 4000 samples, ~4 sigma.
    assert result["dimensionwise_kl"] == pytest.approx(kl, abs=0.2)


def test_sampled_kl_matches_analytic_kl_and_mi_is_bounded():
    rng = np.random.default_rng(2)
    num_images = 300
    loc = rng.normal(0.0, 1.0, (num_images, 3))
    log_scale = rng.uniform(-2.0, 0.0, (num_images, 3))
    result = elbo_decomposition(loc, log_scale, num_samples=3000, seed=3)
    parts = (result["mutual_information"] + result["total_correlation"]
             + result["dimensionwise_kl"])
    assert result["sampled_kl"] == pytest.approx(parts, abs=1e-12)
    assert result["sampled_kl"] == pytest.approx(result["kl"], abs=0.15)
    assert 0.0 <= result["mutual_information"] <= math.log(num_images)
    assert result["num_samples"] == 3000
    assert result["num_images"] == num_images


def test_separated_concentrated_posteriors_reach_the_bounds():
    # Tiny posteriors at 8 well separated points on the diagonal z_0 = z_1, 8 images each:
    # a sample identifies its point, not its image (MI = log 8), and q(z) has 8 bumps where
    # prod_d q(z_d) has 64 (TC = log 8).
    num_images = 64
    values = np.repeat(np.arange(8) * 3.0, 8)
    loc = np.stack([values, values], axis=1)
    log_scale = np.full(loc.shape, math.log(1e-5))
    result = elbo_decomposition(loc, log_scale, num_samples=2000, seed=4)
    assert result["mutual_information"] == pytest.approx(math.log(8), abs=1e-3)
    assert result["total_correlation"] == pytest.approx(math.log(8), abs=1e-3)
    # Moving each image 100 posterior scales away from the others: MI -> log N, its bound.
    separated = loc + 1e-3 * np.arange(num_images)[:, None]
    result = elbo_decomposition(separated, log_scale, num_samples=2000, seed=4)
    assert result["mutual_information"] == pytest.approx(math.log(num_images), abs=1e-3)
    assert result["mutual_information"] <= math.log(num_images) + 1e-6


def test_log_likelihood_gives_the_elbo():
    rng = np.random.default_rng(5)
    loc = rng.normal(size=(40, 2))
    log_scale = rng.normal(-1.0, 0.1, (40, 2))
    log_likelihood = rng.normal(-50.0, 3.0, 40)
    result = elbo_decomposition(loc, log_scale, log_likelihood=log_likelihood, num_samples=100)
    assert result["log_likelihood"] == pytest.approx(log_likelihood.mean(), rel=1e-12)
    assert result["elbo"] == pytest.approx(log_likelihood.mean() - result["kl"], rel=1e-12)
    assert "elbo" not in elbo_decomposition(loc, log_scale, num_samples=100)


def test_analytic_kl_closed_form():
    loc = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    log_scale = np.array([[0.0, 0.0], [0.0, 0.0], [math.log(2.0), 0.0]])
    np.testing.assert_allclose(analytic_kl(loc, log_scale),
                               [0.0, 0.5, 0.5 * (4.0 - 1.0) - math.log(2.0)], atol=1e-15)


def test_elbo_decomposition_rejects_bad_inputs():
    loc = np.zeros((10, 3))
    with pytest.raises(ValueError, match="same shape"):
        elbo_decomposition(loc, np.zeros((9, 3)))
    with pytest.raises(ValueError, match="2-D"):
        elbo_decomposition(loc[0], loc[0])
    bad = loc.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="loc contains NaN"):
        elbo_decomposition(bad, loc)
    with pytest.raises(ValueError, match="log_likelihood must have shape"):
        elbo_decomposition(loc, loc, log_likelihood=np.zeros(9))
    with pytest.raises(ValueError, match="log_likelihood contains NaN"):
        elbo_decomposition(loc, loc, log_likelihood=np.full(10, np.nan))
    with pytest.raises(ValueError, match="num_samples"):
        elbo_decomposition(loc, loc, num_samples=-1)


def test_active_units_counts_latents_whose_mean_varies():
    rng = np.random.default_rng(6)
    loc = np.stack([rng.normal(0, 1.0, 500), rng.normal(0, 0.05, 500), np.full(500, 3.0),
                    rng.normal(0, 0.2, 500)], axis=1)
    result = active_units(loc)
    np.testing.assert_allclose(result["variances"], loc.var(axis=0), rtol=1e-12)
    assert result["active_units"] == 2
    assert result["threshold"] == 0.01
    assert active_units(loc, threshold=0.001)["active_units"] == 3
    with pytest.raises(ValueError, match="contains NaN"):
        active_units(np.full((3, 2), np.nan))
