"""``tcvae-tf zoo``: list, show, verify and serve published models (over :mod:`tcvae_tf.zoo`)."""

import json

import click

_ROOT_HELP = "Zoo folder [env TCVAE_TF_ZOO; default: the repository's zoo/, else ./zoo]."


def _zoo_root_option(command):
    # No envvar here: the group and each subcommand take the option, and an environment
    # value read by the subcommand's copy would win over the group's flag.
    # zoo.resolve_root reads $TCVAE_TF_ZOO when neither flag is given.
    return click.option("--zoo-root", default=None,
                        type=click.Path(file_okay=False), help=_ROOT_HELP)(command)


def _zoo_root(ctx, zoo_root):
    """The subcommand's --zoo-root, else the group's, else $TCVAE_TF_ZOO, else the default."""
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
    from tcvae_tf import methods

    columns = ("name", "versions", "latest", "dataset", "objective", "options", "arch",
               "latent_dim", "mig")
    table = [[column.upper() for column in columns]]
    for row in rows:
        cells = []
        for column in columns:
            if column == "versions":
                cells.append(",".join(str(v) for v in row["versions"]))
            elif column == "options":
                cells.append(methods.format_options(row["options"]) or "-")
            else:
                cells.append(_format_value(row[column]))
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


# Sections of a metrics.json that describe the evaluation rather than measure the model.
_METRIC_CONTEXT = ("model", "data", "factors", "settings", "notes", "seconds", "date",
                   "library_versions")


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_rows(metrics):
    """(label, value) rows of a card's metrics: the table `tcvae-tf evaluate` prints.

    Metrics of another layout fall back to the numbers of each section, one level deep
    (timings, settings and seeds left out).
    """
    from tcvae_tf import evaluation

    try:
        rows = evaluation.summary_rows(metrics)
    except (KeyError, TypeError, ValueError, AttributeError):
        rows = []
    if rows:
        return rows
    for key, value in metrics.items():
        if key in _METRIC_CONTEXT:
            continue
        if _is_number(value):
            rows.append((key, _format_value(float(value))))
        elif isinstance(value, dict):
            rows += [(f"{key} {item}", _format_value(float(number)))
                     for item, number in value.items() if _is_number(number)]
    return rows


def _table(rows, indent="  ", align_right=False):
    """Aligned "label  value" lines (values right-aligned in their column if asked)."""
    width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows) if align_right else 0
    return [f"{indent}{label:<{width}}  {value:>{value_width}}".rstrip() for label, value in rows]


def _objective_text(model):
    """'beta-TCVAE (tcvae): alpha=1, beta=6, ...' from a card's model part (any version)."""
    from tcvae_tf import methods
    from tcvae_tf import zoo as zoo_lib

    objective, options = zoo_lib.model_options(model)
    method = methods.METHODS.get(objective)
    title = f"{method.title} ({objective})" if method else str(objective)
    return f"{title}: {methods.format_options(options)}" if options else title


def _training_text(entry):
    config = entry.get("config") or {}
    train = config.get("train") or {}
    length = (f"{config['total_steps']} steps" if config.get("total_steps") is not None
              else f"{train['steps']} steps" if train.get("steps") is not None
              else f"{train.get('epochs')} epochs")
    subset = f", a subset of {train['subset']} images" if train.get("subset") else ""
    return f"batch {train.get('batch_size')}, lr {train.get('lr')}, {length}{subset}"


def _study_lines(study):
    """The card's study: which trial this model is, and the group's mean +/- sd (n)."""
    group = ", ".join(f"{key} {value}" for key, value in (study.get("group") or {}).items())
    where = f" ({study['path']})" if study.get("path") else ""
    lines = ["", f"study {study.get('name')}{where}: trial {study.get('trial')}, seed "
                 f"{study.get('seed')}; over the study's {group or 'trials'}:"]
    rows = []
    for column, summary in (study.get("group_statistics") or {}).items():
        sd = summary.get("sd")
        spread = f" +/- {_format_value(sd)}" if sd is not None else ""
        this = (study.get("this_trial") or {}).get(column)
        rows.append((column, f"{_format_value(summary['mean'])}{spread} (n={summary['n']}); "
                             f"this model {_format_value(this) if this is not None else '-'}"))
    return lines + (_table(rows) if rows else [])


@zoo.command()
@click.argument("name")
@click.option("--version", "version", default=None, type=click.IntRange(min=1),
              help="Version to show [default: the latest].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the version's full card as JSON (config, metrics, library "
                   "versions, checksums).")
