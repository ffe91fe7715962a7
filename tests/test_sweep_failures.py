"""Sweep trials that fail: a failure that repeats (a non-finite loss) ends the trial at once
and a rerun keeps it failed; other failures are retried and resumed as before."""

import csv
import dataclasses
import os

import pytest
from click.testing import CliRunner

from tcvae_tf import runs, sweep, training
from tcvae_tf.cli.main import cli

pytest.importorskip("ray")

OPTIONS = dict(steps=4, arch="mlp", latent_dim=3, batch_size=16)
NAN = "non-finite loss (nan) at step 3; no checkpoint was written yet"


def _rows(out):
    with open(os.path.join(out, sweep.RESULTS_CSV), newline="") as handle:
        return list(csv.DictReader(handle))


def _ray_tune(attempts, ends_well=lambda trial: False, reports=None):
    """An engine in place of ``_run_with_ray`` that runs each pending trial's Ray function
    in this process and, like Ray Tune, retries a trial whose function raised (up to
    ``MAX_FAILURES`` times). Trials for which ``ends_well`` holds are recorded as finished
    without training. ``attempts`` gets [trial name per call], ``reports`` the trials'
    reports to Ray Tune."""
    from ray import tune

    def engine(trials, pending, *args):
        for trial in pending:
            if ends_well(trial):
                runs.write_trial(trial.run_dir, {"status": "finished", "steps": 4,
                                                 "total_steps": 4})
                continue
            for _ in range(sweep.MAX_FAILURES + 1):
                attempts.append(trial.name)
                try:
                    with pytest.MonkeyPatch.context() as patch:
                        patch.setattr(tune, "report", (reports if reports is not None
                                                       else []).append)
                        sweep._trainable({"trial": {"name": trial.name, "threads": None,
                                                "train": dataclasses.asdict(trial.config)}})
                    break
                except Exception:
                    continue

    return engine


def test_a_non_finite_loss_fails_the_trial_at_once_and_a_rerun_keeps_it_failed(
        tmp_path, monkeypatch):
    """A real training whose loss becomes non-finite (learning rate 1e30): no retry, the
    results give the step, a rerun trains nothing and says why, --retry-failed runs it."""
    attempts, messages, reports = [], [], []
    monkeypatch.setattr(sweep, "_run_with_ray", _ray_tune(
        attempts, ends_well=lambda trial: trial.values["lr"] < 1, reports=reports))
    monkeypatch.setattr(sweep, "write_summary", lambda *args: None)
    out = tmp_path / "sweep"
    grid = {"lr": [1e-3, 1e30]}
    failure = (r"1 of 2 trials did not finish \(lr-1e\+30: non-finite loss \((nan|inf)\) at "
               r"step \d+; [^)]*\); they would fail the same way again, so a rerun keeps them "
               r"as failed \(--retry-failed trains them again\)$")
    with pytest.raises(sweep.SweepError, match=failure):
        sweep.run("dsprites-small", grid, OPTIONS, out, echo=messages.append)
    assert attempts == ["lr-1e+30"]
    record = runs.read_trial(str(out / "lr-1e+30"))
    assert record["status"] == "failed" and record["repeats"] is True
    # its end is reported to Ray Tune, and shown, as a failure that is not retried
    assert reports == [{"step": 0, "total_steps": 0, "images_per_second": 0.0, "done": True,
                        "error": record["error"]}]
    shown = []
    sweep._Progress(sweep.plan("dsprites-small", grid, OPTIONS, str(out)),
                    shown.append).trial_line("lr-1e+30", reports[0])
    assert shown == [f"[lr-1e+30] failed: {record['error']}; not retried, since it would "
                     f"fail the same way again"]
    rows = _rows(out)
    assert [row["status"] for row in rows] == ["finished", "failed"]
    assert rows[1]["error"].startswith("non-finite loss (") and " at step " in rows[1]["error"]
    assert rows[1]["error"] == record["error"].replace(str(out) + os.sep, "")
    for name in (sweep.RESULTS_CSV, sweep.RESULTS_JSON, sweep.REPORT_MD):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and "non-finite loss" in text, name

    del messages[:]
    with pytest.raises(sweep.SweepError, match=failure):
        sweep.run("dsprites-small", grid, OPTIONS, out, echo=messages.append)
    assert attempts == ["lr-1e+30"]
    assert messages[0].endswith("2 trials, 1 finished, 1 failed earlier, 0 to run")
    assert messages[1] == (f"[lr-1e+30] failed earlier ({record['error']}); kept as failed, "
                           f"since it would fail the same way again (--retry-failed trains "
                           f"it again)")

    # --retry-failed: the trial runs again (here its training fails the same way at once)
    def train(config, **kwargs):
        raise training.NonFiniteLoss(record["error"])

    monkeypatch.setattr(training, "train", train)
    with pytest.raises(sweep.SweepError, match=failure):
        sweep.run("dsprites-small", grid, OPTIONS, out, echo=messages.append,
                  retry_failed=True)
    assert attempts == ["lr-1e+30"] * 2
    assert runs.read_trial(str(out / "lr-1e+30"))["repeats"] is True


