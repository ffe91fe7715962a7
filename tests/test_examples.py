"""The examples run end to end on a tiny zoo."""

import importlib.util
import json
import re
from pathlib import Path

import keras
import pytest

from tcvae_tf import data, zoo
from tcvae_tf.model import BetaTCVAE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """A zoo with one tiny burgess model trained briefly on dsprites-small."""
    folder = tmp_path_factory.mktemp("examples")
    dataset = data.load_dataset("dsprites-small")
    images = dataset.images.astype("float32") / dataset.pixel_max
    keras.utils.set_random_seed(0)
    model = BetaTCVAE(latent_dim=4, arch="burgess", dataset_size=len(images), beta=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, batch_size=64, epochs=2, verbose=0)
    run_dir = folder / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(json.dumps(
        {"train": {"dataset": "dsprites-small", "arch": "burgess", "latent_dim": 4},
         "data": {"name": dataset.name, "source": dataset.source,
                  "num_images": dataset.num_images, "image_shape": list(dataset.image_shape),
                  "factor_names": list(dataset.factor_names),
                  "factor_sizes": list(dataset.factor_sizes)}}))
    root = folder / "zoo"
    zoo.publish(run_dir, "tiny", root=root)
    return root


def test_downstream_factor_head(tiny_zoo, capsys):
    example = load_example("downstream_factor_head")
    accuracy = example.main(["--model", "tiny", "--zoo-root", str(tiny_zoo), "--dataset",
                             "dsprites-small", "--factor", "pos_x", "--num-images", "1536",
                             "--epochs", "20", "--batch-size", "64"])
    printed = capsys.readouterr().out
    match = re.search(r"held-out accuracy of the pos_x head: ([0-9.]+) \(chance 0.125", printed)
    assert match, printed
    assert float(match.group(1)) == pytest.approx(accuracy, abs=1e-3)
    assert "1229 training / 307 held-out images, latent_dim 4" in printed
    # Even a briefly trained encoder tells positions apart far better than chance (1/8);
    # labels misaligned with the images would give about 1/8.
    assert accuracy > 1.5 / 8


def test_downstream_factor_head_defaults_to_the_models_dataset(tiny_zoo, monkeypatch):
    example = load_example("downstream_factor_head")
    loaded = []

    def load_dataset(name, **kwargs):
        loaded.append(name)
        raise OSError("not loaded in this test")

    monkeypatch.setattr(data, "load_dataset", load_dataset)
    with pytest.raises(SystemExit, match="not loaded in this test"):
        example.main(["--model", "tiny", "--zoo-root", str(tiny_zoo)])
    assert loaded == ["dsprites-small"]


def test_downstream_factor_head_reports_bad_input(tiny_zoo):
    example = load_example("downstream_factor_head")
    with pytest.raises(SystemExit, match="unknown model 'nope'.*holds: tiny"):
        example.main(["--model", "nope", "--zoo-root", str(tiny_zoo)])
    with pytest.raises(SystemExit, match="unknown factor 'colour'"):
        example.main(["--model", "tiny", "--zoo-root", str(tiny_zoo), "--dataset",
                      "dsprites-small", "--factor", "colour"])
