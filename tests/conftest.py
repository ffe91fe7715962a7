"""Shared data fixtures, and the order tests are handed to pytest-xdist's workers.

`full_dsprites` renders the 737,280 dSprites images once per session (about a minute, 3 GB
of disk and memory) into a session temporary cache, or reuses $TCVAE_TF_CACHE_DIR when it is
set; tests using it are marked `slow`.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    """Puts the `slow` tests (tens of seconds each) first, in their file order: the workers
    start them at once and share out the short tests while they run, instead of ending
    the session with the slow ones running side by side."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def small_dsprites():
    """dsprites-small: 1536 rendered images, a full (3, 2, 4, 8, 8) factor grid."""
    from tcvae_tf.data import dsprites_subgrid

    return dsprites_subgrid()


@pytest.fixture(scope="session")
def dsprites_cache_dir(tmp_path_factory):
    """The cache folder of `full_dsprites`: $TCVAE_TF_CACHE_DIR, or a session temporary one
    whose 3 GB cache file is deleted at the end of the session."""
    if os.environ.get("TCVAE_TF_CACHE_DIR"):
        yield os.environ["TCVAE_TF_CACHE_DIR"]
        return
    folder = tmp_path_factory.mktemp("tcvae_tf_cache")
    yield str(folder)
    for cache_file in folder.glob("*.npz"):
        cache_file.unlink()


@pytest.fixture(scope="session")
def full_dsprites(dsprites_cache_dir):
    """The full rendered dSprites (loaded from, or rendered into, `dsprites_cache_dir`)."""
    from tcvae_tf.data import load_dsprites

    return load_dsprites(source="rendered", cache_dir=dsprites_cache_dir)
