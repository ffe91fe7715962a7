"""The named choices of a training run, importable without TensorFlow.

`tcvae-tf train` checks its options against these before TensorFlow loads, so a bad
option is a one-line error in a fraction of a second. The builders behind the names live
in :mod:`tcvae_tf.architectures` (which imports Keras) and :mod:`tcvae_tf.training`.
"""

# Encoder/decoder families; a new one is a name here and a branch in each builder.
ARCHITECTURES = ("mlp", "conv", "burgess")
PRECISIONS = ("fp32", "bf16")
JIT_MODES = ("auto", "on", "off")
