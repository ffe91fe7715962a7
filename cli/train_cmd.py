"""``tcvae-tf train``: a thin shell over :func:`tcvae_tf.training.train`."""

import click


def _fail(error):
    raise click.ClickException(str(error).splitlines()[0] if str(error) else repr(error))


def _method_options(command):
    """One option per method option name (see tcvae_tf.methods), in declaration order.

    Every such option defaults to None: a name that several methods declare means what
    the chosen method says, and one the chosen method does not take is refused.
    """
    from tcvae_tf import methods

    for name, takers in reversed(methods.option_table().items()):
        meanings = {}  # (help, default) -> method names
        for method, declared in takers:
            meanings.setdefault((declared.help, _default_text(declared)), []).append(method.name)
        text = "; ".join(f"{'/'.join(names)}: {meaning} [{default}]"
                         for (meaning, default), names in meanings.items())
        option = takers[0][1]
        command = click.option(option.flag, name, default=None, type=option.type,
                               help=text + ".")(command)
    return command


def _default_text(option):
    return f"{option.default:g}" if isinstance(option.default, float) else str(option.default)


def _method_list():
    from tcvae_tf import methods

    return ", ".join(f"{name} ({method.title})" for name, method in methods.METHODS.items())


def _training_default_text(name):
    from tcvae_tf import methods

    by_value = {}
    for method_name in methods.names():
        by_value.setdefault(methods.training_default(method_name, name), []).append(method_name)
    return ", ".join(f"{value:g} for {'/'.join(names)}" for value, names in by_value.items())


@click.command()
@click.argument("dataset")
@click.option("--objective", default="tcvae", show_default=True,
              help=f"The method: {_method_list()}.")
@_method_options
@click.option("--warmup-steps", default=None, type=int,
              help="Shorthand for --beta-warmup-steps and --gamma-warmup-steps (those of "
                   "them that the method takes).")
@click.option("--arch", default="mlp", show_default=True, help="mlp, conv or burgess.")
@click.option("--latent-dim", default=10, show_default=True, type=int,
              help="Number of latent dimensions.")
@click.option("--batch-size", default=None, type=int,
              help=f"Minibatch size [default: {_training_default_text('batch_size')}].")
@click.option("--lr", default=None, type=float,
              help=f"Adam learning rate [default: {_training_default_text('lr')}].")
@click.option("--epochs", default=None, type=float,
              help="Passes over the data (default 50 when --steps is not given).")
@click.option("--steps", default=None, type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--source", default="auto", show_default=True,
              help="Data source: auto, rendered, official or tfds.")
@click.option("--data-path", default=None, type=click.Path(),
              help="The official npz file (source official/auto) or the TFDS data folder "
                   "(source tfds).")
@click.option("--subset", default=None, type=int,
              help="Train on this many randomly chosen images only (quick experiments).")
@click.option("--precision", default="fp32", show_default=True,
              help="fp32, or bf16 (Keras mixed precision, where the CPU/GPU supports it).")
@click.option("--jit", "jit_compile", default="auto", show_default=True,
              help="XLA for the whole step: auto (off: measured faster on CPUs; the objective "
                   "and the Adam update are compiled either way), on or off.")
@click.option("--checkpoint-every", default=500, show_default=True, type=int,
              help="Steps between checkpoints (and history rows).")
@click.option("--keep-every", default=None, type=int,
              help="Also keep the weights every this many steps (a multiple of "
                   "--checkpoint-every) in snapshots/, for MIG-against-steps curves.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run folder [default: runs/DATASET-OBJECTIVE-OPTION-ARCH-seedS, e.g. "
                   "runs/dsprites-tcvae-beta6-mlp-seed0].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start afresh in a folder that holds a run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--strategy", default="auto", show_default=True,
              help="Data parallelism: auto (mirrored over 2+ GPUs, else none), none, mirrored "
                   "(all local GPUs, or --cpu-replicas CPU devices) or multiworker (the workers "
                   "of TF_CONFIG). --batch-size stays the global batch; the step is the "
                   "one-device step.")
@click.option("--cpu-replicas", default=None, type=int,
              help="Without GPUs: split the CPU into this many replicas (mirrored/auto).")
