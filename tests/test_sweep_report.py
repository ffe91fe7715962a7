"""Sweep results and report.md on hand-made run folders and tables (no Ray, no training)."""

import math
import os
import statistics

import numpy as np
import pytest

from tcvae_tf import runs, sweep

GRID = {"objective": ["tcvae", "betavae"], "seed": [0, 1, 2]}


def _rows(values):
    """Rows of a results table: {objective: [value per seed, None for a failed trial]}."""
    return [{"objective": name, "seed": seed, "status": "failed" if value is None else
             "finished", "mig_sampling": value, "mig_histogram": value}
            for name, series in values.items() for seed, value in enumerate(series)]


def test_report_numbers_match_a_brute_force_computation_when_a_seed_failed():
    a, b = [0.52, 0.44, 0.57], [0.39, 0.43]
    text = sweep.report(_rows({"tcvae": a, "betavae": [*b, None]}), list(GRID))
    mean_a, mean_b = statistics.mean(a), statistics.mean(b)
    sd_a, sd_b = statistics.stdev(a), statistics.stdev(b)
    difference = mean_a - mean_b
    pooled = math.sqrt((2 * sd_a ** 2 + sd_b ** 2) / 3)
    welch = difference / math.sqrt(sd_a ** 2 / 3 + sd_b ** 2 / 2)
    assert f"| tcvae | {mean_a:.4g} +/- {sd_a:.2g} (n=3) |" in text
    assert f"| betavae | {mean_b:.4g} +/- {sd_b:.2g} (n=2) |" in text
    assert (f"- mig_sampling: objective=tcvae minus objective=betavae = {difference:.4g}, "
            f"{difference / pooled:.3g} pooled sd (pooled sd {pooled:.3g}); Welch t = "
            f"{welch:.3g} (n = 3, 2)") in text


@pytest.mark.parametrize("a,b", [
    ([0.52, 0.44, 0.57, 0.61, 0.49], [0.39, 0.43]),
    ([0.31, 0.35], [0.42, 0.47, 0.40, 0.38]),
    ([0.52, 0.44, 0.57], [0.39, 0.43, 0.41]),
])
def test_pooled_sd_weights_each_group_by_its_seeds(a, b):
    rows = _rows({"tcvae": a, "betavae": b})
    found = sweep.separation(rows, list(GRID), "mig_sampling", "objective=tcvae",
                             "objective=betavae")
    # brute force: the squared deviations from each group's mean over n1 + n2 - 2
    deviations = np.concatenate([np.subtract(a, np.mean(a)), np.subtract(b, np.mean(b))])
    pooled = np.sqrt(np.sum(deviations ** 2) / (len(a) + len(b) - 2))
    assert found["pooled_sd"] == pytest.approx(pooled, rel=1e-12)
    assert found["difference_in_sd"] == pytest.approx((np.mean(a) - np.mean(b)) / pooled,
                                                      rel=1e-12)
    welch = (np.mean(a) - np.mean(b)) / np.sqrt(np.var(a, ddof=1) / len(a)
                                                + np.var(b, ddof=1) / len(b))
    assert found["welch_t"] == pytest.approx(welch, rel=1e-12)
    if len(a) == len(b):  # the mean of the two variances
        assert pooled == pytest.approx(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2))
    else:
        assert pooled != pytest.approx(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2))
    # a group of one seed adds no term; Welch's t needs two in each group
    found = sweep.separation(_rows({"tcvae": a[:1], "betavae": b}), list(GRID),
                             "mig_sampling", "objective=tcvae", "objective=betavae")
    assert found["pooled_sd"] == pytest.approx(np.std(b, ddof=1), rel=1e-12)
    assert math.isnan(found["welch_t"])


def test_report_names_the_trials_that_did_not_finish():
    rows = _rows({"tcvae": [0.5, None, 0.55], "betavae": [0.4, 0.42, 0.38]})
    rows[2]["status"] = "running"
    rows[2]["mig_sampling"] = rows[2]["mig_histogram"] = None
    text = sweep.report(rows, list(GRID))
    assert "4 of 6 trials finished." in text
    assert "objective=tcvae, seed=1 (failed)" in text
    assert "objective=tcvae, seed=2 (running)" in text


