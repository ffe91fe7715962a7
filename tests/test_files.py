"""Advisory folder locks (files.lock_folder), as other processes see them."""

import errno
import os
import subprocess
import sys

import pytest

from tcvae_tf import files

# Takes a non-blocking lock on argv[1] ("shared" or "exclusive" in argv[2]) and prints
# whether it got it.
TRY_LOCK = """
import sys
from tcvae_tf import files
fd = files.lock_folder(sys.argv[1], wait=False, shared=sys.argv[2] == "shared")
print("taken" if fd is None else "locked")
"""


def lock_from_another_process(folder, shared=False):
    """What a non-blocking ``lock_folder`` in a new process gets: "locked" or "taken"."""
    completed = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(folder), "shared" if shared else "exclusive"],
        capture_output=True, text=True, timeout=120, check=True)
    return completed.stdout.strip()


needs_locks = pytest.mark.skipif(files.fcntl is None, reason="no locks without fcntl")


@needs_locks
def test_an_exclusive_folder_lock_keeps_every_other_process_out(tmp_path):
    fd = files.lock_folder(tmp_path)
    try:
        assert fd is not None
        assert lock_from_another_process(tmp_path) == "taken"
        assert lock_from_another_process(tmp_path, shared=True) == "taken"
    finally:
        files.unlock_folder(fd)
    assert lock_from_another_process(tmp_path) == "locked"  # released with the descriptor


@needs_locks
def test_shared_folder_locks_are_held_together_but_not_with_an_exclusive_one(tmp_path):
    fd = files.lock_folder(tmp_path, shared=True)
    try:
        assert lock_from_another_process(tmp_path, shared=True) == "locked"
        assert lock_from_another_process(tmp_path) == "taken"
        assert files.lock_folder(tmp_path, wait=False) is None  # another descriptor here too
    finally:
        files.unlock_folder(fd)
    other = files.lock_folder(tmp_path, wait=False)
    assert other is not None
    files.unlock_folder(other)


def test_no_folder_locks_without_fcntl(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "fcntl", None)
    assert files.lock_folder(tmp_path) is None
    assert files.lock_folder(tmp_path / "missing", wait=False, shared=True) is None
    files.unlock_folder(None)  # a no-op


@needs_locks
def test_a_refused_folder_lock_raises_and_closes_its_descriptor(tmp_path, monkeypatch):
    real_fcntl, closed = files.fcntl, []

    class NoLocks:  # a file system without flock
        LOCK_SH, LOCK_EX, LOCK_NB = real_fcntl.LOCK_SH, real_fcntl.LOCK_EX, real_fcntl.LOCK_NB

        @staticmethod
        def flock(fd, operation):
            raise OSError(errno.ENOLCK, "No locks available")

    real_close = os.close

    def close(fd):
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(files, "fcntl", NoLocks)
    monkeypatch.setattr(os, "close", close)
    with pytest.raises(OSError, match="No locks available"):
        files.lock_folder(tmp_path)
    assert len(closed) == 1
    with pytest.raises(FileNotFoundError):
        files.lock_folder(tmp_path / "missing")