@pytest.mark.parametrize("error", [
    OSError("[Errno 28] No space left on device"),
    MemoryError("cannot allocate 2 GB"),
    training.TrainingError("batches stopped at step 3; the data pipeline failed"),
])
def test_other_failures_are_retried_and_resumed_by_a_rerun(tmp_path, monkeypatch, error):
    attempts = []
    monkeypatch.setattr(sweep, "_run_with_ray", _ray_tune(attempts))
    monkeypatch.setattr(sweep, "write_summary", lambda *args: None)

    def train(config, **kwargs):
        raise error

    monkeypatch.setattr(training, "train", train)
    out = tmp_path / "sweep"
    with pytest.raises(sweep.SweepError, match=(
            r"1 of 1 trials did not finish \(seed-0: .+\); run the same command again to "
            r"resume them$")):
        sweep.run("dsprites-small", {"seed": [0]}, OPTIONS, out, echo=lambda message: None)
    assert attempts == ["seed-0"] * (sweep.MAX_FAILURES + 1)
    record = runs.read_trial(str(out / "seed-0"))
    assert record["status"] == "failed" and "repeats" not in record
    assert [trial.name for trial in sweep.to_run(
        sweep.plan("dsprites-small", {"seed": [0]}, OPTIONS, str(out)))] == ["seed-0"]


def test_failed_trials_of_earlier_versions_resume_as_before(tmp_path, monkeypatch):
    """A trial.json written before failures that repeat were recorded has no such record:
    its trial trains again, whatever its error; a newer one with the record does not."""
    calls, messages = [], []
    monkeypatch.setattr(sweep, "_run_with_ray", lambda trials, pending, *args: calls.append(
        [trial.name for trial in pending]))  # Ctrl-C before any trial ran
    monkeypatch.setattr(sweep, "write_summary", lambda *args: None)
    out = tmp_path / "sweep"
    grid = {"seed": [0, 1, 2]}
    sweep.run("dsprites-small", grid, OPTIONS, out, report_only=True, echo=messages.append)
    runs.write_trial(str(out / "seed-0"), {"status": "failed", "error": NAN, "seconds": 2.0})
    runs.write_trial(str(out / "seed-1"), {"status": "failed", "error": NAN, "seconds": 2.0,
                                           "repeats": True})
    runs.write_trial(str(out / "seed-2"), {"status": "stopped", "error": "KeyboardInterrupt"})
    with pytest.raises(sweep.SweepError, match=(
            r"^3 of 3 trials did not finish \(seed-0: non-finite loss \(nan\) at step 3; no "
            r"checkpoint was written yet\); run the same command again to resume the other 2 "
            r"\(1 would fail the same way again and stay failed without --retry-failed\)$")):
        sweep.run("dsprites-small", grid, OPTIONS, out, echo=messages.append)
    assert calls == [["seed-0", "seed-2"]]
    assert messages[-1].startswith("[seed-1] failed earlier (non-finite loss (nan) at step 3")


def test_an_error_in_the_results_is_one_quoted_csv_cell_and_named_in_the_report(tmp_path):
    out = str(tmp_path / "sweep")
    grid = {"seed": [0, 1]}
    trials = sweep.plan("dsprites-small", grid, OPTIONS, out)
    error = f'bad value "x", in {os.path.join(out, "seed-0", "config.json")}'
    runs.write_trial(trials[0].run_dir, {"status": "failed", "error": error})
    rows = sweep.write_results(trials, out, grid)
    assert [row["error"] for row in rows] == ['bad value "x", in seed-0/config.json', None]
    assert [row["error"] for row in _rows(out)] == ['bad value "x", in seed-0/config.json', ""]
    assert ('seed=0 (failed: bad value "x", in seed-0/config.json)'
            in (tmp_path / "sweep" / sweep.REPORT_MD).read_text())


def test_retry_failed_is_an_option_of_the_command(tmp_path, monkeypatch):
    calls = []

    def engine(trials, pending, *args):
        calls.append([trial.name for trial in pending])

    monkeypatch.setattr(sweep, "_run_with_ray", engine)
    monkeypatch.setattr(sweep, "write_summary", lambda *args: None)
    help_text = CliRunner().invoke(cli, ["sweep", "--help"]).output
    assert "--retry-failed" in help_text and "non-finite loss" in help_text
    out = tmp_path / "sweep"
    arguments = ["sweep", "dsprites-small", "--grid", "seed=0", "--steps", "4", "--arch",
                 "mlp", "--latent-dim", "3", "--batch-size", "16", "--out", str(out)]
    assert CliRunner().invoke(cli, [*arguments, "--report"]).exit_code == 0
    runs.write_trial(str(out / "seed-0"), {"status": "failed", "error": NAN, "repeats": True})
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 1 and calls == []
    assert f"[seed-0] failed earlier ({NAN}); kept as failed" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith(
        f"Error: 1 of 1 trials did not finish (seed-0: {NAN}); they would fail")
    result = CliRunner().invoke(cli, [*arguments, "--retry-failed"])
    assert result.exit_code == 1 and calls == [["seed-0"]]
    assert "Traceback" not in result.output
