"""Training throughput of BetaTCVAE: images/s of full train steps (forward, backward, Adam).

Usage:
    python benchmarks/train_throughput.py --arch mlp --batch-size 2048 --estimator mws --json

Synthetic binary 64x64 images in memory (the input pipeline is measured separately by
data_throughput.py). Prints the median images/s over timed windows after warm-up.
"""

import argparse
import json
import os
import statistics
import time


def measure(arch, batch_size, estimator, precision="fp32", steps=20, windows=5, warmup=3,
            jit_compile="auto", latent_dim=10):
    import keras
    import numpy as np
    import tensorflow as tf

    from tcvae_tf.model import BetaTCVAE
    from tcvae_tf.training import TrainConfig, _choose_jit, _set_precision

    _set_precision(precision)
    keras.utils.set_random_seed(0)
    config = TrainConfig(arch=arch, jit_compile=jit_compile)
    jit = _choose_jit(config)
    model = BetaTCVAE(latent_dim=latent_dim, arch=arch, estimator=estimator, beta=6.0,
                      dataset_size=737280)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    images = (np.random.default_rng(0).random((batch_size, 64, 64, 1)) > 0.9).astype("float32")
    batch = tf.constant(images)
    model.make_train_function()
    train_function = model.train_function
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(dataset)
    for _ in range(warmup):
        train_function(iterator)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            logs = train_function(iterator)
        float(logs["loss"])  # wait for the last step
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return {
        "arch": arch, "batch_size": batch_size, "estimator": estimator, "precision": precision,
        "jit_compile": jit, "steps_per_window": steps, "windows": windows,
        "images_per_second": statistics.median(rates),
        "images_per_second_windows": rates, "cores": os.cpu_count(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--estimator", default="mws")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--jit", default="auto", help="auto, on or off")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.arch, args.batch_size, args.estimator, args.precision, args.steps,
                     args.windows, jit_compile=args.jit)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['arch']} batch {result['batch_size']} {result['estimator']} "
              f"{result['precision']} jit={result['jit_compile']}: "
              f"{result['images_per_second']:.0f} images/s (median of {args.windows} windows, "
              f"{result['cores']} cores)")


if __name__ == "__main__":
    main()
