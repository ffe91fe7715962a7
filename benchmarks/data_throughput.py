"""Times the full dSprites render and the tf.data pipeline's images per second.

Usage:
  python benchmarks/data_throughput.py [--json] [--runs 5] [--seconds 2] [--cache-dir DIR]

Renders the 737,280 images in memory (no cache file; with --cache-dir, loads or builds
the cache there instead and times that), then iterates `as_tf_dataset` at batch 256 and
2048 and prints the median of --runs timed runs of about --seconds each.
"""

import argparse
import json
import os
import statistics
import sys
import time


def cpu_counts():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return dict(cpu_count=os.cpu_count(), usable_cpus=usable)


def images_per_second(dataset, batch_size, runs, seconds):
    """Median images/s of `runs` timed stretches of roughly `seconds` each (after warm-up)."""
    iterator = iter(dataset.as_tf_dataset(batch_size, shuffle=True, seed=0))
    start = time.perf_counter()
    warm = 0
    while time.perf_counter() - start < 0.5 or warm < 5:
        next(iterator)
        warm += 1
    per_batch = (time.perf_counter() - start) / warm
    batches = max(5, int(seconds / per_batch))
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return statistics.median(rates), rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per batch size")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--cache-dir", default=None,
                        help="load (or build) the rendered cache here instead of rendering "
                             "in memory")
    args = parser.parse_args(argv)

    import numpy as np

    from tcvae_tf.data import GroundTruthDataset, dsprites, load_dsprites, sprites

    report = dict(**cpu_counts(), num_images=737280)
    start = time.perf_counter()
    if args.cache_dir is None:
        images = sprites.render_dsprites_grid()[..., np.newaxis]
        report["render_seconds"] = time.perf_counter() - start
        classes = dsprites.DSPRITES_SPEC.grid_classes()
        dataset = GroundTruthDataset("dsprites", images, classes,
                                     dsprites.factor_values_of(classes), dsprites.FACTOR_NAMES,
                                     dsprites.FACTOR_SIZES, "rendered")
    else:
        dataset = load_dsprites(source="rendered", cache_dir=args.cache_dir)
        report["load_or_build_seconds"] = time.perf_counter() - start
    for batch_size in args.batch_sizes:
        median, rates = images_per_second(dataset, batch_size, args.runs, args.seconds)
        report[f"images_per_second_batch_{batch_size}"] = median
        report[f"runs_batch_{batch_size}"] = rates
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"cores: {report['cpu_count']} (usable {report['usable_cpus']})")
    if "render_seconds" in report:
        print(f"full render of 737,280 images: {report['render_seconds']:.1f} s")
    else:
        print(f"load or build from {args.cache_dir}: {report['load_or_build_seconds']:.1f} s")
    for batch_size in args.batch_sizes:
        median = report[f"images_per_second_batch_{batch_size}"]
        print(f"tf.data batch {batch_size:5d}: {median:,.0f} images/s (median of {args.runs})")


if __name__ == "__main__":
    sys.exit(main())
