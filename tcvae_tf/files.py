"""Atomic file writes, checksums and advisory locks.

A reader never sees a half-written file, and an interrupted write leaves only a
``.tmp-*`` file behind, never a file under the final name. A file is flushed to disk
before it is renamed into place, so a power loss cannot leave a file under the final
name whose content is lost.

Locks are advisory ``flock`` locks, on a lock file (:func:`locked`) or on a folder
(:func:`lock_folder`); a lock ends when its descriptor is closed or its process ends,
however it ends. Without ``fcntl`` (not on POSIX) there are no locks.
"""

import contextlib
import hashlib
import os
import tempfile

try:
    import fcntl
except ImportError:  # not on POSIX: no locks
    fcntl = None


def atomic_write(path, write, prefix=".tmp-", suffix=None):
    """Writes a file through a temporary file next to it, flushed to disk, and a rename.

    Args:
      path: the file to write.
      write: callable(tmp_path) that writes the content to tmp_path (it keeps the
        extension of ``path``, which some writers such as Keras' ``model.save`` need).
      prefix: name prefix of the temporary file.
      suffix: name ending of the temporary file (default: the extension of ``path``;
        Keras' ``save_weights`` needs ".weights.h5").

    Returns:
      ``path``. The file gets the usual permissions (0666 minus the umask); the folder's
      entry is flushed to disk after the rename where the OS allows.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = suffix or os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_folder(folder)
    return path


def fsync_file(path):
    """Flushes a file's content to disk."""
    # Windows' fsync needs a descriptor open for writing; POSIX flushes through any.
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path):
    """Flushes a folder's entries (names created, renamed or removed in it) to disk.

    A no-op where the OS cannot open a folder (Windows) or the file system refuses.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder):
    """Flushes every file and folder under ``folder`` (``folder`` included) to disk."""
    for directory, _, file_names in os.walk(folder):
        for file_name in file_names:
            fsync_file(os.path.join(directory, file_name))
        fsync_folder(directory)


def atomic_write_text(path, text, prefix=".tmp-"):
    """Writes ``text`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(tmp):
        with open(tmp, "w") as handle:
            handle.write(text)

    return atomic_write(path, write, prefix=prefix)


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path, on_wait=None):
    """Holds an exclusive advisory lock on the file ``path`` (created if missing) for the
    ``with`` block; other processes taking it wait. The lock ends with the block or with
    its process, however that ends.

    Args:
      path: the lock file.
      on_wait: optional callable() called when another holder has the lock, before waiting.

    Yields:
      (whether the lock is held, whether it had to wait for another holder). Without
      ``fcntl``, or where the lock file cannot be made (a read-only folder), there is no
      lock: (False, False).
    """
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT, 0o666)
    waited = False
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
                waited = True
        yield fd is not None, waited
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def lock_folder(folder, wait=True, shared=False):
    """Takes an advisory lock on a folder: exclusive, or ``shared`` with other readers.

    The lock lasts until the returned descriptor is closed (:func:`unlock_folder`) or its
    process ends, however it ends, so it can be held across functions (a folder being
    built keeps its lock until it is removed).

    Args:
      folder: an existing folder.
      wait: wait for other holders (False: return None at once if the lock is taken).
      shared: a reader's lock, held together with other shared locks but never with an
        exclusive one.

    Returns:
      The descriptor holding the lock; None if ``wait`` is False and another holder has
      it, or on an OS without ``fcntl`` (no locks).

    Raises:
      OSError: the folder cannot be opened, or its file system refuses the lock (the
        descriptor is closed first).

    Example:

    ```python
    fd = lock_folder(root, shared=True)
    try:
        ...  # read what writers of root change under an exclusive lock
    finally:
        unlock_folder(fd)
    ```
    """
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                    | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_folder(fd):
    """Releases a lock taken by :func:`lock_folder` (a no-op for None)."""
    if fd is not None:
        os.close(fd)  # releases the lock
