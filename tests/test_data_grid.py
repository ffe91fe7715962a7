"""The dSprites factor grid, GroundTruthDataset indexing and sampling, dsprites-small, registry."""

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tcvae_tf.cli.main import cli
from tcvae_tf.data import (
    DatasetError,
    GroundTruthDataset,
    available_datasets,
    dsprites_subgrid,
    known_size,
    load_dataset,
    register_dataset,
    registry,
    render_dsprites,
)
from tcvae_tf.data import dsprites as dsprites_lib


def toy_dataset(sizes=(2, 3, 4), order=None):
    """A factorial toy dataset whose 1x1 images hold the row's grid index (mod 256)."""
    grid = np.indices(sizes).reshape(len(sizes), -1).T
    if order is not None:
        grid = grid[order]
    strides = np.array([np.prod(sizes[k + 1:]) for k in range(len(sizes))])
    images = ((grid @ strides) % 256).astype(np.uint8).reshape(-1, 1, 1, 1)
    names = tuple(f"f{k}" for k in range(len(sizes)))
    return GroundTruthDataset("toy", images, grid, grid * 0.5, names, sizes, "test",
                              pixel_max=255)


def test_dsprites_grid_size_and_order():
    spec = dsprites_lib.DSPRITES_SPEC
    classes = spec.grid_classes()
    assert spec.num_images == 737280 == len(classes)
    assert spec.factor_sizes == (3, 6, 40, 32, 32)
    # Official row-major formula; the last factor (pos_y) runs fastest.
    index = classes @ np.array([245760, 40960, 1024, 32, 1])
    np.testing.assert_array_equal(index, np.arange(737280))
    np.testing.assert_array_equal(classes[1], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(classes[32], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(classes[245760], [1, 0, 0, 0, 0])


def test_dsprites_factor_values():
    shapes, scales, orientations, pos_x, pos_y = dsprites_lib.factor_value_table()
    np.testing.assert_allclose(shapes, [1, 2, 3])
    np.testing.assert_allclose(scales, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert len(orientations) == 40 and orientations[0] == 0
    np.testing.assert_allclose(orientations[-1], 2 * np.pi)  # both ends present
    np.testing.assert_allclose(pos_x, np.arange(32) / 31)
    np.testing.assert_allclose(pos_y, np.arange(32) / 31)
    values = dsprites_lib.factor_values_of(np.array([[2, 5, 39, 31, 0]]))
    np.testing.assert_allclose(values, [[3, 1.0, 2 * np.pi, 1.0, 0.0]])


def test_index_classes_round_trip_factorial():
    dataset = toy_dataset()
    assert dataset.is_factorial
    index = np.random.default_rng(0).integers(0, dataset.num_images, (5, 7))
    classes = dataset.classes_from_index(index)
    assert classes.shape == (5, 7, 3)
    np.testing.assert_array_equal(dataset.index_from_classes(classes), index)
    np.testing.assert_array_equal(dataset.index_from_classes([1, 2, 3]), 23)


def test_a_bad_subset_names_the_option():
    with pytest.raises(DatasetError, match="subset: a subset of toy needs at least one image"):
        toy_dataset().subset([])
    runner = CliRunner()
    for value in ("-5", "0"):
        result = runner.invoke(cli, ["train", "dsprites-small", "--subset", value, "--steps", "1",
                                     "--out", "unused-run-folder"])
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [
            f"Error: --subset must be a positive number of images, got {value}"]


def test_index_from_classes_on_shuffled_rows_and_subsets():
    order = np.random.default_rng(1).permutation(24)
    shuffled = toy_dataset(order=order)
    assert not shuffled.is_factorial
    rows = np.arange(24)
    np.testing.assert_array_equal(shuffled.index_from_classes(shuffled.factor_classes), rows)
    subset = toy_dataset().subset([3, 5, 7])
    assert not subset.is_factorial and subset.factor_sizes == (2, 3, 4)
    np.testing.assert_array_equal(subset.index_from_classes(subset.factor_classes[::-1]),
                                  [2, 1, 0])
    with pytest.raises(ValueError, match="not in dataset"):
        subset.index_from_classes([0, 0, 0])


def test_bad_classes_and_indices_raise():
    dataset = toy_dataset()
    with pytest.raises(ValueError, match="out of range"):
        dataset.index_from_classes([2, 0, 0])
    with pytest.raises(ValueError, match="shape"):
        dataset.index_from_classes([0, 0])
    with pytest.raises(ValueError, match="integers"):
        dataset.index_from_classes([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="out of range"):
        dataset.classes_from_index([24])


def test_constructor_checks_shapes():
    images = np.zeros((4, 2, 2, 1), np.uint8)
    classes = np.zeros((4, 2), np.int64)
    with pytest.raises(ValueError, match="factor_values"):
        GroundTruthDataset("x", images, classes, np.zeros((3, 2)), ("a", "b"), (1, 1), "test")
    with pytest.raises(ValueError, match="uint8"):
        GroundTruthDataset("x", images.astype(np.float32), classes, classes * 1.0, ("a", "b"),
                           (1, 1), "test")
    with pytest.raises(ValueError, match="out of range"):
        GroundTruthDataset("x", images, classes + 1, classes * 1.0, ("a", "b"), (1, 1), "test")


def test_sample_factors_uniform_and_images_match():
    dataset = toy_dataset()
    classes = dataset.sample_factors(6000, np.random.default_rng(2))
    assert classes.shape == (6000, 3)
    for k, size in enumerate(dataset.factor_sizes):
        counts = np.bincount(classes[:, k], minlength=size)
        np.testing.assert_allclose(counts / 6000, 1 / size, atol=0.03)
    classes, images = dataset.sample(50, rng=3)
    np.testing.assert_array_equal(images[:, 0, 0, 0], dataset.index_from_classes(classes) % 256)
    again, _ = dataset.sample(50, rng=3)
    np.testing.assert_array_equal(classes, again)
    subset = dataset.subset([0, 5])
    assert set(map(tuple, subset.sample_factors(40, 0))) <= {(0, 0, 0), (0, 1, 1)}


def test_describe_is_json_ready():
    import json

    description = toy_dataset().describe()
    assert json.loads(json.dumps(description)) == description
    assert description == dict(name="toy", source="test", path=None, num_images=24,
                               image_shape=[1, 1, 1], factor_names=["f0", "f1", "f2"],
                               factor_sizes=[2, 3, 4])


def test_dsprites_subgrid_is_a_factorial_grid(small_dsprites):
    small = small_dsprites
    assert small.name == "dsprites-small" and small.source == "rendered" and small.path is None
    assert small.factor_sizes == (3, 2, 4, 8, 8) and small.num_images == 1536
    assert small.images.shape == (1536, 64, 64, 1) and small.images.dtype == np.uint8
    assert small.is_factorial
    np.testing.assert_allclose(np.unique(small.factor_values[:, 1]), [0.5, 0.8])
    np.testing.assert_allclose(np.unique(small.factor_values[:, 2]),
                               np.linspace(0, 2 * np.pi, 40)[[0, 10, 20, 30]])
    np.testing.assert_allclose(np.unique(small.factor_values[:, 3]), np.arange(0, 32, 4) / 31)
    # Row 1 is pos_y class 1 of the subgrid, i.e. the official pos_y class 4.
    np.testing.assert_array_equal(small.factor_classes[1], [0, 0, 0, 0, 1])
    rows = [1, 700, 1535]
    official = np.array([[0, 0, 0, 0, 4], [1, 0, 20, 28, 16], [2, 3, 30, 28, 28]])
    np.testing.assert_array_equal(small.factor_classes[rows] * [1, 3, 10, 4, 4], official)
    np.testing.assert_array_equal(small.images[rows], render_dsprites(official))


def test_dsprites_subgrid_other_stride():
    tiny = dsprites_subgrid(stride=(3, 6, 40, 16, 16))
    assert tiny.factor_sizes == (1, 1, 1, 2, 2) and tiny.num_images == 4 and tiny.is_factorial
    with pytest.raises(ValueError, match="stride"):
        dsprites_subgrid(stride=(1, 1))


def test_registry(monkeypatch):
    monkeypatch.setattr(registry, "_LOADERS", dict(registry._LOADERS))
    monkeypatch.setattr(registry, "_SIZES", dict(registry._SIZES))
    assert {"dsprites", "dsprites-small"} <= set(available_datasets())
    assert available_datasets() == sorted(available_datasets())
    with pytest.raises(ValueError, match="available: .*dsprites, dsprites-small"):
        load_dataset("no-such-data")
    register_dataset("toy", lambda source="auto", path=None, **kw: toy_dataset())
    assert load_dataset("toy").name == "toy"
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy", lambda **kw: None)
    assert known_size("toy") is None
    register_dataset("toy", lambda source="auto", path=None, **kw: toy_dataset(),
                     overwrite=True, num_images=24)
    assert known_size("toy") == load_dataset("toy").num_images == 24
    small = load_dataset("dsprites-small", cache_dir="/nonexistent", log=print)
    assert small.num_images == known_size("dsprites-small") == 1536


@pytest.mark.parametrize("stride", [(1, 3, 10, 4, 4), (3, 6, 40, 16, 16), (2, 5, 7, 3, 9)])
def test_subgrid_size_is_known_without_rendering(stride):
    assert dsprites_lib.subgrid_size(stride) == dsprites_subgrid(stride).num_images


def test_the_full_grid_size_is_known_without_loading():
    assert known_size("dsprites") == dsprites_lib.NUM_IMAGES == 3 * 6 * 40 * 32 * 32
    with pytest.raises(ValueError, match="only rendered"):
        load_dataset("dsprites-small", source="official")


def test_importing_data_does_not_import_tensorflow():
    code = ("import sys, tcvae_tf.data, tcvae_tf.data.pipeline; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
