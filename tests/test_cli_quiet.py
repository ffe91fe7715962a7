"""The CLI's output holds the project's own lines only: TensorFlow/absl/Keras noise is hidden."""

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest

from tcvae_tf.cli import quiet

# What TensorFlow, absl and Keras print on a CPU machine, if it reaches the user.
NOISE = re.compile(r"^[IWEF]\d{4} |absl|oneDNN|cuInit|cuda|UserWarning|^WARNING|shuffle=True"
                   r"|Traceback")
START_UP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796185361.053588    5208 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results\n",
    "I0000 00:00:1796185361.054029    5208 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "E0000 00:00:1796185365.907570    5208 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]
REAL_LINES = [
    "E0000 00:00:1796185365.907570    5208 op_kernel.cc:12] OOM when allocating tensor\n",
    "data: dsprites-small (rendered), 1536 images\n",
]


def cli_env():
    env = {**os.environ}
    env.pop(quiet.LOG_LEVEL_VAR, None)
    return env


@pytest.mark.slow
def test_a_training_run_prints_only_the_projects_lines(tmp_path):
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "tcvae_tf.cli.main", "train", "dsprites-small", "--steps", "2",
         "--batch-size", "64", "--checkpoint-every", "2", "--arch", "burgess",
         "--latent-dim", "2", "--out", str(out), "--quiet"],
        env=cli_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stderr.splitlines()
    assert [line for line in lines if NOISE.search(line)] == [], completed.stderr
    assert any(line.startswith("run saved in") for line in lines), completed.stderr


def test_known_start_up_lines_are_noise_and_others_are_not():
    assert all(quiet.is_noise(line) for line in START_UP_LINES)
    assert not any(quiet.is_noise(line) for line in REAL_LINES)


def test_the_held_back_descriptor_drops_only_noise(capfd):
    with quiet.filtered_stderr_fd():
        for line in [REAL_LINES[0], *START_UP_LINES, REAL_LINES[1]]:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "".join(REAL_LINES)


def logging_state():
    return (os.environ.get(quiet.LOG_LEVEL_VAR),
            [logging.getLogger(name).level for name in quiet.QUIET_LOGGERS],
            list(sys.meta_path), list(warnings.filters))


def test_quieting_is_undone_and_verbose_or_a_users_level_change_nothing(monkeypatch):
    monkeypatch.delenv(quiet.LOG_LEVEL_VAR, raising=False)
    before = logging_state()
    with quiet.third_party_output_quieted():
        assert os.environ[quiet.LOG_LEVEL_VAR] == "2"
        assert logging.getLogger("tensorflow").level == logging.ERROR
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message=quiet._KERAS_SHUFFLE_WARNING,
                                    category=UserWarning)
            warnings.warn("`shuffle=True` was passed, but will be ignored since ...",
                          UserWarning, stacklevel=1)
        assert caught == []
    assert logging_state() == before
    with quiet.third_party_output_quieted(verbose=True):
        assert logging_state() == before
    monkeypatch.setenv(quiet.LOG_LEVEL_VAR, "0")
    before = logging_state()
    with quiet.third_party_output_quieted():
        assert logging_state() == before


def test_importing_the_library_changes_no_logging(tmp_path):
    """Every tcvae_tf module (the CLI's too) imported after the third-party libraries."""
    script = textwrap.dedent("""
        import json, logging, os, pkgutil, importlib, sys, warnings
        import keras, tensorflow, tensorflow_probability  # their own changes come first

        def state():
            return {"env": {k: v for k, v in os.environ.items()
                            if k.startswith(("TF_", "ABSL", "KERAS"))},
                    "levels": {name: logging.getLogger(name).level
                               for name in ("", "tensorflow", "absl", "keras")},
                    "filters": [repr(f) for f in warnings.filters],
                    "meta_path": [repr(f) for f in sys.meta_path]}

        before = state()
        import tcvae_tf, tcvae_tf.cli
        for package in (tcvae_tf, tcvae_tf.cli):
            for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                importlib.import_module(module.name)
        print(json.dumps([before, state()]))
    """)
    completed = subprocess.run([sys.executable, "-c", script], env=cli_env(),
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    before, after = json.loads(completed.stdout.splitlines()[-1])
    assert after == before
