"""Wall time of the evaluation metrics on synthetic posteriors of full dSprites size.

Synthetic posteriors stand in for an encoder's output on dSprites: N = 737,280 images on the
(shape 3, scale 6, orientation 40, posX 32, posY 32) grid, D = 10 latents, the first five a
noisy function of one factor each and the rest uninformative, log-scales between -4 and 0.
The script times

- `mig_sampling` with S = 10,000 samples, factors scale, orientation, posX, posY (1..4);
- `elbo_decomposition` with S = 10,000 samples;
- `mig_histogram` on 10,000 mean codes;

and prints seconds (median of --repeats runs), throughput (Normal log-densities per second),
the ratio to a fixed single-threaded numpy baseline timed in the same process and the
1-minute load average around each run, since absolute CPU times drift on shared machines.
The encoder pass itself is not included.

Usage:
  python benchmarks/evaluate_time.py                       # full size (about a minute or two)
  python benchmarks/evaluate_time.py --num-images 73728    # smaller grid, posX = posY = 10
  python benchmarks/evaluate_time.py --json
"""

import argparse
import json
import math
import os
import time

import numpy as np

DSPRITES_GRID = (3, 6, 40, 32, 32)


def grid_for(num_images):
    """The dSprites grid, with posX = posY shrunk so the grid has about `num_images` rows."""
    if num_images >= math.prod(DSPRITES_GRID):
        return DSPRITES_GRID
    side = max(2, round(math.sqrt(num_images / math.prod(DSPRITES_GRID[:3]))))
    return DSPRITES_GRID[:3] + (side, side)


def synthetic_posteriors(sizes, num_latents, seed=0):
    """Posteriors of a made-up encoder on a full factorial grid.

    Returns:
      (loc [N, D] float32, log_scale [N, D] float32, classes [N, K] int64) in row-major
      grid order.
    """
    rng = np.random.default_rng(seed)
    classes = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1)
    classes = classes.reshape(-1, len(sizes)).astype(np.int64)
    num_images = len(classes)
    normalized = (classes - classes.mean(0)) / np.maximum(classes.std(0), 1e-12)
    loc = rng.normal(0.0, 1.0, (num_images, num_latents))
    informative = min(len(sizes), num_latents)
    loc[:, :informative] = normalized[:, :informative] + 0.1 * loc[:, :informative]
    log_scale = rng.uniform(-4.0, 0.0, (num_images, num_latents))
    return loc.astype(np.float32), log_scale.astype(np.float32), classes


def baseline_seconds(repeats=3):
    """Median time of a fixed numpy workload (float32 exp over 5e7 values, 10 passes)."""
    values = np.linspace(-5.0, 5.0, 50_000_000, dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10):
            np.exp(values)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timed(repeats, function, *args, **kwargs):
    """Median wall time of `repeats` calls, the last result and the 1-minute load averages."""
    times, loads = [], []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    return float(np.median(times)), result, {"load_average": [min(loads), max(loads)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=math.prod(DSPRITES_GRID),
                        help="approximate dataset size (default: full dSprites, 737280)")
    parser.add_argument("--num-latents", type=int, default=10, help="latent dimensions D")
    parser.add_argument("--num-samples", type=int, default=10000,
                        help="Monte-Carlo samples S of mig_sampling and elbo_decomposition")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["mig_sampling", "elbo_decomposition", "mig_histogram"],
                        help="metric to skip (repeatable)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per metric; the median is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tcvae_tf.metrics import elbo_decomposition, mig_histogram, mig_sampling

    sizes = grid_for(args.num_images)
    loc, log_scale, classes = synthetic_posteriors(sizes, args.num_latents)
    num_images, num_latents = loc.shape
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    report = {
        "grid": list(sizes),
        "num_images": num_images,
        "num_latents": num_latents,
        "num_samples": args.num_samples,
        "cpu_count": os.cpu_count(),
        "usable_cores": cores,
        "baseline_seconds": baseline_seconds(),
    }
    import tensorflow as tf  # noqa: F401  (imported here so its start-up is not timed below)

    def record(name, seconds, log_densities=None, extra=None):
        entry = {"seconds": seconds, "vs_baseline": seconds / report["baseline_seconds"]}
        if log_densities:
            entry["log_densities_per_second"] = log_densities / seconds
        entry.update(extra or {})
        report[name] = entry
        if not args.json:
            rate = (f", {log_densities / seconds / 1e9:.2f}e9 log-densities/s"
                    if log_densities else "")
            low, high = entry["load_average"]
            print(f"{name:20s} {seconds:8.2f} s  ({entry['vs_baseline']:.1f} x baseline{rate}; "
                  f"load average {low:.1f}-{high:.1f})", flush=True)

    if not args.json:
        print(f"grid {sizes}, N={num_images}, D={num_latents}, S={args.num_samples}, "
              f"{cores} usable cores of {os.cpu_count()}, baseline "
              f"{report['baseline_seconds']:.3f} s", flush=True)

    factors = [1, 2, 3, 4]
    if "mig_sampling" not in args.skip:
        seconds, result, extra = timed(args.repeats, mig_sampling, loc, log_scale, classes,
                                       num_samples=args.num_samples, factors=factors)
        work = args.num_samples * num_images * num_latents * (
            1 + sum(1 / sizes[k] for k in factors))
        record("mig_sampling", seconds, work, {"mig": result["mig"], **extra})
    if "elbo_decomposition" not in args.skip:
        seconds, result, extra = timed(args.repeats, elbo_decomposition, loc, log_scale,
                                       num_samples=args.num_samples)
        work = args.num_samples * num_images * (num_latents + 1)
        record("elbo_decomposition", seconds, work,
               {"total_correlation": result["total_correlation"], **extra})
    if "mig_histogram" not in args.skip:
        seconds, result, extra = timed(args.repeats, mig_histogram, loc, classes,
                                       num_samples=10000, factors=list(range(len(sizes))))
        record("mig_histogram", seconds, extra={"mig": result["mig"], **extra})
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
