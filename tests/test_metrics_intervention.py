"""FactorVAE and beta-VAE scores on a synthetic full factorial dataset.

The "images" of the toy dataset are the factor classes themselves (uint8, 1 x 1 pixels, one
channel per factor), so an encoder can copy, mix, duplicate or ignore the factors.
"""

import numpy as np
import pytest

from tcvae_tf.data.ground_truth import GroundTruthDataset
from tcvae_tf.metrics import betavae_score, factorvae_score
from tcvae_tf.metrics.utils import RowEncoder

SIZES = (3, 4, 5)
SMALL = {"batch_size": 16, "num_train": 300, "num_eval": 200}  # instead of 64, 10000, 5000
VARIANCE = {"num_variance_estimate": 1000}


def toy_dataset(sizes=SIZES):
    classes = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"),
                       -1).reshape(-1, len(sizes))
    images = classes.astype(np.uint8)[:, None, None, :]
    return GroundTruthDataset("toy", images, classes, classes.astype(float),
                              [f"f{k}" for k in range(len(sizes))], sizes, "synthetic",
                              pixel_max=1)


@pytest.fixture(scope="module")
def dataset():
    return toy_dataset()


def encoder(transform):
    """An encode function: images [B, 1, 1, K] -> transform(factor classes float [B, K])."""
    return lambda images: transform(np.asarray(images).reshape(len(images), -1))


def noise_codes(dataset, width=4, seed=7):
    """A fixed random code per image, independent of the factors."""
    table = np.random.default_rng(seed).normal(size=(dataset.num_images, width))
    return lambda rows: table[rows]


def factorvae(dataset, **options):
    return factorvae_score(options.pop("encode", None), dataset, **{**SMALL, **VARIANCE,
                                                                    **options})


def betavae(dataset, **options):
    return betavae_score(options.pop("encode", None), dataset, **{**SMALL, **options})


# -- FactorVAE score ------------------------------------------------------------------------


def test_factorvae_copied_factors_score_one(dataset):
    result = factorvae(dataset, encode=encoder(lambda v: v))
    assert result["train_accuracy"] == result["eval_accuracy"] == 1.0
    assert result["num_active_dims"] == 3 and result["classifier"] == [0, 1, 2]
    votes = np.array(result["eval_votes"])
    assert votes.sum() == SMALL["num_eval"]
    np.testing.assert_array_equal(votes, np.diag(np.diag(votes)))  # every vote is right
    assert (result["batch_size"], result["num_train"], result["num_eval"]) == (16, 300, 200)


def test_factorvae_independent_code_is_near_chance(dataset):
    result = factorvae(dataset, encode_rows=noise_codes(dataset))
    assert result["eval_accuracy"] == pytest.approx(1 / 3, abs=0.1)


def test_factorvae_mixing_duplicated_and_constant_latents(dataset):
    # One latent for factors 0 and 1: it wins both, so the majority vote loses one (2/3).
    mixed = factorvae(dataset, encode=encoder(lambda v: np.stack([v[:, 0] * 4 + v[:, 1],
                                                                  v[:, 2]], 1)))
    assert mixed["eval_accuracy"] == pytest.approx(2 / 3, abs=0.08)
    duplicated = factorvae(dataset, encode=encoder(lambda v: v[:, [0, 0, 1, 2]]))
    assert duplicated["eval_accuracy"] == 1.0
    constant = factorvae(dataset, encode=encoder(
        lambda v: np.concatenate([v, np.zeros((len(v), 2))], 1)))
    assert constant["eval_accuracy"] == 1.0
    assert constant["num_active_dims"] == 3 and constant["active_dims"][3:] == [False, False]
    nothing = factorvae(dataset, encode=encoder(lambda v: np.zeros((len(v), 3))))
    assert nothing["train_accuracy"] == nothing["eval_accuracy"] == 0.0
    assert nothing["num_active_dims"] == 0


def test_factorvae_invariances_and_seeds(dataset):
    def code(v):
        return np.concatenate([v + 0.3 * np.sin(7 * v.sum(1, keepdims=True)),
                               np.cos(5 * v[:, :1] + v[:, 1:2])], 1)

    reference = factorvae(dataset, encode=encoder(code))
    order, scale = [3, 1, 0, 2], np.array([2.0, -0.5, 10.0, 3.0])
    moved = factorvae(dataset, encode=encoder(lambda v: code(v)[:, order] * scale))
    for key in ("train_accuracy", "eval_accuracy", "num_active_dims"):
        assert moved[key] == reference[key], key
    assert factorvae(dataset, encode=encoder(code)) == reference
    assert factorvae(dataset, encode=encoder(code), seed=1)["train_votes"] != reference[
        "train_votes"]


