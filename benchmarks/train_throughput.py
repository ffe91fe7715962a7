"""Training throughput: images/s of full train steps (forward, backward, Adam) of a method.

Usage:
    python benchmarks/train_throughput.py --arch mlp --batch-size 2048 --estimator mws --json
    python benchmarks/train_throughput.py --arch mlp --precision fp32,bf16 --windows 5
    python benchmarks/train_throughput.py --arch burgess --batch-size 64 \
        --objective tcvae,factorvae,dipvae2
    python benchmarks/train_throughput.py --kl-decomposition --batch-size 2048 --estimator mss

Synthetic binary 64x64 images in memory (the input pipeline is measured separately by
data_throughput.py). Prints the median images/s over timed windows after warm-up. With
several precisions or several objectives (comma-separated), their windows are
interleaved in one process so that each sees the same load, and the ratio of each to the
first is reported. Every method runs with its default options (FactorVAE: the 6 x 1000
discriminator and its Adam); ``--estimator`` is beta-TCVAE's.

With --strategy mirrored --cpu-replicas R it compares the replicated step (R logical CPU
devices, tf.distribute's MirroredStrategy, the estimators on the global batch) with the
one-device step on the same cores, windows interleaved, and reports the ratio. With
--kl-share R1,R2,... it times one replica's share of the objective (M/R rows against all
M columns, forward and backward) for each R.

With --kl-decomposition it times only the objective: forward and backward of
`objectives.kl_decomposition` at M = --batch-size, D = 10, against the direct formulation
(the [M, M, D] tensor of `log_density_matrix`, reduced with `tf.reduce_logsumexp` and
differentiated by TensorFlow), each under `tf.function` without and with XLA, interleaved.
"""

import argparse
import contextlib
import json
import os
import statistics
import time


