"""Tests of data-parallel training: one step on R replicas equals the one-device step.

The CPU is split into logical devices before TensorFlow initialises them, so the
replicated runs happen in subprocesses (`distributed_step.py`, `distributed_worker.py`).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tcvae_tf import distribute

HERE = os.path.dirname(os.path.abspath(__file__))


def subprocess_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


# -- bad input: one line each, before TensorFlow starts -------------------------------------


@pytest.mark.parametrize("text, message", [
    (None, "--strategy multiworker needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ("[]", "TF_CONFIG must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster' object"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "cluster.worker must be a list of 'host:port' strings"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', "TF_CONFIG has no 'task' object"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "task.index 2 is out of range for the 2 worker task(s)"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["c:3"]}, "task": {"type": "worker"}}',
     "TF_CONFIG cluster has job 'ps'"),
])
def test_malformed_tf_config_is_one_line(text, message):
    with pytest.raises(ValueError) as error:
        distribute.parse_tf_config(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_tf_config_names_the_chief():
    workers = '{"worker": ["a:1", "b:2"]}'
    first = distribute.parse_tf_config(
        f'{{"cluster": {workers}, "task": {{"type": "worker", "index": 0}}}}')
    second = distribute.parse_tf_config(
        f'{{"cluster": {workers}, "task": {{"type": "worker", "index": 1}}}}')
    assert (first.num_workers, first.is_chief, second.is_chief) == (2, True, False)


def test_bad_strategy_options_raise():
    with pytest.raises(ValueError, match="--cpu-replicas must be a positive int, got 0"):
        distribute.make_strategy("mirrored", cpu_replicas=0)
    with pytest.raises(ValueError, match="unknown strategy 'ring'; choose one of auto"):
        distribute.make_strategy("ring")
    with pytest.raises(ValueError, match="--cpu-replicas applies to --strategy mirrored"):
        distribute.make_strategy("multiworker", cpu_replicas=2)
    with pytest.raises(ValueError, match="batch size 63 does not split over 2 replicas"):
        distribute.check_batch_size(63, 2)
    distribute.check_batch_size(64, 2)


@pytest.mark.parametrize("args, env, message", [
    (["--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "63"], {},
     "batch size 63 does not split over 2 replicas; give a multiple of 2"),
    (["--strategy", "multiworker"], {"TF_CONFIG": '{"cluster": '},
     "TF_CONFIG is not valid JSON"),
    (["--strategy", "mirrored", "--cpu-replicas", "0", "--batch-size", "64"], {},
     "--cpu-replicas must be a positive int, got 0"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, env, message):
    from tcvae_tf.cli.main import cli

    result = CliRunner().invoke(
        cli, ["train", "dsprites-small", "--steps", "2", "--out", str(tmp_path / "run"), *args],
        env=env)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "run").exists()


# -- one SGD step: R replicas equal one device -------------------------------------------


@pytest.mark.slow
def test_one_step_on_two_replicas_equals_one_device():
    cases = ["tcvae-mws", "tcvae-mss", "betavae", "dipvae2", "conv", "factorvae"]
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "distributed_step.py"), "--replicas", "2", *cases],
        capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [report["case"] for report in reports] == cases
    for report in reports:
        # Weights after the step and the reported terms (the criterion), and the
        # updates themselves: the replicated step must not be R times too long or estimate
        # log q(z) from half a batch (either gives a relative difference of order 1).
        assert report["weights"] < 1e-5, report
        assert report["terms"] < 1e-5, report
        assert report["updates"] < 1e-4, report


# -- two workers of MultiWorkerMirroredStrategy on this machine ---------------------------


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_workers(run_dir, steps, logs, *extra):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = subprocess_env(TF_CONFIG=json.dumps(tf_config),
                             TCVAE_TF_TEST_WEIGHTS=str(logs / f"weights-{index}.npz"))
        command = [sys.executable, os.path.join(HERE, "distributed_worker.py"), "train",
                   "dsprites-small", "--strategy", "multiworker", "--batch-size", "32",
                   "--steps", str(steps), "--checkpoint-every", "10", "--out", str(run_dir),
                   "--quiet", *extra]
        log = open(logs / f"worker-{index}.log", "w")  # closed by wait()
        processes.append((subprocess.Popen(command, env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log))
    return processes


def wait(processes, timeout):
    deadline = time.monotonic() + timeout
    codes = []
    for process, log in processes:
        try:
            codes.append(process.wait(max(1.0, deadline - time.monotonic())))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return codes


def error_lines(path):
    return [line for line in path.read_text().splitlines() if line.startswith("Error: ")]


@pytest.mark.slow
def test_two_workers_fail_clearly_resume_and_agree(tmp_path):
    run_dir = tmp_path / "run"
    # A long run: worker 1 is killed once the first checkpoint (step 10) is written.
    processes = start_workers(run_dir, 400, tmp_path)
    history = run_dir / "history.csv"
    deadline = time.monotonic() + 300
    while not (history.exists() and len(history.read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text()[-3000:]
        assert all(process.poll() is None for process, _ in processes)
        time.sleep(0.5)
    processes[1][0].send_signal(signal.SIGKILL)
    codes = wait(processes, 180)
    assert codes[0] == 1
    lines = error_lines(tmp_path / "worker-0.log")
    assert len(lines) == 1, (tmp_path / "worker-0.log").read_text()[-3000:]
    assert "a worker is unreachable or failed" in lines[0]
    assert "resumes from its checkpoint at step" in lines[0]

    # Both workers resume the run from its checkpoint and finish it.
    assert wait(start_workers(run_dir, 20, tmp_path, "--resume"), 300) == [0, 0], \
        (tmp_path / "worker-0.log").read_text()[-3000:]
    assert "resuming" in (tmp_path / "worker-0.log").read_text()
    steps = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    assert steps == [10, 20]
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["last.keras"]
    record = json.loads((run_dir / "config.json").read_text())
    assert record["distribution"]["workers"] == 2
    first, second = (np.load(tmp_path / f"weights-{index}.npz") for index in range(2))
    assert len(first.files) == len(second.files) > 0
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
