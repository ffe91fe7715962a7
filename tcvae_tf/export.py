"""SavedModel export of a trained model: an encoder and a decoder with named signatures.

Each network becomes its own SavedModel, built from core TensorFlow ops only, so plain
TensorFlow, ``saved_model_cli`` and TF Serving load it without any code of this package:

```none
encoder  signatures "serving_default" and "encode"
  in   images     float32 [batch, 64, 64, C], pixel values in [0, 1]
  out  mean       float32 [batch, D]   location of q(z|x) (the Normal's mean)
       log_scale  float32 [batch, D]   log of the scale of q(z|x); for the Normal
                                       posterior, scale = exp(log_scale) is the standard
                                       deviation (NOT the log-variance)
       sample     float32 [batch, D]   one draw z = mean + exp(log_scale) * eps,
                                       eps ~ N(0, I) (Laplace(0, 1) for a Laplace posterior)
decoder  signatures "serving_default" and "decode"
  in   latents    float32 [batch, D]
  out  logits     float32 [batch, 64, 64, C]   pre-sigmoid pixel logits
       probs      float32 [batch, 64, 64, C]   sigmoid(logits): the mean image in [0, 1]
```

BatchNorm layers run in inference mode (moving statistics). Each signature checks the
shape of its input first and fails with a message naming the expected shape ("images must
be float32 [batch, 64, 64, 1]; got shape [1 32 32 1]"), not inside the network. A description of the
signatures is also written into each SavedModel as ``assets.extra/signatures.json``
(TensorFlow and TF Serving ignore ``assets.extra``).

Example:

```python
from tcvae_tf import export, training

model = training.load_model("runs/dsprites-tcvae-beta6-mlp-seed0")
export.export_model(model, "out/encoder/1", "out/decoder/1")
```
"""

import json
import os

ENCODER_SIGNATURE = "encode"
DECODER_SIGNATURE = "decode"
SIGNATURE_KEYS = {"encoder": ("serving_default", ENCODER_SIGNATURE),
                  "decoder": ("serving_default", DECODER_SIGNATURE)}
ENCODER_INPUT = "images"
ENCODER_OUTPUTS = ("mean", "log_scale", "sample")
DECODER_INPUT = "latents"
DECODER_OUTPUTS = ("logits", "probs")
DESCRIPTION_FILE = os.path.join("assets.extra", "signatures.json")


def posterior_description(posterior="normal"):
    """Says in words how the encoder's outputs parameterise q(z|x).

    Args:
      posterior: the model's posterior family, "normal" or "laplace".

    Returns:
      A JSON-ready dict (stored in the model card and in each SavedModel).
    """
    if posterior == "normal":
        return {
            "family": "normal",
            "mean": "mean of q(z|x) = Normal(mean, exp(log_scale))",
            "log_scale": "log of the standard deviation of q(z|x) "
                         "(not the log-variance: variance = exp(2 * log_scale))",
            "sample": "mean + exp(log_scale) * eps, eps ~ Normal(0, I)",
        }
    return {
        "family": posterior,
        "mean": f"location (and mean) of q(z|x) = {posterior.capitalize()}(mean, "
                "exp(log_scale))",
        "log_scale": f"log of the scale of the {posterior.capitalize()} posterior",
        "sample": f"mean + exp(log_scale) * eps, eps ~ {posterior.capitalize()}(0, 1) "
                  "per dimension",
    }


def signature_description(latent_dim, image_shape, posterior="normal"):
    """The inputs and outputs of both SavedModels, as a JSON-ready dict.

    Args:
      latent_dim: D.
      image_shape: (64, 64, C).
      posterior: "normal" or "laplace".

    Returns:
      {"encoder": {...}, "decoder": {...}, "posterior": {...}} with, per network, the
      signature keys and every input/output's dtype, shape (None = any batch size) and
      meaning.
    """
    image_shape = [int(s) for s in image_shape]
    latents = [None, int(latent_dim)]
    images = [None, *image_shape]
    meaning = posterior_description(posterior)
    return {
        "encoder": {
            "signatures": list(SIGNATURE_KEYS["encoder"]),
            "inputs": {ENCODER_INPUT: {"dtype": "float32", "shape": images,
                                       "meaning": "images, pixel values in [0, 1]"}},
            "outputs": {name: {"dtype": "float32", "shape": latents, "meaning": meaning[name]}
                        for name in ENCODER_OUTPUTS},
        },
        "decoder": {
            "signatures": list(SIGNATURE_KEYS["decoder"]),
            "inputs": {DECODER_INPUT: {"dtype": "float32", "shape": latents,
                                       "meaning": "latent codes z"}},
            "outputs": {
                "logits": {"dtype": "float32", "shape": images,
                           "meaning": "pre-sigmoid pixel logits of p(x|z)"},
                "probs": {"dtype": "float32", "shape": images,
                          "meaning": "sigmoid(logits), the mean image in [0, 1]"},
            },
        },
        "posterior": meaning,
    }


def _standard_noise(shape, posterior):
    """eps [shape] from the posterior's standard family, drawn afresh on every call.

    The raw ops with seed = seed2 = 0 ignore any global seed set at export time, so a
    loaded SavedModel does not replay one fixed noise sequence.
    """
    import tensorflow as tf

    if posterior == "normal":
        return tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)
    # Laplace(0, 1) is the difference of two independent Exponential(1) draws, and
    # -log(1 - u) with u ~ Uniform[0, 1) is Exponential(1) (and always finite).
    def exponential():
        uniform = tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)
        return -tf.math.log1p(-uniform)

    return exponential() - exponential()


