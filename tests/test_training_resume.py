"""Resume on the small dSprites grid: finished runs trained further or not, interrupted
windows, TensorBoard steps and damaged checkpoints."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tcvae_tf import evaluation, export, training
from tcvae_tf.cli.main import cli
from tcvae_tf.training import TrainConfig, TrainingError

# What a finished run's end wrote, and what an evaluation and plots of its model.keras add.
RESULTS = ("metrics.json", "metrics-mig.json", training.SAMPLES_FILE, "traversals.png",
           "traversals.gif", "reconstructions.png", training.MODEL_FILE)


def _config(tmp_path, **overrides):
    settings = dict(dataset="dsprites-small", arch="burgess", latent_dim=3, batch_size=32,
                    steps=8, checkpoint_every=4, out=str(tmp_path / "run"))
    settings.update(overrides)
    return TrainConfig(**settings)


def _train(config, resume=False, messages=None):
    echo = (lambda _: None) if messages is None else messages.append
    return training.train(config, resume=resume, verbose=0, echo=echo)


def _interrupt_at(monkeypatch, step):
    """Makes training raise KeyboardInterrupt as a Ctrl-C during step ``step`` does: once
    the step is done, before any callback sees it."""
    original = training._make_callbacks

    def with_interrupt(*args, **kwargs):
        window, callbacks = original(*args, **kwargs)
        batch_end = window.on_train_batch_end

        def interrupted(batch, logs=None):
            if int(window.model.optimizer.iterations.numpy()) == step:
                raise KeyboardInterrupt
            batch_end(batch, logs)

        window.on_train_batch_end = interrupted
        return window, callbacks

    monkeypatch.setattr(training, "_make_callbacks", with_interrupt)


def _history(run_dir):
    with open(os.path.join(run_dir, training.HISTORY_FILE)) as handle:
        return list(csv.DictReader(handle))


def test_a_finished_run_trained_further_no_longer_passes_its_old_model_as_result(
        tmp_path, monkeypatch):
    run_dir = _train(_config(tmp_path, steps=4))
    for name in RESULTS[:2]:
        Path(run_dir, name).write_text("{}")
    for kind in ("traversals", "reconstructions"):
        assert CliRunner().invoke(cli, ["plot", run_dir, "--kind", kind, "--num-images", "2"]
                                  + (["--gif"] if kind == "traversals" else [])).exit_code == 0
    _interrupt_at(monkeypatch, 6)
    messages = []
    with pytest.raises(TrainingError, match="interrupted at step 6"):
        _train(_config(tmp_path, steps=8), resume=True, messages=messages)
    monkeypatch.undo()
    assert (f"the run finished at step 4 now trains to step 8: removed its {', '.join(RESULTS)}"
            f" ({training.CHECKPOINT_FILE} holds the same weights)") in messages
    assert not any(os.path.exists(os.path.join(run_dir, name)) for name in RESULTS)
    # As any run stopped before its end: evaluate takes the checkpoint, export refuses.
    assert evaluation.load_run(run_dir).fingerprint["file"] == "checkpoints/last.keras"
    with pytest.raises(FileNotFoundError, match="has the run finished training"):
        export.load_run_model(run_dir)
    refused = CliRunner().invoke(cli, ["export", run_dir, "--name", "extended", "--zoo-root",
                                       str(tmp_path / "zoo")])
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines() == [
        f"Error: {os.path.join(run_dir, training.MODEL_FILE)} does not exist (has the run "
        f"finished training?)"]
    _train(_config(tmp_path, steps=8), resume=True)
    assert int(training.load_model(run_dir).optimizer.iterations) == 8


def test_resuming_a_finished_run_with_nothing_to_train_writes_nothing(tmp_path):
    run_dir = _train(_config(tmp_path, steps=4))
    Path(run_dir, "metrics.json").write_text("{}")
    names = (training.MODEL_FILE, training.SAMPLES_FILE, training.CONFIG_FILE,
             training.CHECKPOINT_FILE, training.HISTORY_FILE, "metrics.json")

    def state():
        return {name: (os.stat(os.path.join(run_dir, name)).st_ino,
                       os.stat(os.path.join(run_dir, name)).st_mtime_ns,
                       Path(run_dir, name).read_bytes()) for name in names}

    before = state()
    for steps in (4, 3):
        messages = []
        _train(_config(tmp_path, steps=steps), resume=True, messages=messages)
        assert state() == before
        assert (f"{run_dir} already reached step 4 of {steps}; nothing to train, the run is "
                f"left as it is") in messages


def test_an_interrupted_window_gets_a_row_of_its_own(tmp_path, monkeypatch):
    straight = _train(_config(tmp_path, out=str(tmp_path / "straight")))
    _interrupt_at(monkeypatch, 6)
    with pytest.raises(TrainingError, match="interrupted at step 6; checkpoint saved"):
        _train(_config(tmp_path))
    monkeypatch.undo()
    run_dir = str(tmp_path / "run")
    assert [row["step"] for row in _history(run_dir)] == ["4", "6"]
    _train(_config(tmp_path), resume=True)
    rows, whole = _history(run_dir), _history(straight)
    assert [row["step"] for row in rows] == ["4", "6", "8"]
    assert rows[0] == whole[0]
    # Rows 6 and 8 are the means of steps 5-6 and 7-8; together, the window 5-8.
    for name in ("loss", "reconstruction", "kl"):
        np.testing.assert_allclose((float(rows[1][name]) + float(rows[2][name])) / 2,
                                   float(whole[1][name]), rtol=2e-5)
    models = [training.load_model(run) for run in (straight, run_dir)]
    for first, second in zip(*(model.get_weights() for model in models), strict=True):
        np.testing.assert_array_equal(first, second)


def test_tensorboard_steps_continue_across_a_resume(tmp_path):
    import tensorflow as tf

    run_dir = _train(_config(tmp_path, steps=4, checkpoint_every=2))
    _train(_config(tmp_path, steps=8, checkpoint_every=2), resume=True)
    steps = []
    for event_file in Path(run_dir, "tensorboard").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            steps += [event.step for value in event.summary.value if value.tag == "batch_loss"]
    assert sorted(steps) == [2, 4, 6, 8]


def test_a_damaged_checkpoint_is_named_as_such(tmp_path):
    out = str(tmp_path / "run")
    _train(_config(tmp_path, steps=4))
    checkpoint = os.path.join(out, training.CHECKPOINT_FILE)
    os.truncate(checkpoint, 5000)
    result = CliRunner().invoke(cli, ["train", "dsprites-small", "--resume", "--steps", "6",
                                      "--out", out, "--quiet"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {checkpoint} is damaged and cannot be read; start the run again with "
        f"--overwrite")
    model = os.path.join(out, training.MODEL_FILE)
    os.truncate(model, 5000)
    with pytest.raises(TrainingError, match=f"^{re.escape(model)} is damaged and cannot be read$"):
        training.load_model(out)
