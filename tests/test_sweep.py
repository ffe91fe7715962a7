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

TINY = ["--arch", "burgess", "--latent-dim", "3", "--batch-size", "32", "--cpus-per-trial", "1"]


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


@pytest.mark.slow
def test_sweep_runs_every_trial_and_a_rerun_skips_them(tmp_path):
    out = tmp_path / "sweep"
    command = _sweep_command(out, "--grid", "objective=tcvae,betavae", "--grid", "seed=0,1",
                             "--steps", "8", "--checkpoint-every", "4", "--keep-every", "4")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[sweep] 4/4 trials finished" in done.stderr
    assert "step 4/8" in done.stderr and "img/s" in done.stderr
    rows = _rows(out)
    assert [(row["objective"], row["seed"]) for row in rows] == [
        ("tcvae", "0"), ("tcvae", "1"), ("betavae", "0"), ("betavae", "1")]
    for row in rows:
        assert row["status"] == "finished" and row["steps"] == "8"
        assert 0 <= float(row["mig_sampling"]) <= 1 and 0 <= float(row["mig_histogram"]) <= 1
        for column in ("total_correlation", "dimensionwise_kl", "log_likelihood", "seconds"):
            assert row[column] != "", column
        run_dir = out / row["run"]
        assert not os.path.isabs(row["run"])
        metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
        assert float(row["mig_sampling"]) == pytest.approx(metrics["mig_sampling"]["mig"],
                                                           rel=1e-5)
        assert [point["step"] for point in runs.read_curve(run_dir)] == [4, 8]
    assert os.path.getsize(out / sweep.SUMMARY_PNG) > 0
    results = json.loads((out / sweep.RESULTS_JSON).read_text())
    assert len(results["trials"]) == 4
    with open(out / sweep.CURVES_CSV) as handle:
        curves = list(csv.DictReader(handle))
    assert [(c["objective"], c["seed"], c["step"]) for c in curves][:2] == [
        ("tcvae", "0", "4"), ("tcvae", "0", "8")]
    assert len(curves) == 8 and all(0 <= float(c["mig_histogram"]) <= 1 for c in curves)

    models = sorted(out.glob("*/model.keras"))
    stamps = [path.stat().st_mtime_ns for path in models]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 trials, 4 finished, 0 to run" in again.stderr
    assert [path.stat().st_mtime_ns for path in models] == stamps


def _descendants(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_leaves_no_ray_processes_and_resumes(tmp_path):
    import psutil

    out = tmp_path / "sweep"
    command = _sweep_command(out, "--grid", "seed=0", "--steps", "400",
                             "--checkpoint-every", "20")
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    history = out / "seed-0" / runs.HISTORY_FILE
    deadline = time.time() + 240
    children = []
    while time.time() < deadline and not (history.exists() and len(
            history.read_text().splitlines()) >= 2):
        children = {p.pid: p for p in [*children, *_descendants(driver.pid)]}.values()
        children = list(children)
        time.sleep(0.5)
    assert history.exists(), "the trial never wrote a checkpoint"
    children = list({p.pid: p for p in [*children, *_descendants(driver.pid)]}.values())
    assert any("raylet" in p.name() for p in children if p.is_running())
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not [p for p in alive if p.is_running()], [p.name() for p in alive]
    checkpoint_step = runs.checkpoint_step(str(out / "seed-0"))
    assert 0 < checkpoint_step < 400

    finish = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr[-3000:]
    rows = _rows(out)
    assert rows[0]["status"] == "finished" and rows[0]["steps"] == "400"
    steps = [row["step"] for row in runs.read_history(str(out / "seed-0"))]
    assert steps == list(range(20, 401, 20)), steps
