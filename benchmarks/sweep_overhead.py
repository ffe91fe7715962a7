"""The sweep engine's overhead: a 1-trial `tcvae-tf sweep` against the same `tcvae-tf train`.

Usage:
    python benchmarks/sweep_overhead.py --repeats 3 --steps 300 --json

Runs the two commands alternately (train, sweep, train, sweep, ...) on the same settings,
each in a fresh process and a fresh folder, and reads the images/s of every checkpoint
window from their progress lines (train prints them to stdout when it is not a terminal,
the sweep driver prints the trial's to stderr). The first window of each run (tracing,
the data load) is left out; each run's figure is the median of its other windows, and the
result is the median over runs of each command and the ratio sweep / train. Ray's start
and the trial's evaluation are outside the training windows, so they are not counted:
the question is whether training inside a Ray trial is slower than outside. Ray starts
its workers at nice 15; here they run at nice 0 like the train command
(RAY_worker_niceness=0), so that other jobs on the machine weigh on both alike.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

RATE = re.compile(r"step (\d+)/(\d+) \| ([\d,.]+) img/s")


def window_rates(text):
    """images/s of every progress line after the first window."""
    rates = [float(match.group(3).replace(",", "")) for match in RATE.finditer(text)]
    return rates[1:]


def settings(args):
    """The training options both commands get (the seed: train's option, the sweep's grid)."""
    return ["--arch", args.arch, "--batch-size", str(args.batch_size), "--latent-dim", "10",
            "--steps", str(args.steps), "--checkpoint-every", str(args.window)]


def run_train(args, folder):
    command = [sys.executable, "-m", "tcvae_tf.cli.main", "train", args.dataset,
               *settings(args), "--seed", "0", "--out", os.path.join(folder, "run")]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return window_rates(done.stdout)


def run_sweep(args, folder):
    command = [sys.executable, "-m", "tcvae_tf.cli.main", "sweep", args.dataset,
               "--grid", "seed=0", *settings(args), "--out", os.path.join(folder, "sweep")]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "RAY_worker_niceness": "0"})
    return window_rates(done.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="dsprites")
    parser.add_argument("--arch", default="burgess")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50, help="--checkpoint-every")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    figures = {"train": [], "sweep": []}
    for repeat in range(args.repeats):
        for name, runner in (("train", run_train), ("sweep", run_sweep)):
            with tempfile.TemporaryDirectory() as folder:
                rates = runner(args, folder)
            if not rates:
                raise SystemExit(f"{name}: no progress lines after the first window")
            figures[name].append(statistics.median(rates))
            print(f"repeat {repeat + 1}: {name} {figures[name][-1]:,.0f} img/s "
                  f"(median of {len(rates)} windows)", file=sys.stderr)
    train = statistics.median(figures["train"])
    swept = statistics.median(figures["sweep"])
    result = {"arch": args.arch, "batch_size": args.batch_size, "steps": args.steps,
              "window": args.window, "repeats": args.repeats, "cpus": os.cpu_count(),
              "train_images_per_second": round(train, 1),
              "sweep_images_per_second": round(swept, 1),
              "ratio_sweep_to_train": round(swept / train, 4), "runs": figures}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"train {train:,.0f} img/s, 1-trial sweep {swept:,.0f} img/s, "
              f"ratio {swept / train:.3f} (medians of {args.repeats} runs each)")


if __name__ == "__main__":
    main()
