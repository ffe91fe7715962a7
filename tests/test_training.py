"""Training runs end to end on the small dSprites grid: artefacts, resume, faults, CLI."""

import csv
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tcvae_tf import training
from tcvae_tf.cli.main import cli
from tcvae_tf.training import TrainConfig, TrainingError, fit_plan

# The decomposition's terms as training logs them: estimates from one minibatch.
MINIBATCH = ("minibatch_mi", "minibatch_tc", "minibatch_dwkl")


def _config(tmp_path, **overrides):
    settings = dict(dataset="dsprites-small", arch="burgess", latent_dim=3, batch_size=32,
                    steps=6, checkpoint_every=4, out=str(tmp_path / "run"))
    settings.update(overrides)
    return TrainConfig(**settings)


def _history_steps(run_dir):
    with open(os.path.join(run_dir, training.HISTORY_FILE)) as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("start,total,every,expected", [
    (0, 10, 4, [(0, 2, 4, 0), (2, 3, 2, 8)]),
    (0, 8, 4, [(0, 2, 4, 0)]),
    (5, 10, 4, [(1, 2, 3, 5), (2, 3, 2, 8)]),
    (3, 20, 4, [(0, 1, 1, 3), (1, 5, 4, 4)]),
    (10, 10, 4, []),
])
def test_fit_plan_covers_every_step_once(start, total, every, expected):
    plan = fit_plan(start, total, every)
    assert plan == expected
    assert sum((epochs - first) * steps for first, epochs, steps, _ in plan) == total - start


def test_run_folder_holds_every_artefact(tmp_path):
    run_dir = training.train(_config(tmp_path), verbose=0, echo=lambda _: None)
    for name in (training.CONFIG_FILE, training.HISTORY_FILE, training.CHECKPOINT_FILE,
                 training.MODEL_FILE, training.SAMPLES_FILE):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    record = json.loads(Path(run_dir, training.CONFIG_FILE).read_text())
    assert record["train"]["objective"] == "tcvae"
    assert record["train"]["options"] == {"alpha": 1.0, "beta": 6.0, "gamma": 1.0,
                                          "estimator": "mws", "beta_warmup_steps": 0,
                                          "gamma_warmup_steps": 0}
    assert record["data"]["name"] == "dsprites-small"
    assert record["data"]["source"] == "rendered"
    assert record["library_versions"]["tensorflow"]
    with open(os.path.join(run_dir, training.HISTORY_FILE)) as handle:
        rows = list(csv.DictReader(handle))
    assert {"loss", "reconstruction", "kl", *MINIBATCH} <= set(rows[0])
    assert not {"mi", "tc", "dwkl"} & set(rows[0])
    model = training.load_model(run_dir)
    assert int(model.optimizer.iterations) == 6


def test_resume_continues_the_step_count(tmp_path):
    config = _config(tmp_path, steps=4)
    run_dir = training.train(config, verbose=0, echo=lambda _: None)
    messages = []
    training.train(_config(tmp_path, steps=10), resume=True, verbose=0, echo=messages.append)
    assert any("resuming" in m and "step 4" in m for m in messages)
    model = keras.models.load_model(os.path.join(run_dir, training.CHECKPOINT_FILE))
    assert int(model.optimizer.iterations) == 10
    assert _history_steps(run_dir) == [4, 8, 10]
    stored = json.loads(Path(run_dir, training.CONFIG_FILE).read_text())
    assert stored["train"]["steps"] == 10


