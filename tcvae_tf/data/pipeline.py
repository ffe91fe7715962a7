"""tf.data pipeline over in-memory uint8 images.

The images stay a numpy uint8 array (3 GB for dSprites; float32 would be 12 GB). The
pipeline batches row indices first, then gathers a whole batch at once and casts it to
float32, so the per-image cost is one memory copy:

```none
epoch e:  permutation_e = stateless_shuffle(range(N), seed=(seed, e))   # or range(N)
          -> index batches [B] -> gather images [B, H, W, C] uint8
          -> float32 / pixel_max -> prefetch
```
"""

import numpy as np


def _index_batches(tf, num_images, batch_size, shuffle, seed, drop_remainder):
    """Returns a function epoch -> tf.data.Dataset of int64 index batches [B]."""
    num_full = num_images // batch_size
    remainder = num_images - num_full * batch_size
    seed = tf.constant(seed, tf.int64)

    def batches_of_epoch(epoch):
        indices = tf.range(num_images, dtype=tf.int64)
        if shuffle:
            epoch_seed = tf.stack([seed, epoch])
            indices = tf.random.experimental.stateless_shuffle(indices, seed=epoch_seed)
        full = tf.reshape(indices[: num_full * batch_size], [num_full, batch_size])
        batches = tf.data.Dataset.from_tensor_slices(full)
        if remainder and not drop_remainder:
            tail = tf.data.Dataset.from_tensors(indices[num_full * batch_size :])
            batches = batches.concatenate(tail)
        return batches

    return batches_of_epoch


def image_batches(images, batch_size, shuffle=True, seed=None, repeat=True, drop_remainder=True,
                  pixel_max=1, start_batch=0):
    """Builds a tf.data.Dataset of float32 image batches from a uint8 array.

    Args:
      images: uint8 array [N, H, W, C] (referenced, not copied).
      batch_size: images per batch.
      shuffle: a fresh permutation of the rows every epoch, drawn from (seed, epoch).
      seed: int seed of the permutations; None draws one at random.
      repeat: epochs forever; otherwise a single epoch.
      drop_remainder: drop the last, smaller batch of each epoch (keeps a static batch size).
      pixel_max: largest pixel value; batches are images / pixel_max in [0, 1].
      start_batch: skip this many batches of the stream (counting across epochs), so a
        resumed run continues with the batches it would have seen; the skipped batches
        are never gathered.

    Returns:
      tf.data.Dataset of float32 tensors [B, H, W, C].

    Raises:
      ValueError: batch_size < 1, or drop_remainder with fewer images than batch_size.

    Example:
      >>> batches = image_batches(dataset.images, 256, seed=0)
      >>> next(iter(batches)).shape
      TensorShape([256, 64, 64, 1])
    """
    import tensorflow as tf

    batch_size = int(batch_size)
    num_images = len(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if drop_remainder and num_images < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({num_images} "
                         "images) and drop_remainder=True would yield no batch")
    if num_images == 0:
        raise ValueError("the dataset has no images")
    start_batch = int(start_batch)
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    batches_per_epoch = num_images // batch_size
    if num_images % batch_size and not drop_remainder:
        batches_per_epoch += 1
    start_epoch, skipped = divmod(start_batch, batches_per_epoch)
    if repeat:
        epochs = tf.data.Dataset.counter(start=start_epoch)
    else:
        epochs = tf.data.Dataset.range(start_epoch, 1)
    batches = epochs.flat_map(
        _index_batches(tf, num_images, batch_size, shuffle, int(seed), drop_remainder)
    )
    if skipped:
        batches = batches.skip(skipped)
    image_shape = list(images.shape[1:])
    static_batch = batch_size if drop_remainder or num_images % batch_size == 0 else None
    scale = 1.0 / float(pixel_max)

    def gather(indices):
        return np.take(images, indices, axis=0)

    def load(indices):
        batch = tf.numpy_function(gather, [indices], tf.uint8, stateful=False)
        batch = tf.ensure_shape(batch, [static_batch] + image_shape)
        batch = tf.cast(batch, tf.float32)
        return batch if pixel_max == 1 else batch * scale

    batches = batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)
