"""The npz format: official-file validation, the atomic cache, and the source choice."""

import json
import struct
import zipfile

import numpy as np
import pytest

from tcvae_tf import files
from tcvae_tf.data import DatasetError, grid_npz, load_dsprites
from tcvae_tf.data import dsprites as dsprites_lib
from tcvae_tf.data.grid_npz import GridSpec, load_or_build, read_grid_npz, write_grid_npz

TINY = GridSpec("tiny", ("shape", "size", "x"), (2, 3, 4), (8, 8, 1), leading_factor_sizes=(1,))


def tiny_arrays(spec=TINY):
    """Official-layout arrays of a tiny grid: imgs [N, 8, 8] 0/1, classes/values [N, 1 + K]."""
    classes = spec.grid_classes()
    count = len(classes)
    images = np.zeros((count, 8, 8), np.uint8)
    for row, (shape, size, x) in enumerate(classes):
        images[row, shape : shape + size + 1, x : x + 2] = 1
    latents_classes = np.concatenate([np.zeros((count, 1), np.int64), classes], axis=1)
    latents_values = np.concatenate([np.ones((count, 1)), classes * 0.25], axis=1)
    return images, latents_classes, latents_values


def write_official(path, images, latents_classes, latents_values, compressed=True, **extra):
    """An npz like DeepMind's: compressed, with a pickled metadata dict."""
    arrays = dict(imgs=images, latents_classes=latents_classes, latents_values=latents_values,
                  metadata=np.array({"description": "tiny"}, dtype=object))
    arrays.update(extra)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def assert_one_line_naming(error, path):
    message = str(error.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("compressed", [True, False])
def test_official_format_loads_without_float_copies(tmp_path, compressed):
    path = write_official(tmp_path / "tiny.npz", *tiny_arrays(), compressed=compressed)
    loaded = read_grid_npz(path, TINY)
    images, _, _ = tiny_arrays()
    assert loaded["images"].shape == (24, 8, 8, 1) and loaded["images"].dtype == np.uint8
    np.testing.assert_array_equal(loaded["images"][..., 0], images)
    np.testing.assert_array_equal(loaded["factor_classes"], TINY.grid_classes())
    np.testing.assert_allclose(loaded["factor_values"], TINY.grid_classes() * 0.25)
    assert loaded["metadata"] is None  # the pickled official metadata is never unpickled


@pytest.mark.parametrize("problem, change, match", [
    ("missing key", dict(latents_classes=None), "missing key.*latents_classes"),
    ("wrong images dtype", dict(imgs="float32"), "imgs has dtype float32, expected uint8"),
    ("wrong classes dtype", dict(latents_classes="float64"), "latents_classes has dtype"),
    ("wrong values dtype", dict(latents_values="int64"), "latents_values has dtype"),
    ("wrong image size", dict(imgs="crop"), r"imgs has shape \(24, 8, 7\)"),
    ("missing rows", dict(latents_values="rows"), r"latents_values has shape \(23, 4\)"),
    ("not the grid order", dict(latents_classes="swap"), "row 0 .*row-major"),
    ("non-binary images", dict(imgs="255"), "0/1 pixel values, found 255"),
])
def test_official_format_errors(tmp_path, problem, change, match):
    images, latents_classes, latents_values = tiny_arrays()
    arrays = dict(imgs=images, latents_classes=latents_classes, latents_values=latents_values)
    for key, how in change.items():
        array = arrays[key]
        if how is None:
            arrays[key] = None
        elif how == "crop":
            arrays[key] = array[:, :, :7]
        elif how == "rows":
            arrays[key] = array[:-1]
        elif how == "swap":
            arrays[key] = array[::-1]
        elif how == "255":
            arrays[key] = array * 255
        else:
            arrays[key] = array.astype(how)
    path = write_official(tmp_path / "bad.npz", arrays["imgs"], arrays["latents_classes"],
                          arrays["latents_values"])
    with pytest.raises(DatasetError, match=match) as error:
        read_grid_npz(path, TINY)
    assert_one_line_naming(error, path)


def test_missing_file_and_non_npz(tmp_path):
    with pytest.raises(DatasetError, match="no such file") as error:
        read_grid_npz(tmp_path / "absent.npz", TINY)
    assert_one_line_naming(error, tmp_path / "absent.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable npz") as error:
        read_grid_npz(text, TINY)
    assert_one_line_naming(error, text)


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_file_is_detected(tmp_path, compressed):
    path = tmp_path / "full.npz"
    if compressed:
        write_official(path, *tiny_arrays())
    else:
        write_grid_npz(path, *tiny_arrays(), metadata={})
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(data[:cut])
        with pytest.raises(DatasetError) as error:
            read_grid_npz(truncated, TINY)
        assert_one_line_naming(error, truncated)


@pytest.mark.parametrize("where", ["start", "middle"])
def test_corrupted_compressed_data_is_a_dataset_error(tmp_path, where):
    """Garbage inside a deflate stream makes zlib raise its own error, not zipfile's."""
    path = write_official(tmp_path / "official.npz", *tiny_arrays())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("imgs.npy")
    name_length, extra_length = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    start += 0 if where == "start" else info.compress_size // 2
    data[start : start + 4] = b"\xff" * 4  # at the start: deflate block type 3, invalid
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="corrupted|CRC|decompressing") as error:
        read_grid_npz(path, TINY)
    assert_one_line_naming(error, path)


