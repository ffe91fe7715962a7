"""The tf.data pipeline of GroundTruthDataset.as_tf_dataset."""

import numpy as np
import pytest

from tcvae_tf.data import GroundTruthDataset

pytest.importorskip("tensorflow")


def indexed_dataset(count=96):
    """Images [count, 2, 2, 1] whose first two pixels hold the row index (base 256)."""
    images = np.zeros((count, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(count) // 256
    images[:, 0, 1, 0] = np.arange(count) % 256
    classes = np.arange(count).reshape(-1, 1)
    return GroundTruthDataset("indexed", images, classes, classes * 1.0, ("row",), (count,),
                              "test", pixel_max=255)


def rows_of(batch):
    pixels = np.rint(np.asarray(batch) * 255).astype(np.int64)
    return pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 1, 0]


def take_rows(dataset, count):
    return [rows_of(batch) for batch in dataset.take(count)]


def test_batches_are_float32_in_unit_range(small_dsprites):
    batches = small_dsprites.as_tf_dataset(32, seed=0)
    batch = next(iter(batches))
    assert batch.dtype.name == "float32" and tuple(batch.shape) == (32, 64, 64, 1)
    values = np.unique(batch.numpy())
    np.testing.assert_array_equal(values, [0.0, 1.0])
    assert tuple(batches.element_spec.shape) == (32, 64, 64, 1)


def test_each_epoch_is_a_fresh_permutation():
    dataset = indexed_dataset(96)
    epochs = take_rows(dataset.as_tf_dataset(16, seed=3), 12)  # 6 batches per epoch
    first, second = np.concatenate(epochs[:6]), np.concatenate(epochs[6:])
    np.testing.assert_array_equal(np.sort(first), np.arange(96))
    np.testing.assert_array_equal(np.sort(second), np.arange(96))
    assert not np.array_equal(first, np.arange(96))  # shuffled
    assert not np.array_equal(first, second)  # a new permutation each epoch


def test_same_seed_same_stream_other_seed_other_stream():
    dataset = indexed_dataset(96)
    first = np.concatenate(take_rows(dataset.as_tf_dataset(16, seed=5), 8))
    again = np.concatenate(take_rows(dataset.as_tf_dataset(16, seed=5), 8))
    other = np.concatenate(take_rows(dataset.as_tf_dataset(16, seed=6), 8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_start_batch_resumes_the_stream():
    dataset = indexed_dataset(96)
    full = take_rows(dataset.as_tf_dataset(16, seed=5), 10)
    resumed = take_rows(dataset.as_tf_dataset(16, seed=5, start_batch=4), 6)
    for expected, got in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(expected, got)


def test_unshuffled_single_epoch_and_remainder():
    dataset = indexed_dataset(100)
    kept = take_rows(dataset.as_tf_dataset(16, shuffle=False, repeat=False,
                                           drop_remainder=False), 100)
    assert [len(rows) for rows in kept] == [16] * 6 + [4]
    np.testing.assert_array_equal(np.concatenate(kept), np.arange(100))
    dropped = take_rows(dataset.as_tf_dataset(16, shuffle=False, repeat=False), 100)
    assert len(dropped) == 6
    np.testing.assert_array_equal(np.concatenate(dropped), np.arange(96))


def test_bad_batch_sizes():
    dataset = indexed_dataset(10)
    with pytest.raises(ValueError, match="larger than the dataset"):
        dataset.as_tf_dataset(11)
    with pytest.raises(ValueError, match="at least 1"):
        dataset.as_tf_dataset(0)