# -- beta-VAE score -------------------------------------------------------------------------


def test_betavae_copied_factors_score_one(dataset):
    result = betavae(dataset, encode=encoder(lambda v: v))
    assert result["train_accuracy"] == result["eval_accuracy"] == 1.0
    assert result["converged"]


def test_betavae_independent_and_constant_codes_are_at_chance(dataset):
    noise = betavae(dataset, encode_rows=noise_codes(dataset))
    assert noise["eval_accuracy"] == pytest.approx(1 / 3, abs=0.1)
    constant = betavae(dataset, encode=encoder(lambda v: np.ones((len(v), 2))))
    assert constant["eval_accuracy"] == pytest.approx(1 / 3, abs=0.1)


def test_betavae_mixing_and_duplicated_latents():
    dataset = toy_dataset((2, 2, 3))
    # z0 = v0 + v1 changes alike whichever of the two is fixed: those points are a coin flip.
    mixed = betavae(dataset, encode=encoder(lambda v: np.stack([v[:, 0] + v[:, 1], v[:, 2]], 1)))
    assert mixed["eval_accuracy"] == pytest.approx(2 / 3, abs=0.1)
    duplicated = betavae(dataset, encode=encoder(lambda v: v[:, [0, 0, 1, 2]]))
    assert duplicated["eval_accuracy"] == 1.0


def test_betavae_permutation_invariance_and_seeds(dataset):
    def code(v):
        return v + 0.8 * np.sin(3 * v.sum(1, keepdims=True))

    reference = betavae(dataset, encode=encoder(code))
    permuted = betavae(dataset, encode=encoder(lambda v: code(v)[:, [2, 0, 1]]))
    assert permuted["eval_accuracy"] == pytest.approx(reference["eval_accuracy"], abs=0.01)
    assert betavae(dataset, encode=encoder(code)) == reference


# -- encoding and errors --------------------------------------------------------------------


def test_each_image_is_encoded_once_and_encode_rows_agrees(dataset):
    calls = []

    def encode(images):
        calls.append(len(images))
        return np.asarray(images).reshape(len(images), -1) * 2.0

    rows_to_codes = RowEncoder(dataset, encode, batch_size=7)
    first = factorvae(dataset, encode_rows=rows_to_codes)
    assert sum(calls) == rows_to_codes.num_encoded <= dataset.num_images
    assert max(calls) <= 7
    again = factorvae(dataset, encode=encode)
    assert again == first
    betavae(dataset, encode_rows=rows_to_codes)
    assert sum(calls) <= 2 * dataset.num_images  # the second run encoded each image once


@pytest.mark.parametrize("score", [factorvae, betavae])
def test_errors_are_one_line(score, dataset):
    identity = encoder(lambda v: v)
    single = toy_dataset((3, 1, 2))
    cases = [
        (dict(dataset=dataset.subset(np.arange(10))), "is not a full factorial grid"),
        (dict(dataset=single), "factor 'f1' takes a single value"),
        (dict(num_train=0), "num_train must be a positive integer, got 0"),
        (dict(num_eval=2.5), "num_eval must be a positive integer"),
        (dict(encode=encoder(lambda v: v[:, 0])), r"encode must return codes \[batch, latents\]"),
        (dict(encode=encoder(lambda v: np.where(v[:, :1] > 0, v, np.nan))),
         "the codes returned by encode contains NaN or inf"),
        (dict(dataset=np.zeros((4, 2))), "dataset must be a GroundTruthDataset"),
    ]
    if score is factorvae:
        cases.append((dict(batch_size=1), "batch_size must be an integer >= 2, got 1"))
    else:
        cases.append((dict(num_train=1), r"too few training points: num_train=1"))
    for options, message in cases:
        options = {"dataset": dataset, "encode": identity, **options}
        with pytest.raises(ValueError, match=message) as error:
            score(options.pop("dataset"), **options)
        assert "\n" not in str(error.value), options
