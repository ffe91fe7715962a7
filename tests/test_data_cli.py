"""`tcvae-tf data` through Click's CliRunner."""

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

data_cmd = pytest.importorskip("tcvae_tf.cli.data_cmd")


@pytest.fixture
def runner():
    return CliRunner()


def test_help(runner):
    result = runner.invoke(data_cmd.data, ["--help"])
    assert result.exit_code == 0
    for option in ("--source", "--data-path", "--out", "--seed", "auto|rendered|official|tfds"):
        assert option in result.output


def test_describes_dsprites_small_and_writes_the_png(runner, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    result = runner.invoke(data_cmd.data, ["dsprites-small", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "source   rendered" in result.output
    assert "1536 x 64x64x1" in result.output
    assert "shape 3, scale 2, orientation 4, pos_x 8, pos_y 8" in result.output
    assert "square, ellipse, heart" in result.output
    with Image.open(out) as image:
        pixels = np.array(image)
    gap, zoom = 2, data_cmd.PNG_ZOOM
    assert pixels.shape == ((3 * (64 + gap) + gap) * zoom, (12 * (64 + gap) + gap) * zoom)
    # Each row of images holds sprites (white pixels) on black backgrounds.
    for row in range(3):
        top = (gap + row * (64 + gap)) * zoom
        band = pixels[top : top + 64 * zoom]
        assert (band == 255).any() and (band == 0).any()


def test_default_png_name_in_the_current_folder(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(data_cmd.data, ["dsprites-small"])
    assert result.exit_code == 0, result.output
    assert "samples  dsprites-small_samples.png" in result.output
    assert (tmp_path / "dsprites-small_samples.png").is_file()


def test_an_out_that_is_not_a_png_is_refused_before_loading(runner, tmp_path):
    out = tmp_path / "grid.jpg"
    result = runner.invoke(data_cmd.data, ["dsprites-small", "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {out}: the samples are a PNG; give a file name ending in .png"]
    assert not out.exists()


def test_unknown_dataset_is_a_one_line_error(runner):
    result = runner.invoke(data_cmd.data, ["mnist"])
    assert result.exit_code == 1
    assert "unknown dataset 'mnist'; available: dsprites, dsprites-small" in result.output
    assert "Traceback" not in result.output


def test_missing_official_file_is_a_one_line_error(runner, tmp_path):
    missing = tmp_path / "missing.npz"
    result = runner.invoke(data_cmd.data, ["dsprites", "--source", "official",
                                           "--data-path", str(missing)])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error_lines == [f"Error: {missing}: no such file"]


def test_bad_official_file_is_a_one_line_error(runner, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, imgs=np.zeros((2, 64, 64), np.uint8))
    result = runner.invoke(data_cmd.data, ["dsprites", "--data-path", str(bad)])
    assert result.exit_code == 1
    assert f"Error: {bad}: missing key(s) latents_values, latents_classes" in result.output


def test_module_imports_only_click():
    code = ("import sys, tcvae_tf.cli.data_cmd; "
            "heavy = {'tensorflow', 'numpy', 'tcvae_tf.data'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", ["train", "evaluate", "plot"])
def test_data_path_takes_a_tfds_folder(tmp_path, command):
    """--source tfds --data-path names a TFDS data folder: click must not refuse a folder."""
    from click.testing import CliRunner

    from tcvae_tf.cli.main import cli

    folder = tmp_path / "tensorflow_datasets"
    folder.mkdir()
    target = (["dsprites", "--steps", "1", "--out", str(tmp_path / "run")] if command == "train"
              else [str(tmp_path / "no-such-run")])
    result = CliRunner().invoke(cli, [command, *target, "--source", "tfds",
                                      "--data-path", str(folder)])
    assert result.exit_code != 0
    assert "is a directory" not in result.output
    if command == "train":
        assert "TFDS dsprites is not prepared there" in result.output
