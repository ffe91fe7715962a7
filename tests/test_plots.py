"""Figures: traversals (PNG and GIF), reconstructions, latents versus factors, and the CLI."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tcvae_tf import evaluation, plots, training, zoo
from tcvae_tf.cli.main import cli
from tcvae_tf.data import GroundTruthDataset, dsprites_subgrid
from tcvae_tf.model import BetaTCVAE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dataset():
    return dsprites_subgrid()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset):
    """A run folder as training writes it, with a tiny burgess model trained a few steps."""
    folder = tmp_path_factory.mktemp("plots") / "run"
    keras.utils.set_random_seed(0)
    model = BetaTCVAE(latent_dim=3, arch="burgess", dataset_size=dataset.num_images)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rows = np.random.default_rng(0).choice(dataset.num_images, 320)
    model.fit(dataset.images[rows].astype("float32"), batch_size=64, epochs=1, verbose=0)
    folder.mkdir(parents=True)
    training.atomic_save_model(model, str(folder / training.MODEL_FILE))
    config = training.TrainConfig(dataset="dsprites-small", arch="burgess", batch_size=64,
                                  steps=5, latent_dim=3, out=str(folder))
    record = {"train": dataclasses.asdict(config), "data": dataset.describe()}
    (folder / training.CONFIG_FILE).write_text(json.dumps(record))
    return folder


def check_png(path, min_size=(200, 100)):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 0, f"{path} is blank"


# -- pure helpers ------------------------------------------------------------------------------


def test_grouped_means_equals_brute_force():
    rng = np.random.default_rng(0)
    classes = np.stack([rng.integers(0, 3, 200), rng.integers(0, 4, 200) * 2,
                        rng.integers(0, 2, 200)], axis=1)  # factor 1 uses labels 0, 2, 4, 6
    values = rng.normal(size=(200, 2))
    means, labels = plots.grouped_means(values, classes, [1, 0])
    assert means.shape == (4, 3, 2)
    np.testing.assert_array_equal(labels[0], [0, 2, 4, 6])
    for i, b in enumerate(labels[0]):
        for j, a in enumerate(labels[1]):
            rows = (classes[:, 1] == b) & (classes[:, 0] == a)
            expected = values[rows].mean(axis=0) if rows.any() else np.full(2, np.nan)
            np.testing.assert_allclose(means[i, j], expected, rtol=1e-12)
    # A combination no image has is NaN; 1-D values give 1-D cells.
    sparse, _ = plots.grouped_means(np.arange(3.0), np.array([[0, 0], [0, 1], [1, 0]]), [0, 1])
    np.testing.assert_array_equal(sparse, [[0.0, 1.0], [2.0, np.nan]])
    with pytest.raises(ValueError, match="3 values for 2 rows"):
        plots.grouped_means(np.zeros(3), np.zeros((2, 1), int), [0])


def test_latent_kl_order_and_active_latents():
    loc = np.array([[0.0, 2.0, 0.0], [0.0, -2.0, 0.5]])
    log_scale = np.array([[0.0, 0.0, math.log(0.5)], [0.0, 0.0, math.log(0.5)]])
    order, kl = plots.latent_order(loc, log_scale)
    expected_third = 0.5 * (0.125 + 0.25 - 1.0) - math.log(0.5)
    np.testing.assert_allclose(kl, [0.0, 2.0, expected_third])
    assert list(order) == [1, 2, 0]
    assert plots.active_latents(loc) == [1, 2]
    assert plots.active_latents(loc, max_latents=1) == [1]
    assert plots.active_latents(np.zeros((4, 3))) == [0]


def test_traversal_codes():
    base = np.arange(6.0).reshape(2, 3)
    codes = plots.traversal_codes(base, [2, 0], [-1.0, 1.0, 3.0])
    assert codes.shape == (2, 2, 3, 3)
    for s in range(2):
        for position, latent in enumerate([2, 0]):
            for t, value in enumerate([-1.0, 1.0, 3.0]):
                expected = base[s].copy()
                expected[latent] = value
                np.testing.assert_array_equal(codes[s, position, t], expected)


def test_tile_mosaic_layout():
    tiles = np.zeros((2, 4, 3, 3, 1))
    tiles[1, 3] = 1.0
    mosaic = plots.tile_mosaic(tiles, gap=1, block_gap=2, block_size=2)
    assert mosaic.shape == (7, 4 * 3 + 3 + 2, 1)
    assert mosaic[4:7, 14:17].min() == 1.0  # the last tile, after one block gap
    assert mosaic[3, 0, 0] == pytest.approx(0.5)  # a separator row


def test_latent_factors_figure_of_an_identity_code(dataset, tmp_path):
    classes = dataset.factor_classes
    loc = np.concatenate([classes[:, 3:4] / 7.0, classes[:, 1:2], np.zeros((len(classes), 1))],
                         axis=1)
    path = plots.plot_latent_factors(loc, classes, dataset.factor_values, dataset.factor_names,
                                     tmp_path / "figure.png")
    check_png(tmp_path / "figure.png")
    assert path == str(tmp_path / "figure.png")
    with pytest.raises(ValueError, match="needs the dSprites factors shape, scale, orientation"):
        plots.plot_latent_factors(loc, classes[:, :2], dataset.factor_values[:, :2], ["a", "b"],
                                  tmp_path / "other.png")
    with pytest.raises(ValueError, match="lengths differ"):
        plots.plot_latent_factors(loc[:5], classes, dataset.factor_values,
                                  dataset.factor_names, tmp_path / "other.png")
    assert not (tmp_path / "other.png").exists()


# -- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", plots.KINDS)
def test_cli_writes_each_kind_into_the_run_folder(run_dir, kind):
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--kind", kind, "--quiet"])
    assert result.exit_code == 0, result.output
    path = run_dir / f"{plots.FILE_NAMES[kind]}.png"
    assert f"wrote {path}" in result.output
    check_png(path)
    assert not list(run_dir.glob(".tmp-*"))


def test_cli_traversal_options_and_gif(run_dir, tmp_path):
    out = tmp_path / "figures" / "sweep.png"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--out", str(out), "--range", "2",
                                      "--steps", "4", "--num-images", "2", "--latents", "2",
                                      "--gif", "--quiet"])
    assert result.exit_code == 0, result.output
    check_png(out)
    gif = tmp_path / "figures" / "sweep.gif"
    assert f"wrote {gif}" in result.output
    with Image.open(gif) as animation:
        assert animation.format == "GIF"
        assert animation.n_frames == 2 * 4 - 2  # forward then back
        # 2 seed images x 2 latents of 64x64 pixels, 2-pixel gaps, zoomed twice.
        assert animation.size == (2 * (2 * 64 + 2), 2 * (2 * 64 + 2))


@pytest.mark.parametrize("value_range, labels", [
    (3.0, ["-3.0", "-2.3", "-1.7", "-1.0", "-0.3", "+0.3", "+1.0", "+1.7", "+2.3", "+3.0"]),
    (0.2, ["-0.20", "-0.16", "-0.11", "-0.07", "-0.02", "+0.02", "+0.07", "+0.11", "+0.16",
           "+0.20"]),
])
def test_traversal_axis_labels_name_each_value(run_dir, tmp_path, monkeypatch, value_range,
                                               labels):
    figures = []
    monkeypatch.setattr(plots, "_save_figure", lambda figure, path: figures.append(figure))
    evaluable = evaluation.load_evaluable(run_dir)
    plots.plot_traversals(evaluable, np.zeros((1, 64, 64, 1)), tmp_path / "t.png",
                          value_range=value_range)
    axis = figures[0].axes[0]
    assert [label.get_text() for label in axis.get_xticklabels()] == labels


def test_cli_reconstructions_count(run_dir, tmp_path):
    out = tmp_path / "recon.png"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--kind", "reconstructions",
                                      "--num-images", "13", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        # 13 images: two pairs of rows of 10 tiles: taller than one pair.
        assert image.size[1] > 4 * 64


def test_cli_help_names_the_default_file_of_each_kind():
    result = CliRunner().invoke(cli, ["plot", "--help"])
    text = " ".join(result.output.split())
    assert all(f"{name}.png" in text for name in plots.FILE_NAMES.values()), text
    assert "KIND.png" not in text


def test_cli_zoo_model_writes_into_the_current_folder(run_dir, tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    zoo.publish(run_dir, "tiny-plots", root=root)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["plot", "tiny-plots", "--zoo-root", str(root), "--kind",
                                      "reconstructions", "--num-images", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "wrote tiny-plots-v1-reconstructions.png" in result.output
    check_png(tmp_path / "tiny-plots-v1-reconstructions.png", min_size=(100, 100))
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before


def test_cli_errors(run_dir, tmp_path):
    runner = CliRunner()
    cases = [
        (["--kind", "reconstructions", "--gif"], 1, "the GIF option applies to traversals only"),
        (["--kind", "contours"], 2, "'contours' is not one of"),
        (["--steps", "1"], 2, "1 is not in the range x>=2"),
        (["--range", "0"], 2, "0.0 is not in the range x>0"),
        # Options of another kind are refused, not ignored.
        (["--kind", "reconstructions", "--latents", "1"], 1,
         "the latents option applies to traversals and latent-factors only"),
        (["--kind", "reconstructions", "--range", "2"], 1, "the range option applies to "
                                                            "traversals only"),
        (["--kind", "latent-factors", "--steps", "5"], 1, "the steps option applies to "
                                                          "traversals only"),
        # The GIF goes next to the PNG: a .gif --out would be overwritten by it.
        (["--gif", "--out", str(tmp_path / "sweep.gif")], 1,
         "the figure is a PNG; give a file name ending in .png"),
        (["--out", str(tmp_path / "sweep.jpg")], 1, "give a file name ending in .png"),
    ]
    for arguments, code, message in cases:
        result = runner.invoke(cli, ["plot", str(run_dir), *arguments, "--quiet"])
        assert result.exit_code == code, (arguments, result.output)
        assert message in result.output, (arguments, result.output)
    result = runner.invoke(cli, ["plot", "no-such-model", "--zoo-root", str(tmp_path / "zoo")])
    assert result.exit_code == 1
    assert "'no-such-model' is neither a run folder nor a zoo model" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("arguments, message", [
    (["--num-images", "70"], "70 seed images x 3 latents x 10 steps make 2100 images"),
    (["--steps", "250"], "3 seed images x 3 latents x 250 steps make 2250 images"),
    (["--kind", "reconstructions", "--num-images", "5000"],
     "1536 inputs and their reconstructions make 3072 images"),
])
def test_cli_refuses_a_figure_too_large_to_draw(run_dir, tmp_path, arguments, message):
    # Drawing takes ~0.5 MB an image: all of dSprites' seed images would need hundreds of GB.
    out = tmp_path / "big.png"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), *arguments, "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 1, result.output
    assert f"{message}, more than the 2048 a figure holds" in result.output
    assert not out.exists()


def test_latent_factors_of_another_dataset_fail_before_encoding(run_dir, dataset, monkeypatch):
    other = GroundTruthDataset("toy", dataset.images, dataset.factor_classes[:, :2],
                               dataset.factor_values[:, :2], ("a", "b"), dataset.factor_sizes[:2],
                               "rendered")
    monkeypatch.setattr(plots.evaluation, "load_evaluation_dataset", lambda *a, **k: other)
    stages = []
    with pytest.raises(ValueError, match="needs the dSprites factors .*; toy has a, b"):
        plots.make_plot(run_dir, "latent-factors", progress=lambda stage, *_: stages.append(stage))
    assert stages == []


@pytest.fixture(params=[("laplace", "normal"), ("normal", "laplace")],
                ids=lambda families: "-".join(families))
def non_normal_run(run_dir, monkeypatch, request):
    """The run folder, loaded as an untrained model with a laplace posterior or prior."""
    posterior, prior = request.param
    model = BetaTCVAE(latent_dim=3, arch="burgess", dataset_size=64, posterior=posterior,
                      prior=prior)
    evaluable = evaluation.load_run(str(run_dir), model=model)
    monkeypatch.setattr(plots.evaluation, "load_evaluable", lambda ref, **kwargs: evaluable)
    return run_dir, posterior, prior


def test_traversals_of_a_non_normal_model_are_refused_before_the_data_loads(
        non_normal_run, tmp_path, monkeypatch):
    # The latents are sorted by a KL in closed form for a normal posterior and prior.
    run_dir, posterior, prior = non_normal_run

    def load_evaluation_dataset(*args, **kwargs):
        raise AssertionError("the data loaded although the figure is refused")

    monkeypatch.setattr(plots.evaluation, "load_evaluation_dataset", load_evaluation_dataset)
    out = tmp_path / "traversals.png"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "--out", str(out), "--gif",
                                      "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: run has a {posterior} posterior and a {prior} prior; "
                             f"traversals sort the latents by a closed-form KL that assumes "
                             f"normal ones (reconstructions and latent-factors do not)\n")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("arguments", [["--kind", "reconstructions", "--num-images", "4"],
                                       ["--kind", "latent-factors", "--num-images", "200"]])
def test_other_kinds_of_a_non_normal_model_are_drawn(non_normal_run, tmp_path, arguments):
    run_dir, _, _ = non_normal_run
    out = tmp_path / "figure.png"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), *arguments, "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    check_png(out, min_size=(100, 100))


def test_make_plot_argument_errors(run_dir):
    with pytest.raises(ValueError, match="unknown plot kind 'heatmap'"):
        plots.make_plot(run_dir, "heatmap")
    with pytest.raises(ValueError, match="traversal steps must be an integer >= 2"):
        plots.make_plot(run_dir, "traversals", steps=1)
    with pytest.raises(ValueError, match="traversal range must be a positive number"):
        plots.make_plot(run_dir, "traversals", value_range=-1.0)
    with pytest.raises(ValueError, match="number of images must be a positive integer"):
        plots.make_plot(run_dir, "reconstructions", num_images=0)
