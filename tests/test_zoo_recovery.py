"""A publish killed at any point loses nothing: the next one removes what it left.

A kill -9 is simulated by copying the zoo at the moment the process would have died
(the copy keeps everything on disk, including the staging folder, and nobody holds its
lock); the publish itself then goes on.
"""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from test_zoo import NAME, make_run, snapshot

from tcvae_tf import files, zoo

CRASH_POINTS = ("after the encoder's rename", "after both renames", "before the index write",
                "during the index write")
INTERRUPTED = f"left by an interrupted publish; the next export of {NAME} removes it"


@pytest.fixture(scope="module")
def crashes(tmp_path_factory):
    """(run folder, zoo with version 1, {crash point: the zoo as a publish of version 2
    left it when its process died there})."""
    base = tmp_path_factory.mktemp("crashes")
    run_dir = base / "run"
    make_run(run_dir)
    root = base / "zoo"
    assert zoo.publish(run_dir, NAME, root=root) == 1
    published = base / "published"
    shutil.copytree(root, published)
    copies = {}

    def crash(point):
        copies[point] = base / f"crash-{len(copies)}"
        shutil.copytree(root, copies[point], symlinks=True)

    real_rename, real_replace, real_write_json = os.rename, os.replace, zoo._write_json
    installed = []

    def rename(source, target):
        real_rename(source, target)
        if Path(target).parent.parent == root / NAME:
            installed.append(target)
            crash(CRASH_POINTS[len(installed) - 1])

    def write_json(path, data):
        if Path(path) == root / zoo.INDEX_FILE:
            crash("before the index write")
        real_write_json(path, data)

    def replace(source, target):
        if Path(target) == root / zoo.INDEX_FILE:
            crash("during the index write")
        real_replace(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "rename", rename)
        patch.setattr(os, "replace", replace)
        patch.setattr(zoo, "_write_json", write_json)
        assert zoo.publish(run_dir, NAME, root=root) == 2
    assert sorted(copies) == sorted(CRASH_POINTS)
    return run_dir, published, copies


@pytest.mark.parametrize(("point", "version"), [
    ("after the encoder's rename", None), ("after both renames", None),
    ("before the index write", None), ("during the index write", 2)])
def test_the_next_publish_recovers_from_a_crash(crashes, tmp_path, point, version):
    run_dir, published, copies = crashes
    root = tmp_path / "zoo"
    shutil.copytree(copies[point], root, symlinks=True)
    assert [p for p in root.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    problems = zoo.verify(root=root, load=False)
    assert problems and all(problem.endswith(INTERRUPTED) for problem in problems), problems
    assert zoo.load_encoder(NAME, root=root).version == 1  # what the index lists
    live = root / ".tmp-other-model-live"  # a running publisher's staging folder
    live.mkdir()
    lock = files.lock_folder(live)
    try:
        assert zoo.publish(run_dir, NAME, version=version, root=root) == 2
        assert live.is_dir()
    finally:
        files.unlock_folder(lock)
    live.rmdir()

    assert sorted(p.name for p in root.iterdir()) == ["index.json", NAME]
    assert not [p for p in (root / NAME).iterdir() if p.name.startswith(".tmp-")]
    assert zoo.verify(root=root) == []
    (row,) = zoo.list_models(root)
    assert row["versions"] == [1, 2] and row["latest"] == 2
    version_1 = {path: digest for path, digest in snapshot(published / NAME).items()
                 if path.startswith(("encoder/1/", "decoder/1/"))}
    after = snapshot(root / NAME)
    assert {path: after[path] for path in version_1} == version_1
    assert not [path for path in after if path.startswith(("encoder/1/", "decoder/1/"))
                and path not in version_1]
    assert zoo.read_card(NAME, root)["versions"]["1"] == \
        zoo.read_card(NAME, published)["versions"]["1"]


def _fake_version(model_dir, version, networks=zoo.NETWORKS):
    for network in networks:
        folder = model_dir / network / str(version)
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_text(f"{network} {version}")


def test_recovery_removes_only_what_the_index_does_not_list(tmp_path):
    root = tmp_path / "zoo"
    model_dir = root / NAME
    for version in (1, 2, 3, "02"):
        _fake_version(model_dir, version)
    (model_dir / "encoder" / "notes").mkdir()  # not a version: TF Serving ignores it
    (model_dir / ".tmp-card.json").write_text("{")
    card = {"format": 1, "name": NAME, "versions": {v: {"version": int(v)} for v in "123"}}
    (model_dir / zoo.CARD_FILE).write_text(json.dumps(card))
    other = root / "other-model"  # an interrupted first publish of another name
    _fake_version(other, 1, networks=["encoder"])
    (other / zoo.CARD_FILE).write_text(json.dumps({"versions": {"1": {}}}))
    (root / zoo.INDEX_FILE).write_text(json.dumps(
        {"format": 1, "models": {NAME: {"versions": [1, 3], "latest": 3}}}))
    (root / ".tmp-index.json").write_text("{")
    (root / ".tmp-abandoned-staging" / "decoder").mkdir(parents=True)
    kept = {path: digest for path, digest in snapshot(root).items()
            if path.startswith((f"{NAME}/encoder/1/", f"{NAME}/decoder/1/",
                                f"{NAME}/encoder/3/", f"{NAME}/decoder/3/", "other-model/"))}

    with zoo._locked(root):
        removed = zoo._recover(NAME, root)
    assert sorted(str(path.relative_to(root)) for path in removed) == [
        ".tmp-abandoned-staging", ".tmp-index.json", f"{NAME}/.tmp-card.json",
        f"{NAME}/card.json", f"{NAME}/decoder/02", f"{NAME}/decoder/2", f"{NAME}/encoder/02",
        f"{NAME}/encoder/2"]
    assert sorted(json.loads((model_dir / zoo.CARD_FILE).read_text())["versions"]) == ["1", "3"]
    after = snapshot(root)
    assert {path: after.get(path) for path in kept} == kept
    assert (model_dir / "encoder" / "notes").is_dir()
    assert sorted(p.name for p in root.iterdir()) == [zoo.INDEX_FILE, "other-model", NAME]

    with zoo._locked(root):
        zoo._recover("other-model", root)  # nothing of it was published: all of it goes
    assert sorted(p.name for p in root.iterdir()) == [zoo.INDEX_FILE, NAME]
    assert {path: after[path] for path in snapshot(root)} == snapshot(root)


def test_atomic_write_flushes_the_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        status = os.fstat(fd)
        events.append(("fsync folder",) if stat.S_ISDIR(status.st_mode)
                      else ("fsync file", status.st_size))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", Path(target).name))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    text = "x" * 100_000 + "\n"
    files.atomic_write_text(tmp_path / "a.json", text)
    assert events == [("fsync file", len(text)), ("replace", "a.json"), ("fsync folder",)]
    assert (tmp_path / "a.json").read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.skipif(files.fcntl is None, reason="no locks without fcntl")
def test_verify_waits_for_a_publish_in_progress_and_readers_run_together(crashes, tmp_path):
    import threading

    _, published, _ = crashes
    root = tmp_path / "zoo"
    shutil.copytree(published, root)
    results = []

    def check():
        results.append(zoo.verify(root=root, load=False))

    reader = files.lock_folder(root, shared=True)  # another verify
    try:
        assert zoo.verify(root=root, load=False) == []  # readers share the lock
    finally:
        files.unlock_folder(reader)
    writer = files.lock_folder(root)  # a publish between its first rename and its index write
    try:
        thread = threading.Thread(target=check)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and results == []
    finally:
        files.unlock_folder(writer)
    thread.join(timeout=30)
    assert results == [[]]
