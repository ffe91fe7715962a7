"""Entry point of the ``tcvae-tf`` command.

Subcommands live in their own modules and are imported only when invoked, so
``tcvae-tf --help`` answers without importing TensorFlow.
"""

import importlib

import click

from tcvae_tf import __version__

# command name -> (module inside tcvae_tf.cli, attribute, one-line help)
COMMANDS = {
    "data": ("data_cmd", "data", "Inspect ground-truth datasets (source, size, factors, samples)."),
    "train": ("train_cmd", "train", "Train a beta-TCVAE, beta-VAE, FactorVAE, DIP-VAE or VAE."),
    "evaluate": ("evaluate_cmd", "evaluate", "Compute MIG, the ELBO and other metrics of a model."),
    "plot": ("plot_cmd", "plot", "Draw traversals, reconstructions and latent-vs-factor figures."),
    "sweep": ("sweep_cmd", "sweep", "Train and evaluate a grid of settings (seeds, betas, ...) "
                                    "on Ray Tune."),
    "export": ("export_cmd", "export", "Export a run's encoder and decoder as SavedModels."),
    "zoo": ("zoo_cmd", "zoo", "List, inspect, verify and serve the model zoo."),
}


class LazyGroup(click.Group):
    """A Click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, cmd_name):
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        module = importlib.import_module(f"{__package__}.{module_name}")
        return getattr(module, attribute)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tcvae-tf")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's, absl's and Keras's log lines and warnings (hidden by "
                   "default; a TF_CPP_MIN_LOG_LEVEL set by you also shows them at that level).")
@click.pass_context
def cli(ctx, verbose):
    """tcvae-tf: disentangled VAEs (beta-TCVAE) in TensorFlow/Keras.

    Train with `tcvae-tf train dsprites --beta 6`, measure with `tcvae-tf evaluate RUN`,
    export with `tcvae-tf export RUN --name NAME` and browse models with `tcvae-tf zoo list`.
    """
    from .quiet import third_party_output_quieted

    ctx.with_resource(third_party_output_quieted(verbose=verbose))


if __name__ == "__main__":
    cli()