def test_report_separation_needs_two_finished_seeds_a_group():
    text = sweep.report(_rows({"tcvae": [0.5, None, None], "betavae": [0.4, 0.42, 0.38]}),
                        list(GRID))
    assert "nan" not in text
    assert "- mig_sampling: needs two finished seeds in each group (n = 1, 3)" in text
    # a group with no finished trial at all is still one of the two groups
    text = sweep.report(_rows({"tcvae": [None] * 3, "betavae": [0.4, 0.42, 0.38]}),
                        list(GRID))
    assert "(n = 0, 3)" in text and "nan" not in text


def test_report_on_a_sweep_with_no_finished_trial(tmp_path):
    out = str(tmp_path / "sweep")
    rows = sweep.run("dsprites-small", GRID, {"steps": 4}, out, report_only=True,
                     echo=lambda message: None)
    assert [row["status"] for row in rows] == ["pending"] * 6
    text = (tmp_path / "sweep" / sweep.REPORT_MD).read_text()
    assert "0 of 6 trials finished." in text and "nan" not in text


def test_the_same_grid_in_another_order_is_refused(tmp_path):
    out = str(tmp_path / "sweep")
    sweep.claim_folder(out, "dsprites-small", GRID, {"steps": 4})
    reordered = {"seed": GRID["seed"], "objective": GRID["objective"]}
    with pytest.raises(sweep.SweepError, match="in the order objective, seed, now seed"):
        sweep.claim_folder(out, "dsprites-small", reordered, {"steps": 4})


def test_grid_values_that_would_share_a_run_folder_or_a_file_name_are_refused(tmp_path):
    out = str(tmp_path / "sweep")
    with pytest.raises(sweep.SweepError, match="share the run folder data_path-_a_x.npz"):
        sweep.plan("dsprites-small", {"data_path": ["/a/x.npz", "/a_x.npz"]}, {}, out)
    with pytest.raises(sweep.SweepError, match="two values have the same file name"):
        sweep.plan("dsprites-small", {"data_path": ["/a/x.npz", "/b/x.npz"]}, {}, out)


def test_result_files_hold_no_absolute_path_of_a_grid_value(tmp_path):
    out = str(tmp_path / "sweep")
    folder = str(tmp_path / "data")
    grid = {"data_path": [f"{folder}/first.npz", f"{folder}/second.npz"], "seed": [0, 1]}
    trials = sweep.plan("dsprites-small", grid, {"steps": 4}, out)
    sweep.claim_folder(out, "dsprites-small", grid, {"steps": 4})
    for number, trial in enumerate(trials):
        runs.write_config(trial.run_dir, {"train": {**trial.values}})
        runs.write_trial(trial.run_dir, {"status": "finished", "steps": 4, "total_steps": 4})
        runs.write_json(os.path.join(trial.run_dir, runs.METRICS_FILE),
                        {"mig_sampling": {"mig": 0.1 * number}})
        runs.write_curve(trial.run_dir, [{"step": 2, "mig_histogram": 0.1}])
    sweep.write_results(trials, out, grid)
    for name in (sweep.RESULTS_CSV, sweep.RESULTS_JSON, sweep.REPORT_MD, sweep.CURVES_CSV):
        text = (tmp_path / "sweep" / name).read_text()
        assert folder not in text and "first.npz" in text, name
    # the study entry of a zoo card still finds the trial by its (portable) grid values
    entry = sweep.study_entry(out, trials[1].run_dir, {"mig_sampling": {"mig": 0.1}})
    assert entry["group"] == {"data_path": "first.npz"}
    assert entry["group_statistics"]["mig_sampling"]["n"] == 2


def test_a_relative_data_path_reaches_the_trials_as_an_absolute_one(tmp_path, monkeypatch):
    # Ray Tune runs each trial in a working folder of its own.
    monkeypatch.chdir(tmp_path)
    trials = sweep.plan("dsprites-small", {"seed": [0]}, {"data_path": "data/x.npz"},
                        str(tmp_path / "sweep"))
    assert trials[0].config.data_path == str(tmp_path / "data" / "x.npz")
    trials = sweep.plan("dsprites-small", {"data_path": ["data/x.npz"]}, {},
                        str(tmp_path / "sweep"))
    assert trials[0].config.data_path == str(tmp_path / "data" / "x.npz")
    assert trials[0].shown_values == {"data_path": "data/x.npz"}