def make_train_step(arch, batch_size, estimator, precision="fp32", jit_compile="auto",
                    latent_dim=10, seed=0, strategy=None, objective="tcvae"):
    """Builds a model and returns a function running its compiled train step.

    Args:
      arch: "mlp", "conv" or "burgess".
      batch_size: images per step.
      estimator: "mws" or "mss" (beta-TCVAE's estimator; the other methods log MWS).
      precision: "fp32" or "bf16" (Keras mixed_bfloat16); sets the global Keras policy
        while the model is built and its step traced, and restores float32 afterwards.
      jit_compile: "auto" (the training default: off), "on" or "off".
      latent_dim: D.
      seed: seed of the weights and the synthetic images.
      strategy: None, or a tf.distribute strategy to build and run the model under.
      objective: the method (``tcvae_tf.methods.names()``), with its default options.

    Returns:
      (run_steps, jit): run_steps(n) runs n train steps and returns the last loss as a
      float (so the timing includes the work); jit is the XLA setting used.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tcvae_tf import distribute
    from tcvae_tf.model import DisentangledVAE
    from tcvae_tf.training import TrainConfig, _choose_jit, _set_precision

    _set_precision(precision)
    keras.utils.set_random_seed(seed)
    config = TrainConfig(arch=arch, jit_compile=jit_compile)
    jit = _choose_jit(config)
    options = {"estimator": estimator, "beta": 6.0} if objective == "tcvae" else {}
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = DisentangledVAE(latent_dim=latent_dim, arch=arch, objective=objective,
                                options=options, dataset_size=737280)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    images = np.random.default_rng(seed).random((batch_size, 64, 64, 1)) > 0.9
    batch = tf.constant(images.astype("float32"))
    model.make_train_function()
    train_function = model.train_function
    iterator = iter(distribute.distribute_batches(
        strategy, lambda: tf.data.Dataset.from_tensors(batch).repeat(), batch_size))

    def run_steps(num_steps):
        for _ in range(num_steps):
            logs = train_function(iterator)
        return float(logs["loss"])  # waits for the last step

    run_steps(1)  # traces (and compiles) the step under the chosen policy
    _set_precision("fp32")
    return run_steps, jit


def timed_window(run_steps, steps, batch_size):
    """Images/s of one window of `steps` calls."""
    start = time.perf_counter()
    run_steps(steps)
    return steps * batch_size / (time.perf_counter() - start)


def measure(arch, batch_size, estimator, precision="fp32", steps=20, windows=5, warmup=3,
            jit_compile="auto", latent_dim=10):
    run_steps, jit = make_train_step(arch, batch_size, estimator, precision, jit_compile,
                                     latent_dim)
    run_steps(warmup)
    rates = [timed_window(run_steps, steps, batch_size) for _ in range(windows)]
    return {
        "arch": arch, "batch_size": batch_size, "estimator": estimator, "precision": precision,
        "jit_compile": jit, "steps_per_window": steps, "windows": windows,
        "images_per_second": statistics.median(rates),
        "images_per_second_windows": rates, "cores": os.cpu_count(),
    }


def measure_interleaved(arch, batch_size, estimator, precisions, steps=20, windows=5, warmup=3,
                        jit_compile="auto", latent_dim=10):
    """Like `measure` for several precisions, their windows interleaved in one process."""
    runners = {}
    for precision in precisions:
        runners[precision] = make_train_step(arch, batch_size, estimator, precision,
                                             jit_compile, latent_dim)
        runners[precision][0](warmup)
    rates = {precision: [] for precision in precisions}
    for _ in range(windows):
        for precision, (run_steps, _) in runners.items():
            rates[precision].append(timed_window(run_steps, steps, batch_size))
    first = statistics.median(rates[precisions[0]])
    results = []
    for precision in precisions:
        median = statistics.median(rates[precision])
        results.append({
            "arch": arch, "batch_size": batch_size, "estimator": estimator,
            "precision": precision, "jit_compile": runners[precision][1],
            "steps_per_window": steps, "windows": windows, "images_per_second": median,
            "images_per_second_windows": rates[precision], "cores": os.cpu_count(),
            f"ratio_to_{precisions[0]}": median / first,
        })
    return results


def measure_strategy(arch, batch_size, estimator, strategy_name, cpu_replicas, steps=20,
                     windows=5, warmup=3, jit_compile="auto", latent_dim=10):
    """Images/s of the replicated step and of the one-device step, windows interleaved."""
    from tcvae_tf import distribute

    strategy = distribute.make_strategy(strategy_name, cpu_replicas)
    runners = {
        "none": make_train_step(arch, batch_size, estimator, jit_compile=jit_compile,
                                latent_dim=latent_dim)[0],
        strategy_name: make_train_step(arch, batch_size, estimator, jit_compile=jit_compile,
                                       latent_dim=latent_dim, strategy=strategy)[0],
    }
    for run_steps in runners.values():
        run_steps(warmup)
    rates = {name: [] for name in runners}
    for _ in range(windows):
        for name, run_steps in runners.items():
            rates[name].append(timed_window(run_steps, steps, batch_size))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "arch": arch, "batch_size": batch_size, "estimator": estimator,
        "strategy": strategy_name, "replicas": distribute.num_replicas(strategy),
        "steps_per_window": steps, "windows": windows,
        "images_per_second": medians, "images_per_second_windows": rates,
        "ratio_to_none": medians[strategy_name] / medians["none"], "cores": os.cpu_count(),
    }


def measure_kl_shares(batch_size, estimator, replicas, repeats=5, latent_dim=10):
    """Seconds per forward + backward of one replica's share (M/R rows, all M columns)."""
    import numpy as np
    import tensorflow as tf

    from tcvae_tf import objectives

    rng = np.random.default_rng(0)
    loc = tf.Variable(rng.normal(size=(batch_size, latent_dim)).astype("float32"))
    log_scale = tf.Variable(rng.uniform(-2, 0, size=(batch_size, latent_dim)).astype("float32"))
    noise = tf.constant(rng.normal(size=(batch_size, latent_dim)).astype("float32"))

    def share(rows):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                z = (loc + tf.exp(log_scale) * noise)[:rows]
                parts = objectives.kl_decomposition(z, loc, log_scale, 737280, estimator,
                                                    row_offset=0)
                loss = tf.reduce_mean(5.0 * parts["log_qz"] - 6.0 * parts["log_prod_qzi"])
            return loss, tape.gradient(loss, [loc, log_scale])

        return step

    steps = {count: share(batch_size // count) for count in replicas}
    for step in steps.values():
        step()
    seconds = {count: [] for count in replicas}
    for _ in range(repeats):
        for count, step in steps.items():
            start = time.perf_counter()
            float(step()[0])
            seconds[count].append(time.perf_counter() - start)
    return {"batch_size": batch_size, "latent_dim": latent_dim, "estimator": estimator,
            "seconds_per_replica": {count: statistics.median(values)
                                    for count, values in seconds.items()},
            "cores": os.cpu_count()}


def measure_objectives(arch, batch_size, estimator, objectives, steps=20, windows=5,
                       warmup=3, jit_compile="auto", latent_dim=10):
    """Like `measure` for several methods, their windows interleaved in one process.

    Each entry of ``objectives`` is a method name, or ``NAME:BATCH`` for a batch size of
    its own (FactorVAE's VAE term sees half its batch: ``factorvae:128`` decodes as many
    images per step as ``tcvae`` at 64).
    """
    runners, batches = {}, {}
    for spec in objectives:
        objective, _, batch = spec.partition(":")
        batches[spec] = int(batch) if batch else batch_size
        runners[spec] = make_train_step(arch, batches[spec], estimator, "fp32", jit_compile,
                                        latent_dim, objective=objective)
        runners[spec][0](warmup)
    rates = {spec: [] for spec in objectives}
    for _ in range(windows):
        for spec, (run_steps, _) in runners.items():
            rates[spec].append(timed_window(run_steps, steps, batches[spec]))
    first = statistics.median(rates[objectives[0]])
    first_steps = first / batches[objectives[0]]
    return [{
        "arch": arch, "batch_size": batches[spec], "objective": spec.partition(":")[0],
        "estimator": estimator, "precision": "fp32", "jit_compile": runners[spec][1],
        "steps_per_window": steps, "windows": windows,
        "images_per_second": statistics.median(rates[spec]),
        "images_per_second_windows": rates[spec], "cores": os.cpu_count(),
        f"ratio_to_{objectives[0]}": statistics.median(rates[spec]) / first,
        f"steps_ratio_to_{objectives[0]}":
            statistics.median(rates[spec]) / batches[spec] / first_steps,
    } for spec in objectives]


def measure_kl_decomposition(batch_size, estimator, repeats=5, latent_dim=10):
    """Seconds per forward + backward of kl_decomposition against the direct formulation."""
    import numpy as np
    import tensorflow as tf

    from tcvae_tf import objectives

    rng = np.random.default_rng(0)
    loc = tf.Variable(rng.normal(size=(batch_size, latent_dim)).astype("float32"))
    log_scale = tf.Variable(rng.uniform(-2, 0, size=(batch_size, latent_dim)).astype("float32"))
    noise = tf.constant(rng.normal(size=(batch_size, latent_dim)).astype("float32"))
    dataset_size = 737280

    def fused(z):
        parts = objectives.kl_decomposition(z, loc, log_scale, dataset_size, estimator)
        return parts["log_qz"], parts["log_prod_qzi"]

    def direct(z):
        log_q = objectives.log_density_matrix(z, loc, log_scale)  # [i, j, d]
        log_w = objectives.log_importance_weights(batch_size, dataset_size, estimator)
        log_qz = tf.reduce_logsumexp(tf.reduce_sum(log_q, axis=2) + log_w, axis=1)
        marginals = tf.reduce_logsumexp(log_q + log_w[:, :, None], axis=1)
        return log_qz, tf.reduce_sum(marginals, axis=1)

    def step(function):
        with tf.GradientTape() as tape:
            z = loc + tf.exp(log_scale) * noise
            log_qz, log_prod_qzi = function(z)
            # The beta-TCVAE mix: alpha * MI + beta * TC + gamma * DWKL, alpha = gamma = 1.
            loss = tf.reduce_mean(5.0 * log_qz - 6.0 * log_prod_qzi)
        return loss, tape.gradient(loss, [loc, log_scale])

    variants = {}
    for name, function in (("kl_decomposition", fused), ("direct", direct)):
        for jit in (False, True):
            key = f"{name}{'_xla' if jit else ''}"
            variants[key] = tf.function(lambda function=function: step(function),
                                        jit_compile=jit)
            variants[key]()
    seconds = {key: [] for key in variants}
    for _ in range(repeats):
        for key, function in variants.items():
            start = time.perf_counter()
            float(function()[0])
            seconds[key].append(time.perf_counter() - start)
    medians = {key: statistics.median(values) for key, values in seconds.items()}
    return {
        "batch_size": batch_size, "latent_dim": latent_dim, "estimator": estimator,
        "seconds_forward_backward": medians,
        "speedup_over_direct": medians["direct"] / medians["kl_decomposition"],
        "speedup_over_direct_xla": medians["direct_xla"] / medians["kl_decomposition"],
        "cores": os.cpu_count(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--estimator", default="mws")
    parser.add_argument("--objective", default="tcvae",
                        help="a method, or several comma-separated (interleaved, fp32); "
                             "NAME:BATCH gives one its own batch size")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, bf16, or several comma-separated (interleaved)")
    parser.add_argument("--jit", default="auto", help="auto, on or off")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--kl-decomposition", action="store_true",
                        help="time only the objective's forward and backward (see above)")
    parser.add_argument("--strategy", default=None,
                        help="mirrored: compare the replicated step with the one-device one")
    parser.add_argument("--cpu-replicas", type=int, default=None,
                        help="logical CPU devices for --strategy mirrored")
    parser.add_argument("--kl-share", default=None,
                        help="comma-separated R: time one replica's share of the objective")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    args = parser.parse_args()
    if args.strategy:
        from tcvae_tf import distribute

        if args.cpu_replicas:  # before TensorFlow initialises its devices
            distribute.configure_cpu_replicas(args.cpu_replicas)
        result = measure_strategy(args.arch, args.batch_size, args.estimator, args.strategy,
                                  args.cpu_replicas, args.steps, args.windows,
                                  jit_compile=args.jit)
        if args.json:
            print(json.dumps(result))
        else:
            rates = result["images_per_second"]
            print(f"{args.arch} batch {args.batch_size} {args.estimator}: "
                  f"{rates['none']:.0f} images/s on one device, "
                  f"{rates[args.strategy]:.0f} with {args.strategy} over "
                  f"{result['replicas']} replicas; ratio {result['ratio_to_none']:.2f} "
                  f"(median of {args.windows} interleaved windows, {result['cores']} cores)")
        return
    if args.kl_share:
        counts = [int(count) for count in args.kl_share.split(",")]
        result = measure_kl_shares(args.batch_size, args.estimator, counts, args.windows)
        if args.json:
            print(json.dumps(result))
        else:
            timings = ", ".join(f"R {count}: {seconds * 1000:.1f} ms" for count, seconds in
                                result["seconds_per_replica"].items())
            print(f"M {args.batch_size}, D 10, {args.estimator}, one replica's share "
                  f"forward + backward: {timings}")
        return
    if args.kl_decomposition:
        result = measure_kl_decomposition(args.batch_size, args.estimator, args.windows)
        if args.json:
            print(json.dumps(result))
        else:
            timings = ", ".join(f"{key} {value:.3f} s"
                                for key, value in result["seconds_forward_backward"].items())
            print(f"M {args.batch_size}, D 10, {args.estimator}: {timings}; "
                  f"{result['speedup_over_direct']:.1f}x the direct formulation "
                  f"({result['speedup_over_direct_xla']:.1f}x with XLA)")
        return
    precisions = args.precision.split(",")
    objectives = args.objective.split(",")
    if len(objectives) > 1 or objectives[0] != "tcvae":
        results = measure_objectives(args.arch, args.batch_size, args.estimator, objectives,
                                     args.steps, args.windows, jit_compile=args.jit)
    elif len(precisions) == 1:
        results = [measure(args.arch, args.batch_size, args.estimator, precisions[0],
                           args.steps, args.windows, jit_compile=args.jit)]
    else:
        results = measure_interleaved(args.arch, args.batch_size, args.estimator, precisions,
                                      args.steps, args.windows, jit_compile=args.jit)
    for result in results:
        if args.json:
            print(json.dumps(result))
            continue
        ratio = "".join(f", {key} {value:.2f}" for key, value in result.items()
                        if key.startswith(("ratio_to_", "steps_ratio_to_")))
        method = f"{result['objective']} " if "objective" in result else ""
        print(f"{result['arch']} batch {result['batch_size']} {method}{result['estimator']} "
              f"{result['precision']} jit={result['jit_compile']}: "
              f"{result['images_per_second']:.0f} images/s (median of {args.windows} windows, "
              f"{result['cores']} cores{ratio})")


if __name__ == "__main__":
    main()
