"""tcvae-tf: disentangled variational autoencoders (beta-TCVAE) in TensorFlow/Keras.

Importing the package is cheap: TensorFlow is imported by the submodules that need it.
"""

__version__ = "0.1.0"