def test_existing_run_is_not_overwritten(tmp_path):
    training.train(_config(tmp_path, steps=2), verbose=0, echo=lambda _: None)
    with pytest.raises(TrainingError, match="already holds a run; use --resume"):
        training.train(_config(tmp_path, steps=2), verbose=0, echo=lambda _: None)
    training.train(_config(tmp_path, steps=3), overwrite=True, verbose=0, echo=lambda _: None)
    assert int(training.load_model(str(tmp_path / "run")).optimizer.iterations) == 3


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from tcvae_tf.model import BetaTCVAE

    original = BetaTCVAE.loss_terms

    def poisoned(self, images, training=False):
        terms = original(self, images, training=training)
        step = self.optimizer.iterations
        import tensorflow as tf

        bad = tf.where(step >= 5, tf.constant(float("nan")), 0.0)
        return {**terms, "loss": terms["loss"] + bad}

    monkeypatch.setattr(BetaTCVAE, "loss_terms", poisoned)
    with pytest.raises(TrainingError, match="non-finite loss .* at step 6"):
        training.train(_config(tmp_path, steps=8), verbose=0, echo=lambda _: None)
    checkpoint = keras.models.load_model(str(tmp_path / "run" / training.CHECKPOINT_FILE))
    assert int(checkpoint.optimizer.iterations) == 4
    assert all(np.all(np.isfinite(w)) for w in checkpoint.get_weights())


@pytest.mark.parametrize("overrides,message", [
    ({"options": {"beta": -1.0}}, "beta must be >= 0"),
    ({"arch": "resnet"}, "unknown arch 'resnet'; choose one of mlp, conv, burgess"),
    ({"objective": "nope"}, "unknown objective 'nope'; choose one of tcvae, betavae"),
    ({"options": {"estimator": "mss"}, "batch_size": 1},
     "MSS estimator needs a batch size of at least 2"),
    ({"objective": "dipvae2", "options": {"gamma": 1.0}},
     "gamma is an option of tcvae .* and factorvae .*, not of dipvae2"),
    ({"objective": "factorvae", "batch_size": 33}, "even batch size of at least 4, got 33"),
])
def test_bad_settings_are_one_line_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        training.train(_config(tmp_path, **overrides), verbose=0)


