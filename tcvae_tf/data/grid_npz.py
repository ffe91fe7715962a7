"""Reading, validating and atomically writing factor-grid datasets in the dSprites npz format.

The format is the one of DeepMind's `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`:

```none
imgs             uint8   [N, H, W] (or [N, H, W, C])   pixel values 0..1
latents_classes  int     [N, L + K]                     class of every factor, row-major grid
latents_values   float   [N, L + K]                     value of every factor
metadata         (official file: a pickled dict; our files: a JSON string, no pickle)
```

L leading constant factors (dSprites' colour) come before the K factors that a
`GroundTruthDataset` keeps. Our own cache files are uncompressed (fast to load) and carry
a JSON metadata string with the SHA-256 of the image bytes; every read checks the zip's
CRC-32 of each array, which catches truncated and corrupted files.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tcvae_tf.data.ground_truth import DatasetError
from tcvae_tf.files import locked

IMAGES_KEY = "imgs"
CLASSES_KEY = "latents_classes"
VALUES_KEY = "latents_values"
METADATA_KEY = "metadata"
REQUIRED_KEYS = (IMAGES_KEY, VALUES_KEY, CLASSES_KEY)
FORMAT_NAME = "tcvae_tf-grid-npz"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"

_READ_CHUNK = 64 * 1024 * 1024
# What reading a damaged archive raises (zlib.error: corrupted data of a compressed member).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError)
# Stored arrays at least this large are memory-mapped (read-only) instead of copied.
MMAP_MIN_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """The expected layout of a full factorial dataset file.

    Attributes:
      name: dataset name, e.g. "dsprites".
      factor_names: names of the K kept factors.
      factor_sizes: number of classes of each kept factor.
      image_shape: (H, W, C) of one image.
      leading_factor_sizes: sizes of the L factors stored before the kept ones in the
        npz (dSprites: colour, size 1); they must be constant (size 1).

    Example:
      >>> spec = GridSpec("toy", ("a", "b"), (2, 3), (8, 8, 1))
      >>> spec.num_images
      6
    """

    name: str
    factor_names: tuple
    factor_sizes: tuple
    image_shape: tuple
    leading_factor_sizes: tuple = (1,)

    def __post_init__(self):
        if len(self.factor_names) != len(self.factor_sizes):
            raise ValueError(f"{len(self.factor_names)} factor names for "
                             f"{len(self.factor_sizes)} factor sizes")
        if any(size != 1 for size in self.leading_factor_sizes):
            raise ValueError(f"leading factors must have size 1, got {self.leading_factor_sizes}")

    @property
    def num_images(self):
        return int(np.prod(self.factor_sizes))

    @property
    def num_columns(self):
        """Number of factor columns in the npz (leading + kept)."""
        return len(self.leading_factor_sizes) + len(self.factor_sizes)

    def grid_classes(self):
        """Row-major classes of every image: int64 [N, K] (last factor fastest)."""
        grids = np.indices(self.factor_sizes, dtype=np.int64)
        return grids.reshape(len(self.factor_sizes), -1).T.copy()


def _one_line(text):
    return " ".join(str(text).split())


def _fail(path, problem):
    return DatasetError(f"{path}: {_one_line(problem)}")


@dataclasses.dataclass(frozen=True)
class _Member:
    """One array of an npz archive, described from its zip and .npy headers."""

    info: zipfile.ZipInfo
    shape: tuple
    fortran_order: bool
    dtype: np.dtype
    data_offset: int  # offset of the array bytes inside the member


def _read_members(path, archive):
    """Parses the .npy header of every member without reading the array data."""
    members = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[: -len(".npy")]
        with archive.open(info) as stream:
            major, _ = np.lib.format.read_magic(stream)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                    stream, max_header_size=100000
                )
            members[key] = _Member(info, shape, fortran, dtype, stream.tell())
    return members


def _read_stored_array(path, member):
    """Reads an uncompressed member straight from the file, checking its CRC-32.

    Arrays of ``MMAP_MIN_BYTES`` or more are memory-mapped read-only once their CRC-32 has
    been checked, so that processes reading the same file (the trials of a sweep, an
    evaluation beside a training run) share one copy in the page cache instead of
    holding one each (3 GB for dSprites).
    """
    info = member.info
    with open(path, "rb") as stream:
        stream.seek(info.header_offset)
        local = stream.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise _fail(path, f"bad zip entry for '{info.filename}'")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        stream.seek(start)
        header = stream.read(member.data_offset)
        crc = zlib.crc32(header)
        order = "F" if member.fortran_order else "C"
        nbytes = int(np.prod(member.shape, dtype=np.int64)) * member.dtype.itemsize
        mapped = nbytes >= MMAP_MIN_BYTES
        if mapped:
            array = None
            chunk = bytearray(min(_READ_CHUNK, nbytes))
            buffer = memoryview(chunk)
            total = nbytes
        else:
            array = np.empty(member.shape, member.dtype, order=order)
            buffer = memoryview(array.reshape(-1, order="A")).cast("B")
            total = len(buffer)
        done = 0
        while done < total:
            if mapped:
                count = stream.readinto(buffer[: min(len(buffer), total - done)])
                crc = zlib.crc32(buffer[:count], crc) if count else crc
            else:
                count = stream.readinto(buffer[done : done + _READ_CHUNK])
                crc = zlib.crc32(buffer[done : done + count], crc) if count else crc
            if not count:
                raise _fail(path, f"array '{info.filename}' is truncated "
                                  f"({done + member.data_offset} of {info.file_size} bytes)")
            done += count
    if member.data_offset + done != info.file_size:
        raise _fail(path, f"array '{info.filename}' size does not match its zip entry")
    if crc != info.CRC:
        raise _fail(path, f"CRC-32 mismatch in '{info.filename}' (the file is corrupted)")
    if mapped:
        return np.memmap(path, dtype=member.dtype, mode="r", offset=start + member.data_offset,
                         shape=tuple(member.shape), order=order)
    return array


def _read_array(path, archive, member):
    if member.dtype.hasobject:
        raise _fail(path, f"'{member.info.filename}' holds Python objects (pickle); refusing "
                          "to load it")
    if member.info.compress_type == zipfile.ZIP_STORED:
        return _read_stored_array(path, member)
    with archive.open(member.info) as stream:  # zipfile checks the CRC-32 at the end
        return np.lib.format.read_array(stream, allow_pickle=False)


def read_grid_npz(path, spec, require_metadata=False):
    """Reads and validates a factor-grid npz file against a `GridSpec`.

    Checks, in this order, each failure raising `DatasetError` with one line naming the file:
    the file exists and is a zip archive; the keys `imgs`, `latents_values`,
    `latents_classes` (and, if `require_metadata`, a JSON `metadata`) are present; their
    dtypes (uint8 / integer / floating); their shapes; the factor arrays read completely
    with matching CRC-32; the classes are the spec's row-major grid; the images read
    completely with matching CRC-32 (only now, so a wrong file costs no 3 GB read); images
    hold only 0 and 1.

    Args:
      path: str or Path of the npz file.
      spec: `GridSpec` the file must match.
      require_metadata: our own cache files carry a JSON metadata string; official files a
        pickled dict, which is never unpickled.

    Returns:
      dict with `images` uint8 [N, H, W, C] (a view of the stored array, no float copy),
      `factor_classes` int64 [N, K], `factor_values` float64 [N, K] (leading constant
      factors dropped) and `metadata` (dict, or None when not read).

    Raises:
      DatasetError: the file is missing, unreadable or does not match `spec`.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        problem = f"not a readable npz archive (truncated or corrupted?): {error}"
        raise _fail(path, problem) from None
    with archive:
        try:
            members = _read_members(path, archive)
        except _READ_ERRORS as error:
            raise _fail(path, f"cannot read the array headers: {error}") from None
        keys = REQUIRED_KEYS + ((METADATA_KEY,) if require_metadata else ())
        missing = [key for key in keys if key not in members]
        if missing:
            raise _fail(path, f"missing key(s) {', '.join(missing)} "
                              f"(found: {', '.join(sorted(members)) or 'none'})")
        _check_dtypes(path, members)
        _check_shapes(path, members, spec)
        metadata = None
        if require_metadata:
            metadata = _read_metadata(path, archive, members[METADATA_KEY])
        # The factors first: a file whose grid is wrong fails before its images are read.
        classes = _read_checked(path, archive, members[CLASSES_KEY])
        values = _read_checked(path, archive, members[VALUES_KEY])
        factor_classes, factor_values = _check_factors(path, spec, classes, values)
        images = _read_checked(path, archive, members[IMAGES_KEY])
    if images.ndim == 3:
        images = images[..., np.newaxis]
    largest = int(images.max()) if images.size else 0
    if largest > 1:
        raise _fail(path, f"imgs must hold 0/1 pixel values, found {largest}")
    return dict(images=images, factor_classes=factor_classes, factor_values=factor_values,
                metadata=metadata)


