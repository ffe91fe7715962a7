"""What an installed copy holds: every package of the source tree, and the command."""

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def declared_packages():
    """(package name, folder) of every package setup.cfg installs."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    names = config["options"]["packages"].split()
    folders = dict(line.split("=") for line in config["options"]["package_dir"].splitlines()
                   if "=" in line)
    folders = {name.strip(): folder.strip() for name, folder in folders.items()}

    def folder_of(name):
        for prefix, folder in folders.items():
            if name == prefix or name.startswith(prefix + "."):
                return ROOT / folder / Path(*name[len(prefix):].split(".")[1:])
        return ROOT / Path(*name.split("."))

    return {name: folder_of(name) for name in names}


def test_setup_cfg_installs_every_package_of_the_source_tree():
    declared = declared_packages()
    for name, folder in declared.items():
        assert (folder / "__init__.py").is_file(), f"{name}: no package at {folder}"
    on_disk = {init.parent for top in ("tcvae_tf", "cli")
               for init in (ROOT / top).rglob("__init__.py")}
    missing = on_disk - set(declared.values())
    assert not missing, f"packages not in setup.cfg's [options] packages: {sorted(missing)}"


def test_the_wheel_imports_every_module_and_runs_the_command(tmp_path):
    """A wheel installed apart from the source tree (not an editable install) imports
    every module and runs ``tcvae-tf --help``."""
    source = tmp_path / "source"  # a copy: no build/ folder left by an earlier build
    for name in ("tcvae_tf", "cli"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, cwd=tmp_path)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    wheel, = (tmp_path / "wheel").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    modules = sorted(".".join(path.relative_to(site).with_suffix("").parts)
                     for path in (site / "tcvae_tf").rglob("*.py"))
    expected = {"tcvae_tf." + ".".join(path.relative_to(ROOT / "tcvae_tf").with_suffix("").parts)
                for path in (ROOT / "tcvae_tf").rglob("*.py")}
    expected |= {"tcvae_tf.cli." + path.stem for path in (ROOT / "cli").glob("*.py")}
    expected = {name.removesuffix(".__init__") for name in expected}
    found = {name.removesuffix(".__init__") for name in modules}
    assert found == expected
    script = ("import importlib, sys\n"
              f"sys.path.insert(0, {str(site)!r})\n"
              "import tcvae_tf\n"
              f"assert tcvae_tf.__file__.startswith({str(site)!r}), tcvae_tf.__file__\n"
              "from tcvae_tf.methods import METHODS\n"
              "from tcvae_tf.cli.main import cli\n"
              "cli(['--help'], standalone_mode=False)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Usage:" in run.stdout
