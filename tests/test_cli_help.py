"""`tcvae-tf --help` and every subcommand's --help run without importing TensorFlow, and
`tcvae-tf train` refuses bad options before it imports TensorFlow.

Each help is invoked through Click's CliRunner in a fresh interpreter, which then reports
the heavy modules it imported; the test asserts none of them was. (Wall-clock times are
measured by hand and kept in benchmarks/README.md, not asserted here.)
"""

import json
import os
import subprocess
import sys

import pytest

from tcvae_tf.cli.main import COMMANDS

HEAVY_MODULES = ("tensorflow", "keras", "tensorflow_probability", "tf_keras", "torch")

# Runs in a fresh interpreter: invokes the help, prints the exit code, the output and the
# heavy top-level modules now in sys.modules.
HELP_SCRIPT = """
import json, os, sys
from click.testing import CliRunner
from tcvae_tf.cli.main import cli
result = CliRunner().invoke(cli, sys.argv[1:])
watched = set(os.environ["HEAVY_MODULES"].split(","))
heavy = sorted({name.split(".")[0] for name in sys.modules} & watched)
print(json.dumps({"exit_code": result.exit_code, "output": result.output, "heavy": heavy}))
"""

SUBCOMMANDS_SCRIPT = """
import json
import click
from tcvae_tf.cli.main import cli
found = []
with click.Context(cli) as context:
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        if isinstance(command, click.Group):
            with click.Context(command, parent=context, info_name=name) as inner:
                found += [[name, sub] for sub in command.list_commands(inner)]
print(json.dumps(found))
"""


def run_python(script, *args):
    completed = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "HEAVY_MODULES": ",".join(HEAVY_MODULES)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def nested_commands():
    return [tuple(pair) for pair in run_python(SUBCOMMANDS_SCRIPT)]


def help_report(*command):
    return run_python(HELP_SCRIPT, *command, "--help")


@pytest.mark.parametrize("command", [(), *[(name,) for name in sorted(COMMANDS)]],
                         ids=lambda command: " ".join(command) or "tcvae-tf")
def test_help_does_not_import_tensorflow(command):
    report = help_report(*command)
    assert report["exit_code"] == 0, report["output"]
    assert "Usage:" in report["output"]
    assert report["heavy"] == [], f"`tcvae-tf {' '.join(command)} --help` imported " \
                                  f"{report['heavy']}"


def test_nested_subcommand_help_does_not_import_tensorflow():
    nested = nested_commands()
    assert ("zoo", "list") in nested  # the zoo group's subcommands are found
    for command in nested:
        report = help_report(*command)
        assert report["exit_code"] == 0, (command, report["output"])
        assert report["heavy"] == [], f"`tcvae-tf {' '.join(command)} --help` imported " \
                                      f"{report['heavy']}"


def test_the_check_detects_an_import():
    # The same probe sees TensorFlow once something imports it.
    script = HELP_SCRIPT.replace("from click.testing", "import tensorflow\nfrom click.testing")
    report = run_python(script, "--help")
    assert "tensorflow" in report["heavy"]


@pytest.mark.parametrize("options,message", [
    (["--lr", "-1"], "learning rate must be > 0"),
    (["--beta", "nan"], "--beta must be a finite number"),
    (["--arch", "resnet"], "unknown arch 'resnet'"),
    (["--objective", "factorvae", "--alpha", "2"], "--alpha is an option of tcvae"),
    (["--keep-every", "7"], "keep-every must be a positive multiple"),
    (["--resume", "--out", "{tmp}/none"], "nothing to resume"),
    (["--out", "{tmp}/taken"], "already holds a run"),
    (["--objective", "factorvae", "--batch-size", "18", "--cpu-replicas", "2"],
     "give a batch size that is a multiple of 4 for 2 replicas"),
    (["--batch-size", "2048"], "batch size 2048 exceeds the 1536 images of dsprites-small"),
    (["--subset", "100", "--batch-size", "128"], "give --batch-size 100 or less"),
])
def test_train_refuses_bad_options_before_importing_tensorflow(tmp_path, options, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text('{"train": {}}')
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]
    report = run_python(HELP_SCRIPT, "train", "dsprites-small", *options)
    assert report["exit_code"] == 1
    assert report["output"].startswith("Error: ") and message in report["output"]
    assert len(report["output"].strip().splitlines()) == 1
    assert report["heavy"] == []
