"""The full rendered dSprites (737,280 images): slow, one session-scoped render."""

import numpy as np
import pytest

from tcvae_tf.data import load_dsprites, render_dsprites, sprites


@pytest.mark.slow
def test_full_render_is_the_grid_and_loads_from_cache(full_dsprites, dsprites_cache_dir,
                                                      monkeypatch):
    dataset = full_dsprites
    assert dataset.name == "dsprites" and dataset.source == "rendered"
    assert dataset.images.shape == (737280, 64, 64, 1) and dataset.images.dtype == np.uint8
    assert dataset.factor_sizes == (3, 6, 40, 32, 32) and dataset.is_factorial
    assert dataset.describe()["path"].endswith(".npz")
    rows = np.random.default_rng(0).integers(0, 737280, 300)
    expected = render_dsprites(dataset.factor_classes[rows])
    np.testing.assert_array_equal(dataset.images[rows], expected)

    # A second load reads the cache: rendering again would fail.
    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(sprites, "render_dsprites_grid", no_render)
    again = load_dsprites(source="rendered", cache_dir=dsprites_cache_dir)
    assert again.path == dataset.path
    np.testing.assert_array_equal(again.images[rows], dataset.images[rows])
    np.testing.assert_array_equal(again.factor_values[rows], dataset.factor_values[rows])