def test_cli_trains_and_reports_errors(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "cli-run")
    result = runner.invoke(cli, ["train", "dsprites-small", "--arch", "burgess", "--latent-dim",
                                 "3", "--batch-size", "32", "--steps", "3", "--out", out,
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert os.path.isfile(os.path.join(out, training.MODEL_FILE))

    again = runner.invoke(cli, ["train", "dsprites-small", "--steps", "3", "--out", out])
    assert again.exit_code == 1
    assert "already holds a run" in again.output
    assert "Traceback" not in again.output

    unknown = runner.invoke(cli, ["train", "mnist"])
    assert unknown.exit_code == 1
    assert "unknown dataset 'mnist'; choose one of" in unknown.output
    mss = runner.invoke(cli, ["train", "dsprites-small", "--estimator", "mss", "--batch-size",
                              "1", "--out", str(tmp_path / "x")])
    assert mss.exit_code == 1 and "at least 2" in mss.output


def test_a_subset_larger_than_the_dataset_is_refused_before_training(tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "dsprites-small", "--subset", "5000",
                                      "--batch-size", "32", "--steps", "2", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: --subset 5000 exceeds the 1536 images of dsprites-small; give --subset 1536 "
        "or less"]
    assert not out.exists()
    _, checked = training.resolve_run(_config(tmp_path, subset=1536))
    assert checked.subset == 1536
    # A dataset of no known size is checked once loaded, before anything is written.
    from tcvae_tf.data import registry

    monkeypatch.delitem(registry._SIZES, "dsprites-small")
    with pytest.raises(TrainingError, match="--subset 1537 exceeds the 1536 images"):
        training.train(_config(tmp_path, subset=1537), verbose=0, echo=lambda _: None)
    assert not out.exists()


def test_a_run_that_stored_a_subset_larger_than_the_dataset_still_resumes(tmp_path):
    # Runs written before the subset was checked trained on every image; they resume so.
    run_dir = training.train(_config(tmp_path, steps=2, checkpoint_every=2), verbose=0,
                             echo=lambda _: None)
    path = Path(run_dir, training.CONFIG_FILE)
    record = json.loads(path.read_text())
    record["train"]["subset"] = 5000
    path.write_text(json.dumps(record))
    messages = []
    training.train(_config(tmp_path, steps=3), resume=True, verbose=0, echo=messages.append)
    assert any("1536 images" in m for m in messages), messages
    assert _history_steps(run_dir) == [2, 3]


@pytest.mark.parametrize("objective,logged", [
    ("factorvae", {"tc_discriminator", "discriminator_accuracy", "discriminator_loss"}),
    ("dipvae2", {"dip_off_diagonal", "dip_diagonal"}),
])
def test_cli_trains_resumes_evaluates_and_exports_each_method(tmp_path, objective, logged):
    runner = CliRunner()
    out = str(tmp_path / objective)
    common = ["--out", out, "--quiet"]
    result = runner.invoke(cli, ["train", "dsprites-small", "--objective", objective, "--arch",
                                 "burgess", "--latent-dim", "2", "--batch-size", "16",
                                 "--steps", "2", "--checkpoint-every", "2", *common,
                                 *(["--discriminator-layers", "2", "--discriminator-units",
                                    "32"] if objective == "factorvae" else [])])
    assert result.exit_code == 0, result.output
    record = json.loads(Path(out, training.CONFIG_FILE).read_text())["train"]
    assert record["objective"] == objective and record["lr"] == 1e-4
    assert record["options"] == training.TrainConfig.from_dict(record).options
    result = runner.invoke(cli, ["train", "dsprites-small", "--resume", "--steps", "3",
                                 *common])
    assert result.exit_code == 0, result.output
    with open(os.path.join(out, training.HISTORY_FILE)) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["2", "3"]
    assert {"loss", "reconstruction", "kl", *MINIBATCH} | logged == set(rows[0]) - {"step"}
    result = runner.invoke(cli, ["evaluate", out, "--metric", "active_units", "--quiet"])
    assert result.exit_code == 0, result.output
    zoo_root = str(tmp_path / "zoo")
    result = runner.invoke(cli, ["export", out, "--name", objective, "--zoo-root", zoo_root])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(cli, ["zoo", "list", "--zoo-root", zoo_root])
    headline = "gamma=35" if objective == "factorvae" else "lambda_od=10"
    assert objective in listing.output and headline in listing.output
    card = json.loads(Path(zoo_root, objective, "card.json").read_text())["versions"]["1"]
    assert card["model"]["objective"] == objective
    assert set(card["signatures"]) == {"encoder", "decoder"}
    assert not any("discriminator" in path for path in card["files"])


def test_interrupt_saves_a_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    calls = []
    original = training.runs.append_history

    def interrupt_after_first_window(path, step, logs):
        original(path, step, logs)
        calls.append(step)
        raise KeyboardInterrupt

    monkeypatch.setattr(training.runs, "append_history", interrupt_after_first_window)
    with pytest.raises(TrainingError, match="interrupted at step 4; checkpoint saved"):
        training.train(_config(tmp_path, steps=8), verbose=0, echo=lambda _: None)
    monkeypatch.setattr(training.runs, "append_history", original)
    run_dir = str(tmp_path / "run")
    assert not os.path.exists(os.path.join(run_dir, training.MODEL_FILE))
    training.train(_config(tmp_path, steps=8), resume=True, verbose=0, echo=lambda _: None)
    assert int(training.load_model(run_dir).optimizer.iterations) == 8
    assert _history_steps(run_dir) == [4, 8]


@pytest.mark.parametrize("method", [
    {},
    # Two optimizers, two half-batches, permuted samples: all of it from (seed, step).
    {"objective": "factorvae", "batch_size": 16,
     "options": {"discriminator_layers": 2, "discriminator_units": 32}},
])
def test_resumed_run_reproduces_the_uninterrupted_history_exactly(tmp_path, method):
    straight = training.train(_config(tmp_path, steps=8, out=str(tmp_path / "straight"),
                                      **method), verbose=0, echo=lambda _: None)
    resumed = str(tmp_path / "resumed")
    training.train(_config(tmp_path, steps=4, out=resumed, **method), verbose=0,
                   echo=lambda _: None)
    training.train(_config(tmp_path, steps=8, out=resumed, **method), resume=True, verbose=0,
                   echo=lambda _: None)
    with open(os.path.join(straight, training.HISTORY_FILE)) as a, \
            open(os.path.join(resumed, training.HISTORY_FILE)) as b:
        assert a.read() == b.read()
    models = [training.load_model(run) for run in (straight, resumed)]
    for first, second in zip(*(model.get_weights() for model in models), strict=True):
        np.testing.assert_array_equal(first, second)
    if method:
        optimizers = [model.discriminator_optimizer.variables for model in models]
        for first, second in zip(*optimizers, strict=True):
            np.testing.assert_array_equal(first.numpy(), second.numpy())


def test_overwrite_leaves_nothing_of_the_old_run(tmp_path):
    run_dir = training.train(_config(tmp_path, steps=2, keep_every=4, checkpoint_every=2),
                             verbose=0, echo=lambda _: None)
    for stale in ("metrics.json", "traversals.png"):
        Path(run_dir, stale).write_text("old")
    training.train(_config(tmp_path, steps=2), overwrite=True, verbose=0, echo=lambda _: None)
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    assert not os.path.exists(os.path.join(run_dir, "traversals.png"))


@pytest.mark.parametrize("name", ["lr", "beta", "alpha", "gamma"])
def test_non_finite_options_are_refused_before_anything_is_written(tmp_path, name):
    setting = {name: float("nan")} if name == "lr" else {"options": {name: float("nan")}}
    with pytest.raises(ValueError, match=f"{name} must be a finite number, got nan"):
        training.train(_config(tmp_path, **setting), verbose=0)
    assert not os.path.exists(tmp_path / "run")


def test_a_run_that_fails_before_its_first_checkpoint_does_not_block_a_rerun(
        tmp_path, monkeypatch):
    from tcvae_tf.model import BetaTCVAE

    original = BetaTCVAE.loss_terms

    def poisoned(self, images, training=False):
        terms = original(self, images, training=training)
        return {**terms, "loss": terms["loss"] * float("nan")}

    monkeypatch.setattr(BetaTCVAE, "loss_terms", poisoned)
    with pytest.raises(TrainingError) as caught:
        training.train(_config(tmp_path), verbose=0, echo=lambda _: None)
    assert "no checkpoint was written yet" in str(caught.value)
    assert "last.keras" not in str(caught.value)
    assert not os.path.exists(tmp_path / "run")
    monkeypatch.setattr(BetaTCVAE, "loss_terms", original)
    training.train(_config(tmp_path, steps=2), verbose=0, echo=lambda _: None)


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    run_dir = training.train(_config(tmp_path, steps=4), verbose=0, echo=lambda _: None)
    stale = os.path.join(run_dir, "checkpoints", ".tmp-abc123.keras")
    Path(stale).write_text("half a checkpoint")
    messages = []
    training.train(_config(tmp_path, steps=6), resume=True, verbose=0, echo=messages.append)
    assert not os.path.exists(stale)
    assert any("removed 1 unfinished temporary file" in m for m in messages)


def test_snapshots_are_kept_every_n_steps(tmp_path):
    run_dir = training.train(_config(tmp_path, steps=8, checkpoint_every=2, keep_every=4),
                             verbose=0, echo=lambda _: None)
    assert [step for step, _ in training.runs.snapshots(run_dir)] == [4, 8]
    from tcvae_tf import curves

    curve = curves.update_curve(run_dir)
    assert [row["step"] for row in curve] == [4, 8] == [
        row["step"] for row in training.runs.read_curve(run_dir)]
    assert curves.snapshot_migs(run_dir, [8]) == [curve[1]]
    with pytest.raises(ValueError, match="no snapshot of step 6 \\(it has 4, 8\\)"):
        curves.snapshot_migs(run_dir, [6])
    with pytest.raises(ValueError, match="keep-every must be a positive multiple"):
        _config(tmp_path, checkpoint_every=4, keep_every=6).validate()


def test_progress_is_plain_lines_when_not_a_terminal(tmp_path):
    import io

    stream = io.StringIO()
    training.train(_config(tmp_path, steps=6), verbose=1, stream=stream, echo=lambda _: None)
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 4/6", "step 6/6"]
    assert all("img/s" in line and "ETA" in line for line in lines)
    assert all(" | minibatch tc " in line and " | kl " in line for line in lines)
    assert "\033" not in stream.getvalue() and "\r" not in stream.getvalue()


def test_minibatch_estimates_are_named_as_such_in_tensorboard(tmp_path):
    import tensorflow as tf

    run_dir = training.train(_config(tmp_path, steps=4), verbose=0, echo=lambda _: None)
    tags = set()
    for event_file in Path(run_dir, "tensorboard").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_minibatch_tc", "epoch_minibatch_mi", "epoch_minibatch_dwkl"} <= tags
    assert not {"epoch_tc", "epoch_mi", "epoch_dwkl"} & tags


def test_a_run_with_the_short_history_names_resumes_into_its_columns(tmp_path):
    run_dir = training.train(_config(tmp_path, steps=4), verbose=0, echo=lambda _: None)
    path = Path(run_dir, training.HISTORY_FILE)
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header.replace("minibatch_", ""), *rows]) + "\n")
    training.train(_config(tmp_path, steps=8), resume=True, verbose=0, echo=lambda _: None)
    with open(path) as handle:
        written = list(csv.DictReader(handle))
    assert [row["step"] for row in written] == ["4", "8"]
    assert all(row["tc"] and row["mi"] and row["dwkl"] for row in written)
    assert not any(name in written[0] for name in MINIBATCH)
    read = training.runs.read_history(run_dir)
    assert all(set(MINIBATCH) <= set(row) for row in read)
    assert read[1]["minibatch_tc"] == float(written[1]["tc"])


