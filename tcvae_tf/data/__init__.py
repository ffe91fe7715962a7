"""Ground-truth datasets: dSprites (rendered, official npz or TFDS) and a tf.data pipeline.

```python
from tcvae_tf.data import load_dataset, load_dsprites, dsprites_subgrid

ds = load_dsprites()                      # auto: official file -> prepared TFDS -> rendered
ds.source, ds.images.shape                # 'rendered', (737280, 64, 64, 1) uint8 0/1
classes, images = ds.sample(64, rng=0)    # factor classes [64, 5] and their images
batches = ds.as_tf_dataset(256, seed=0)   # float32 [256, 64, 64, 1] in [0, 1]
small = load_dataset("dsprites-small")    # 1536 images, for tests and quick demos
```

Importing this package does not import TensorFlow (only `as_tf_dataset` and the TFDS
source do).
"""

from tcvae_tf.data.dsprites import dsprites_subgrid, load_dsprites
from tcvae_tf.data.ground_truth import DatasetError, GroundTruthDataset
from tcvae_tf.data.registry import available_datasets, known_size, load_dataset, register_dataset
from tcvae_tf.data.sprites import render_dsprites

__all__ = [
    "DatasetError",
    "GroundTruthDataset",
    "available_datasets",
    "dsprites_subgrid",
    "known_size",
    "load_dataset",
    "load_dsprites",
    "register_dataset",
    "render_dsprites",
]
