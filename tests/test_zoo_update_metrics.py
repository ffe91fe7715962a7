"""`zoo.update_metrics` and `tcvae-tf zoo update-metrics`: a card grows, the models never change."""

import copy
import json

import pytest
from click.testing import CliRunner

from tcvae_tf import zoo
from tcvae_tf.cli.main import cli

NAME = "toy-model"


def make_zoo(root):
    """A zoo with one model, two versions, stand-in SavedModel files and a real card."""
    card = {"format": 1, "name": NAME, "versions": {}}
    for version in (1, 2):
        files = {}
        for network in zoo.NETWORKS:
            folder = root / NAME / network / str(version)
            (folder / "variables").mkdir(parents=True)
            for relative, content in (("saved_model.pb", f"{network} {version}"),
                                      ("variables/variables.index", "index")):
                (folder / relative).write_text(content)
                files[f"{network}/{version}/{relative}"] = zoo.sha256_file(folder / relative)
        card["versions"][str(version)] = {
            "version": version, "dataset": {"name": "toy"}, "model": {"objective": "tcvae"},
            "metrics": {"mig_sampling": {"mig": 0.1 * version}, "settings": {"seed": 0}},
            "files": files, "latent_dim": 3}
    (root / NAME / "card.json").write_text(json.dumps(card))
    index = {"format": 1, "models": {NAME: {"versions": [1, 2], "latest": 2, "mig": 0.2}}}
    (root / "index.json").write_text(json.dumps(index))
    return card


def evaluation(version=1, name=NAME, kind="zoo", mig=0.5):
    return {"model": {"kind": kind, "name": name, "version": version, "path": "/zoo/toy-model"},
            "data": {"name": "toy", "path": "/root/.cache/toy.npz"}, "factors": ["a"],
            "settings": {"metrics": ["x"]},
            "mig_sampling": {"mig": mig}, "dci": {"disentanglement": 0.3},
            "sap": {"sap": 0.1}, "seconds": {"encode": 1.0, "dci": 2.0, "sap": 0.5,
                                             "mig_sampling": 3.0},
            "date": "2026-12-02T00:00:00+00:00", "library_versions": {"numpy": "2"}}


def saved_model_bytes(root):
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted((root / NAME).rglob("*")) if path.is_file()
            and path.name != "card.json"}


@pytest.fixture
def root(tmp_path):
    make_zoo(tmp_path)
    return tmp_path


def test_new_metrics_are_added_and_nothing_else_changes(root):
    before_card = json.loads((root / NAME / "card.json").read_text())
    before_files = saved_model_bytes(root)
    report = zoo.update_metrics(NAME, evaluation(version=1), version=1, root=root)
    assert report == {"version": 1, "added": ["sap", "dci"], "replaced": [],
                      "kept": ["mig_sampling"]}
    card = json.loads((root / NAME / "card.json").read_text())
    entry, old = card["versions"]["1"], before_card["versions"]["1"]
    assert {k: v for k, v in entry.items() if k != "metrics"} == {
        k: v for k, v in old.items() if k != "metrics"}              # files and checksums too
    assert card["versions"]["2"] == before_card["versions"]["2"]
    metrics = entry["metrics"]
    assert metrics["mig_sampling"] == {"mig": 0.1}                    # kept
    assert metrics["dci"] == {"disentanglement": 0.3} and metrics["sap"] == {"sap": 0.1}
    assert metrics["settings"] == {"seed": 0}
    (record,) = metrics["evaluations"]
    assert record["metrics"] == ["sap", "dci"]
    assert record["seconds"] == {"encode": 1.0, "dci": 2.0, "sap": 0.5}
    assert record["model"]["kind"] == "zoo" and record["date"].startswith("2026-12-02")
    assert record["model"]["path"] == "toy-model" and record["data"]["path"] == "toy.npz"
    assert saved_model_bytes(root) == before_files
    assert zoo.verify(NAME, root, load=False) == []
    # The same evaluation again changes nothing.
    again = zoo.update_metrics(NAME, evaluation(version=1), version=1, root=root)
    assert again["added"] == again["replaced"] == []
    assert json.loads((root / NAME / "card.json").read_text()) == card


def test_replace_updates_existing_sections_and_the_index(root):
    report = zoo.update_metrics(NAME, evaluation(version=2, mig=0.7), root=root, replace=True)
    assert report["version"] == 2 and report["replaced"] == ["mig_sampling"]
    assert zoo.card_entry(NAME, 2, root)["metrics"]["mig_sampling"] == {"mig": 0.7}
    assert zoo.read_index(root)["models"][NAME]["mig"] == 0.7     # the latest version's MIG
    assert zoo.read_index(root)["models"][NAME]["versions"] == [1, 2]


@pytest.mark.parametrize("metrics, message", [
    ({"dci": {}}, r"not an evaluation result \(no \"model\" section\)"),
    (evaluation(kind="run", name="runs/x", version=None),
     r"computed on run runs/x, not on zoo model toy-model v1"),
    (evaluation(version=2), "computed on zoo model toy-model v2, not on zoo model toy-model v1"),
    (evaluation(name="other"), "computed on zoo model other v1"),
    ({**evaluation(), "data": {"name": "dsprites"}},
     "computed on dsprites, but toy-model v1 was trained on toy"),
    ({"model": evaluation()["model"], "notes": []}, "holds no metric"),
])
def test_refuses_metrics_of_anything_else(root, metrics, message):
    before = (root / NAME / "card.json").read_text()
    with pytest.raises(ValueError, match=message) as error:
        zoo.update_metrics(NAME, copy.deepcopy(metrics), version=1, root=root)
    assert "\n" not in str(error.value)
    assert (root / NAME / "card.json").read_text() == before


def test_refuses_a_damaged_model_and_unknown_versions(root):
    before = (root / NAME / "card.json").read_text()
    (root / NAME / "encoder" / "1" / "saved_model.pb").write_text("changed")
    with pytest.raises(ValueError, match="saved_model.pb is damaged .*; the card is not changed"):
        zoo.update_metrics(NAME, evaluation(), version=1, root=root)
    assert (root / NAME / "card.json").read_text() == before
    with pytest.raises(zoo.ZooError, match="has no version 3"):
        zoo.update_metrics(NAME, evaluation(version=3), version=3, root=root)


def test_cli(root, tmp_path):
    source = tmp_path / "m.json"
    source.write_text(json.dumps(evaluation(version=1)))
    runner = CliRunner()
    result = runner.invoke(cli, ["zoo", "update-metrics", NAME, "--version", "1", "--from",
                                 str(source), "--zoo-root", str(root)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{NAME} v1: added sap, dci",
        f"{NAME} v1: kept mig_sampling (already in the card; --replace replaces them)"]
    result = runner.invoke(cli, ["zoo", "update-metrics", NAME, "--from", str(source),
                                 "--zoo-root", str(root)])   # the latest is v2
    assert result.exit_code == 1
    assert result.output.startswith("Error: the metrics were computed on zoo model toy-model "
                                    "v1, not on zoo model toy-model v2")
    assert result.output.count("\n") == 1
    source.write_text("{not json")
    result = runner.invoke(cli, ["zoo", "update-metrics", NAME, "--from", str(source),
                                 "--zoo-root", str(root)])
    assert result.exit_code == 1 and f"Error: cannot read {source}" in result.output