def expected_shape_text(shape):
    """A signature input shape in words: ``[None, 64, 64, 1]`` -> ``"[batch, 64, 64, 1]"``."""
    return "[" + ", ".join("batch" if size is None else str(int(size)) for size in shape) + "]"


def checked_input(tensor, shape, name):
    """``tensor`` if its shape is ``shape`` (None: any size); else a clear run-time error.

    A signature's input spec does not stop a caller of the loaded SavedModel from feeding
    another shape, and the error would then come from deep inside the network (a reshape,
    or a convolution's shape check when the graph is specialised to the input). The
    network is therefore fed from a ``tf.cond``: a wrong shape takes the branch that fails
    with an InvalidArgumentError naming the expected shape ("images must be float32
    [batch, 64, 64, 1]; got shape [1 32 32 1]"), and never reaches the network. Only core
    ops (If, Assert), so TF Serving runs it.

    Args:
      tensor: the signature's input.
      shape: the expected shape, e.g. [None, 64, 64, 1].
      name: the input's name, for the message.

    Returns:
      A tensor equal to ``tensor``, of static shape ``shape``.
    """
    import tensorflow as tf

    rank = len(shape)
    fixed = [(axis, int(size)) for axis, size in enumerate(shape) if size is not None]
    actual = tf.shape(tensor, out_type=tf.int32)
    # Padded to the expected rank, so a tensor of another rank is compared without error.
    padded = tf.concat([actual, tf.zeros([rank], tf.int32)], axis=0)[:rank]
    ok = tf.equal(tf.size(actual), rank)
    if fixed:
        axes, sizes = zip(*fixed, strict=True)
        ok = tf.logical_and(ok, tf.reduce_all(tf.equal(tf.gather(padded, list(axes)),
                                                        tf.constant(sizes, tf.int32))))
    message = f"{name} must be float32 {expected_shape_text(shape)}; got shape"

    def refuse():
        check = tf.debugging.Assert(False, [message, actual], name=f"check_{name}_shape")
        with tf.control_dependencies([check]):
            return tf.zeros([0 if size is None else int(size) for size in shape], tensor.dtype)

    checked = tf.cond(ok, lambda: tf.identity(tensor), refuse)
    return tf.ensure_shape(checked, shape)


def export_model(model, encoder_dir, decoder_dir):
    """Writes a model's encoder and decoder as two SavedModels.

    The folders must not exist yet (or be empty); they are written by
    ``keras.export.ExportArchive`` with explicit input specs and hold no custom ops.

    Args:
      model: a ``BetaTCVAE`` (anything with ``encode``, ``decode``, ``encoder``,
        ``decoder``, ``latent_dim``, ``image_shape`` and ``posterior``).
      encoder_dir: folder of the encoder SavedModel.
      decoder_dir: folder of the decoder SavedModel.

    Returns:
      The signature description written into both SavedModels (see
      ``signature_description``).
    """
    import keras
    import tensorflow as tf

    for folder in (encoder_dir, decoder_dir):
        if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
            raise FileExistsError(f"{folder} already exists; refusing to overwrite it")
    posterior = getattr(model, "posterior", "normal")
    image_shape = tuple(int(s) for s in model.image_shape)
    latent_dim = int(model.latent_dim)
    description = signature_description(latent_dim, image_shape, posterior)

    def encode(images):
        images = checked_input(images, [None, *image_shape], ENCODER_INPUT)
        mean, log_scale = model.encode(images, training=False)
        noise = _standard_noise(tf.shape(mean), posterior)
        return {"mean": mean, "log_scale": log_scale, "sample": mean + tf.exp(log_scale) * noise}

    def decode(latents):
        latents = checked_input(latents, [None, latent_dim], DECODER_INPUT)
        logits = model.decode(latents, training=False)
        return {"logits": logits, "probs": tf.sigmoid(logits)}

    networks = (
        (encoder_dir, ENCODER_SIGNATURE, encode,
         tf.TensorSpec([None, *image_shape], tf.float32, name=ENCODER_INPUT), "encoder"),
        (decoder_dir, DECODER_SIGNATURE, decode,
         tf.TensorSpec([None, latent_dim], tf.float32, name=DECODER_INPUT), "decoder"),
    )
    for folder, endpoint, fn, spec, kind in networks:
        archive = keras.export.ExportArchive()
        # No archive.track(network): the endpoint's trace captures every variable it reads,
        # and tracking the network as well would store each weight a second time (Keras's
        # variable wrappers next to the captured TensorFlow variables).
        # The first endpoint is also exported as "serving_default".
        archive.add_endpoint(endpoint, fn, input_signature=[spec])
        archive.write_out(folder, verbose=False)
        extra = os.path.join(folder, DESCRIPTION_FILE)
        os.makedirs(os.path.dirname(extra), exist_ok=True)
        with open(extra, "w") as handle:
            json.dump({"network": kind, **description[kind], "posterior": description["posterior"]},
                      handle, indent=2)
            handle.write("\n")
    return description


def export_run(run_dir, encoder_dir, decoder_dir):
    """Exports the final model (``model.keras``) of a training run folder.

    Args:
      run_dir: a run folder written by ``tcvae_tf.training.train``.
      encoder_dir: folder of the encoder SavedModel.
      decoder_dir: folder of the decoder SavedModel.

    Returns:
      The loaded Keras model that was exported.
    """
    model = load_run_model(run_dir)
    export_model(model, encoder_dir, decoder_dir)
    return model


def load_run_model(run_dir):
    """Loads ``RUN/model.keras``; a run without a final model raises FileNotFoundError."""
    from tcvae_tf import training

    path = os.path.join(run_dir, training.MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (has the run finished training?)")
    return training.load_model(run_dir)