def test_corrupted_image_bytes_fail_the_crc(tmp_path):
    path = tmp_path / "cache.npz"
    write_grid_npz(path, *tiny_arrays(), metadata={})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("imgs.npy")
    data[info.header_offset + 200] ^= 1  # inside the image bytes of the stored member
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="CRC-32") as error:
        read_grid_npz(path, TINY, require_metadata=True)
    assert_one_line_naming(error, path)


def test_full_size_spec_errors_are_cheap(tmp_path):
    """Against the real dSprites spec, bad files fail on their headers, before any data is
    read or any 737,280-row array is made."""
    images, latents_classes, latents_values = tiny_arrays()
    cases = {
        "missing key": (dict(imgs=images, latents_values=latents_values), "missing key"),
        "wrong dtype": (dict(imgs=images.astype(np.int16), latents_classes=latents_classes,
                             latents_values=latents_values), "dtype int16"),
        "wrong shape": (dict(imgs=images, latents_classes=latents_classes,
                             latents_values=latents_values), r"expected \(737280, 64, 64\)"),
    }
    for name, (arrays, match) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        np.savez(path, **arrays)
        with pytest.raises(DatasetError, match=match) as error:
            load_dsprites(source="official", path=path)
        assert_one_line_naming(error, path)
    with pytest.raises(DatasetError, match="no such file"):
        load_dsprites(source="official", path=tmp_path / "nowhere.npz")


@pytest.mark.parametrize("compressed", [True, False])
def test_a_wrong_grid_fails_before_the_images_are_read(tmp_path, monkeypatch, compressed):
    """The factors are checked first: a file in the wrong row order (or with NaN values)
    never has its images (3 GB for dSprites) read into memory."""
    images, latents_classes, latents_values = tiny_arrays()
    read = []
    real_read_array = grid_npz._read_array
    monkeypatch.setattr(grid_npz, "_read_array", lambda path, archive, member: (
        read.append(member.info.filename) or real_read_array(path, archive, member)))
    bad_values = latents_values.copy()
    bad_values[5, 2] = np.nan
    for name, classes, values, match in [("order", latents_classes[::-1], latents_values,
                                          "row-major"),
                                         ("nan", latents_classes, bad_values, "NaN")]:
        path = write_official(tmp_path / f"{name}.npz", images, classes, values,
                              compressed=compressed)
        read.clear()
        with pytest.raises(DatasetError, match=match):
            read_grid_npz(path, TINY)
        assert "imgs.npy" not in read and "latents_classes.npy" in read


def test_cache_round_trip_and_metadata_without_pickle(tmp_path):
    path = tmp_path / "cache.npz"
    images, latents_classes, latents_values = tiny_arrays()
    written = write_grid_npz(path, images, latents_classes, latents_values,
                             metadata=dict(name="tiny", renderer_version=3))
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["imgs", "latents_classes", "latents_values", "metadata"]
        metadata = json.loads(str(archive["metadata"]))
        np.testing.assert_array_equal(archive["imgs"], images)
    assert metadata == written and metadata["renderer_version"] == 3
    assert metadata["images_sha256"] == grid_npz.images_sha256(images)
    loaded = read_grid_npz(path, TINY, require_metadata=True)
    np.testing.assert_array_equal(loaded["images"][..., 0], images)
    assert loaded["metadata"] == metadata
    grid_npz.verify_images_sha256(path, loaded["images"][..., 0], loaded["metadata"])
    changed = loaded["images"][..., 0].copy()
    changed[0, 0, 0] ^= 1
    with pytest.raises(DatasetError, match="SHA-256"):
        grid_npz.verify_images_sha256(path, changed, loaded["metadata"])
    assert not list(tmp_path.glob("*.partial"))


class CountingBuild:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return tiny_arrays()


