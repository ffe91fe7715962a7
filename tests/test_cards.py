"""Model cards hold nothing of the machine that made them."""

import json
import re
from pathlib import Path

import pytest

from tcvae_tf import zoo

ZOO = Path(__file__).resolve().parents[1] / "zoo"
ABSOLUTE = re.compile(r'^(/|[A-Za-z]:[\\/])')


def _strings(value, where=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")
    elif isinstance(value, str):
        yield where, value


@pytest.mark.parametrize("path", sorted(ZOO.glob("**/*.json")),
                         ids=lambda path: str(path.relative_to(ZOO)))
def test_committed_zoo_files_hold_no_absolute_path(path):
    found = [(where, text) for where, text in _strings(json.loads(path.read_text()))
             if ABSOLUTE.match(text)]
    assert not found, found[:3]


def test_portable_keeps_only_the_last_component_of_absolute_paths():
    entry = {"run": "/work/runs/tcvae", "data": {"path": "/root/.cache/x/d.npz"},
             "files": ["C:\\Users\\me\\d.npz", "encoder/1/saved_model.pb"], "beta": 6.0,
             "note": "relative/path stays"}
    assert zoo.portable(entry) == {"run": "tcvae", "data": {"path": "d.npz"},
                                   "files": ["d.npz", "encoder/1/saved_model.pb"],
                                   "beta": 6.0, "note": "relative/path stays"}


VERSION_BUDGET_BYTES = 64 * 10**6  # the repository zoo's budget: 64 MB a model version


@pytest.mark.parametrize("card", sorted(ZOO.glob("*/card.json")),
                         ids=lambda path: path.parent.name)
def test_every_committed_model_version_fits_the_budget(card):
    versions = json.loads(card.read_text())["versions"]
    assert versions
    for version in versions:
        folders = [card.parent / network / version for network in zoo.NETWORKS]
        size = sum(path.stat().st_size for folder in folders for path in folder.rglob("*")
                   if path.is_file())
        assert 0 < size <= VERSION_BUDGET_BYTES, (card.parent.name, version, size)