def _read_checked(path, archive, member):
    """`_read_array`, with any error of a damaged archive as a one-line `DatasetError`."""
    try:
        return _read_array(path, archive, member)
    except DatasetError:
        raise
    except _READ_ERRORS as error:
        problem = f"cannot read the arrays (truncated or corrupted?): {error}"
        raise _fail(path, problem) from None


def _check_factors(path, spec, classes, values):
    """The kept factors' classes int64 [N, K] and values float64 [N, K] of a file's
    latents_classes and latents_values [N, L + K], checked against the spec's grid."""
    leading = len(spec.leading_factor_sizes)
    if leading and (classes[:, :leading] != 0).any():
        raise _fail(path, f"latents_classes columns 0..{leading - 1} must be constant 0")
    factor_classes = np.ascontiguousarray(classes[:, leading:], dtype=np.int64)
    expected = spec.grid_classes()
    mismatch = np.flatnonzero((factor_classes != expected).any(axis=1))
    if mismatch.size:
        row = int(mismatch[0])
        raise _fail(path, f"latents_classes row {row} is {classes[row].tolist()}, expected "
                          f"{[0] * leading + expected[row].tolist()} (rows must follow the "
                          "row-major factor grid)")
    factor_values = np.ascontiguousarray(values[:, leading:], dtype=np.float64)
    if not np.isfinite(factor_values).all():
        raise _fail(path, "latents_values holds NaN or infinite values")
    return factor_classes, factor_values


