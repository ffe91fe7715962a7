"""``tcvae-tf sweep``: a thin shell over :func:`tcvae_tf.sweep.run`.

The command takes every option of ``tcvae-tf train`` (fixed for all trials) plus
``--grid NAME=V1,V2,...`` over any of them; values are converted and checked by the train
option's own type before anything runs.
"""

import click

from tcvae_tf.cli.train_cmd import RUN_CONTROL_OPTIONS, config_from_options
from tcvae_tf.cli.train_cmd import train as train_command

TRAIN_OPTIONS = {param.name: param for param in train_command.params
                 if isinstance(param, click.Option) and param.name not in RUN_CONTROL_OPTIONS}


def _option_by_grid_name(name):
    key = name.strip().lstrip("-").replace("-", "_")
    if key in TRAIN_OPTIONS:
        return TRAIN_OPTIONS[key]
    for param in TRAIN_OPTIONS.values():
        if f"--{name.strip().lstrip('-')}" in param.opts:
            return param
    names = ", ".join(sorted(opt.lstrip("-") for p in TRAIN_OPTIONS.values() for opt in p.opts))
    raise click.BadParameter(f"unknown option {name!r}; sweepable: {names}", param_hint="--grid")


def parse_grid(specs, ctx=None):
    """``["objective=tcvae,betavae", "seed=0,1,2"]`` -> {"objective": [...], "seed": [0, 1, 2]}.

    Values are converted by the train option's own type (so ``--grid seed=x`` fails here).
    """
    grid = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{spec!r} is not NAME=V1,V2,...", param_hint="--grid")
        param = _option_by_grid_name(name)
        if param.name in grid:
            raise click.BadParameter(f"{name} is given twice", param_hint="--grid")
        values = [value.strip() for value in text.split(",")]
        if not text.strip() or any(value == "" for value in values):
            raise click.BadParameter(f"{name}: empty value in {spec!r}", param_hint="--grid")
        converted = []
        for value in values:
            try:
                converted.append(param.type.convert(value, param, ctx))
            except click.BadParameter as error:
                raise click.BadParameter(f"{name}={value}: {error.message}",
                                         param_hint="--grid") from None
        grid[param.name] = converted
    return grid


def sweep(dataset, grid, out, address, max_concurrent, cpus_per_trial, gpus_per_trial,
          report, retry_failed, **train_options):
    """Train and evaluate every point of a grid of `train` settings, on Ray Tune.

    Each trial is an ordinary run folder under --out, trained by the same code as
    `tcvae-tf train` and measured by the same code as `tcvae-tf evaluate` (plus the
    histogram MIG of the snapshots that --keep-every keeps). Every other option of
    `train` is fixed for all trials. Run the same command again to resume: finished trials
    are skipped, unfinished ones continue from their last checkpoint. A trial whose loss
    became non-finite is failed at once, not retried (it would fail at the same step
    again), and stays failed on a rerun unless --retry-failed. --out gets
    results.csv, results.json, curves.csv, summary.png and report.md, rewritten after each
    trial; the same command with --report only rewrites them from the run folders as they
    are.

    Example: tcvae-tf sweep dsprites --grid objective=tcvae,betavae --grid seed=0,1,2
    --beta 6 --arch mlp --batch-size 2048 --epochs 50 --out studies/dsprites-beta6
    """
    from tcvae_tf import sweep as sweep_lib
    from tcvae_tf import training

    ctx = click.get_current_context()
    grid = parse_grid(grid, ctx)
    if train_options["epochs"] is None and train_options["steps"] is None:
        train_options["epochs"] = 50
    fixed = {key: value for key, value in train_options.items() if key not in grid}
    try:
        sweep_lib.run(dataset, grid, fixed, out, address=address,
                      max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                      gpus_per_trial=gpus_per_trial, make_config=config_from_options,
                      echo=lambda message: click.echo(message, err=True), report_only=report,
                      retry_failed=retry_failed)
    except (ValueError, OSError, training.TrainingError, sweep_lib.SweepError) as error:
        raise click.ClickException(str(error).splitlines()[0]) from None


_params = [
    click.Argument(["dataset"]),
    click.Option(["--grid"], multiple=True, required=True, metavar="NAME=V1,V2,...",
                 help="Values of one train option (repeat for several; the trials are the "
                      "cross product)."),
    click.Option(["--out"], required=True, type=click.Path(file_okay=False),
                 help="Sweep folder: one run folder per trial, results.csv, summary.png."),
    click.Option(["--address"], default=None,
                 help="Ray cluster to use: auto or ray://HOST:PORT [default: start Ray "
                      "on this machine]."),
    click.Option(["--max-concurrent"], default=None, type=click.IntRange(min=1),
                 help="Trials at once [default: as many as the resources allow]."),
    click.Option(["--cpus-per-trial"], default=None, type=click.IntRange(min=1),
                 help="CPUs per trial [default: all of this machine's when local, 1 on a "
                      "cluster]."),
    click.Option(["--gpus-per-trial"], default=0, show_default=True,
                 type=click.FloatRange(min=0), help="GPUs per trial."),
    click.Option(["--report"], is_flag=True,
                 help="Only rewrite results.csv, results.json, curves.csv, summary.png and "
                      "report.md from the run folders as they are (nothing trains; safe "
                      "while the sweep runs)."),
    click.Option(["--retry-failed"], is_flag=True,
                 help="Also train the trials that failed in a way a retry repeats (a "
                      "non-finite loss), which a rerun otherwise keeps as failed; each "
                      "resumes from its last checkpoint."),
    *TRAIN_OPTIONS.values(),
]
sweep = click.Command("sweep", callback=sweep, params=_params, help=sweep.__doc__)