@_zoo_root_option
@click.pass_context
def show(ctx, name, version, as_json, zoo_root):
    """Show the card of model NAME.

    A table of what a user of the model needs: dataset, objective, network, training
    length, parameter counts, the evaluation's headline metrics, the SavedModel folders
    with their signatures and what log_scale means. --json prints everything.
    """
    from tcvae_tf import export
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
    model = entry.get("model") or {}
    params = entry.get("parameters") or {}
    posterior = entry.get("posterior") or {}
    factors = ", ".join(f"{factor} {size}" for factor, size in zip(
        data.get("factor_names") or [], data.get("factor_sizes") or [], strict=False))
    image_shape = "x".join(str(size) for size in entry.get("image_shape") or [])

    def count(value):
        return f"{value:,}" if _is_number(value) else "-"

    lines = [f"{name} version {version} (published: "
             f"{', '.join(str(v) for v in published)}), {entry.get('date')}", ""]
    lines += _table([
        ("dataset", f"{data.get('name')} ({data.get('source')} source), "
                    f"{count(data.get('num_images'))} images {image_shape}"),
        ("factors", factors or "-"),
        ("objective", _objective_text(model)),
        ("network", f"{model.get('arch')}, {entry.get('latent_dim')} latents, "
                    f"{posterior.get('family')} posterior, {model.get('likelihood')} "
                    "likelihood"),
        ("training", _training_text(entry)),
        ("parameters", f"{count(params.get('total'))} (encoder "
                       f"{count((params.get('encoder') or {}).get('total'))}, decoder "
                       f"{count((params.get('decoder') or {}).get('total'))})"),
        ("run", str(entry.get("run"))),
    ])
    metrics = entry.get("metrics") or {}
    rows = _metric_rows(metrics) if metrics else []
    lines += ["", "metrics"]
    lines += (_table(rows, align_right=True) if rows
              else ["  none (the run was not evaluated before export)"])
    study = entry.get("study")
    if study:
        lines += _study_lines(study)
    lines.append("")
    signature_rows = []
    for network, signature in (entry.get("signatures") or {}).items():
        inputs = ", ".join(f"{key} {export.expected_shape_text(value['shape'])}"
                           for key, value in signature["inputs"].items())
        signature_rows += [(network, str(root / name / network / str(version))),
                           ("", f"{inputs} -> {', '.join(signature['outputs'])}")]
    if posterior.get("log_scale"):
        signature_rows.append(("log_scale", posterior["log_scale"]))
    lines += _table(signature_rows) if signature_rows else []
    lines += ["", f"Everything else (config, library versions, checksums): "
                  f"tcvae-tf zoo show {name} --json"]
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


@zoo.command(name="update-metrics")
@click.argument("name")
@click.option("--version", "version", default=None, type=click.IntRange(min=1),
              help="Version whose card gets the metrics [default: the latest].")
@click.option("--from", "source", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The JSON written by `tcvae-tf evaluate NAME --version V --json FILE`.")
@click.option("--replace", is_flag=True,
              help="Replace metrics the card already holds (default: keep them).")
@_zoo_root_option
@click.pass_context
def update_metrics(ctx, name, version, source, replace, zoo_root):
    """Add the metrics of an evaluation of NAME to its card.

    Only the metrics in ZOO/NAME/card.json change (and the index's summary); the
    SavedModels and their checksums never do, and the files are verified first. The
    evaluation must be of this zoo model and version, for example:

    \b
        tcvae-tf evaluate NAME --version 1 --metric all --json m.json
        tcvae-tf zoo update-metrics NAME --version 1 --from m.json
    """
    from tcvae_tf import zoo as zoo_lib

    root = _zoo_root(ctx, zoo_root)
    try:
        with open(source) as handle:
            metrics = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        _fail(f"cannot read {source}: {error}")
    try:
        report = zoo_lib.update_metrics(name, metrics, version=version, root=root,
                                        replace=replace)
    except (zoo_lib.ZooError, ValueError, OSError) as error:
        _fail(error)
    label = f"{name} v{report['version']}"
    for status in ("added", "replaced"):
        if report[status]:
            click.echo(f"{label}: {status} {', '.join(report[status])}")
    if report["kept"]:
        click.echo(f"{label}: kept {', '.join(report['kept'])} (already in the card; "
                   f"--replace replaces them)")
    if not report["added"] and not report["replaced"]:
        click.echo(f"{label}: card unchanged")
