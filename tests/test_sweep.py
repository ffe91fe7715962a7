"""Sweeps on Ray Tune: grids, trials as run folders, results, resume after SIGKILL."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tcvae_tf import runs, sweep
from tcvae_tf.cli.main import cli
from tcvae_tf.cli.sweep_cmd import parse_grid

pytest.importorskip("ray")

TINY = ["--arch", "burgess", "--latent-dim", "3", "--batch-size", "16", "--cpus-per-trial", "1"]


def _sweep_command(out, *arguments):
    return [sys.executable, "-m", "tcvae_tf.cli.main", "sweep", "dsprites-small", *arguments,
            *TINY, "--out", str(out)]


def _rows(out):
    with open(os.path.join(out, sweep.RESULTS_CSV)) as handle:
        return list(csv.DictReader(handle))


def test_grid_values_are_converted_by_the_train_options():
    grid = parse_grid(["objective=tcvae,betavae", "seed=0,1", "lr=1e-3", "batch-size=64"])
    assert grid == {"objective": ["tcvae", "betavae"], "seed": [0, 1], "lr": [0.001],
                    "batch_size": [64]}
    assert sweep.trial_name({"objective": "tcvae", "lr": 0.001}) == "objective-tcvae_lr-0.001"


@pytest.mark.parametrize("grid,message", [
    (["colour=1,2"], "unknown option 'colour'"),
    (["seed="], "empty value"),
    (["seed=0,,1"], "empty value"),
    (["seed=zero"], "seed=zero: 'zero' is not a valid integer"),
    (["arch=mlp,resnet"], "trial arch-resnet: unknown arch 'resnet'"),
    (["beta=-1"], "trial beta--1: --beta must be >= 0"),
    (["objective=tcvae,dipvae2", "beta=6"],
     "trial objective-dipvae2_beta-6: --beta is an option of tcvae"),
    (["seed=0,0"], "a value is repeated"),
    (["seed"], "is not NAME=V1,V2"),
])
def test_bad_grids_fail_before_any_training(tmp_path, grid, message):
    out = tmp_path / "sweep"
    arguments = ["sweep", "dsprites-small", "--out", str(out)]
    for spec in grid:
        arguments += ["--grid", spec]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(path.is_dir() for path in out.iterdir())


def test_report_only_rewrites_the_results_and_trains_nothing(tmp_path):
    out = tmp_path / "sweep"
    arguments = ["sweep", "dsprites-small", "--grid", "seed=0,1", "--steps", "4", *TINY,
                 "--out", str(out), "--report"]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert [row["status"] for row in _rows(out)] == ["pending", "pending"]
    (out / "seed-0").mkdir()
    runs.append_history(str(out / "seed-0"), 2, {"loss": 1.0})  # a trial under way
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    assert "[seed-0] started, step 2\n" in result.output and "results rewritten" in result.output
    assert [(row["status"], row["steps"]) for row in _rows(out)] == [("started", "2"),
                                                                      ("pending", "0")]
    assert not any((out / name / runs.CONFIG_FILE).exists() for name in ("seed-0", "seed-1"))


def test_report_measures_the_snapshots_of_a_trial_under_way(tmp_path):
    out = tmp_path / "sweep"
    options = ["--steps", "4", "--keep-every", "2", "--checkpoint-every", "2", *TINY[:-2]]
    report = ["sweep", "dsprites-small", "--grid", "seed=0,1", *options, *TINY[-2:],
              "--out", str(out), "--report"]
    assert CliRunner().invoke(cli, report).exit_code == 0  # claims the folder
    trained = CliRunner().invoke(cli, ["train", "dsprites-small", "--seed", "0", *options,
                                       "--out", str(out / "seed-0")])
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(cli, report)
    assert result.exit_code == 0, result.output
    assert "[seed-0] snapshot step 2: histogram MIG" in result.output
    with open(out / sweep.CURVES_CSV) as handle:
        curve = list(csv.DictReader(handle))
    assert [(row["seed"], row["step"]) for row in curve] == [("0", "2"), ("0", "4")]
    assert all(0.0 <= float(row["mig_histogram"]) <= 1.0 for row in curve)
    assert [row["step"] for row in runs.read_curve(str(out / "seed-0"))] == [2, 4]


def test_a_different_grid_or_option_is_refused(tmp_path):
    out = str(tmp_path / "sweep")
    sweep.claim_folder(out, "dsprites-small", {"seed": [0, 1]}, {"beta": 6.0, "steps": 8})
    sweep.claim_folder(out, "dsprites-small", {"seed": [0, 1]}, {"beta": 6.0, "steps": 8})
    # an option that another version of the library did not know does not count
    sweep.claim_folder(out, "dsprites-small", {"seed": [0, 1]},
                       {"beta": 6.0, "steps": 8, "new_option": 1})
    # an option not given now (None) is the method's default, written out by older versions
    sweep.claim_folder(out, "dsprites-small", {"seed": [0, 1]}, {"beta": None, "steps": 8})
    with pytest.raises(sweep.SweepError, match="grid differs: seed was"):
        sweep.claim_folder(out, "dsprites-small", {"seed": [0, 1, 2]}, {"beta": 6.0, "steps": 8})
    with pytest.raises(sweep.SweepError, match="fixed differs: beta was 6.0, now 4.0"):
        sweep.claim_folder(out, "dsprites-small", {"seed": [0, 1]}, {"beta": 4.0, "steps": 8})


def test_group_statistics_are_mean_and_sample_sd_over_seeds():
    rows = [{"objective": "a", "seed": s, "status": "finished", "mig": v}
            for s, v in enumerate([0.1, 0.2, 0.3])]
    rows.append({"objective": "b", "seed": 0, "status": "failed", "mig": 9.0})
    statistics = sweep.group_statistics(rows, ["objective", "seed"], "mig")
    mean, sd, count = statistics["objective=a"]
    assert (round(mean, 12), round(sd, 12), count) == (0.2, 0.1, 3)
    assert "objective=b" not in statistics


def test_report_gives_means_and_the_separation_in_seed_to_seed_spreads():
    values = {"tcvae": [0.5, 0.45, 0.55], "betavae": [0.4, 0.42, 0.38]}
    rows = [{"objective": name, "seed": seed, "status": "finished", "mig_sampling": value}
            for name, series in values.items() for seed, value in enumerate(series)]
    found = sweep.separation(rows, ["objective", "seed"], "mig_sampling",
                             "objective=tcvae", "objective=betavae")
    pooled = ((0.05 ** 2 + 0.02 ** 2) / 2) ** 0.5
    assert found["difference"] == pytest.approx(0.1)
    assert found["difference_in_sd"] == pytest.approx(0.1 / pooled)
    assert found["welch_t"] == pytest.approx(0.1 / ((0.05 ** 2 + 0.02 ** 2) / 3) ** 0.5)
    text = sweep.report(rows, ["objective", "seed"])
    assert "| tcvae | 0.5 +/- 0.05 (n=3) |" in text
    assert "2.63 pooled sd" in text and "nan" not in text


def _descendants(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_after_the_first_checkpoint(command, history, log):
    """Starts the sweep (its output into ``log``) and SIGKILLs its driver once ``history``
    has two rows (the first checkpoint, written after the first row, is then complete);
    returns the processes the driver had started (Ray's among them)."""
    with open(log, "w") as output:
        driver = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    seen = {}
    while time.time() < deadline and not (history.exists() and len(
            history.read_text().splitlines()) >= 3):
        seen.update((p.pid, p) for p in _descendants(driver.pid))
        time.sleep(0.5)
    seen.update((p.pid, p) for p in _descendants(driver.pid))
    assert history.exists(), "the trial never wrote a checkpoint: " + log.read_text()[-3000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    return list(seen.values())


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_resumes_reports_and_a_rerun_skips(tmp_path):
    """One 4-trial grid: SIGKILL mid-trial leaves no Ray process, the same command
    resumes and finishes every trial with a continuous history and the reports, and a
    third run skips them all."""
    import psutil

    out = tmp_path / "sweep"
    command = _sweep_command(out, "--grid", "objective=tcvae,betavae", "--grid", "seed=0,1",
                             "--steps", "100", "--checkpoint-every", "10", "--keep-every",
                             "50")
    first = out / "objective-tcvae_seed-0"
    children = _kill_after_the_first_checkpoint(command, first / runs.HISTORY_FILE,
                                                tmp_path / "killed.log")
    assert any("raylet" in p.name() for p in children if p.is_running())
    _, alive = psutil.wait_procs(children, timeout=60)
    assert not [p for p in alive if p.is_running()], [p.name() for p in alive]
    assert 0 < runs.checkpoint_step(str(first)) < 100

    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[sweep] 4/4 trials finished" in done.stderr
    assert "/100" in done.stderr and "img/s" in done.stderr
    rows = _rows(out)
    assert [(row["objective"], row["seed"]) for row in rows] == [
        ("tcvae", "0"), ("tcvae", "1"), ("betavae", "0"), ("betavae", "1")]
    for row in rows:
        assert row["status"] == "finished" and row["steps"] == "100"
        assert 0 <= float(row["mig_sampling"]) <= 1 and 0 <= float(row["mig_histogram"]) <= 1
        for column in ("total_correlation", "dimensionwise_kl", "log_likelihood", "seconds"):
            assert row[column] != "", column
        run_dir = out / row["run"]
        assert not os.path.isabs(row["run"])
        steps = [entry["step"] for entry in runs.read_history(str(run_dir))]
        assert steps == list(range(10, 101, 10)), (row["run"], steps)
        metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
        assert float(row["mig_sampling"]) == pytest.approx(metrics["mig_sampling"]["mig"],
                                                           rel=1e-5)
        assert [point["step"] for point in runs.read_curve(run_dir)] == [50, 100]
    assert os.path.getsize(out / sweep.SUMMARY_PNG) > 0
    results = json.loads((out / sweep.RESULTS_JSON).read_text())
    assert len(results["trials"]) == 4
    with open(out / sweep.CURVES_CSV) as handle:
        curves = list(csv.DictReader(handle))
    assert [(c["objective"], c["seed"], c["step"]) for c in curves][:2] == [
        ("tcvae", "0", "50"), ("tcvae", "0", "100")]
    assert len(curves) == 8 and all(0 <= float(c["mig_histogram"]) <= 1 for c in curves)

    models = sorted(out.glob("*/model.keras"))
    stamps = [path.stat().st_mtime_ns for path in models]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 trials, 4 finished, 0 to run" in again.stderr
    assert [path.stat().st_mtime_ns for path in models] == stamps
