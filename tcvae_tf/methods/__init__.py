"""The method registry: every training objective by name, with its declared options.

```none
tcvae      beta-TCVAE   alpha*MI + beta*TC + gamma*DWKL (minibatch estimator of q(z))
betavae    beta-VAE     beta*KL
vae        VAE          KL
factorvae  FactorVAE    KL + gamma*TC (discriminator, density-ratio trick)
dipvae1    DIP-VAE-I    KL + covariance penalty on the posterior means
dipvae2    DIP-VAE-II   KL + covariance penalty on q(z)
```

A new method is one module with a :class:`Method` subclass and one line in ``METHODS``.
Its options reach ``tcvae-tf train`` (one ``--flag`` per option name, shared by the
methods that declare the same name), the run's config.json (``train.options``), the
model's config, the model card and ``zoo list`` from that declaration.

Example:

```python
from tcvae_tf import methods

methods.get("factorvae").title                         # 'FactorVAE'
methods.resolve_options("factorvae", {"gamma": 10})    # every option, defaults filled in
```

Importing this package does not import TensorFlow.
"""

from tcvae_tf.methods.base import BASE_TERMS, KL_KINDS, LOGGED_NAMES, Method, Option
from tcvae_tf.methods.betavae import VAE, BetaVAE
from tcvae_tf.methods.dipvae import DIPVAE1, DIPVAE2
from tcvae_tf.methods.factorvae import FactorVAE
from tcvae_tf.methods.tcvae import BetaTCVAEMethod

__all__ = ["BASE_TERMS", "KL_KINDS", "LOGGED_NAMES", "METHODS", "Method", "Option", "get", "names"]

METHODS = {method.name: method for method in (
    BetaTCVAEMethod, BetaVAE, VAE, FactorVAE, DIPVAE1, DIPVAE2)}

# Training settings a method may give defaults of its own (Method.training_defaults).
TRAINING_DEFAULTS = {"lr": 1e-3, "batch_size": 2048}

# The method options of model configs and run configs written before methods declared
# their options: every objective stored all of them, flat.
LEGACY_KEYS = ("alpha", "beta", "gamma", "estimator", "kl", "beta_warmup_steps",
               "gamma_warmup_steps")


def names():
    """The method names, in registry order."""
    return tuple(METHODS)


def get(name):
    """The :class:`Method` subclass called ``name``.

    Raises:
      ValueError: an unknown name (the message lists the known ones).
    """
    if name not in METHODS:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def option_table():
    """Every option name with the methods that declare it: {name: [(method, Option)]}.

    Names keep the order of their first declaration; a name's declarations share a type.
    """
    table = {}
    for method in METHODS.values():
        for option in method.options:
            table.setdefault(option.name, []).append((method, option))
    return table


def _label(name, flag):
    return "--" + name.replace("_", "-") if flag else name


def not_an_option(objective, name, flag=False):
    """The one-line message for an option that ``objective`` does not take."""
    takers = option_table().get(name)
    if not takers:
        return f"unknown option {_label(name, flag)} for {objective}"
    meanings = {option.help for _, option in takers}
    if len(meanings) == 1:
        who = _join([method.name for method, _ in takers])
    else:
        who = _join([f"{method.name} ({option.help})" for method, option in takers])
    return f"{_label(name, flag)} is an option of {who}, not of {objective}"


def _join(words):
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def resolve_options(objective, given=None, flag=False):
    """Every option of ``objective``: the given values checked, the others defaulted.

    Args:
      objective: a method name.
      given: dict of option values (None values count as not given).
      flag: name options as CLI flags (``--gamma``) in error messages.

    Returns:
      Dict {option name: value} in declaration order.

    Raises:
      ValueError: unknown objective, an option the method does not take (the message
        says which methods take it), or a bad value (negative weight, NaN, unknown choice).
    """
    method = get(objective)
    given = {name: value for name, value in (given or {}).items() if value is not None}
    for name in given:
        if method.option(name) is None:
            raise ValueError(not_an_option(objective, name, flag))
    resolved = {}
    for option in method.options:
        try:
            resolved[option.name] = option.check(given.get(option.name, option.default))
        except ValueError as error:
            message = str(error)
            if not flag or not message.startswith(option.name + " "):
                raise
            raise ValueError(option.flag + message[len(option.name):]) from None
    return resolved


def default_options(objective):
    """The method's options at their defaults."""
    return {option.name: option.default for option in get(objective).options}


def training_default(objective, name):
    """The method's default of a training setting (``lr``, ``batch_size``)."""
    return get(objective).training_defaults.get(name, TRAINING_DEFAULTS[name])


def split_record(record):
    """(objective, options) of a model or run config of any version.

    Configs written since methods declare their options hold ``objective`` and
    ``options``; older ones hold every legacy option flat (``LEGACY_KEYS``), whatever the
    objective: the method's own are kept, the others (which had no effect) dropped.

    Args:
      record: a dict, e.g. a model's ``get_config()``, the ``train`` part of a run's
        config.json, or a model card's ``model`` part.
    """
    objective = record.get("objective") or "tcvae"
    if isinstance(record.get("options"), dict):
        return objective, dict(record["options"])
    method = METHODS.get(objective)
    if method is None:
        return objective, {}
    return objective, {option.name: record[option.name] for option in method.options
                       if record.get(option.name) is not None}


def headline(objective, options):
    """The options that name a model (``zoo list``, run folders): {name: value}."""
    method = METHODS.get(objective)
    if method is None:
        return {}
    return {option.name: options[option.name] for option in method.options
            if option.headline and option.name in options}


def format_options(options):
    """'beta=6, gamma=1' for {"beta": 6.0, "gamma": 1.0}."""
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in options.items())
