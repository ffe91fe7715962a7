"""The model zoo: publishing, cards, loading, verification, serving config and the CLI."""

import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tcvae_tf import runs, zoo
from tcvae_tf.cli.main import cli
from tcvae_tf.model import BetaTCVAE

REPOSITORY_ZOO = Path(__file__).resolve().parents[1] / "zoo"
NAME = "tiny-btcvae"
LATENT_DIM = 3
METRICS = {"mig_sampling": {"mig": 0.25, "per_factor": [0.1, 0.4]},
           "elbo_decomposition": {"tc": 1.5}}


def make_run(folder, seed=0):
    """A finished run folder with a tiny trained burgess model, config.json and metrics.json."""
    keras.utils.set_random_seed(seed)
    model = BetaTCVAE(latent_dim=LATENT_DIM, arch="burgess", dataset_size=64, beta=6)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(seed).random((64, 64, 64, 1)).round().astype("float32")
    model.fit(images, batch_size=16, epochs=1, verbose=0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    config = {
        "train": {"dataset": "dsprites-small", "objective": "tcvae", "beta": 6.0,
                  "arch": "burgess", "latent_dim": LATENT_DIM, "batch_size": 16, "lr": 1e-3,
                  "epochs": 1, "steps": None, "seed": seed},
        "data": {"name": "dsprites-small", "source": "rendered", "path": None,
                 "num_images": 64, "image_shape": [64, 64, 1],
                 "factor_names": ["shape", "scale", "orientation", "pos_x", "pos_y"],
                 "factor_sizes": [3, 6, 40, 32, 32]},
        "library_versions": {"tensorflow": tf.__version__},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(
        {**METRICS, "model": {"fingerprint": runs.model_fingerprint(folder)}}))
    return model


def snapshot(root):
    """{relative path: sha256} of every file under a folder."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(root).rglob("*")) if path.is_file()}


def check_published_model(root, name):
    """Asserts that a listed model's card is complete and every version verifies."""
    card = zoo.read_card(name, root)
    assert card["name"] == name
    listed = next(row for row in zoo.list_models(root) if row["name"] == name)
    assert sorted(int(v) for v in card["versions"]) == listed["versions"]
    for version, entry in card["versions"].items():
        assert entry["version"] == int(version)
        for key in ("dataset", "config", "library_versions", "date", "parameters",
                    "latent_dim", "image_shape", "posterior", "signatures", "files"):
            assert entry.get(key) is not None, f"{name} v{version}: card has no {key}"
        assert "standard deviation" in entry["posterior"]["log_scale"]
    problems = zoo.verify(name, root)
    assert problems == [], "\n".join(problems)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(zoo root, run folder, Keras model) with the run published as NAME version 1."""
    base = tmp_path_factory.mktemp("zoo-base")
    run_dir = base / "run"
    model = make_run(run_dir)
    root = base / "zoo"
    assert zoo.publish(run_dir, NAME, root=root) == 1
    return root, run_dir, model


@pytest.fixture
def zoo_copy(published, tmp_path):
    root, run_dir, model = published
    copy = tmp_path / "zoo"
    shutil.copytree(root, copy)
    return copy, run_dir, model


# -- publishing and cards ---------------------------------------------------------------


def test_publish_writes_tf_serving_layout(published):
    root, _, _ = published
    for network in ("encoder", "decoder"):
        folder = root / NAME / network / "1"
        assert (folder / "saved_model.pb").is_file()
        assert (folder / "variables" / "variables.index").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
    assert sorted(p.name for p in root.iterdir()) == ["index.json", NAME]


def test_card_records_run_metrics_parameters_and_checksums(published):
    root, run_dir, model = published
    entry = zoo.read_card(NAME, root)["versions"]["1"]
    config = json.loads((run_dir / "config.json").read_text())
    assert entry["config"] == zoo.portable(config)
    assert entry["dataset"] == zoo.portable(config["data"])
    assert entry["metrics"] == json.loads((run_dir / "metrics.json").read_text())
    assert entry["metrics"]["mig_sampling"] == METRICS["mig_sampling"]
    assert entry["latent_dim"] == LATENT_DIM
    assert entry["image_shape"] == [64, 64, 1]
    assert entry["model"]["objective"] == "tcvae" and entry["model"]["options"]["beta"] == 6.0
    assert entry["posterior"]["family"] == "normal"
    assert "standard deviation" in entry["posterior"]["log_scale"]
    assert entry["parameters"]["encoder"]["total"] == model.encoder.count_params()
    assert entry["parameters"]["decoder"]["total"] == model.decoder.count_params()
    assert entry["parameters"]["total"] == (model.encoder.count_params()
                                            + model.decoder.count_params())
    assert entry["library_versions"]["export"]["tensorflow"] == tf.__version__
    assert entry["library_versions"]["training"] == zoo.portable(config["library_versions"])
    on_disk = {path: digest for path, digest in snapshot(root / NAME).items()
               if path.startswith(("encoder/", "decoder/"))}
    assert entry["files"] == on_disk
    assert any(path.startswith("encoder/1/variables/") for path in on_disk)
    assert entry["signatures"]["encoder"]["outputs"]["sample"]["shape"] == [None, LATENT_DIM]


def test_list_models_and_resolve_version(published):
    root, _, _ = published
    (row,) = zoo.list_models(root)
    assert row["name"] == NAME and row["versions"] == [1] and row["latest"] == 1
    assert row["dataset"] == "dsprites-small" and row["latent_dim"] == LATENT_DIM
    assert row["mig"] == pytest.approx(0.25)
    assert zoo.resolve_version(NAME, root=root) == 1
    assert zoo.resolve_version(NAME, 1, root=root) == 1


def test_unknown_name_or_version_lists_what_exists(published, tmp_path):
    root, _, _ = published
    with pytest.raises(zoo.ZooError, match=f"unknown model 'nope'.*holds: {NAME}"):
        zoo.load_encoder("nope", root=root)
    with pytest.raises(LookupError, match="no version 7; published versions: 1"):
        zoo.resolve_version(NAME, 7, root=root)
    with pytest.raises(zoo.ZooError, match="no version 2"):
        zoo.load_decoder(NAME, 2, root=root)
    with pytest.raises(zoo.ZooError, match="is empty"):
        zoo.read_card(NAME, tmp_path / "empty")
    assert zoo.list_models(tmp_path / "empty") == []


def test_publish_rejects_bad_names_and_versions(published, tmp_path):
    _, run_dir, _ = published
    with pytest.raises(ValueError, match="invalid model name"):
        zoo.publish(run_dir, "../escape", root=tmp_path)
    with pytest.raises(ValueError, match="positive integer"):
        zoo.publish(run_dir, NAME, version=0, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        zoo.publish(tmp_path, NAME, root=tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_publish_refuses_metrics_of_another_model(published, tmp_path):
    _, run_dir, _ = published
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)  # a copied run keeps its fingerprint
    root = tmp_path / "zoo"
    assert zoo.publish(run, NAME, root=root) == 1
    assert zoo.read_card(NAME, root)["versions"]["1"]["metrics"]["model"]["fingerprint"] == \
        runs.model_fingerprint(run)

    make_run(run, seed=1)  # trained again: a new model.keras, the old metrics.json kept
    (run / "metrics.json").write_text((run_dir / "metrics.json").read_text())
    before = snapshot(root)
    rerun = f"re-run `tcvae-tf evaluate {run}` before exporting"
    with pytest.raises(ValueError, match="computed on another model") as raised:
        zoo.publish(run, NAME, root=root)
    assert str(raised.value).endswith(rerun) and "\n" not in str(raised.value)
    old = json.loads((run / "metrics.json").read_text())
    del old["model"]
    (run / "metrics.json").write_text(json.dumps(old))  # written before fingerprints
    with pytest.raises(ValueError, match="does not record which model") as raised:
        zoo.publish(run, NAME, root=root)
    assert str(raised.value).endswith(rerun)
    result = CliRunner().invoke(cli, ["export", str(run), "--name", NAME, "--zoo-root",
                                      str(root)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {raised.value}"]
    assert snapshot(root) == before
    (run / "metrics.json").unlink()  # no metrics: published without any
    assert zoo.publish(run, NAME, root=root) == 2
    assert zoo.read_card(NAME, root)["versions"]["2"]["metrics"] is None


def test_model_fingerprint(tmp_path):
    assert runs.model_fingerprint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.keras").write_bytes(b"checkpoint")
    assert runs.model_fingerprint(tmp_path) == {
        "file": "checkpoints/last.keras", "sha256": hashlib.sha256(b"checkpoint").hexdigest()}
    (tmp_path / "model.keras").write_bytes(b"model")
    assert runs.model_fingerprint(tmp_path) == {
        "file": "model.keras", "sha256": hashlib.sha256(b"model").hexdigest()}


def test_existing_version_is_never_overwritten(zoo_copy):
    root, run_dir, _ = zoo_copy
    before = snapshot(root)
    with pytest.raises(FileExistsError, match=f"{NAME} version 1 is already published"):
        zoo.publish(run_dir, NAME, version=1, root=root)
    assert snapshot(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["index.json", NAME]


def test_next_version_and_a_failed_publish_changes_nothing(zoo_copy, monkeypatch):
    root, run_dir, _ = zoo_copy
    before = snapshot(root)
    write_json = zoo._write_json

    def failing_index_write(path, data):
        if Path(path).name == zoo.INDEX_FILE:
            raise OSError("disk full")
        write_json(path, data)

    monkeypatch.setattr(zoo, "_write_json", failing_index_write)
    with pytest.raises(OSError, match="disk full"):
        zoo.publish(run_dir, NAME, root=root)
    assert snapshot(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["index.json", NAME]
    with pytest.raises(OSError, match="disk full"):
        zoo.publish(run_dir, "new-model", root=root)
    assert snapshot(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["index.json", NAME]
    monkeypatch.setattr(zoo, "_write_json", write_json)
    assert zoo.publish(run_dir, NAME, root=root) == 2
    (row,) = zoo.list_models(root)
    assert row["versions"] == [1, 2] and row["latest"] == 2
    assert zoo.load_encoder(NAME, root=root).version == 2
    assert sorted(zoo.read_card(NAME, root)["versions"]) == ["1", "2"]
    assert zoo.verify(root=root) == []


# -- loading --------------------------------------------------------------------------------


def test_loaded_encoder_and_decoder_match_the_keras_model(published):
    root, _, model = published
    rng = np.random.default_rng(5)
    images = rng.random((6, 64, 64, 1)).round().astype("float32")
    latents = rng.normal(size=(6, LATENT_DIM))  # float64: cast to float32
    encoder = zoo.load_encoder(NAME, root=root)
    decoder = zoo.load_decoder(NAME, 1, root=root)
    encoded = encoder(images)
    assert set(encoded) == {"mean", "log_scale", "sample"}
    assert isinstance(encoded["mean"], tf.Tensor)
    mean, log_scale = model.encode(images)
    np.testing.assert_allclose(encoded["mean"].numpy(), mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(encoded["log_scale"].numpy(), log_scale.numpy(), atol=1e-5)
    decoded = decoder(latents)
    logits = model.decode(latents.astype("float32")).numpy()
    np.testing.assert_allclose(decoded["logits"].numpy(), logits, atol=1e-5)
    np.testing.assert_allclose(decoded["probs"].numpy(), 1 / (1 + np.exp(-logits)), atol=1e-5)
    assert encoder.input_shape == [None, 64, 64, 1]
    assert decoder.output_names == ("logits", "probs")


def test_loaded_encoder_rejects_wrong_dtype_and_shape(published):
    root, _, _ = published
    encoder = zoo.load_encoder(NAME, root=root)
    with pytest.raises(ValueError, match=r"float32 images \['batch', 64, 64, 1\], got uint8"):
        encoder(np.zeros((2, 64, 64, 1), np.uint8))
    with pytest.raises(ValueError, match=r"shape \['batch', 64, 64, 1\], got \[2, 32, 32, 1\]"):
        encoder(np.zeros((2, 32, 32, 1), np.float32))


def test_encoder_layer_inside_a_keras_model(published):
    root, _, _ = published
    keras.utils.set_random_seed(0)
    images = keras.Input((64, 64, 1))
    latents = zoo.encoder_layer(NAME, root=root)(images)["mean"]
    head = keras.layers.Dense(2)
    classifier = keras.Model(images, head(latents))
    assert len(classifier.trainable_weights) == 2  # only the head's kernel and bias
    batch = np.random.default_rng(6).random((8, 64, 64, 1)).astype("float32")
    mean = zoo.load_encoder(NAME, root=root)(batch)["mean"].numpy()
    before = classifier.predict(batch, verbose=0)
    kernel, bias = (w.numpy() for w in head.weights)
    np.testing.assert_allclose(before, mean @ kernel + bias, atol=1e-5)
    classifier.compile(optimizer=keras.optimizers.SGD(0.1),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(batch, np.arange(8) % 2, epochs=1, verbose=0)
    # The frozen encoder still gives the same latents.
    np.testing.assert_allclose(zoo.load_encoder(NAME, root=root)(batch)["mean"].numpy(), mean,
                               atol=1e-6)
    assert not np.allclose(head.weights[0].numpy(), kernel)


# -- verification and serving -------------------------------------------------------------


def test_verify_and_the_check_pass_on_a_good_zoo(published):
    root, _, _ = published
    assert zoo.verify(root=root) == []
    assert zoo.verify(NAME, root) == []
    check_published_model(root, NAME)
    with pytest.raises(zoo.ZooError, match="unknown model"):
        zoo.verify("nope", root)


def test_corrupted_variable_file_is_named(zoo_copy):
    root, _, _ = zoo_copy
    damaged = root / NAME / "encoder" / "1" / "variables" / "variables.data-00000-of-00001"
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 0xFF
    damaged.write_bytes(bytes(content))
    problems = zoo.verify(root=root)
    assert len(problems) == 1
    assert str(damaged) in problems[0] and "damaged" in problems[0]
    with pytest.raises(AssertionError, match="damaged"):
        check_published_model(root, NAME)
    result = CliRunner().invoke(cli, ["zoo", "verify", "--zoo-root", str(root)])
    assert result.exit_code == 1
    assert str(damaged) in result.output
    assert "Error: 1 problem(s)" in result.output


def test_missing_and_unlisted_files_are_named(zoo_copy):
    root, _, _ = zoo_copy
    missing = root / NAME / "decoder" / "1" / "saved_model.pb"
    missing.unlink()
    extra = root / NAME / "encoder" / "1" / "variables" / "stray.bin"
    extra.write_bytes(b"x")
    stray_version = root / NAME / "encoder" / "5"
    stray_version.mkdir()
    stray_model = root / "unlisted" / "encoder" / "1"
    stray_model.mkdir(parents=True)
    problems = zoo.verify(root=root)
    assert len(problems) == 4, problems
    listing = "\n".join(problems)
    assert f"{missing} is missing" in listing
    assert f"{extra} is not listed in the card" in listing
    assert f"{stray_version} is not listed in index.json" in listing
    assert f"{root / 'unlisted'} is not listed in index.json" in listing


def test_evaluate_and_plot_name_a_damaged_file_as_verify_does(zoo_copy):
    root, _, _ = zoo_copy
    damaged = root / NAME / "encoder" / "1" / "variables" / "variables.data-00000-of-00001"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # truncated
    (problem,) = zoo.verify(root=root)
    runner = CliRunner()
    for args in (["evaluate", NAME], ["plot", NAME, "--out", str(root / "x.png")]):
        result = runner.invoke(cli, [*args, "--zoo-root", str(root), "--quiet"])
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [f"Error: {problem}"]
    with pytest.raises(zoo.DamagedModelError, match="is damaged"):
        zoo.load_encoder(NAME, root=root)
    with pytest.raises(zoo.DamagedModelError, match="is damaged"):
        zoo.encoder_layer(NAME, root=root)
    zoo.load_decoder(NAME, root=root)  # the intact network still loads


def _break_decoder_graph_keeping_its_checksum(root):
    """Replaces the decoder's graph by junk and records the junk's sha256 in the card, so
    that only loading the SavedModel finds the damage."""
    broken = root / NAME / "decoder" / "1" / "saved_model.pb"
    broken.write_bytes(b"not a saved model")
    card_path = root / NAME / "card.json"
    card = json.loads(card_path.read_text())
    card["versions"]["1"]["files"]["decoder/1/saved_model.pb"] = hashlib.sha256(
        broken.read_bytes()).hexdigest()
    card_path.write_text(json.dumps(card))


def test_a_saved_model_that_does_not_load_is_one_line(zoo_copy):
    root, _, _ = zoo_copy
    _break_decoder_graph_keeping_its_checksum(root)
    (problem,) = zoo.verify(root=root)
    with pytest.raises(zoo.DamagedModelError) as raised:
        zoo.load_decoder(NAME, root=root)
    assert str(raised.value) == problem


def test_verify_loads_each_saved_model(zoo_copy):
    root, _, _ = zoo_copy
    # A broken graph whose checksum was updated in the card: only the load catches it.
    _break_decoder_graph_keeping_its_checksum(root)
    (problem,) = zoo.verify(root=root)
    assert f"{NAME} v1 decoder" in problem and "does not load" in problem
    assert zoo.verify(root=root, load=False) == []


def test_serving_config_lists_every_network(published):
    root, _, _ = published
    text = zoo.serving_config(root)
    assert text.count("config {") == 2
    assert f'name: "{NAME}-encoder"' in text and f'name: "{NAME}-decoder"' in text
    assert f'base_path: "{(root / NAME / "encoder").resolve()}"' in text
    assert text.count('model_platform: "tensorflow"') == 2
    assert text.count("{") == text.count("}")
    prefixed = zoo.serving_config(root, base_path_prefix="/models/", all_versions=True)
    assert f'base_path: "/models/{NAME}/decoder"' in prefixed
    assert prefixed.count("model_version_policy { all {} }") == 2
    assert zoo.serving_config(root / "missing") == "model_config_list {\n}\n"


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv(zoo.ENV_VAR, str(tmp_path))
    assert zoo.default_root() == tmp_path
    monkeypatch.delenv(zoo.ENV_VAR)
    expected = REPOSITORY_ZOO if REPOSITORY_ZOO.is_dir() else Path("zoo")
    assert zoo.default_root() == expected


# -- the command line -----------------------------------------------------------------------


def test_cli_round_trip(zoo_copy):
    root, run_dir, _ = zoo_copy
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(run_dir), "--name", "cli-model",
                                 "--zoo-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "published cli-model version 1" in result.output

    before = snapshot(root)
    again = runner.invoke(cli, ["export", str(run_dir), "--name", "cli-model", "--version", "1",
                                "--zoo-root", str(root)])
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [
        f"Error: cli-model version 1 is already published in {root}; versions are never "
        "overwritten (next free version: 2)"]
    assert snapshot(root) == before

    listing = runner.invoke(cli, ["zoo", "--zoo-root", str(root), "list"])
    assert listing.exit_code == 0
    assert [line.split()[0] for line in listing.output.splitlines()] == [
        "NAME", "cli-model", NAME]
    as_json = runner.invoke(cli, ["zoo", "list", "--json"], env={"TCVAE_TF_ZOO": str(root)})
    assert [row["name"] for row in json.loads(as_json.output)] == ["cli-model", NAME]

    shown = runner.invoke(cli, ["zoo", "show", "cli-model", "--zoo-root", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "cli-model version 1" in shown.output and "standard deviation" in shown.output
    assert any(line.split() == ["mig_sampling", "mig", "0.25"]
               for line in shown.output.splitlines())
    shown_json = runner.invoke(cli, ["zoo", "show", NAME, "--version", "1", "--json",
                                     "--zoo-root", str(root)])
    assert json.loads(shown_json.output)["latent_dim"] == LATENT_DIM

    verified = runner.invoke(cli, ["zoo", "verify", "cli-model", "--zoo-root", str(root)])
    assert verified.exit_code == 0, verified.output
    assert "ok: 1 model(s)" in verified.output

    config = runner.invoke(cli, ["zoo", "serving-config", "--base-path-prefix", "/models",
                                 "--zoo-root", str(root)])
    assert config.exit_code == 0
    assert config.output == zoo.serving_config(root, base_path_prefix="/models")
    assert 'base_path: "/models/cli-model/encoder"' in config.output


def test_zoo_show_is_a_readable_table_and_json_has_everything(published):
    root, _, _ = published
    runner = CliRunner()
    shown = runner.invoke(cli, ["zoo", "show", NAME, "--zoo-root", str(root)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    labels = [line.split()[0] for line in lines if line.startswith("  ") and line.split()]
    for label in ("dataset", "factors", "objective", "network", "training", "parameters",
                  "encoder", "decoder", "log_scale"):
        assert label in labels, shown.output
    assert "beta-TCVAE (tcvae): alpha=1, beta=6, gamma=1, estimator=mws" in shown.output
    assert "images [batch, 64, 64, 1] -> mean, log_scale, sample" in shown.output
    assert all(len(line) <= 120 for line in lines if str(root) not in line), shown.output
    # seeds, timings, library versions and checksums only in --json
    for detail in ("seed", "seconds", "sha256", "tensorflow"):
        assert detail not in shown.output.lower(), detail
    card = json.loads(runner.invoke(cli, ["zoo", "show", NAME, "--json", "--zoo-root",
                                          str(root)]).output)
    assert card["config"]["train"]["seed"] == 0 and card["files"] and card["library_versions"]


@pytest.mark.parametrize("name", ["dsprites-btcvae-b6"])
def test_zoo_show_prints_the_evaluation_table(name):
    if name not in _repository_names():
        pytest.skip(f"{name} is not in the repository zoo")
    shown = CliRunner().invoke(cli, ["zoo", "show", name, "--zoo-root", str(REPOSITORY_ZOO)])
    assert shown.exit_code == 0, shown.output
    mig = zoo.card_entry(name, root=REPOSITORY_ZOO)["metrics"]["mig_sampling"]["mig"]
    (row,) = [line for line in shown.output.splitlines()
              if line.strip().startswith("MIG, sampling (scale, orientation, pos_x, pos_y)")]
    assert row.split()[-1] == f"{mig:.4f}"
    assert "active units (variance > 0.01)" in shown.output
    assert "DCI disentanglement" in shown.output  # the card's standard metrics are shown too
    # one screen: the summary, one row per metric of the card (all of `--metric all`), paths
    assert len(shown.output.splitlines()) < 50


def test_cli_errors_are_one_line(published, tmp_path):
    root, _, _ = published
    runner = CliRunner()
    for args, message in (
            (["zoo", "show", "nope"], f"Error: unknown model 'nope'; the zoo at {root} holds: "
                                      f"{NAME}"),
            (["zoo", "show", NAME, "--version", "3"],
             f"Error: model '{NAME}' has no version 3; published versions: 1"),
            (["zoo", "verify", "nope"], "Error: unknown model 'nope'")):
        result = runner.invoke(cli, [*args[:1], "--zoo-root", str(root), *args[1:]])
        assert result.exit_code == 1
        (line,) = result.output.strip().splitlines()
        assert line.startswith(message)
    empty = runner.invoke(cli, ["zoo", "list", "--zoo-root", str(tmp_path)])
    assert empty.output.strip() == f"no models in {tmp_path}"
    no_model = runner.invoke(cli, ["export", str(tmp_path), "--name", "x", "--zoo-root",
                                   str(tmp_path / "zoo")])
    assert no_model.exit_code == 1
    assert len(no_model.output.strip().splitlines()) == 1 and "config.json" in no_model.output


def test_an_explicit_zoo_root_beats_the_environment(published, tmp_path):
    root, _, _ = published
    empty = tmp_path / "empty"
    runner = CliRunner(env={zoo.ENV_VAR: str(empty)})
    for args in (["zoo", "--zoo-root", str(root), "list"],
                 ["zoo", "list", "--zoo-root", str(root)],
                 ["zoo", "--zoo-root", str(empty), "list", "--zoo-root", str(root)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert [line.split()[0] for line in result.output.splitlines()] == ["NAME", NAME], args
    assert runner.invoke(cli, ["zoo", "list"]).output == f"no models in {empty}\n"
    for command in (["verify", "--no-load"], ["show", NAME], ["serving-config"]):
        result = runner.invoke(cli, ["zoo", "--zoo-root", str(root), *command])
        assert result.exit_code == 0, result.output
        assert str(root) in result.output, command


@pytest.mark.parametrize("broken", ["card", "card entry", "card files", "card posterior",
                                    "index entry"])
def test_a_card_or_index_entry_that_is_not_an_object_is_one_line(zoo_copy, broken):
    root, run_dir, _ = zoo_copy
    card_path, index_path = root / NAME / zoo.CARD_FILE, root / zoo.INDEX_FILE
    if broken == "card":
        path, message = card_path, "is not a model card"
        path.write_text("[1, 2]")
    elif broken == "card entry":
        path, message = card_path, "is not a model card"
        card = json.loads(path.read_text())
        path.write_text(json.dumps({**card, "versions": {"1": [1, 2]}}))
    elif broken in ("card files", "card posterior"):  # a field of the entry is no object
        path, message = card_path, "is not a model card"
        card = json.loads(path.read_text())
        field = broken.split()[1]
        entry = card["versions"]["1"]
        entry[field] = list(entry[field]) if field == "files" else entry[field]["family"]
        path.write_text(json.dumps(card))
    else:
        path, message = index_path, f"the entry of '{NAME}' is not an object"
        index = json.loads(path.read_text())
        path.write_text(json.dumps({**index, "models": {NAME: [1, 2]}}))
    before = snapshot(root)
    runner = CliRunner()
    for args in (["show", NAME], ["verify", NAME, "--no-load"], ["verify", "--no-load"]):
        result = runner.invoke(cli, ["zoo", *args, "--zoo-root", str(root)])
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        lines = result.output.strip().splitlines()
        assert f"{path} {message}" in lines[0] or f"{path}: {message}" in lines[0], lines
        assert len(lines) == 1 or lines[1].startswith("Error: 1 problem(s)"), lines
    with pytest.raises(ValueError, match=message):
        zoo.card_entry(NAME, root=root)
    with pytest.raises(ValueError, match=message):
        zoo.load_encoder(NAME, root=root)
    if broken == "card":  # a publish (one export) stops there too and removes nothing
        with pytest.raises(ValueError, match=message):
            zoo.publish(run_dir, NAME, root=root)
    assert snapshot(root) == before


STUDY = {"name": "tiny-study", "trial": "objective-tcvae_seed-0", "seed": 0,
         "group": {"objective": "tcvae"}, "this_trial": {"mig_sampling": 0.25},
         "group_statistics": {"mig_sampling": {"mean": 0.35, "sd": 0.1, "n": 3}}}


@pytest.mark.parametrize(("broken", "field", "problem"), [
    ("train not an object", "config.train", "is not an object"),
    ("statistics without a mean", "study.group_statistics.mig_sampling.mean", "is missing"),
    ("a mean that is no number", "study.group_statistics.mig_sampling.mean", "is not a number"),
    ("statistics not an object", "study.group_statistics.mig_sampling", "is not an object"),
    ("an sd that is no number", "study.group_statistics.mig_sampling.sd", "is not a number"),
    ("a trial value that is no number", "study.this_trial.mig_sampling", "is not a number"),
])
def test_a_hand_edited_nested_card_field_is_one_line(zoo_copy, broken, field, problem):
    root, _, _ = zoo_copy
    path = root / NAME / zoo.CARD_FILE
    card = json.loads(path.read_text())
    entry = card["versions"]["1"]
    statistics = {"mean": 0.35, "sd": 0.1, "n": 3}
    study = {**STUDY, "group_statistics": {"mig_sampling": statistics}}
    if broken == "train not an object":
        entry["config"]["train"] = ["batch_size", 16]
    elif broken == "statistics without a mean":
        del statistics["mean"]
    elif broken == "a mean that is no number":
        statistics["mean"] = "0.35"
    elif broken == "statistics not an object":
        study["group_statistics"]["mig_sampling"] = 0.35
    elif broken == "an sd that is no number":
        statistics["sd"] = [0.1]
    else:
        study["this_trial"] = {"mig_sampling": True}
    if broken != "train not an object":
        entry["study"] = study
    path.write_text(json.dumps(card))
    message = f"{path} is not a model card (the '{field}' of version 1 {problem})"
    before = snapshot(root)
    runner = CliRunner()
    for args in (["show", NAME], ["show", NAME, "--json"], ["verify", NAME, "--no-load"],
                 ["verify", "--no-load"]):
        result = runner.invoke(cli, ["zoo", *args, "--zoo-root", str(root)])
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        lines = result.output.strip().splitlines()
        assert lines[0] in (f"Error: {message}", f"{NAME}: {message}"), lines
        assert len(lines) == 1 or lines[1].startswith("Error: 1 problem(s)"), lines
    listing = runner.invoke(cli, ["zoo", "list", "--zoo-root", str(root)])  # reads the index
    assert listing.exit_code == 0 and NAME in listing.output, listing.output
    with pytest.raises(ValueError) as raised:
        zoo.load_encoder(NAME, root=root)
    assert str(raised.value) == message
    assert snapshot(root) == before


def test_a_hand_made_study_entry_of_the_right_shape_is_shown(zoo_copy):
    root, _, _ = zoo_copy
    path = root / NAME / zoo.CARD_FILE
    card = json.loads(path.read_text())
    statistics = {"mig_sampling": {"mean": 0.35, "sd": None, "n": 1}}
    card["versions"]["1"]["study"] = {**STUDY, "group_statistics": statistics,
                                      "this_trial": {"mig_sampling": None}}
    card["versions"]["1"]["config"]["train"] = None
    path.write_text(json.dumps(card))
    shown = CliRunner().invoke(cli, ["zoo", "show", NAME, "--zoo-root", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "mig_sampling  0.35 (n=1); this model -" in shown.output
    assert "batch None, lr None, None epochs" in shown.output


# -- the repository's zoo -------------------------------------------------------------------


def _repository_names():
    if not (REPOSITORY_ZOO / zoo.INDEX_FILE).is_file():
        return []
    return sorted(json.loads((REPOSITORY_ZOO / zoo.INDEX_FILE).read_text())["models"])


def test_repository_index_is_valid():
    path = REPOSITORY_ZOO / zoo.INDEX_FILE
    assert path.is_file(), f"{path} is missing"
    index = json.loads(path.read_text())
    assert isinstance(index["models"], dict)
    for name, entry in index["models"].items():
        versions = entry["versions"]
        assert versions and all(isinstance(v, int) and v >= 1 for v in versions), name
        assert entry["latest"] == max(versions), name
        assert (REPOSITORY_ZOO / name / zoo.CARD_FILE).is_file(), name


@pytest.mark.parametrize("name", _repository_names())
def test_repository_zoo_model(name):
    check_published_model(REPOSITORY_ZOO, name)


def _write_study(folder, migs, status="finished"):
    """A study's results.csv: objectives tcvae and betavae, seeds 0-2, the given sampling
    MIGs per (objective, seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["objective,seed,status,steps,total_steps,mig_sampling,total_correlation,seconds,run"]
    for (objective, seed), mig in migs.items():
        lines.append(f"{objective},{seed},{status if seed == 0 else 'finished'},8,8,{mig},"
                     f"{1.0 + seed},12.5,objective-{objective}_seed-{seed}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def test_a_study_entry_holds_no_absolute_path(tmp_path, monkeypatch):
    """A grid over a data file puts its path in the trial's group; the card keeps its name."""
    from tcvae_tf import sweep

    record = {"name": "s", "trial": "t", "seed": 0, "group": {"data_path": "/data/a.npz"},
              "this_trial": {}, "group_statistics": {}}
    monkeypatch.setattr(sweep, "study_entry", lambda *args, **kwargs: dict(record))
    run_dir = tmp_path / "run"
    make_run(run_dir)
    zoo.publish(run_dir, NAME, root=tmp_path / "zoo", study=tmp_path / "s")
    entry = zoo.read_card(NAME, tmp_path / "zoo")["versions"]["1"]["study"]
    assert entry["group"] == {"data_path": "a.npz"}


def test_publish_with_a_study_records_the_trial_and_the_group_statistics(tmp_path):
    root = tmp_path / "zoo"
    study = root / "studies" / "tiny-study"
    migs = {("tcvae", 0): 0.25, ("tcvae", 1): 0.35, ("tcvae", 2): 0.45,
            ("betavae", 0): 0.1, ("betavae", 1): 0.2, ("betavae", 2): 0.3}
    _write_study(study, migs)
    run_dir = tmp_path / "objective-tcvae_seed-0"
    make_run(run_dir)
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--name", NAME, "--zoo-root",
                                      str(root), "--study", str(study)])
    assert result.exit_code == 0, result.output
    entry = zoo.read_card(NAME, root)["versions"]["1"]["study"]
    assert (entry["name"], entry["path"], entry["trial"]) == (
        "tiny-study", "studies/tiny-study", "objective-tcvae_seed-0")
    assert entry["seed"] == 0 and entry["group"] == {"objective": "tcvae"}
    assert entry["this_trial"]["mig_sampling"] == 0.25
    mig = entry["group_statistics"]["mig_sampling"]
    assert mig["n"] == 3 and mig["mean"] == pytest.approx(0.35)
    assert mig["sd"] == pytest.approx(0.1)
    assert entry["group_statistics"]["total_correlation"]["mean"] == pytest.approx(2.0)
    shown = CliRunner().invoke(cli, ["zoo", "show", NAME, "--zoo-root", str(root)])
    assert shown.exit_code == 0, shown.output
    assert ("study tiny-study (studies/tiny-study): trial objective-tcvae_seed-0, seed 0; "
            "over the study's objective tcvae:") in shown.output
    assert "mig_sampling" in shown.output and "0.35 +/- 0.1 (n=3); this model 0.25" in \
        shown.output


@pytest.mark.parametrize("change,message", [
    ({("tcvae", 0): 0.5}, "is not the run's (0.25): the study was measured on another model"),
    ("unfinished", "has not finished"),
    ("renamed", "is not a trial of the study tiny-study"),
])
def test_publish_refuses_a_run_that_is_not_the_studys_trial(tmp_path, change, message):
    root = tmp_path / "zoo"
    study = tmp_path / "tiny-study"
    migs = {("tcvae", 0): 0.25, ("tcvae", 1): 0.35}
    if isinstance(change, dict):
        migs.update(change)
    _write_study(study, migs, status="running" if change == "unfinished" else "finished")
    run_dir = tmp_path / ("other-run" if change == "renamed" else "objective-tcvae_seed-0")
    make_run(run_dir)
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--name", NAME, "--zoo-root",
                                      str(root), "--study", str(study)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (root / NAME).exists()
