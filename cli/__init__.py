"""The ``tcvae-tf`` command line (installed as :mod:`tcvae_tf.cli`)."""