def test_cache_is_built_once_then_read(tmp_path):
    build, path = CountingBuild(), tmp_path / "sub" / "cache.npz"
    first = load_or_build(path, TINY, build, dict(version=1))
    second = load_or_build(path, TINY, build, dict(version=1))
    assert build.calls == 1 and path.is_file()
    np.testing.assert_array_equal(first["images"], second["images"])
    np.testing.assert_array_equal(first["factor_classes"], second["factor_classes"])
    assert second["metadata"]["version"] == 1
    with pytest.warns(RuntimeWarning, match="different settings"):
        load_or_build(path, TINY, build, dict(version=2))  # other settings: rebuilt
    assert build.calls == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    build, path = CountingBuild(), tmp_path / "cache.npz"
    load_or_build(path, TINY, build, {})
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"x" * 100)
    else:
        data[len(data) // 4] ^= 0xFF
    path.write_bytes(bytes(data))
    messages = []
    with pytest.warns(RuntimeWarning, match="damaged or stale dataset cache"):
        rebuilt = load_or_build(path, TINY, build, {}, log=messages.append)
    assert build.calls == 2 and any(str(path) in message for message in messages)
    assert read_grid_npz(path, TINY, require_metadata=True)["images"].shape == (24, 8, 8, 1)
    assert rebuilt["images"].shape == (24, 8, 8, 1)


def test_interrupted_write_leaves_no_valid_file(tmp_path, monkeypatch):
    path = tmp_path / "cache.npz"
    real_write_array = np.lib.format.write_array
    calls = []

    def write_then_fail(stream, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 2:  # images written, then the process "dies"
            raise KeyboardInterrupt
        return real_write_array(stream, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_grid_npz(path, *tiny_arrays(), metadata={})
    assert not path.exists() and list(tmp_path.iterdir()) == []
    # An older valid cache survives an interrupted rewrite.
    monkeypatch.setattr(np.lib.format, "write_array", real_write_array)
    write_grid_npz(path, *tiny_arrays(), metadata=dict(generation=1))
    calls.clear()
    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_grid_npz(path, *tiny_arrays(), metadata=dict(generation=2))
    assert read_grid_npz(path, TINY, require_metadata=True)["metadata"]["generation"] == 1
    assert [item.name for item in tmp_path.iterdir()] == ["cache.npz"]


def test_partial_file_of_a_killed_writer_is_ignored(tmp_path):
    """A writer killed outright leaves only its `.partial` temporary, never the cache name."""
    build, path = CountingBuild(), tmp_path / "cache.npz"
    partial = tmp_path / ".cache.npz.killed.partial"
    write_grid_npz(partial, *tiny_arrays(), metadata={})
    load_or_build(path, TINY, build, {})
    assert build.calls == 1
    assert not partial.exists()  # the builder, holding the lock, removed it


@pytest.mark.skipif(files.fcntl is None, reason="no locks without fcntl")
def test_processes_finding_no_cache_build_it_once(tmp_path):
    """The first builder holds the lock; the others wait and read what it wrote."""
    import threading

    path = tmp_path / "cache.npz"
    started, release = threading.Event(), threading.Event()

    class SlowBuild(CountingBuild):
        def __call__(self):
            started.set()
            assert release.wait(30)
            return super().__call__()

    build, results, messages = SlowBuild(), [], []

    def load():
        results.append(load_or_build(path, TINY, build, {}, log=messages.append))

    first = threading.Thread(target=load)
    first.start()
    assert started.wait(30)
    others = [threading.Thread(target=load) for _ in range(2)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join(timeout=0.5)
        assert thread.is_alive()  # waiting for the lock, not building
    release.set()
    for thread in (first, *others):
        thread.join(timeout=30)
    assert build.calls == 1 and len(results) == 3
    assert [result["metadata"] is not None for result in results] == [True] * 3
    for result in results[1:]:
        np.testing.assert_array_equal(result["images"], results[0]["images"])
    assert messages.count(f"waiting for another process that is building {path}") == 2


def test_failed_cache_write_still_returns_the_data(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(grid_npz, "write_grid_npz", no_space)
    with pytest.warns(RuntimeWarning, match="could not write the dataset cache"):
        loaded = load_or_build(tmp_path / "cache.npz", TINY, CountingBuild(), {})
    assert loaded["images"].shape == (24, 8, 8, 1) and loaded["metadata"] is None


# -- choosing the source ------------------------------------------------------------------

@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    for name in ("TCVAE_TF_CACHE_DIR", "TCVAE_TF_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_cache_dir_precedence(clean_environment, monkeypatch):
    home = clean_environment / "home"
    assert dsprites_lib.default_cache_dir() == home / ".cache" / "tcvae_tf"
    monkeypatch.setenv("TCVAE_TF_CACHE_DIR", str(clean_environment / "env"))
    assert dsprites_lib.default_cache_dir() == clean_environment / "env"
    assert dsprites_lib.default_cache_dir(clean_environment / "arg") == clean_environment / "arg"
    assert dsprites_lib.rendered_cache_path().parent == clean_environment / "env"


def test_auto_prefers_official_then_falls_back_to_rendered(clean_environment, monkeypatch):
    assert dsprites_lib.resolve_source("auto") == ("rendered", None)
    data_dir = clean_environment / "data"
    data_dir.mkdir()
    official = data_dir / dsprites_lib.OFFICIAL_FILENAME
    official.write_bytes(b"")
    monkeypatch.setenv("TCVAE_TF_DATA_DIR", str(data_dir))
    assert dsprites_lib.resolve_source("auto") == ("official", official)
    assert dsprites_lib.resolve_source("official") == ("official", official)
    given = clean_environment / "given.npz"
    assert dsprites_lib.resolve_source("auto", path=given) == ("official", given)
    assert dsprites_lib.resolve_source("rendered") == ("rendered", None)
    with pytest.raises(ValueError, match="the rendered dSprites reads no file, got x.npz"):
        dsprites_lib.resolve_source("rendered", "x.npz")  # not silently ignored
    with pytest.raises(ValueError, match="unknown dSprites source"):
        dsprites_lib.resolve_source("web")


def test_official_not_found_names_the_places(clean_environment):
    with pytest.raises(DatasetError, match="dsprites_ndarray.*not found.*TCVAE_TF_DATA_DIR"):
        load_dsprites(source="official")


def test_auto_reports_the_source_and_uses_the_rendered_loader(clean_environment, monkeypatch):
    calls = []
    monkeypatch.setattr(dsprites_lib, "_load_rendered",
                        lambda cache_dir, log: calls.append(cache_dir) or "rendered-dataset")
    messages = []
    assert load_dsprites(cache_dir="somewhere", log=messages.append) == "rendered-dataset"
    assert calls == ["somewhere"] and messages == ["dSprites source: rendered"]


def test_tfds_not_prepared_raises_without_downloading(clean_environment, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    import tensorflow_datasets as tfds

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    data_dir = clean_environment / "tfds"
    with pytest.raises(DatasetError, match="not prepared") as error:
        load_dsprites(source="tfds", path=data_dir)
    assert "\n" not in str(error.value) and str(data_dir) in str(error.value)
    assert not (data_dir / "downloads").exists()
    # auto skips an unprepared TFDS folder
    (data_dir / "dsprites").mkdir(parents=True)
    assert dsprites_lib.resolve_source("auto") == ("rendered", None)


def test_a_damaged_tfds_copy_is_a_one_line_dataset_error(clean_environment, monkeypatch):
    """A prepared copy whose record file is corrupted fails while TF reads it."""
    pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    data_dir = clean_environment / "tfds"
    shard = data_dir / "dsprites-train.tfrecord-00000-of-00001"
    data_dir.mkdir()
    shard.write_bytes(b"\x07" * 64)

    class DamagedBuilder:
        def is_prepared(self):
            return True

        def as_dataset(self, **kwargs):
            return tf.data.TFRecordDataset(str(shard)).batch(kwargs["batch_size"])

    DamagedBuilder.data_dir = str(data_dir)
    monkeypatch.setattr(dsprites_lib, "_tfds_builder", lambda folder: DamagedBuilder())
    with pytest.raises(DatasetError, match="cannot read TFDS dsprites .*corrupted") as error:
        load_dsprites(source="tfds", path=data_dir)
    assert_one_line_naming(error, data_dir)
    assert "{{" not in str(error.value)


def labelled_batches(order, batch_size, image_scale=1):
    """TFDS-like batches of the tiny grid in a given row order."""
    images, latents_classes, _ = tiny_arrays()
    classes = latents_classes[:, 1:]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = {f"label_{k}": classes[rows, k] for k in range(3)}
        batch["image"] = images[rows, :, :, None] * image_scale
        yield batch


@pytest.mark.parametrize("image_scale", [1, 255])
def test_labelled_examples_are_put_in_grid_order(image_scale):
    order = np.random.default_rng(4).permutation(24)
    images, classes = dsprites_lib.assemble_labelled_batches(
        labelled_batches(order, 5, image_scale), ("label_0", "label_1", "label_2"), (2, 3, 4),
        (8, 8, 1), "fake-tfds")
    np.testing.assert_array_equal(classes, TINY.grid_classes())
    np.testing.assert_array_equal(images[..., 0], tiny_arrays()[0])


def test_labelled_examples_missing_or_repeated():
    keys, sizes = ("label_0", "label_1", "label_2"), (2, 3, 4)
    with pytest.raises(DatasetError, match="fake-tfds: 1 of 24 factor combinations are missing"):
        dsprites_lib.assemble_labelled_batches(labelled_batches(np.arange(23), 5), keys, sizes,
                                               (8, 8, 1), "fake-tfds")
    repeated = np.concatenate([np.arange(24), [3]])
    with pytest.raises(DatasetError, match="more than once"):
        dsprites_lib.assemble_labelled_batches(labelled_batches(repeated, 5), keys, sizes,
                                               (8, 8, 1), "fake-tfds")


def test_a_prepared_tfds_copy_loads_in_grid_order(clean_environment, monkeypatch):
    """A real TFDS `dsprites` folder, prepared here from a 12-image grid, read by the loader."""
    pytest.importorskip("tensorflow_datasets")
    import tensorflow_datasets as tfds

    sizes = (3, 1, 1, 2, 2)
    classes = GridSpec("mini", dsprites_lib.FACTOR_NAMES, sizes, (64, 64, 1)).grid_classes()
    images = np.zeros((len(classes), 64, 64, 1), np.uint8)
    for row, (shape, _, _, x, y) in enumerate(classes):
        images[row, 8 * y : 8 * y + 4 + shape, 8 * x : 8 * x + 6] = 1
    order = np.random.default_rng(0).permutation(len(classes))
    builder_class = tfds.builder_cls("dsprites")

    def split_generators(self, dl_manager):
        return [tfds.core.SplitGenerator(name=tfds.Split.TRAIN, gen_kwargs={})]

    def generate_examples(self):
        for key, row in enumerate(order):
            record = {"image": images[row]}
            for name, value in zip(("shape", "scale", "orientation", "x_position", "y_position"),
                                   classes[row], strict=True):
                record[f"label_{name}"] = int(value)
                record[f"value_{name}"] = np.float32(value)
            yield key, record

    monkeypatch.setattr(builder_class, "_split_generators", split_generators)
    monkeypatch.setattr(builder_class, "_generate_examples", generate_examples)
    data_dir = clean_environment / "tfds"
    tfds.builder("dsprites", data_dir=str(data_dir)).download_and_prepare()

    monkeypatch.setattr(dsprites_lib, "FACTOR_SIZES", sizes)
    assert dsprites_lib.resolve_source("auto") == ("tfds", data_dir)
    messages = []
    dataset = load_dsprites(source="tfds", path=data_dir, log=messages.append)
    assert dataset.source == "tfds" and messages[-1].startswith("loading TFDS dsprites from")
    np.testing.assert_array_equal(dataset.factor_classes, classes)
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_allclose(dataset.factor_values, dsprites_lib.factor_values_of(classes))


def test_a_fresh_build_returns_the_written_file_memory_mapped(tmp_path, monkeypatch):
    """The built copy is not kept: the process shares the cache file's pages instead."""
    monkeypatch.setattr(grid_npz, "MMAP_MIN_BYTES", 1)
    build = CountingBuild()
    loaded = load_or_build(tmp_path / "cache.npz", TINY, build, dict(version=1))
    assert build.calls == 1 and loaded["metadata"]["version"] == 1
    assert isinstance(loaded["images"].base, np.memmap) or isinstance(loaded["images"],
                                                                      np.memmap)
    np.testing.assert_array_equal(loaded["images"][..., 0], tiny_arrays()[0])


def test_large_stored_arrays_are_memory_mapped_after_their_crc_check(tmp_path, monkeypatch):
    monkeypatch.setattr(grid_npz, "MMAP_MIN_BYTES", 1)
    path = tmp_path / "cache.npz"
    images, latents_classes, latents_values = tiny_arrays()
    write_grid_npz(path, images, latents_classes, latents_values, metadata={})
    loaded = read_grid_npz(path, TINY, require_metadata=True)
    assert isinstance(loaded["images"].base, np.memmap) or isinstance(loaded["images"],
                                                                      np.memmap)
    assert not loaded["images"].flags.writeable
    np.testing.assert_array_equal(loaded["images"].reshape(images.shape), images)

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("imgs.npy")
    data[info.header_offset + 200] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="CRC-32"):
        read_grid_npz(path, TINY, require_metadata=True)
