"""One SGD step on one device and on R logical CPU replicas: the relative differences.

Run as a script (the CPU must be split before TensorFlow initialises its devices, so the
tests start it in a subprocess): prints one JSON object per case with the largest relative
difference of the updated weights, of the updates, and of the reported loss terms.

    python tests/distributed_step.py --replicas 2 tcvae-mws tcvae-mss betavae dipvae2 conv \
        factorvae
"""

import argparse
import json

CASES = {
    "tcvae-mws": dict(objective="tcvae", options={"estimator": "mws", "beta": 6.0}, arch="mlp"),
    "tcvae-mss": dict(objective="tcvae", options={"estimator": "mss", "beta": 6.0}, arch="mlp"),
    "betavae": dict(objective="betavae", options={"beta": 6.0}, arch="mlp"),
    # The covariance penalty is the global batch's (each replica holds 1/R of it).
    "dipvae2": dict(objective="dipvae2", options={"kl": "sampled"}, arch="mlp"),
    "conv": dict(objective="tcvae", options={"estimator": "mss", "beta": 6.0}, arch="conv"),
    # Even rows for the VAE, odd rows permuted for the discriminator: both halves gathered.
    "factorvae": dict(objective="factorvae", arch="mlp",
                      options={"discriminator_layers": 2, "discriminator_units": 32}),
}
# The conv networks run in float64: in float32 their BatchNorm gradients differ by ~1e-3
# between TensorFlow's two BatchNorm kernels on one device already (cancellation in the
# normalisation's backward pass), which would hide a real difference. The objective stays
# float32 (the model casts the networks' outputs).
POLICIES = {"conv": "float64"}


def one_step(case, strategy, weights, images, lr):
    """Builds the model (under the strategy), sets `weights`, runs one SGD step."""
    import contextlib

    import keras
    import tensorflow as tf

    from tcvae_tf import distribute
    from tcvae_tf.model import BetaTCVAE

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = BetaTCVAE(latent_dim=4, dataset_size=1000, **CASES[case])
        if weights is not None:
            model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(lr))
    batches = distribute.distribute_batches(
        strategy, lambda: tf.data.Dataset.from_tensors(images).repeat(), len(images))
    history = model.fit(batches, steps_per_epoch=1, epochs=1, verbose=0)
    logs = {name: float(values[-1]) for name, values in history.history.items()}
    return model, logs


def relative_difference(got, want):
    import numpy as np

    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    from tcvae_tf import distribute

    distribute.configure_cpu_replicas(args.replicas)
    import keras
    import numpy as np

    from tcvae_tf.model import BetaTCVAE

    strategy = distribute.make_strategy("mirrored", cpu_replicas=args.replicas)
    images = (np.random.default_rng(0).random((64, 64, 64, 1)) > 0.8).astype("float32")
    for case in args.cases:
        keras.mixed_precision.set_global_policy(POLICIES.get(case, "float32"))
        keras.utils.set_random_seed(0)
        initial = BetaTCVAE(latent_dim=4, dataset_size=1000, **CASES[case]).get_weights()
        single, single_logs = one_step(case, None, initial, images, args.lr)
        replicated, replicated_logs = one_step(case, strategy, initial, images, args.lr)
        pairs = list(zip(replicated.get_weights(), single.get_weights(), initial, strict=True))
        print(json.dumps({
            "case": case,
            "weights": max(relative_difference(got, want) for got, want, _ in pairs),
            "updates": max(relative_difference(got - start, want - start)
                           for got, want, start in pairs if np.any(want != start)),
            "terms": max(relative_difference(np.array(replicated_logs[name]),
                                             np.array(single_logs[name]))
                         for name in single_logs),
            "logs": [single_logs, replicated_logs],
        }), flush=True)


if __name__ == "__main__":
    main()