def _check_dtypes(path, members):
    dtype = members[IMAGES_KEY].dtype
    if dtype != np.uint8:
        raise _fail(path, f"imgs has dtype {dtype}, expected uint8")
    dtype = members[CLASSES_KEY].dtype
    if not np.issubdtype(dtype, np.integer):
        raise _fail(path, f"latents_classes has dtype {dtype}, expected an integer type")
    dtype = members[VALUES_KEY].dtype
    if not np.issubdtype(dtype, np.floating):
        raise _fail(path, f"latents_values has dtype {dtype}, expected a floating type")


def _check_shapes(path, members, spec):
    height, width, channels = spec.image_shape
    count = spec.num_images
    shape = tuple(members[IMAGES_KEY].shape)
    accepted = [(count, height, width, channels)]
    if channels == 1:
        accepted.insert(0, (count, height, width))
    if shape not in accepted:
        raise _fail(path, f"imgs has shape {shape}, expected {accepted[0]}")
    for key in (CLASSES_KEY, VALUES_KEY):
        shape = tuple(members[key].shape)
        if shape != (count, spec.num_columns):
            raise _fail(path, f"{key} has shape {shape}, expected {(count, spec.num_columns)}")


def _read_metadata(path, archive, member):
    if member.dtype.kind != "U" or member.shape != ():
        raise _fail(path, f"metadata must be a JSON string, found {member.dtype} "
                          f"{member.shape}")
    try:
        text = str(_read_array(path, archive, member))
        metadata = json.loads(text)
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise _fail(path, f"metadata is not valid JSON: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise _fail(path, f"metadata does not describe a {FORMAT_NAME} file")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise _fail(path, f"format version {metadata.get('format_version')} is not "
                          f"{FORMAT_VERSION}")
    return metadata


