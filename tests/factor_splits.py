"""Synthetic ground truth shared by the metric tests: uniform discrete factors and codes
made from them."""

import numpy as np


def factor_split(code_of, sizes, num_train, num_test, seed=0):
    """(train codes, train factors, test codes, test factors).

    Factors are drawn uniformly for each size in ``sizes``, train then test, and the codes
    are ``code_of(factors, rng)``, all from one generator seeded with ``seed``.
    """
    rng = np.random.default_rng(seed)
    train = np.stack([rng.integers(0, size, num_train) for size in sizes], axis=1)
    test = np.stack([rng.integers(0, size, num_test) for size in sizes], axis=1)
    return code_of(train, rng), train, code_of(test, rng), test
