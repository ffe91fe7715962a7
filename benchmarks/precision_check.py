"""Does bf16 (Keras mixed_bfloat16) training track fp32? Loss terms over a few hundred steps.

Usage:
    python benchmarks/precision_check.py                       # mlp, 300 steps, batch 128
    python benchmarks/precision_check.py --arch conv --steps 200 --json

Two checks on dsprites-small (1536 rendered images), MWS, beta = 6:

1. Same weights: every --eval-every steps of an fp32 run, its weights are copied into a
   bf16 twin and both evaluate the loss terms on one fixed batch with the same posterior
   noise. The largest relative deviation |bf16 - fp32| / |fp32| over these checkpoints is
   the numerical error of bf16 alone.
2. Trajectories: the same BetaTCVAE (same seed, so the same initial weights, and the same
   batch order) is trained once in fp32 and once in bf16, and a third time in fp32 with
   another seed, as the scale of ordinary run-to-run variation. Each loss term is recorded
   per step and smoothed with a trailing moving average of --window steps; reported is the
   largest deviation of the smoothed bf16 curve from the smoothed fp32 curve after the
   first window, relative and absolute (nats), next to the same for the other-seed run.
   (The posterior noise differs between the runs, so this includes sampling noise and the
   way small differences grow during training.)

It also checks that under mixed_bfloat16 the networks compute in bfloat16 while `encode`,
`decode` and every loss term are float32.
"""

import argparse
import json
import os

from tcvae_tf import methods

TERMS = ("loss", "reconstruction", "kl", "mi", "tc", "dwkl")


def build_model(dataset, arch, precision, seed, jit_compile):
    """A compiled BetaTCVAE built under the Keras policy of `precision` (left set)."""
    import keras

    from tcvae_tf.model import BetaTCVAE
    from tcvae_tf.training import TrainConfig, _choose_jit, _set_precision

    _set_precision(precision)
    keras.utils.set_random_seed(seed)
    model = BetaTCVAE(latent_dim=10, arch=arch, beta=6.0, estimator="mws",
                      dataset_size=dataset.num_images)
    jit = _choose_jit(TrainConfig(arch=arch, jit_compile=jit_compile))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    return model


def dtype_report(model, probe):
    import keras

    loc, _ = model.encode(probe[:4])
    return {
        "policy": keras.mixed_precision.global_policy().name,
        "encoder_compute_dtype": model.encoder.compute_dtype,
        "encode_output": loc.dtype.name,
        "decode_output": model.decode(loc).dtype.name,
        "loss_terms": sorted({value.dtype.name for value in model.loss_terms(probe).values()}),
    }


def same_noise_terms(model, probe, seed):
    """Loss terms of `probe` (inference mode) with the posterior noise fixed by `seed`."""
    import keras

    keras.utils.set_random_seed(seed)
    return {name: float(value) for name, value in
            model.loss_terms(probe, training=False).items()}


def train_curves(dataset, arch, precision, seed, steps, batch_size, jit_compile,
                 eval_every=0):
    """Per-step loss terms of one run.

    Returns:
      ({term: [values]}, dtype report, same-weights pairs): with eval_every > 0 (fp32
      runs), pairs is a list of (fp32 terms, bf16 twin terms) every eval_every steps.
    """
    import numpy as np

    from tcvae_tf.training import _set_precision

    try:
        batches = dataset.as_tf_dataset(batch_size, shuffle=True, seed=0)
        probe = next(iter(dataset.as_tf_dataset(batch_size, shuffle=True, seed=123)))
        twin = build_model(dataset, arch, "bf16", seed, jit_compile) if eval_every else None
        model = build_model(dataset, arch, precision, seed, jit_compile)
        dtypes = dtype_report(model, probe)
        iterator = iter(batches)
        model.make_train_function()
        curves = {term: [] for term in TERMS}
        pairs = []
        for step in range(steps):
            if eval_every and step % eval_every == 0:
                twin.set_weights(model.get_weights())
                pairs.append((same_noise_terms(model, probe, step),
                              same_noise_terms(twin, probe, step)))
            model.reset_metrics()  # the trackers then hold this step's values only
            logs = model.train_function(iterator)
            for term in TERMS:
                curves[term].append(float(logs[methods.LOGGED_NAMES.get(term, term)]))
        weights = np.concatenate([np.ravel(w) for w in model.get_weights()[:2]])
        dtypes["finite_weights"] = bool(np.all(np.isfinite(weights)))
        return curves, dtypes, pairs
    finally:
        _set_precision("fp32")