def test_a_curve_measured_twice_at_once_keeps_the_rows_of_both(tmp_path, monkeypatch):
    """A trial's end and `sweep --report` measuring one run together: neither write drops
    the rows the other wrote meanwhile."""
    from tcvae_tf import curves

    run_dir = tmp_path / "run"
    (run_dir / runs.SNAPSHOT_DIR).mkdir(parents=True)
    for step in (2, 4):
        (run_dir / runs.SNAPSHOT_DIR / f"step-{step:07d}.weights.h5").write_text("")
    runs.write_curve(run_dir, [{"step": 2, "mig_histogram": 0.1}])

    def measure(run, steps, seed=0, echo=None):
        assert steps == [4]
        # Meanwhile the trial kept step 6, measured 4 and 6 and wrote its curve.
        (run_dir / runs.SNAPSHOT_DIR / "step-0000006.weights.h5").write_text("")
        runs.write_curve(run, [{"step": step, "mig_histogram": step / 20} for step in (2, 4, 6)])
        return [{"step": step, "mig_histogram": step / 20} for step in steps]

    monkeypatch.setattr(curves, "snapshot_migs", measure)
    rows = curves.update_curve(run_dir)
    written = runs.read_curve(run_dir)
    assert [row["step"] for row in written] == [2, 4, 6] == [row["step"] for row in rows]
    assert [row["mig_histogram"] for row in written] == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("failures", [1, sweep.MAX_RESTARTS + 1])
def test_ray_tune_failing_as_a_whole_is_restarted_for_the_unfinished_trials(
        tmp_path, monkeypatch, failures):
    """Ray's memory monitor killing the trials' workers makes Ray Tune raise, not retry;
    the sweep restarts it with the unfinished trials, then gives up with one line."""
    calls, messages = [], []

    def engine(trials, pending, *args):
        calls.append([trial.name for trial in pending])
        runs.write_trial(pending[0].run_dir, {"status": "finished", "steps": 4})
        if len(calls) <= failures:
            raise sweep._EngineFailure("Caught unexpected exception: 2 worker(s) were killed")
        for trial in pending[1:]:
            runs.write_trial(trial.run_dir, {"status": "finished", "steps": 4})

    monkeypatch.setattr(sweep, "_run_with_ray", engine)
    monkeypatch.setattr(sweep, "write_summary", lambda *args: None)
    options = dict(steps=4, arch="burgess", latent_dim=3, batch_size=16)
    out = tmp_path / "sweep"
    grid = {"seed": [0, 1, 2, 3, 4, 5]}
    if failures == 1:
        sweep.run("dsprites-small", grid, options, out, echo=messages.append)
        assert calls == [[f"seed-{seed}" for seed in range(6)],
                         [f"seed-{seed}" for seed in range(1, 6)]]
        assert (f"[sweep] Ray Tune failed (Caught unexpected exception: 2 worker(s) were "
                f"killed); restarting it for the 5 unfinished trials, each from its last "
                f"checkpoint (restart 1 of {sweep.MAX_RESTARTS})") in messages
        assert messages[-1].startswith("sweep finished")
    else:
        with pytest.raises(sweep.SweepError, match=(
                f"Ray Tune failed {failures} times .*; run the same command again to resume "
                f"the {6 - failures} unfinished trials")):
            sweep.run("dsprites-small", grid, options, out, echo=messages.append)
        assert len(calls) == failures
    # The engine ends (Ctrl-C) with trials unfinished and no error recorded: their status.
    monkeypatch.setattr(sweep, "_run_with_ray", lambda *args: None)
    runs.write_trial(str(out / "seed-5"), {"status": "running", "steps": 2})
    with pytest.raises(sweep.SweepError, match=r"did not finish \((seed-\d): (running|not "
                                               r"started)\)"):
        sweep.run("dsprites-small", grid, options, out, echo=messages.append)
