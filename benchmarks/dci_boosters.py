"""DCI with histogram trees against disentanglement_lib's exact GradientBoostingClassifier.

Encodes a random training and test sample of a model's dataset (the images DCI draws in
`tcvae-tf evaluate`), then computes DCI with both boosters in one process, alternating,
and prints each score and time and the time ratio.

    python benchmarks/dci_boosters.py dsprites-btcvae-b6 --num-train 10000 --num-test 5000
"""

import argparse
import time

import numpy as np

from tcvae_tf import evaluation
from tcvae_tf.metrics import dci
from tcvae_tf.metrics.utils import RowEncoder, train_test_rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="run folder or zoo model name")
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--num-test", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    evaluable = evaluation.load_evaluable(args.ref)
    dataset = evaluation.load_evaluation_dataset(evaluable)
    step = evaluable.encoding_step(np.float32, False)

    def encode(images):
        import tensorflow as tf

        return step(tf.convert_to_tensor(images), tf.constant([0, 0], tf.int64))[0].numpy()

    rows_to_codes = RowEncoder(dataset, encode, batch_size=1024)
    train_rows, test_rows = train_test_rows(dataset.num_images, args.num_train, args.num_test,
                                            np.random.default_rng(args.seed))
    split = (rows_to_codes(train_rows), dataset.factor_classes[train_rows],
             rows_to_codes(test_rows), dataset.factor_classes[test_rows])
    print(f"{args.ref}: {args.num_train} train / {args.num_test} test images, "
          f"{len(dataset.factor_sizes)} factors with {sum(dataset.factor_sizes)} classes")
    seconds = {"histogram": [], "exact": []}
    for _ in range(args.repeats):
        for booster in seconds:
            start = time.perf_counter()
            result = dci(*split, seed=args.seed, booster=booster)
            seconds[booster].append(time.perf_counter() - start)
            print(f"{booster:>9}: disentanglement {result['disentanglement']:.4f}, "
                  f"completeness {result['completeness']:.4f}, informativeness (test) "
                  f"{result['informativeness_test']:.4f}, {seconds[booster][-1]:.1f} s",
                  flush=True)
    ratio = np.median(seconds["exact"]) / np.median(seconds["histogram"])
    print(f"exact / histogram time: {ratio:.1f}x")


if __name__ == "__main__":
    main()