def same_weights_deviations(pairs):
    """Per term: max relative and absolute |bf16 - fp32| at the same weights and noise."""
    out = {}
    for term in TERMS:
        absolute = [abs(bf16[term] - fp32[term]) for fp32, bf16 in pairs]
        relative = [abs(bf16[term] - fp32[term]) / max(abs(fp32[term]), 1e-12)
                    for fp32, bf16 in pairs]
        out[term] = {"max_relative": max(relative), "max_absolute": max(absolute)}
    return out


def smooth(values, window):
    """Trailing moving average; entry t averages values[t - window + 1 .. t]."""
    import numpy as np

    cumulative = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    return (cumulative[window:] - cumulative[:-window]) / window


def deviations(curves, reference, window):
    """Per term: max |smoothed - smoothed reference| (absolute and relative to |reference|)."""
    import numpy as np

    out = {}
    for term in TERMS:
        ours, theirs = smooth(curves[term], window), smooth(reference[term], window)
        absolute = np.abs(ours - theirs)
        relative = absolute / np.maximum(np.abs(theirs), 1e-12)
        out[term] = {"max_relative": float(relative.max()), "max_absolute": float(absolute.max()),
                     "final_reference": float(theirs[-1]), "final": float(ours[-1])}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--window", type=int, default=25, help="moving-average window (steps)")
    parser.add_argument("--eval-every", type=int, default=25,
                        help="steps between same-weights comparisons")
    parser.add_argument("--jit", default="off",
                        help="XLA for all runs: off (where bf16 is faster), on or auto")
    parser.add_argument("--curves", default=None, help="also write the raw curves to this JSON")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from tcvae_tf.data import dsprites_subgrid

    dataset = dsprites_subgrid()
    run = dict(dataset=dataset, arch=args.arch, steps=args.steps, batch_size=args.batch_size,
               jit_compile=args.jit)
    fp32, fp32_dtypes, pairs = train_curves(precision="fp32", seed=0,
                                            eval_every=args.eval_every, **run)
    bf16, bf16_dtypes, _ = train_curves(precision="bf16", seed=0, **run)
    other_seed, _, _ = train_curves(precision="fp32", seed=1, **run)
    result = {
        "arch": args.arch, "steps": args.steps, "batch_size": args.batch_size,
        "window": args.window, "eval_every": args.eval_every, "jit": args.jit,
        "dataset": dataset.name, "cores": os.cpu_count(), "fp32_dtypes": fp32_dtypes,
        "bf16_dtypes": bf16_dtypes,
        "same_weights_bf16_vs_fp32": same_weights_deviations(pairs),
        "trajectory_bf16_vs_fp32": deviations(bf16, fp32, args.window),
        "trajectory_other_seed_vs_fp32": deviations(other_seed, fp32, args.window),
    }
    if args.curves:
        with open(args.curves, "w") as curves_file:
            json.dump({"fp32": fp32, "bf16": bf16, "fp32_other_seed": other_seed,
                       "same_weights": pairs}, curves_file)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.arch}, {args.steps} steps of batch {args.batch_size} on {dataset.name}, "
          f"moving average of {args.window} steps, jit {args.jit}")
    print(f"bf16 dtypes: {bf16_dtypes}")
    print(f"{'':15}{'same weights':>20}{'trajectory bf16':>20}{'trajectory seed':>20}")
    print(f"{'term':<15}" + f"{'rel':>10}{'abs':>10}" * 3 + f"{'final fp32':>12}{'final bf16':>12}")
    for term in TERMS:
        row = f"{term:<15}"
        for key in ("same_weights_bf16_vs_fp32", "trajectory_bf16_vs_fp32",
                    "trajectory_other_seed_vs_fp32"):
            row += f"{result[key][term]['max_relative']:>10.4f}"
            row += f"{result[key][term]['max_absolute']:>10.3f}"
        trajectory = result["trajectory_bf16_vs_fp32"][term]
        print(row + f"{trajectory['final_reference']:>12.3f}{trajectory['final']:>12.3f}")


if __name__ == "__main__":
    main()