def images_sha256(images):
    """Hex SHA-256 of the bytes of a C-contiguous image array."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(images)).cast("B")).hexdigest()


def verify_images_sha256(path, images, metadata):
    """Checks images against the SHA-256 recorded in a cache file's metadata.

    Raises:
      DatasetError: the digest differs or is absent.
    """
    recorded = (metadata or {}).get("images_sha256")
    if recorded is None:
        raise _fail(path, "metadata records no images_sha256")
    if images_sha256(images) != recorded:
        raise _fail(path, "images do not match the SHA-256 recorded in the metadata")


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_grid_npz(path, images, latents_classes, latents_values, metadata):
    """Writes an uncompressed grid npz atomically.

    The arrays go to a temporary file in the same folder (name ending in `.partial`),
    which is flushed, synced and renamed over `path` with `os.replace`. If anything fails
    the temporary file is removed; a process killed while writing leaves only a
    `.partial` file, which no reader picks up.

    Args:
      path: destination .npz path.
      images: uint8 [N, H, W] or [N, H, W, C].
      latents_classes: int [N, L + K].
      latents_values: float [N, L + K].
      metadata: JSON-serialisable dict; `format`, `format_version` and `images_sha256`
        are added.

    Returns:
      The metadata dict written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata, format=FORMAT_NAME, format_version=FORMAT_VERSION,
                    images_sha256=images_sha256(images))
    arrays = {
        IMAGES_KEY: np.ascontiguousarray(images),
        VALUES_KEY: np.ascontiguousarray(latents_values),
        CLASSES_KEY: np.ascontiguousarray(latents_classes),
        METADATA_KEY: np.array(json.dumps(metadata, sort_keys=True)),
    }
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX,
                                         dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())
        with os.fdopen(handle, "wb") as stream:
            with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for key, array in arrays.items():
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return metadata


def load_or_build(path, spec, build, metadata, log=None):
    """Loads a cached grid npz, or builds and caches it when missing or damaged.

    One process builds at a time: a builder holds a lock on ``.NAME.lock`` beside the cache,
    and a process that finds the cache missing while another builds it waits and then reads
    what that one wrote, instead of building it a second time (two sweep trials started on
    an empty cache render dSprites once). The builder first removes the ``.partial``
    temporaries of killed writers, which no running writer can own under the lock.

    Args:
      path: cache file path.
      spec: `GridSpec` the file must match.
      build: callable() -> (images, latents_classes, latents_values) in the npz layout.
      metadata: dict stored in (and expected from) the file, e.g. the renderer version;
        a file whose metadata disagrees on these keys is rebuilt.
      log: optional callable(str) for progress messages.

    Returns:
      The dict of `read_grid_npz` (for a fresh build: the file just written, read back; the
      built arrays only if it could not be written).
    """
    path = Path(path)
    log = log or (lambda message: None)
    loaded, problem = _read_cache(path, spec, metadata)
    if loaded is not None:
        return loaded
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)

    def on_wait():
        log(f"waiting for another process that is building {path}")

    with locked(path.parent / f".{path.name}{LOCK_SUFFIX}", on_wait) as (held, waited):
        if waited:  # another process held the lock: it may have built the file meanwhile
            loaded, problem = _read_cache(path, spec, metadata)
            if loaded is not None:
                return loaded
        if problem is not None:
            message = f"damaged or stale dataset cache, building it again ({problem})"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            log(message)
        if held:  # no writer can own a .partial file now
            _remove_partials(path)
        images, latents_classes, latents_values = build()
        try:
            written = write_grid_npz(path, images, latents_classes, latents_values, metadata)
            log(f"cached {len(images)} images at {path}")
            # Read back: large arrays come memory-mapped, so the built copy is freed and this
            # process shares the file's pages with every other reader (3 GB for dSprites).
            loaded, _ = _read_cache(path, spec, metadata)
            if loaded is not None:
                return loaded
        except OSError as error:
            written = None
            message = f"could not write the dataset cache {path}: {_one_line(error)}"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            log(message)
    leading = len(spec.leading_factor_sizes)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    return dict(images=images,
                factor_classes=np.ascontiguousarray(latents_classes[:, leading:], np.int64),
                factor_values=np.ascontiguousarray(latents_values[:, leading:], np.float64),
                metadata=written)


def _read_cache(path, spec, metadata):
    """(the loaded cache, None), or (None, why it cannot be used; None if it is missing)."""
    if not path.exists():
        return None, None
    try:
        loaded = read_grid_npz(path, spec, require_metadata=True)
    except DatasetError as error:
        return None, str(error)
    stale = {key: loaded["metadata"].get(key) for key in metadata
             if loaded["metadata"].get(key) != metadata[key]}
    if stale:
        return None, f"{path}: made with different settings {stale}"
    return loaded, None


def _remove_partials(path):
    """Deletes the ``.NAME.*.partial`` temporaries of writers that were killed."""
    for partial in path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"):
        with contextlib.suppress(OSError):
            partial.unlink()
