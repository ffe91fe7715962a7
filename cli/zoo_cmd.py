"""``tcvae-tf zoo``: list, show, verify and serve published models (over :mod:`tcvae_tf.zoo`)."""

import json

import click

_ROOT_HELP = "Zoo folder [env TCVAE_TF_ZOO; default: the repository's zoo/, else ./zoo]."


def _zoo_root_option(command):
    return click.option("--zoo-root", default=None, envvar="TCVAE_TF_ZOO",
                        type=click.Path(file_okay=False), help=_ROOT_HELP)(command)


def _zoo_root(ctx, zoo_root):
    """The subcommand's --zoo-root, else the group's, else the default."""
    from tcvae_tf import zoo

    return zoo.resolve_root(zoo_root or (ctx.obj or {}).get("zoo_root"))


def _fail(error):
    message = str(error).strip().splitlines()
    raise click.ClickException(message[0] if message else type(error).__name__) from None


@click.group()
@_zoo_root_option
@click.pass_context
def zoo(ctx, zoo_root):
    """List, inspect, verify and serve the model zoo.

    The zoo uses TF Serving's layout: ZOO/NAME/encoder/VERSION and
    ZOO/NAME/decoder/VERSION hold SavedModels, ZOO/NAME/card.json describes every
    version and ZOO/index.json lists the names and versions.
    """
    ctx.ensure_object(dict)
    ctx.obj["zoo_root"] = zoo_root


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


@zoo.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@_zoo_root_option
@click.pass_context
def list_command(ctx, as_json, zoo_root):
    """List the published models and their versions."""
    from tcvae_tf import zoo as zoo_lib

    root = _zoo_root(ctx, zoo_root)
    try:
        rows = zoo_lib.list_models(root)
    except (ValueError, OSError) as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {root}")
        return
    columns = ("name", "versions", "latest", "dataset", "objective", "beta", "arch",
               "latent_dim", "mig")
    table = [[column.upper() for column in columns]]
    for row in rows:
        table.append([",".join(str(v) for v in row["versions"]) if column == "versions"
                      else _format_value(row[column]) for column in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _scalars(value, prefix=""):
    """Flattens the numbers of a nested metrics dict into (dotted name, number) pairs."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _scalars(item, f"{prefix}{key}.")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield prefix[:-1], value


@zoo.command()
@click.argument("name")
@click.option("--version", "version", default=None, type=click.IntRange(min=1),
              help="Version to show [default: the latest].")
@click.option("--json", "as_json", is_flag=True, help="Print the version's full card as JSON.")
@_zoo_root_option
@click.pass_context
def show(ctx, name, version, as_json, zoo_root):
    """Show the card of model NAME.

    Dataset and source, training settings, metrics, parameter counts, the posterior
    parameterisation, the SavedModel paths and signatures.
    """
    from tcvae_tf import zoo as zoo_lib

    root = _zoo_root(ctx, zoo_root)
    try:
        version = zoo_lib.resolve_version(name, version, root)
        versions = zoo_lib.list_models(root)
        entry = zoo_lib.card_entry(name, version, root)
    except (zoo_lib.ZooError, ValueError, OSError) as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(entry, indent=2))
        return
    published = next(row["versions"] for row in versions if row["name"] == name)
    data = entry.get("dataset") or {}
    train = (entry.get("config") or {}).get("train", {})
    model = entry.get("model", {})
    params = entry.get("parameters", {})
    factors = ", ".join(f"{factor}({size})" for factor, size in zip(
        data.get("factor_names") or [], data.get("factor_sizes") or [], strict=False))
    lines = [
        f"{name} version {version} (published versions: "
        f"{', '.join(str(v) for v in published)}), {entry.get('date')}",
        f"  dataset     {data.get('name')} (source {data.get('source')}), "
        f"{data.get('num_images')} images, factors {factors}",
        f"  model       {model.get('objective')} alpha={model.get('alpha')} "
        f"beta={model.get('beta')} gamma={model.get('gamma')} estimator={model.get('estimator')}"
        f", arch {model.get('arch')}, latent_dim {entry.get('latent_dim')}, "
        f"image_shape {entry.get('image_shape')}, likelihood {model.get('likelihood')}",
        f"  posterior   {entry.get('posterior', {}).get('family')}: log_scale = "
        f"{entry.get('posterior', {}).get('log_scale')}",
        f"  training    batch {train.get('batch_size')}, lr {train.get('lr')}, epochs "
        f"{train.get('epochs')}, steps {train.get('steps')}, seed {train.get('seed')} "
        f"(run {entry.get('run')})",
        f"  parameters  encoder {params.get('encoder', {}).get('total')}, decoder "
        f"{params.get('decoder', {}).get('total')}, total {params.get('total')}",
    ]
    metrics = list(_scalars(entry.get("metrics") or {}))
    lines.append("  metrics     " + (", ".join(f"{k}={_format_value(float(v))}"
                                               for k, v in metrics) if metrics else "none"))
    for network, signature in (entry.get("signatures") or {}).items():
        inputs = ", ".join(f"{k} {v['shape']}" for k, v in signature["inputs"].items())
        outputs = ", ".join(signature["outputs"])
        lines.append(f"  {network:<11} {root / name / network / str(version)}  "
                     f"({'/'.join(signature['signatures'])}: {inputs} -> {outputs})")
    lines.append(f"  files       {len(entry.get('files', {}))} (sha256 in "
                 f"{root / name / zoo_lib.CARD_FILE})")
    click.echo("\n".join(lines))


@zoo.command()
@click.argument("name", required=False)
@click.option("--no-load", is_flag=True,
              help="Only check the registry and checksums, do not load the SavedModels.")
@_zoo_root_option
@click.pass_context
def verify(ctx, name, no_load, zoo_root):
    """Verify checksums and loading of NAME (default: every model).

    Checks the registry (index, cards and version folders agree), the sha256 of every
    file against the card, and loads each SavedModel and calls its signatures on a
    zero batch. Prints every problem (a damaged file is named) and exits non-zero if
    there is any.
    """
    from tcvae_tf import zoo as zoo_lib

    root = _zoo_root(ctx, zoo_root)
    try:
        problems = zoo_lib.verify(name, root, load=not no_load)
        checked = [name] if name else [row["name"] for row in zoo_lib.list_models(root)]
    except (zoo_lib.ZooError, ValueError, OSError) as error:
        _fail(error)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in the zoo at {root}")
    click.echo(f"ok: {len(checked)} model(s) verified in {root}")


@zoo.command(name="serving-config")
@click.option("--base-path-prefix", default=None,
              help="Write base paths under this folder (e.g. /models, where the zoo is mounted "
                   "in a TF Serving container) instead of the zoo's absolute path.")
@click.option("--all-versions", is_flag=True,
              help="Serve every version (default: TF Serving serves the latest).")
@_zoo_root_option
@click.pass_context
def serving_config(ctx, base_path_prefix, all_versions, zoo_root):
    """Print a TF Serving models.config for every model.

    One entry per network, named NAME-encoder and NAME-decoder, with base_path
    ZOO/NAME/encoder (or PREFIX/NAME/encoder) and model_platform "tensorflow".
    """
    from tcvae_tf import zoo as zoo_lib

    root = _zoo_root(ctx, zoo_root)
    try:
        text = zoo_lib.serving_config(root, base_path_prefix=base_path_prefix,
                                      all_versions=all_versions)
    except (ValueError, OSError) as error:
        _fail(error)
    click.echo(text, nl=False)