def test_resume_takes_the_runs_objective_and_refuses_options_that_differ(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "run")
    small = ["--discriminator-layers", "2", "--discriminator-units", "32"]
    result = runner.invoke(cli, ["train", "dsprites-small", "--objective", "factorvae",
                                 "--arch", "burgess", "--latent-dim", "2", "--batch-size",
                                 "16", "--steps", "2", "--checkpoint-every", "2", "--out", out,
                                 "--quiet", *small])
    assert result.exit_code == 0, result.output
    for options, message in [
            (["--lr", "0.5"], "--lr 0.5 differs from the run's 0.0001"),
            (["--discriminator-units", "64"], "--discriminator-units 64 differs from the "
                                              "run's 32"),
            (["--objective", "tcvae"], "--objective tcvae differs from the run's factorvae"),
            (["--jit", "on"], "--jit on differs from the run's auto")]:
        refused = runner.invoke(cli, ["train", "dsprites-small", "--resume", "--out", out,
                                      *options])
        assert refused.exit_code == 1 and message in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    other = runner.invoke(cli, ["train", "dsprites", "--resume", "--out", out])
    assert "dataset dsprites differs from the run's dsprites-small" in other.output
    # The run's own method flags are accepted without --objective.
    resumed = runner.invoke(cli, ["train", "dsprites-small", "--resume", "--steps", "3",
                                  "--out", out, "--quiet", "--batch-size", "16", *small])
    assert resumed.exit_code == 0, resumed.output
    assert _history_steps(out) == [2, 3]
