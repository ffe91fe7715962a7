"""Tests of tcvae_tf.distributions: TFP builders against closed forms, shapes, errors."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tcvae_tf import distributions


def closed_form_log_density(x, loc, log_scale, family):
    """Elementwise numpy closed forms, float64."""
    scale = np.exp(log_scale)
    if family == "normal":
        return -0.5 * ((x - loc) / scale) ** 2 - log_scale - 0.5 * math.log(2.0 * math.pi)
    return -np.abs(x - loc) / scale - log_scale - math.log(2.0)


def random_posterior_inputs(seed, batch_size=6, latent_dim=4):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(batch_size, latent_dim))
    log_scale = rng.uniform(-2.0, 1.0, size=(batch_size, latent_dim))
    x = rng.normal(scale=2.0, size=(batch_size, latent_dim))
    return x, loc, log_scale


@pytest.mark.parametrize("family", distributions.POSTERIORS)
def test_posterior_log_prob_equals_closed_form(family):
    x, loc, log_scale = random_posterior_inputs(0)
    posterior = distributions.posterior(loc, log_scale, family)
    assert posterior.event_shape == [4] and posterior.batch_shape == [6]
    expected = closed_form_log_density(x, loc, log_scale, family).sum(axis=1)
    np.testing.assert_allclose(posterior.log_prob(x).numpy(), expected, rtol=1e-12)
    assert posterior.sample(seed=1).shape == (6, 4)


@pytest.mark.parametrize("family", distributions.POSTERIORS)
@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_log_density_equals_closed_form_and_tfp(family, dtype, tolerance):
    x, loc, log_scale = (t.astype(dtype) for t in random_posterior_inputs(1))
    # Broadcast as the objective does: [M, 1, D] against [1, M, D].
    result = distributions.log_density(x[:, None], loc[None], log_scale[None], family)
    assert result.shape == (6, 6, 4) and result.dtype == tf.as_dtype(dtype)
    expected = closed_form_log_density(
        x[:, None].astype(np.float64), loc[None], log_scale[None].astype(np.float64), family
    )
    np.testing.assert_allclose(result.numpy(), expected, rtol=tolerance, atol=tolerance)
    base = distributions.posterior(loc, log_scale, family).distribution  # elementwise
    np.testing.assert_allclose(
        distributions.log_density(x, loc, log_scale, family).numpy(),
        base.log_prob(x).numpy(),
        rtol=tolerance,
        atol=tolerance,
    )


@pytest.mark.parametrize("family", distributions.PRIORS)
def test_prior_has_the_given_dimension_and_closed_form(family):
    prior = distributions.prior(7, family, dtype=tf.float64)
    assert prior.event_shape == [7] and prior.batch_shape == [] and prior.dtype == tf.float64
    x = np.random.default_rng(2).normal(size=(3, 7))
    expected = closed_form_log_density(x, 0.0, 0.0, family).sum(axis=1)
    np.testing.assert_allclose(prior.log_prob(x).numpy(), expected, rtol=1e-12)
    assert distributions.prior(10).sample(5, seed=3).shape == (5, 10)


def test_bernoulli_likelihood_event_shape_and_log_prob():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    images = (rng.random((2, 5, 6, 3)) < 0.5).astype(np.float32)
    likelihood = distributions.likelihood(logits)
    assert likelihood.event_shape == [5, 6, 3] and likelihood.batch_shape == [2]
    # log p(x|z) = sum_hwc x * logits - softplus(logits)
    expected = np.sum(images * logits - np.logaddexp(0.0, logits), axis=(1, 2, 3))
    np.testing.assert_allclose(likelihood.log_prob(images).numpy(), expected, rtol=1e-5)
    assert likelihood.sample(seed=5).dtype == tf.float32


@pytest.mark.parametrize("scale", [distributions.DEFAULT_GAUSSIAN_SCALE, 0.5])
def test_gaussian_likelihood_uses_sigmoid_mean_and_fixed_scale(scale):
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(3, 4, 4, 1))
    images = rng.random((3, 4, 4, 1))
    likelihood = distributions.likelihood(logits, "gaussian", scale=scale)
    assert likelihood.event_shape == [4, 4, 1] and likelihood.batch_shape == [3]
    mean = 1.0 / (1.0 + np.exp(-logits))
    expected = closed_form_log_density(images, mean, math.log(scale), "normal").sum(axis=(1, 2, 3))
    np.testing.assert_allclose(likelihood.log_prob(images).numpy(), expected, rtol=1e-12)


def test_default_gaussian_scale_is_documented_value():
    assert distributions.DEFAULT_GAUSSIAN_SCALE == 0.1


def test_unknown_families_and_bad_shapes_raise():
    zeros = tf.zeros([2, 3])
    with pytest.raises(ValueError, match="unknown posterior family 'gamma'; expected one of: "
                       "normal, laplace"):
        distributions.posterior(zeros, zeros, "gamma")
    with pytest.raises(ValueError, match="unknown prior family 'cauchy'; expected one of: "
                       "normal, laplace"):
        distributions.prior(3, "cauchy")
    with pytest.raises(ValueError, match="unknown likelihood family 'poisson'; expected one of: "
                       "bernoulli, gaussian"):
        distributions.likelihood(tf.zeros([1, 2, 2, 1]), "poisson")
    with pytest.raises(ValueError, match="unknown density family"):
        distributions.log_density(zeros, zeros, zeros, "uniform")
    with pytest.raises(ValueError, match=r"likelihood logits must have shape \[..., H, W, C\]"):
        distributions.likelihood(tf.zeros([4, 64]))
    with pytest.raises(ValueError, match="positive float"):
        distributions.likelihood(tf.zeros([1, 2, 2, 1]), "gaussian", scale=0.0)
    with pytest.raises(ValueError, match="latent_dim must be a positive int"):
        distributions.prior(0)
    with pytest.raises(ValueError, match="at least one axis"):
        distributions.posterior(0.0, 0.0)