def train(dataset, resume, overwrite, quiet, strategy, cpu_replicas, **options):
    """Train a beta-TCVAE (or beta-VAE, VAE, FactorVAE, DIP-VAE) on DATASET (e.g. dsprites).

    The defaults are the authors' dSprites recipe: `tcvae-tf train dsprites --beta 6`
    trains the MLP with batch 2048 and Adam 1e-3 for 50 epochs. `--objective NAME` picks
    another method; each takes only its own options. A run folder keeps config.json,
    history.csv, TensorBoard logs, checkpoints, model.keras and samples.png.
    """
    import dataclasses
    import os

    from tcvae_tf import distribute, methods, training

    if options["epochs"] is None and options["steps"] is None and not resume:
        options["epochs"] = 50
    try:
        if resume:
            _agree_with_the_resumed_run(dataset, options)
        config = config_from_options(dataset, **options)
        # Everything that needs no TensorFlow is checked before it loads (seconds).
        chief = (strategy != "multiworker"
                 or distribute.parse_tf_config(os.environ.get("TF_CONFIG")).is_chief)
        _, checked = training.resolve_run(dataclasses.replace(config), resume,
                                          overwrite or not chief)
        if cpu_replicas:
            distribute.check_batch_size(checked.batch_size, cpu_replicas)
            methods.get(checked.objective).check_training(checked.options, checked.batch_size,
                                                          cpu_replicas)
        # Before any other TensorFlow work: the CPU split and the collectives come first.
        strategy = distribute.make_strategy(strategy, cpu_replicas)
        training.train(config, resume=resume, overwrite=overwrite, verbose=0 if quiet else 1,
                       echo=lambda message: click.echo(message, err=True), strategy=strategy)
    except (ValueError, OSError, training.TrainingError) as error:
        _fail(error)


def _agree_with_the_resumed_run(dataset, options):
    """--resume continues the stored run as it was configured: its objective unless one is
    given, and an option given on the command line must equal the run's (only --steps and
    --epochs change it). Updates ``options`` in place; raises ValueError (one line)."""
    from click.core import ParameterSource

    from tcvae_tf import runs, training

    out = options.get("out")
    if not out or not runs.is_run(out):
        return  # resolve_run says there is nothing to resume
    stored = training.TrainConfig.from_dict(runs.read_config(out)["train"])
    context = click.get_current_context()
    given = [name for name in options
             if context.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                       ParameterSource.ENVIRONMENT)]
    if "objective" not in given:
        options["objective"] = stored.objective
    config = config_from_options(dataset, **dict(options))
    pairs = [("dataset", dataset, stored.dataset)]
    for name in given:
        if name in (*RUN_CONTROL_OPTIONS, "steps", "epochs", "warmup_steps"):
            continue
        if name in config.options or name in stored.options:
            pairs.append((name, config.options.get(name), stored.options.get(name)))
        else:
            pairs.append((name, getattr(config, name), getattr(stored, name)))
    if "warmup_steps" in given:
        pairs += [(name, config.options[name], stored.options.get(name))
                  for name in WARMUP_OPTIONS if name in config.options]
    flags = {param.name: param.opts[0] for param in context.command.params}
    for name, value, kept in pairs:
        if value != kept:
            flag = flags.get(name, "--" + name.replace("_", "-"))
            raise ValueError(f"{flag} {value} differs from the run's {kept}: --resume continues "
                             f"{out} as configured (only --steps or --epochs change it)")


# Options of `train` that say how to run, not what to train (a sweep sets them itself).
RUN_CONTROL_OPTIONS = ("out", "resume", "overwrite", "quiet", "strategy", "cpu_replicas")


WARMUP_OPTIONS = ("beta_warmup_steps", "gamma_warmup_steps")


def config_from_options(dataset, objective="tcvae", warmup_steps=None, **options):
    """The TrainConfig of `train`'s options (Python names, as Click passes them; None
    means not given).

    Raises:
      ValueError: an unknown dataset or objective, a method option that the objective
        does not take (the message says which methods take it), a bad option value.
    """
    from tcvae_tf import data, methods, training

    if dataset not in data.available_datasets():
        raise ValueError(f"unknown dataset {dataset!r}; choose one of "
                         f"{', '.join(data.available_datasets())}")
    method = methods.get(objective)
    given = {name: options.pop(name) for name in methods.option_table() if name in options}
    if warmup_steps is not None:
        taken = [name for name in WARMUP_OPTIONS if method.option(name) is not None]
        if not taken:
            takers = [name for name, other in methods.METHODS.items()
                      if any(other.option(option) for option in WARMUP_OPTIONS)]
            raise ValueError(f"--warmup-steps is an option of {', '.join(takers)}, "
                             f"not of {objective}")
        for name in taken:
            if given.get(name) is None:
                given[name] = warmup_steps
    method_options = methods.resolve_options(objective, given, flag=True)
    return training.TrainConfig(dataset=dataset, objective=objective, options=method_options,
                                **options)
