"""Predict a dSprites factor from the latents of a frozen zoo encoder.

A published encoder becomes a Keras layer (``tcvae_tf.zoo.encoder_layer``, a
``keras.layers.TFSMLayer`` over the SavedModel); a small dense head on top of its
posterior mean is trained to classify one ground-truth factor, and the accuracy on
held-out images is printed next to chance and majority-class baselines. A disentangled
model should make position and scale easy to read off its latents.

```none
images [B, 64, 64, 1] -> frozen encoder -> mean [B, D] -> BatchNorm -> Dense(64, relu)
                       -> Dense(K) logits
```

Usage:

```none
python examples/downstream_factor_head.py --model dsprites-btcvae-b6 --factor pos_x
python examples/downstream_factor_head.py --model NAME --zoo-root /path/to/zoo \
    --num-images 1000 --epochs 3
```
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="zoo model name, e.g. dsprites-btcvae-b6")
    parser.add_argument("--version", type=int, default=None,
                        help="model version (default: the latest)")
    parser.add_argument("--zoo-root", default=None,
                        help="zoo folder (default: $TCVAE_TF_ZOO, else the repository's zoo/)")
    parser.add_argument("--dataset", default=None,
                        help="ground-truth dataset (dsprites, dsprites-small; default: the one "
                             "the model was trained on, from its card)")
    parser.add_argument("--factor", default="pos_x",
                        help="factor to predict: shape, scale, orientation, pos_x or pos_y")
    parser.add_argument("--latents", default="mean", choices=("mean", "sample"),
                        help="encoder output fed to the head")
    parser.add_argument("--num-images", type=int, default=20000,
                        help="images drawn at random from the dataset (train + test)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of the drawn images held out for the accuracy")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the head")
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch size")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser.parse_args(argv)


def main(argv=None):
    """Trains the head and prints its held-out accuracy.

    Args:
      argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
      The held-out accuracy (float in [0, 1]).
    """
    args = parse_args(argv)
    import keras
    import numpy as np

    from tcvae_tf import data, zoo

    try:
        entry = zoo.card_entry(args.model, args.version, args.zoo_root)
        name = args.dataset or (entry.get("dataset") or {}).get("name")
        if name is None:
            raise ValueError(f"the card of {args.model} names no dataset; give --dataset")
        dataset = data.load_dataset(name)
    except (LookupError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    if args.factor not in dataset.factor_names:
        sys.exit(f"error: unknown factor {args.factor!r}; {dataset.name} has "
                 f"{', '.join(dataset.factor_names)}")
    if tuple(entry["image_shape"]) != dataset.image_shape:
        sys.exit(f"error: {args.model} takes images {entry['image_shape']}, {dataset.name} has "
                 f"{list(dataset.image_shape)}")
    if not 0 < args.test_fraction < 1:
        sys.exit("error: --test-fraction must be between 0 and 1")

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    count = min(args.num_images, dataset.num_images)
    chosen = rng.choice(dataset.num_images, count, replace=False)
    images = dataset.images[chosen].astype("float32") / dataset.pixel_max  # [N, 64, 64, 1]
    factor = dataset.factor_names.index(args.factor)
    labels = dataset.factor_classes[chosen, factor]  # [N], classes 0..K-1
    num_classes = dataset.factor_sizes[factor]
    num_test = max(1, int(round(count * args.test_fraction)))
    train_images, test_images = images[num_test:], images[:num_test]
    train_labels, test_labels = labels[num_test:], labels[:num_test]

    inputs = keras.Input(entry["image_shape"], name="images")
    encoder = zoo.encoder_layer(args.model, args.version, args.zoo_root)  # frozen
    latents = encoder(inputs)[args.latents]  # [B, D]
    # Latent scales differ a lot between models (and inactive units are ~0): standardise.
    hidden = keras.layers.BatchNormalization()(latents)
    hidden = keras.layers.Dense(64, activation="relu")(hidden)
    logits = keras.layers.Dense(num_classes)(hidden)
    classifier = keras.Model(inputs, logits, name=f"{args.factor}_head")
    classifier.compile(optimizer=keras.optimizers.Adam(3e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    classifier.fit(train_images, train_labels, batch_size=args.batch_size, epochs=args.epochs,
                   verbose=0)
    _, accuracy = classifier.evaluate(test_images, test_labels, batch_size=args.batch_size,
                                      verbose=0)
    majority = np.bincount(train_labels, minlength=num_classes).argmax()
    print(f"{args.model} v{entry['version']} on {dataset.name}: {len(train_labels)} "
          f"training / {num_test} held-out images, latent_dim {entry['latent_dim']}")
    print(f"held-out accuracy of the {args.factor} head: {accuracy:.3f} "
          f"(chance {1 / num_classes:.3f}, majority class "
          f"{np.mean(test_labels == majority):.3f})")
    return float(accuracy)


if __name__ == "__main__":
    main()
