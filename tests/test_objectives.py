"""Tests of tcvae_tf.objectives: brute-force formulas, unbiasedness of MSS, identities."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf

from tcvae_tf import distributions, objectives

FAMILY_PAIRS = [
    ("normal", "normal"),
    ("laplace", "laplace"),
    ("normal", "laplace"),
    ("laplace", "normal"),
]


# -- brute force: explicit loops over i, j, d in float64 Python arithmetic ---------------


def brute_log_density(x, loc, log_scale, family):
    scale = math.exp(log_scale)
    if family == "normal":
        return -0.5 * ((x - loc) / scale) ** 2 - log_scale - 0.5 * math.log(2.0 * math.pi)
    return -abs(x - loc) / scale - log_scale - math.log(2.0)


def brute_weight(i, j, batch_size, dataset_size, estimator):
    if estimator == "mws":
        return 1.0 / (dataset_size * batch_size)
    num_others = batch_size - 1
    if i == j:
        return 1.0 / dataset_size
    if j == (i + 1) % batch_size:
        return (dataset_size - num_others) / (dataset_size * num_others)
    return 1.0 / num_others


def brute_logsumexp(values):
    largest = max(values)
    return largest + math.log(sum(math.exp(v - largest) for v in values))


def brute_decomposition(z, loc, log_scale, dataset_size, estimator, posterior, prior):
    batch_size, latent_dim = z.shape
    out = {name: [] for name in ("log_qz_given_x", "log_pz", "log_qz", "log_prod_qzi")}
    for i in range(batch_size):

        def log_q(d, j, i=i):
            return brute_log_density(z[i, d], loc[j, d], log_scale[j, d], posterior)

        def log_w(j, i=i):
            return math.log(brute_weight(i, j, batch_size, dataset_size, estimator))

        out["log_qz_given_x"].append(sum(log_q(d, i) for d in range(latent_dim)))
        out["log_pz"].append(
            sum(brute_log_density(z[i, d], 0.0, 0.0, prior) for d in range(latent_dim))
        )
        out["log_qz"].append(
            brute_logsumexp(
                [sum(log_q(d, j) for d in range(latent_dim)) + log_w(j) for j in range(batch_size)]
            )
        )
        out["log_prod_qzi"].append(
            sum(
                brute_logsumexp([log_q(d, j) + log_w(j) for j in range(batch_size)])
                for d in range(latent_dim)
            )
        )
    out = {name: np.array(values) for name, values in out.items()}
    out["mi"] = out["log_qz_given_x"] - out["log_qz"]
    out["tc"] = out["log_qz"] - out["log_prod_qzi"]
    out["dwkl"] = out["log_prod_qzi"] - out["log_pz"]
    return out


def random_batch(seed, batch_size=5, latent_dim=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(batch_size, latent_dim))
    log_scale = rng.uniform(-1.5, 0.5, size=(batch_size, latent_dim))
    z = loc + np.exp(log_scale) * rng.normal(size=(batch_size, latent_dim))
    return z.astype(dtype), loc.astype(dtype), log_scale.astype(dtype)


def mixture_density(point, locs, log_scales, family="normal"):
    """Exact (1/N) sum_n q(point | x_n) by brute force."""
    total = 0.0
    for loc, log_scale in zip(locs, log_scales, strict=True):
        terms = zip(point, loc, log_scale, strict=True)
        total += math.exp(sum(brute_log_density(p, m, s, family) for p, m, s in terms))
    return total / len(locs)


# -- (a) the implementation equals the formulas ---------------------------------------------


@pytest.mark.parametrize("family", distributions.POSTERIORS)
def test_log_density_matrix_equals_brute_force(family):
    z, loc, log_scale = random_batch(0)
    matrix = objectives.log_density_matrix(z, loc, log_scale, family).numpy()
    assert matrix.shape == (5, 5, 3)
    for i, j, d in itertools.product(range(5), range(5), range(3)):
        expected = brute_log_density(z[i, d], loc[j, d], log_scale[j, d], family)
        assert matrix[i, j, d] == pytest.approx(expected, rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
@pytest.mark.parametrize("batch_size,dataset_size", [(2, 2), (2, 9), (5, 5), (5, 100), (7, 1000)])
def test_log_importance_weights_equal_brute_force(estimator, batch_size, dataset_size):
    log_w = objectives.log_importance_weights(batch_size, dataset_size, estimator, tf.float64)
    assert log_w.shape == (batch_size, batch_size) and log_w.dtype == tf.float64
    for i, j in itertools.product(range(batch_size), repeat=2):
        expected = math.log(brute_weight(i, j, batch_size, dataset_size, estimator))
        assert log_w.numpy()[i, j] == pytest.approx(expected, rel=1e-14, abs=1e-14)


@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
@pytest.mark.parametrize("posterior,prior", FAMILY_PAIRS)
def test_kl_decomposition_equals_brute_force_float64(estimator, posterior, prior):
    z, loc, log_scale = random_batch(1)
    parts = objectives.kl_decomposition(z, loc, log_scale, 100, estimator, posterior, prior)
    expected = brute_decomposition(z, loc, log_scale, 100, estimator, posterior, prior)
    assert set(parts) == set(expected)
    for name, value in parts.items():
        assert value.dtype == tf.float64 and value.shape == (5,)
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
def test_kl_decomposition_float32_follows_float64(estimator):
    z, loc, log_scale = random_batch(2, batch_size=16, latent_dim=4)
    expected = brute_decomposition(z, loc, log_scale, 1000, estimator, "normal", "normal")
    parts = objectives.kl_decomposition(
        *(t.astype(np.float32) for t in (z, loc, log_scale)), 1000, estimator
    )
    for name, value in parts.items():
        assert value.dtype == tf.float32
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-5, atol=2e-5)


# -- (b) MSS weights: rows sum to one, 1/N on the diagonal, unbiased for q(z) --------------


def test_mss_row_sum_is_one_algebraically():
    # 1/N + (N - K) / (N K) + (K - 1) / K = 1 in exact rational arithmetic.
    for num_images in range(2, 60):
        for num_others in range(1, num_images):
            total = (
                Fraction(1, num_images)
                + Fraction(num_images - num_others, num_images * num_others)
                + Fraction(num_others - 1, num_others)
            )
            assert total == 1


@pytest.mark.parametrize(
    "batch_size,dataset_size", [(2, 2), (2, 50), (3, 3), (6, 10), (64, 737280)]
)
def test_mss_rows_sum_to_one_and_diagonal_holds_one_over_n(batch_size, dataset_size):
    weights = tf.exp(
        objectives.log_importance_weights(batch_size, dataset_size, "mss", tf.float64)
    ).numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-13)
    np.testing.assert_allclose(np.diag(weights), 1.0 / dataset_size, rtol=1e-13)
    if batch_size >= 3:
        # The 1/N weights sit on the diagonal, not in a column.
        assert not np.allclose(weights[:, 0], 1.0 / dataset_size)


def test_mws_rows_sum_to_one_over_n():
    weights = tf.exp(objectives.log_importance_weights(6, 40, "mws", tf.float64)).numpy()
    np.testing.assert_allclose(weights, 1.0 / (40 * 6), rtol=1e-14)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0 / 40, rtol=1e-14)


def tiny_dataset(seed, num_images, latent_dim):
    """Gaussian posteriors of a tiny dataset and one fixed point z_n ~ q(z|x_n) per image."""
    rng = np.random.default_rng(seed)
    locs = rng.normal(scale=1.5, size=(num_images, latent_dim))
    log_scales = rng.uniform(-0.7, 0.3, size=(num_images, latent_dim))
    points = locs + np.exp(log_scales) * rng.normal(size=(num_images, latent_dim))
    # densities[p, n] = q(points[p] | x_n)
    densities = np.array(
        [
            [
                math.exp(
                    sum(
                        brute_log_density(points[p, d], locs[n, d], log_scales[n, d], "normal")
                        for d in range(latent_dim)
                    )
                )
                for n in range(num_images)
            ]
            for p in range(num_images)
        ]
    )
    return locs, log_scales, points, densities


def expected_row_estimates(weights, densities):
    """Exact mean of sum_j w_ij q(z_n|x_(b_j)) over all ordered batches b with b_i = n."""
    num_images, batch_size = densities.shape[0], weights.shape[0]
    totals, counts = np.zeros(num_images), np.zeros(num_images)
    for batch in itertools.permutations(range(num_images), batch_size):
        for i, image in enumerate(batch):
            totals[image] += sum(weights[i, j] * densities[image, n] for j, n in enumerate(batch))
            counts[image] += 1
    return totals / counts


def test_mss_is_exactly_unbiased_over_all_ordered_batches():
    # Every ordered batch of M distinct images: x_i at position i plus a uniform draw of
    # M - 1 others in random order. kl_decomposition's exp(log q(z_i)) averages to the mixture.
    num_images, batch_size, latent_dim = 6, 3, 2
    locs, log_scales, points, densities = tiny_dataset(3, num_images, latent_dim)
    exact = densities.mean(axis=1)  # (1/N) sum_n q(z_p | x_n)

    @tf.function
    def log_qz_and_marginal(z, loc, log_scale):
        joint = objectives.kl_decomposition(z, loc, log_scale, num_images, "mss")["log_qz"]
        first_dim = objectives.kl_decomposition(
            z[:, :1], loc[:, :1], log_scale[:, :1], num_images, "mss"
        )["log_prod_qzi"]
        return joint, first_dim

    totals, marginal_totals = np.zeros(num_images), np.zeros(num_images)
    counts = np.zeros(num_images)
    for batch in itertools.permutations(range(num_images), batch_size):
        batch = list(batch)
        log_qz, log_q_first = log_qz_and_marginal(points[batch], locs[batch], log_scales[batch])
        for i, image in enumerate(batch):
            totals[image] += math.exp(log_qz.numpy()[i])
            marginal_totals[image] += math.exp(log_q_first.numpy()[i])
            counts[image] += 1
    np.testing.assert_allclose(totals / counts, exact, rtol=1e-12)

    exact_first = [
        mixture_density(points[p, :1], locs[:, :1], log_scales[:, :1]) for p in range(num_images)
    ]
    np.testing.assert_allclose(marginal_totals / counts, exact_first, rtol=1e-12)


def test_enumeration_detects_a_column_of_one_over_n():
    # The same exact check flags the stride bug: 1/N in column 0 instead of on the diagonal.
    num_images, batch_size = 6, 3
    _, _, _, densities = tiny_dataset(3, num_images, 2)
    weights = tf.exp(objectives.log_importance_weights(batch_size, num_images, "mss", tf.float64))
    weights = weights.numpy()
    np.testing.assert_allclose(
        expected_row_estimates(weights, densities), densities.mean(axis=1), rtol=1e-12
    )
    # Each row rotated so that its 1/N lands in column 0 (rows still sum to 1).
    column_weights = np.stack([np.roll(weights[i], -i) for i in range(batch_size)])
    np.testing.assert_allclose(column_weights[:, 0], 1.0 / num_images)
    biased = expected_row_estimates(column_weights, densities)
    assert np.max(np.abs(biased / densities.mean(axis=1) - 1.0)) > 0.05


def test_mss_is_unbiased_monte_carlo():
    # N = 8 Gaussian posteriors in 2-D, M = 4. Each batch holds x_n at a random position i
    # plus K = 3 of the other 7 images drawn uniformly without replacement, in random order.
    num_images, batch_size, num_batches = 8, 4, 20000
    num_others = batch_size - 1
    _, _, _, densities = tiny_dataset(4, num_images, 2)
    weights = tf.exp(objectives.log_importance_weights(batch_size, num_images, "mss", tf.float64))
    weights = weights.numpy()
    rng = np.random.default_rng(5)
    for image in range(num_images):
        others = np.array([n for n in range(num_images) if n != image])
        shuffled = np.argsort(rng.random((num_batches, num_images - 1)), axis=1)
        drawn = others[shuffled[:, :num_others]]  # [batch t, K], without replacement
        in_order = np.concatenate([np.full((num_batches, 1), image), drawn], axis=1)
        position = rng.integers(batch_size, size=num_batches)  # where x_n sits
        columns = (np.arange(batch_size)[None, :] - position[:, None]) % batch_size
        batches = np.take_along_axis(in_order, columns, axis=1)  # batches[t, position[t]] = image
        assert np.all(batches[np.arange(num_batches), position] == image)
        estimates = np.sum(weights[position] * densities[image][batches], axis=1)
        exact = densities[image].mean()
        standard_error = estimates.std() / math.sqrt(num_batches)
        assert abs(estimates.mean() - exact) < 4.0 * standard_error
        assert estimates.mean() == pytest.approx(exact, rel=0.03)


def test_mws_is_biased_even_with_the_whole_dataset_as_batch():
    # MWS rows sum to 1/N: with the batch equal to the dataset it returns log q(z) - log N.
    num_images = 8
    locs, log_scales, points, densities = tiny_dataset(6, num_images, 2)
    log_qz = objectives.kl_decomposition(points, locs, log_scales, num_images, "mws")["log_qz"]
    log_exact = np.log(densities.mean(axis=1))
    np.testing.assert_allclose(log_qz.numpy(), log_exact - math.log(num_images), rtol=1e-12)
    assert np.all(np.abs(log_qz.numpy() - log_exact) > 2.0)


# -- (c) MI + TC + DWKL = log q(z|x) - log p(z) ----------------------------------------------


@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
@pytest.mark.parametrize("posterior,prior", FAMILY_PAIRS)
def test_parts_sum_to_sampled_kl(estimator, posterior, prior):
    z, loc, log_scale = random_batch(7, batch_size=64, latent_dim=10, dtype=np.float32)
    parts = objectives.kl_decomposition(z, loc, log_scale, 50000, estimator, posterior, prior)
    total = parts["mi"] + parts["tc"] + parts["dwkl"]
    kl = objectives.sampled_kl(z, loc, log_scale, posterior, prior)
    np.testing.assert_allclose(total.numpy(), kl.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        total.numpy(), (parts["log_qz_given_x"] - parts["log_pz"]).numpy(), rtol=1e-5, atol=1e-5
    )


# -- (d) concentrated, well separated posteriors --------------------------------------------


def concentrated_batch(batch_size, latent_dim=3, dtype=np.float64):
    rng = np.random.default_rng(8)
    loc = 10.0 * np.arange(batch_size)[:, None] + rng.normal(size=(batch_size, latent_dim))
    log_scale = np.full((batch_size, latent_dim), math.log(1e-3))
    z = loc + np.exp(log_scale) * rng.normal(size=(batch_size, latent_dim))
    return z.astype(dtype), loc.astype(dtype), log_scale.astype(dtype)


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-9), (np.float32, 1e-4)])
def test_concentrated_posteriors_mss_tends_to_log_q_given_x_minus_log_n(dtype, tolerance):
    dataset_size, latent_dim = 100, 3
    z, loc, log_scale = concentrated_batch(5, latent_dim, dtype)
    parts = objectives.kl_decomposition(z, loc, log_scale, dataset_size, "mss")
    log_qz_given_x = parts["log_qz_given_x"].numpy()
    expected = log_qz_given_x - math.log(dataset_size)
    np.testing.assert_allclose(parts["log_qz"].numpy(), expected, atol=tolerance)
    # Each marginal is the same limit per dimension: log prod_d q(z_id) -> log q(z|x) - D log N.
    np.testing.assert_allclose(
        parts["log_prod_qzi"].numpy(),
        log_qz_given_x - latent_dim * math.log(dataset_size),
        atol=tolerance,
    )


def test_concentrated_posteriors_mws_tends_to_log_q_given_x_minus_log_n_m():
    # MWS's weights sum to 1/N per row, so its limit is lower by log M; at M = 1 it is -log N.
    dataset_size = 100
    for batch_size in (1, 5):
        z, loc, log_scale = concentrated_batch(batch_size)
        parts = objectives.kl_decomposition(z, loc, log_scale, dataset_size, "mws")
        expected = parts["log_qz_given_x"].numpy() - math.log(dataset_size * batch_size)
        np.testing.assert_allclose(parts["log_qz"].numpy(), expected, atol=1e-9)


# -- KL terms ----------------------------------------------------------------------------------


def test_analytic_kl_equals_tfp():
    _, loc, log_scale = random_batch(9, batch_size=6, latent_dim=4)
    posterior = distributions.posterior(loc, log_scale)
    prior = distributions.prior(4, dtype=tf.float64)
    expected = distributions.tfd.kl_divergence(posterior, prior)
    np.testing.assert_allclose(
        objectives.analytic_kl(loc, log_scale).numpy(), expected.numpy(), rtol=1e-12
    )


def test_sampled_kl_mean_approaches_analytic_kl():
    _, loc, log_scale = random_batch(10, batch_size=3, latent_dim=4)
    num_samples = 20000
    rng = np.random.default_rng(11)
    loc_tiled = np.tile(loc, (num_samples, 1))
    log_scale_tiled = np.tile(log_scale, (num_samples, 1))
    z = loc_tiled + np.exp(log_scale_tiled) * rng.normal(size=loc_tiled.shape)
    samples = objectives.sampled_kl(z, loc_tiled, log_scale_tiled).numpy().reshape(num_samples, 3)
    analytic = objectives.analytic_kl(loc, log_scale).numpy()
    standard_error = samples.std(axis=0) / math.sqrt(num_samples)
    assert np.all(np.abs(samples.mean(axis=0) - analytic) < 4.0 * standard_error)
    np.testing.assert_allclose(samples.mean(axis=0), analytic, rtol=0.05)


# -- gradients, tf.function --------------------------------------------------------------------


@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
@pytest.mark.parametrize("posterior,prior", FAMILY_PAIRS[:2])
@pytest.mark.parametrize("concentrated", [False, True])
def test_gradients_are_finite(estimator, posterior, prior, concentrated):
    if concentrated:
        z0, loc0, log_scale0 = concentrated_batch(8, 4, np.float32)
    else:
        z0, loc0, log_scale0 = random_batch(12, batch_size=8, latent_dim=4, dtype=np.float32)
    z, loc, log_scale = tf.Variable(z0), tf.Variable(loc0), tf.Variable(log_scale0)
    with tf.GradientTape() as tape:
        parts = objectives.kl_decomposition(z, loc, log_scale, 1000, estimator, posterior, prior)
        loss = tf.reduce_mean(parts["mi"] + 6.0 * parts["tc"] + parts["dwkl"])
    gradients = tape.gradient(loss, [z, loc, log_scale])
    for gradient in gradients:
        assert gradient is not None
        assert np.all(np.isfinite(gradient.numpy()))
    assert any(np.any(gradient.numpy() != 0.0) for gradient in gradients)


def test_kl_decomposition_under_tf_function_with_unknown_batch_size():
    spec = tf.TensorSpec([None, 3], tf.float32)

    @tf.function(input_signature=[spec, spec, spec])
    def decompose(z, loc, log_scale):
        return objectives.kl_decomposition(z, loc, log_scale, 100, "mss")

    z, loc, log_scale = random_batch(13, dtype=np.float32)
    graph_parts = decompose(z, loc, log_scale)
    eager_parts = objectives.kl_decomposition(z, loc, log_scale, 100, "mss")
    for name, value in eager_parts.items():
        np.testing.assert_allclose(graph_parts[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="MSS needs a batch of at least 2"):
        decompose(z[:1], loc[:1], log_scale[:1])

    @tf.function(input_signature=[spec, spec, spec])
    def decompose_small_dataset(z, loc, log_scale):
        return objectives.kl_decomposition(z, loc, log_scale, 4, "mws")

    with pytest.raises(tf.errors.InvalidArgumentError, match="dataset_size 4 is smaller"):
        decompose_small_dataset(z, loc, log_scale)


# -- schedules ---------------------------------------------------------------------------------


def test_beta_schedule():
    values = [float(objectives.beta_schedule(t, 6.0, 7000)) for t in (0, 1750, 3500, 7000, 20000)]
    np.testing.assert_allclose(values, [0.0, 1.5, 3.0, 6.0, 6.0], rtol=1e-6)
    assert float(objectives.beta_schedule(10, 6.0, None)) == 6.0
    assert float(objectives.beta_schedule(10, 6.0, 0)) == 6.0
    step = tf.Variable(3500, dtype=tf.int64)
    assert float(objectives.beta_schedule(step, 6.0, 7000)) == pytest.approx(3.0)
    assert objectives.beta_schedule(1, 2.0, 4, dtype=tf.float64).dtype == tf.float64


def test_gamma_schedule_matches_the_authors_schedule_for_gamma_one():
    warmup = 7000
    for step in (0, 100, 3500, 6650, 7000, 50000):
        expected = 1.0 - max(0.0, 0.95 - step / warmup)
        assert float(objectives.gamma_schedule(step, 1.0, warmup)) == pytest.approx(expected)
        assert float(objectives.gamma_schedule(step, 3.0, warmup)) == pytest.approx(3.0 * expected)
    assert float(objectives.gamma_schedule(0, 1.0, warmup)) == pytest.approx(0.05)
    assert float(objectives.gamma_schedule(0, 2.0, None)) == 2.0
    assert float(objectives.gamma_schedule(tf.constant(0.0), 2.0, 0)) == 2.0


@pytest.mark.parametrize("schedule", [objectives.beta_schedule, objectives.gamma_schedule])
@pytest.mark.parametrize("warmup_steps", [-1, 1.5, True])
def test_schedules_reject_bad_warmup(schedule, warmup_steps):
    with pytest.raises(ValueError, match="warmup_steps"):
        schedule(0, 1.0, warmup_steps)


# -- bad inputs ----------------------------------------------------------------------------------


def test_bad_inputs_raise():
    z, loc, log_scale = random_batch(14)
    with pytest.raises(ValueError, match="unknown estimator 'iwae'; expected one of: mws, mss"):
        objectives.kl_decomposition(z, loc, log_scale, 100, "iwae")
    with pytest.raises(ValueError, match="unknown estimator"):
        objectives.log_importance_weights(4, 100, "MSS")
    with pytest.raises(ValueError, match="MSS needs a batch of at least 2"):
        objectives.kl_decomposition(z[:1], loc[:1], log_scale[:1], 100, "mss")
    with pytest.raises(ValueError, match="MSS needs a batch of at least 2"):
        objectives.log_importance_weights(1, 100, "mss")
    with pytest.raises(ValueError, match="dataset_size 4 is smaller than batch_size 5"):
        objectives.kl_decomposition(z, loc, log_scale, 4, "mws")
    with pytest.raises(ValueError, match="dataset_size must be a positive int"):
        objectives.kl_decomposition(z, loc, log_scale, 0)
    with pytest.raises(ValueError, match="dataset_size must be a positive int"):
        objectives.log_importance_weights(4, 100.0)
    with pytest.raises(ValueError, match="same shape"):
        objectives.kl_decomposition(z, loc[:, :2], log_scale, 100)
    with pytest.raises(ValueError, match=r"z must have shape \[batch, latent_dim\]"):
        objectives.kl_decomposition(z[None], loc, log_scale, 100)
    with pytest.raises(ValueError, match="unknown posterior family 'gamma'"):
        objectives.kl_decomposition(z, loc, log_scale, 100, posterior="gamma")
    with pytest.raises(ValueError, match="unknown prior family 'cauchy'; expected one of"):
        objectives.sampled_kl(z, loc, log_scale, prior="cauchy")
    with pytest.raises(ValueError, match="unknown posterior family"):
        objectives.log_density_matrix(z, loc, log_scale, "student")


# -- the blocked log-mixture computation equals the direct one, values and gradients --------


def direct_log_mixtures(z, loc, log_scale, dataset_size, estimator, family):
    """log q(z_i) and log q(z_id) reduced from the full [M, M, D] tensor."""
    log_q = objectives.log_density_matrix(z, loc, log_scale, family)  # [i, j, d]
    log_w = objectives.log_importance_weights(z.shape[0], dataset_size, estimator, z.dtype)
    log_qz = tf.reduce_logsumexp(tf.reduce_sum(log_q, axis=2) + log_w, axis=1)
    log_marginals = tf.reduce_logsumexp(log_q + log_w[:, :, None], axis=1)
    return log_qz, log_marginals


def fused_log_mixtures(z, loc, log_scale, dataset_size, estimator, family):
    log_weights = objectives._log_weight_values(z.shape[0], dataset_size, estimator, z.dtype)
    return objectives._fused_log_mixtures(z, loc, log_scale, log_weights, family)


def values_and_gradients(function, z, loc, log_scale, weights, *args):
    """Both outputs and the gradient of sum(c_joint * log_qz) + sum(c_marg * log_marginals)."""
    z, loc, log_scale = (tf.constant(t) for t in (z, loc, log_scale))
    with tf.GradientTape() as tape:
        tape.watch([z, loc, log_scale])
        log_qz, log_marginals = function(z, loc, log_scale, *args)
        loss = tf.reduce_sum(weights[0] * log_qz) + tf.reduce_sum(weights[1] * log_marginals)
    gradients = tape.gradient(loss, [z, loc, log_scale])
    return [log_qz.numpy(), log_marginals.numpy()] + [g.numpy() for g in gradients]


# 70 and 130 rows leave a partly filled last block; 128 fills two blocks exactly.
@pytest.mark.parametrize("batch_size", [2, 5, 64, 70, 128, 130])
@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
@pytest.mark.parametrize("family", distributions.POSTERIORS)
def test_fused_log_mixtures_equal_direct_reduction_float64(batch_size, estimator, family):
    z, loc, log_scale = random_batch(20 + batch_size, batch_size=batch_size, latent_dim=3)
    rng = np.random.default_rng(21)
    weights = (rng.normal(size=batch_size), rng.normal(size=(batch_size, 3)))
    expected = values_and_gradients(
        direct_log_mixtures, z, loc, log_scale, weights, 1000, estimator, family
    )
    actual = values_and_gradients(
        fused_log_mixtures, z, loc, log_scale, weights, 1000, estimator, family
    )
    for name, got, want in zip(["log_qz", "marginals", "dz", "dloc", "dlog_scale"], actual,
                               expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
def test_fused_log_mixtures_float32_follow_float64_on_a_large_batch(estimator):
    z, loc, log_scale = random_batch(22, batch_size=300, latent_dim=10)
    weights = (np.full(300, 5.0), np.full((300, 10), -6.0))  # the beta-TCVAE mix of terms
    expected = values_and_gradients(
        direct_log_mixtures, z, loc, log_scale, weights, 737280, estimator, "normal"
    )
    as32 = [t.astype(np.float32) for t in (z, loc, log_scale)]
    weights32 = tuple(w.astype(np.float32) for w in weights)
    actual = values_and_gradients(
        fused_log_mixtures, *as32, weights32, 737280, estimator, "normal"
    )
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fused_log_mixtures_concentrated_posteriors_float32():
    # Well separated, tiny posteriors: every softmax is one-hot on the diagonal. In float32
    # both computations round (z - loc) alike; they agree with each other, not with float64.
    z, loc, log_scale = (t.astype(np.float32) for t in concentrated_batch(100, latent_dim=4))
    weights = (np.ones(100, np.float32), np.ones((100, 4), np.float32))
    expected = values_and_gradients(
        direct_log_mixtures, z, loc, log_scale, weights, 737280, "mss", "normal"
    )
    actual = values_and_gradients(fused_log_mixtures, z, loc, log_scale, weights, 737280, "mss",
                                  "normal")
    for got, want in zip(actual, expected, strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- a replica's share: rows of the decomposition against the whole batch -------------------


def decomposition_and_gradients(z, loc, log_scale, estimator, num_shares):
    """All parts and the gradient of a weighted sum of them, from `num_shares` row blocks."""
    z, loc, log_scale = (tf.constant(t) for t in (z, loc, log_scale))
    batch_size = z.shape[0]
    bounds = np.linspace(0, batch_size, num_shares + 1).astype(int)
    names = ("mi", "tc", "dwkl", "log_qz_given_x", "log_qz", "log_prod_qzi", "log_pz")
    rng = np.random.default_rng(5)
    coefficients = {name: tf.constant(rng.normal(size=batch_size)) for name in names}
    with tf.GradientTape() as tape:
        tape.watch([z, loc, log_scale])
        if num_shares == 1:
            parts = objectives.kl_decomposition(z, loc, log_scale, 1000, estimator)
        else:
            shares = [
                objectives.kl_decomposition(z[first:last], loc, log_scale, 1000, estimator,
                                            row_offset=first)
                for first, last in zip(bounds[:-1], bounds[1:], strict=True)
            ]
            parts = {name: tf.concat([share[name] for share in shares], 0) for name in names}
        loss = sum(tf.reduce_sum(coefficients[name] * parts[name]) for name in names)
    gradients = tape.gradient(loss, [z, loc, log_scale])
    return {name: parts[name].numpy() for name in names}, [g.numpy() for g in gradients]


# 150 rows in 2 or 3 shares: blocks of 75 and 50 rows, none a multiple of the 64-row block.
@pytest.mark.parametrize("num_shares", [2, 3])
@pytest.mark.parametrize("estimator", objectives.ESTIMATORS)
def test_row_shares_concatenated_equal_the_whole_batch(estimator, num_shares):
    z, loc, log_scale = random_batch(30, batch_size=150, latent_dim=4)
    expected_parts, expected_gradients = decomposition_and_gradients(
        z, loc, log_scale, estimator, 1)
    parts, gradients = decomposition_and_gradients(z, loc, log_scale, estimator, num_shares)
    for name, want in expected_parts.items():
        np.testing.assert_allclose(parts[name], want, rtol=1e-12, atol=1e-12, err_msg=name)
    for name, got, want in zip(("dz", "dloc", "dlog_scale"), gradients, expected_gradients,
                               strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11, err_msg=name)


def test_row_share_under_tf_function_with_a_tensor_offset():
    z, loc, log_scale = random_batch(31, batch_size=70, latent_dim=3)
    whole = objectives.kl_decomposition(z, loc, log_scale, 1000, "mss")

    @tf.function
    def share(first):
        return objectives.kl_decomposition(z[35:], loc, log_scale, 1000, "mss",
                                           row_offset=first)["tc"]

    np.testing.assert_allclose(share(tf.constant(35)), whole["tc"][35:], rtol=1e-12)


def test_row_share_bad_inputs_raise():
    z, loc, log_scale = random_batch(32, batch_size=6)
    with pytest.raises(ValueError, match="rows 4 .. 7 are not rows of a batch of 6"):
        objectives.kl_decomposition(z[:4], loc, log_scale, 100, row_offset=4)
    with pytest.raises(ValueError, match="z as many latent dimensions"):
        objectives.kl_decomposition(z[:2, :2], loc, log_scale, 100, row_offset=0)
