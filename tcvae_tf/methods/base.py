"""What a method is: its declared options and the hooks the Keras model calls.

A method is a training objective on top of the shared model (encoder, decoder,
posterior, prior, likelihood and reconstruction term, :class:`tcvae_tf.model.
DisentangledVAE`). It declares its options once, as :class:`Option` entries; the CLI,
the run's config.json, the model card and ``zoo list`` all read that declaration. The
model calls the method for the regulariser of a batch; a method that needs more (a second
network, a second optimizer) builds it on the model and supplies its own ``train_step``.

```none
loss = mean_i[ -log p(x_i|z_i) ] + regulariser(z, loc, log_scale)
```

Importing this module does not import TensorFlow: method modules import it inside the
functions that need it, so ``tcvae-tf train --help`` stays fast.
"""

import dataclasses
import math
import numbers

# The loss terms every method reports (history.csv, TensorBoard); a method adds its own.
BASE_TERMS = ("loss", "reconstruction", "kl", "mi", "tc", "dwkl")
# The names the decomposition's terms are logged under. They are estimates from one
# minibatch (q(z) from M of the N images), not the dataset's decomposition that
# `tcvae-tf evaluate` reports, and their names say so. history.csv files written before
# carry the short names; tcvae_tf.runs reads both.
LOGGED_NAMES = {"mi": "minibatch_mi", "tc": "minibatch_tc", "dwkl": "minibatch_dwkl"}
KL_KINDS = ("sampled", "analytic")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a method, declared once next to it.

    Args:
      name: Python name and config key; the CLI flag is ``--name-with-dashes``.
      type: ``float``, ``int`` or ``str``.
      default: the value when the option is not given.
      help: what the option means for this method (short: it ends up in one-line errors).
      choices: the allowed values of a ``str`` option.
      minimum: the smallest allowed value of a number (weights: 0).
      headline: shown in ``zoo list`` and in the default run-folder name.
    """

    name: str
    type: type
    default: object
    help: str
    choices: tuple = ()
    minimum: float | None = None
    headline: bool = False

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """The value converted to the option's type; ValueError (one line) when it is bad."""
        name = self.name
        if self.type is str:
            if self.choices and value not in self.choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of "
                                 f"{', '.join(self.choices)}")
            return str(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if self.type is int:
            if value != int(value):
                raise ValueError(f"{name} must be a whole number, got {value}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{name} must be >= {self.minimum:g}, got {value:g}")
        return value


class Method:
    """A training objective: its name, reference, options and regulariser.

    A subclass sets the class attributes and implements ``regulariser``; it is found by
    ``name`` once it is listed in :mod:`tcvae_tf.methods`. Option values are attributes
    of the instance (``method.beta``).

    Class attributes:
      name: what ``--objective`` takes.
      title: the method's usual name, e.g. "FactorVAE".
      reference: the paper.
      loss: the loss in one line (help texts and the README).
      options: tuple of :class:`Option`.
      logged: names of the method's own loss terms, reported beside ``BASE_TERMS``.
      training_defaults: the method's defaults of training settings (``lr``,
        ``batch_size``) where they differ from the library's.
      decomposition_estimator: the estimator of the logged MI, TC and DWKL.
    """

    name = ""
    title = ""
    reference = ""
    loss = ""
    options = ()
    logged = ()
    training_defaults = {}
    decomposition_estimator = "mws"
    # A method's own train_step(model, data) and test_step(model, data), or None for the
    # model's: one optimizer step on reconstruction + regulariser.
    train_step = None
    test_step = None

    def __init__(self, **values):
        for option in self.options:
            setattr(self, option.name, values[option.name])

    @classmethod
    def option(cls, name):
        """The declared :class:`Option` called ``name``, or None."""
        return next((option for option in cls.options if option.name == name), None)

    @classmethod
    def check_training(cls, options, batch_size, replicas=1):
        """Raises ValueError (one line) for a batch size, or a number of replicas of a
        tf.distribute strategy, that the method cannot train with."""

    def check_model(self, posterior, prior):
        """Raises ValueError (one line) for a posterior or prior the method cannot use."""
        if getattr(self, "kl", None) == "analytic" and (posterior, prior) != ("normal",
                                                                              "normal"):
            raise ValueError("the analytic KL needs a normal posterior and a normal prior")

    def build(self, model):
        """Creates the method's own networks as attributes of ``model`` (none by default)."""

    def compile(self, model):
        """Creates the method's own optimizers as attributes of ``model`` (none by default)."""

    def regulariser(self, model, z, loc, log_scale, terms, step, share):
        """The regulariser of a batch and the method's logged terms.

        Args:
          model: the :class:`tcvae_tf.model.DisentangledVAE`.
          z: float32 [B, D], one posterior sample per image of the replica's rows.
          loc, log_scale: float32 [M, D], the posterior parameters of the global batch (on
            one device B = M: the batch's own).
          terms: the batch's scalar terms so far: ``reconstruction``, ``mi``, ``tc``,
            ``dwkl`` (the decomposition with ``decomposition_estimator``) and ``kl``
            (their sum, the sampled KL).
          step: the optimizer step, a float32 scalar (for warm-ups).
          share: the replica's :class:`tcvae_tf.distribute.ReplicaBatch`: every returned
            term is this replica's part of the global-batch value (``share.mean`` of
            per-image values), which the replicas' sum makes whole.

        Returns:
          A dict with ``regulariser`` (scalar) and any of the method's ``logged`` terms;
          it may replace ``kl`` (the analytic KL).
        """
        raise NotImplementedError

    def kl_term(self, loc, log_scale, terms, share):
        """The batch's KL term: the analytic KL or the sampled one, as ``self.kl`` says."""
        if getattr(self, "kl", "sampled") == "analytic":
            from tcvae_tf import objectives

            return share.mean(objectives.analytic_kl(share.rows(loc), share.rows(log_scale)))
        return terms["kl"]


def kl_option(default="sampled"):
    """The ``kl`` option of the methods whose loss holds the KL term."""
    return Option("kl", str, default, "sampled (log q(z|x) - log p(z) at the sample) or "
                  "analytic KL", choices=KL_KINDS)
