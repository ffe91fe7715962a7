"""Training runs: configuration, the training loop, checkpoints, resume and fault handling.

``train(config)`` runs (or resumes) a run in a run folder (see :mod:`tcvae_tf.runs` for
what the folder holds); the CLI is a thin shell over it.

Every random draw of training is a function of (seed, step): the batch order
(stateless shuffles of the image indices) and the posterior noise (stateless normals
seeded with (seed, step)). A run stopped at a checkpoint and resumed, on this machine or
another, therefore reproduces the uninterrupted run's history exactly.
"""

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import sys
import tempfile
import time

from tcvae_tf import choices, distribute, methods, runs

# Run-folder names, kept here for code written against earlier versions.
CONFIG_FILE = runs.CONFIG_FILE
HISTORY_FILE = runs.HISTORY_FILE
CHECKPOINT_FILE = runs.CHECKPOINT_FILE
MODEL_FILE = runs.MODEL_FILE
SAMPLES_FILE = runs.SAMPLES_FILE
PRECISIONS = choices.PRECISIONS

# A run that cannot start or continue; the message is one line for the user.
TrainingError = runs.RunError


class NonFiniteLoss(TrainingError):
    """The loss became NaN or infinite. Resuming from the last checkpoint with the same
    seed replays the same batches and noise, so it fails at the same step again."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the run's config.json).

    The defaults are the authors' dSprites recipe: MLP, 10 latents, Adam 1e-3,
    batch 2048, 50 epochs, beta-TCVAE with MWS. ``options`` are the method's own (see
    :mod:`tcvae_tf.methods`); missing ones, and ``batch_size`` and ``lr`` when None, take
    the method's defaults.
    """

    dataset: str = "dsprites"
    objective: str = "tcvae"
    options: dict | None = None
    arch: str = "mlp"
    latent_dim: int = 10
    batch_size: int | None = None
    lr: float | None = None
    epochs: float | None = 50
    steps: int | None = None
    seed: int = 0
    source: str = "auto"
    data_path: str | None = None
    subset: int | None = None
    precision: str = "fp32"
    jit_compile: str = "auto"
    checkpoint_every: int = 500
    keep_every: int | None = None
    out: str | None = None

    def __post_init__(self):
        self.options = dict(self.options or {})
        if self.objective in methods.METHODS:
            self.options = {**methods.default_options(self.objective), **self.options}
            for name in ("batch_size", "lr"):
                if getattr(self, name) is None:
                    setattr(self, name, methods.training_default(self.objective, name))

    @classmethod
    def from_dict(cls, record):
        """The TrainConfig of a run's stored ``train`` record, of any version (older ones
        hold the method options flat, see ``methods.split_record``)."""
        objective, options = methods.split_record(record)
        fields = {key: value for key, value in record.items()
                  if key in cls.__dataclass_fields__}
        return cls(**{**fields, "objective": objective, "options": options})

    def validate(self):
        """Raises ValueError with a one-line message for any impossible setting."""
        method = methods.get(self.objective)
        self.options = methods.resolve_options(self.objective, self.options)
        named = {
            "arch": choices.ARCHITECTURES, "precision": choices.PRECISIONS,
            "jit_compile": choices.JIT_MODES,
        }
        for name, allowed in named.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; "
                                 f"choose one of {', '.join(allowed)}")
        for name in ("lr", "epochs"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        method.check_training(self.options, self.batch_size)
        if self.lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.latent_dim < 1:
            raise ValueError(f"latent dim must be >= 1, got {self.latent_dim}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.steps is None and (self.epochs is None or self.epochs <= 0):
            raise ValueError("give a positive --epochs or --steps")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {self.checkpoint_every}")
        if self.keep_every is not None and (self.keep_every < 1
                                            or self.keep_every % self.checkpoint_every):
            raise ValueError(f"keep-every must be a positive multiple of checkpoint-every "
                             f"({self.checkpoint_every}), got {self.keep_every}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"--subset must be a positive number of images, got {self.subset}")

    def total_steps(self, dataset_size):
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(self.epochs * dataset_size / self.batch_size))

    def default_out(self):
        named = "".join(f"-{key}{value:g}" for key, value in
                        methods.headline(self.objective, self.options).items())
        return os.path.join("runs", f"{self.dataset}-{self.objective}{named}-{self.arch}-"
                                    f"seed{self.seed}")


def library_versions():
    """Versions of the libraries a run depends on (recorded in configs and model cards)."""
    import keras
    import numpy
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tcvae_tf

    return {"tcvae_tf": tcvae_tf.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "tensorflow_probability": tfp.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


# Run-folder functions, kept here for code written against earlier versions.
atomic_save_model = runs.save_model
read_config = runs.read_config
load_model = runs.load_model


def fit_plan(start_step, total_steps, log_every):
    """Splits steps [start_step, total_steps) into Keras ``fit`` calls.

    Keras "epochs" are windows of ``log_every`` steps (window e covers steps
    [e*log_every, (e+1)*log_every)); one call of ``fit`` needs windows of equal length,
    so a resumed partial window and a short last window get calls of their own.

    Returns:
      A list of (initial_epoch, epochs, steps_per_epoch, first_step) tuples.
    """
    plan = []
    step = start_step
    while step < total_steps:
        epoch = step // log_every
        window_end = min((epoch + 1) * log_every, total_steps)
        if step % log_every or window_end - step < log_every:
            plan.append((epoch, epoch + 1, window_end - step, step))
            step = window_end
            continue
        full = (total_steps - step) // log_every
        plan.append((epoch, epoch + full, log_every, step))
        step += full * log_every
    return plan


def _choose_jit(config):
    if config.jit_compile == "on":
        return True
    # "auto": off. Measured on 2-core CPUs, TensorFlow's own (oneDNN) kernels beat XLA for
    # the conv nets (about 4x) and for the MLP at batch 2048 (10-13%); the objective and the
    # Adam update are XLA-compiled on their own either way (see BetaTCVAE.train_step).
    return False


def _set_precision(precision):
    import keras

    if precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    else:
        keras.mixed_precision.set_global_policy("float32")


def format_duration(seconds):
    """'1h02m', '4m05s' or '12s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(step, total_steps, images_per_second, logs=None):
    """One line of training progress: steps out of the total, images/s, the loss, the KL
    and the minibatch estimate of the TC (labelled as such: `tcvae-tf evaluate` reports
    the dataset's)."""
    parts = [f"step {step}/{total_steps}"]
    if images_per_second:
        parts.append(f"{images_per_second:,.0f} img/s")
    logs = logs or {}
    for name, label in (("loss", "loss"), ("kl", "kl"), ("minibatch_tc", "minibatch tc")):
        if name in logs:
            parts.append(f"{label} {float(logs[name]):.4g}")
    return " | ".join(parts)


def _make_callbacks(run_dir, config, start_step, total_steps, verbose, stream, on_window):
    """The callbacks of a run: the window guard (history, checkpoints, snapshots), progress
    output and TensorBoard."""
    import keras
    import numpy as np

    log_every = min(config.checkpoint_every, total_steps)

    class Window(keras.callbacks.Callback):
        """Counts steps, stops on a non-finite loss and closes each checkpoint window.

        A window's end appends the history row, then writes the checkpoint (and the
        snapshot when one is due): a resumed run truncates the history to its checkpoint,
        so a crash between the two writes neither loses nor repeats a row (an interruption
        closes the part of the window it ran the same way, see ``_close_part_window``).
        Progress goes to ``stream``: one redrawn line on a terminal, one plain line per
        window otherwise.
        """

        def __init__(self):
            super().__init__()
            self.step = start_step
            self.interactive = verbose and hasattr(stream, "isatty") and stream.isatty()
            self.drawn = False
            self._reset_clock()

        def _reset_clock(self):
            self.window_start = time.perf_counter()
            self.window_first_step = self.step
            self.last_draw = 0.0

        def images_per_second(self):
            elapsed = time.perf_counter() - self.window_start
            steps = self.step - self.window_first_step
            return steps * config.batch_size / elapsed if steps and elapsed > 0 else None

        def line(self, logs):
            rate = self.images_per_second()
            text = progress_line(self.step, total_steps, rate, logs)
            if rate:
                eta = (total_steps - self.step) * config.batch_size / rate
                text += f" | ETA {format_duration(eta)}"
            return text

        def on_epoch_begin(self, epoch, logs=None):
            self._reset_clock()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                kept = (f"the last good checkpoint is kept in "
                        f"{os.path.join(run_dir, CHECKPOINT_FILE)}"
                        if runs.has_checkpoint(run_dir) else "no checkpoint was written yet")
                self.end_line()
                raise NonFiniteLoss(f"non-finite loss ({float(loss)}) at step {self.step}; "
                                    f"{kept}")
            now = time.perf_counter()
            if self.interactive and now - self.last_draw > 0.5:
                self.last_draw = now
                stream.write("\r\033[K" + self.line(logs))
                stream.flush()
                self.drawn = True

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            runs.append_history(run_dir, self.step, logs)
            runs.save_checkpoint(self.model, run_dir)
            if config.keep_every and self.step % config.keep_every == 0:
                runs.save_snapshot(self.model, run_dir, self.step)
            rate = self.images_per_second()
            if verbose:
                if self.interactive:
                    stream.write("\r\033[K" + self.line(logs) + "\n")
                    self.drawn = False
                else:
                    stream.write(self.line(logs) + "\n")
                stream.flush()
            if on_window is not None:
                on_window(step=self.step, total_steps=total_steps, images_per_second=rate,
                          logs=logs)

        def end_line(self):
            """Ends a redrawn progress line so that a message starts on a line of its own."""
            if self.drawn:
                stream.write("\n")
                stream.flush()
                self.drawn = False

    class TensorBoard(keras.callbacks.TensorBoard):
        """Keras's TensorBoard callback, with the per-step summaries at the run's step:
        Keras counts the batches of each ``fit`` call from 0, and a resumed run (or a
        window of another length) is a call of its own."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self._pop_writer()
            self._global_train_batch = int(self.model.optimizer.iterations.numpy())
            self._push_writer(self._train_writer, self._global_train_batch)

    return Window(), [
        TensorBoard(os.path.join(run_dir, runs.TENSORBOARD_DIR),
                    update_freq=max(1, min(100, log_every))),
    ]


def write_samples(model, images, path, seed=0):
    """Writes a PNG: rows of inputs, their reconstructions and samples from the prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    loc, _ = model.encode(images)
    recon = tf.sigmoid(model.decode(loc)).numpy()
    prior = tf.random.stateless_normal((images.shape[0], model.latent_dim), seed=[seed, 1])
    samples = tf.sigmoid(model.decode(prior)).numpy()
    rows = [("input", images.numpy()), ("reconstruction", recon), ("prior sample", samples)]
    n = images.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0))
    for r, (label, batch) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(batch[c, :, :, 0] if batch.shape[-1] == 1 else batch[c], cmap="gray",
                      vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    runs.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def resolve_run(config, resume=False, overwrite=False):
    """The run folder and the config to run (a resumed run's stored config wins).

    Needs no TensorFlow: the CLI calls it before TensorFlow loads, so that a bad option,
    a folder that already holds a run or nothing to resume is a one-line error at once.

    Raises:
      TrainingError: nothing to resume, or a run in the way (without ``overwrite``).
      ValueError: an impossible setting.
    """
    run_dir = config.out or config.default_out()
    has_run = runs.is_run(run_dir)
    if resume:
        if not has_run:
            raise TrainingError(f"nothing to resume: {run_dir} holds no run")
        stored = runs.read_config(run_dir)["train"]
        # The stored run wins; only a new length (--steps or --epochs) is taken over.
        if config.steps is not None:
            stored.update(steps=config.steps, epochs=None)
        elif config.epochs is not None and config.epochs != stored.get("epochs"):
            stored.update(epochs=config.epochs, steps=None)
        config = TrainConfig.from_dict(stored)
    elif has_run and not overwrite:
        raise TrainingError(f"{run_dir} already holds a run; use --resume to continue it or "
                            f"--overwrite to start again")
    config.out = run_dir
    config.validate()
    from tcvae_tf.data.registry import known_size

    size = known_size(config.dataset)
    if size is not None:
        if not resume:
            _check_subset_fits(config, size, config.dataset)
        _check_batch_fits(config, min(size, config.subset or size), config.dataset)
    return run_dir, config


def _check_batch_fits(config, num_images, name):
    if config.batch_size > num_images:
        raise TrainingError(f"batch size {config.batch_size} exceeds the {num_images} images "
                            f"of {name}; give --batch-size {num_images} or less")


def _check_subset_fits(config, num_images, name):
    # Only new runs are checked: a run written before this check may store a larger subset,
    # which has always meant every image, and it resumes as it trained.
    if config.subset is not None and config.subset > num_images:
        raise TrainingError(f"--subset {config.subset} exceeds the {num_images} images of "
                            f"{name}; give --subset {num_images} or less")


def _load_training_data(config, echo, new_run=True):
    from tcvae_tf import data as data_lib

    dataset = data_lib.load_dataset(config.dataset, source=config.source,
                                    path=config.data_path, log=echo)
    if new_run:
        _check_subset_fits(config, dataset.num_images, dataset.name)
    if config.subset is not None and config.subset < dataset.num_images:
        import numpy as np

        rng = np.random.default_rng(config.seed)
        dataset = dataset.subset(np.sort(rng.choice(dataset.num_images, config.subset,
                                                    replace=False)))
    echo(f"data: {dataset.name} ({dataset.source}), {dataset.num_images} images")
    _check_batch_fits(config, dataset.num_images, dataset.name)
    return dataset


def build_model(config, dataset):
    """A new, compiled model of ``config``'s method for ``dataset`` (under the current
    strategy's scope when there is one)."""
    import keras

    from tcvae_tf.model import DisentangledVAE

    model = DisentangledVAE(
        latent_dim=config.latent_dim, arch=config.arch, image_shape=dataset.image_shape,
        objective=config.objective, options=config.options, dataset_size=dataset.num_images,
        seed=config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.lr), jit_compile=_choose_jit(config))
    return model


def train(config, resume=False, overwrite=False, verbose=1, echo=print, stream=None,
          on_window=None, strategy=None):
    """Runs (or resumes) a training run described by ``config``.

    Args:
      config: a TrainConfig.
      resume: continue the run in ``config.out`` from its last checkpoint (its stored
        config wins, except for the number of steps/epochs to reach).
      overwrite: start afresh in a folder that already holds a run; everything the old
        run wrote is deleted first.
      verbose: 0 for no progress output; otherwise progress goes to ``stream``.
      echo: where to print one-line status messages.
      stream: where progress goes (default: standard output); on a terminal it is one
        redrawn line, elsewhere one plain line per checkpoint window.
      on_window: optional callable(step=, total_steps=, images_per_second=, logs=) called
        after each checkpoint window (sweeps report progress through it).
      strategy: None (one device), or a `tf.distribute` strategy from
        `tcvae_tf.distribute.make_strategy`: the model is built under its scope, each of
        its R replicas trains on M / R images of every global batch of M, and one step
        equals the one-device step. Only the chief writes the run folder (other workers
        write to a temporary folder they delete); a run resumes with any number of
        replicas that divides the batch.

    Returns:
      The run folder.

    Raises:
      TrainingError, ValueError, OSError: with one-line messages. A run that fails
      before its first checkpoint leaves nothing behind that blocks a rerun.
    """
    chief = distribute.is_chief(strategy)
    # Only the chief refuses a folder that holds a run: it may be the chief's own, just begun.
    run_dir, config = resolve_run(config, resume, overwrite or not chief)
    stream = sys.stdout if stream is None else stream
    distribute.check_batch_size(config.batch_size, strategy)
    methods.get(config.objective).check_training(config.options, config.batch_size,
                                                 distribute.num_replicas(strategy))
    if not chief:
        # Other workers run the same steps (they take part in every collective) but write
        # their copy of the run to a folder of their own, deleted at the end.
        with tempfile.TemporaryDirectory(prefix="tcvae-tf-worker-") as scratch:
            return _train(config, resume, overwrite, 0, lambda message: None, stream, None,
                          strategy, run_dir=run_dir, write_dir=os.path.join(scratch, "run"))
    return _train(config, resume, overwrite, verbose, echo, stream, on_window, strategy,
                  run_dir=run_dir, write_dir=run_dir)


def _train(config, resume, overwrite, verbose, echo, stream, on_window, strategy, run_dir,
           write_dir):
    """`train` once the run folder is known: reads from ``run_dir``, writes ``write_dir``."""
    import keras
    import numpy as np
    import tensorflow as tf

    if write_dir != run_dir and resume and runs.has_checkpoint(run_dir):
        os.makedirs(os.path.dirname(os.path.join(write_dir, CHECKPOINT_FILE)))
        shutil.copy(os.path.join(run_dir, CHECKPOINT_FILE),
                    os.path.join(write_dir, CHECKPOINT_FILE))
    run_dir = write_dir
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    stale = runs.remove_temporaries(run_dir)
    if stale:
        echo(f"removed {len(stale)} unfinished temporary file(s) of an interrupted write")
    dataset = _load_training_data(config, echo, new_run=not resume)
    total_steps = config.total_steps(dataset.num_images)

    _set_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    fresh = not (resume and runs.has_checkpoint(run_dir))
    if not fresh:
        with scope:
            model = runs.load_model(run_dir, prefer_checkpoint=True)
        start_step = int(model.optimizer.iterations.numpy())
        finished = os.path.isfile(os.path.join(run_dir, MODEL_FILE))
        if finished and start_step >= total_steps:
            # Saving the model again would change model.keras's bytes, and metrics.json
            # would no longer pass for its results.
            echo(f"{run_dir} already reached step {start_step} of {total_steps}; "
                 f"nothing to train, the run is left as it is")
            return run_dir
        runs.truncate_history(run_dir, start_step)
        echo(f"resuming {run_dir} at step {start_step}")
        if finished:
            removed = runs.remove_results(run_dir)
            echo(f"the run finished at step {start_step} now trains to step {total_steps}: "
                 f"removed its {', '.join(removed)} ({CHECKPOINT_FILE} holds the same "
                 f"weights)")
    else:
        if resume:
            echo(f"{run_dir} has no checkpoint yet; starting at step 0")
        with scope:
            model = build_model(config, dataset)
        start_step = 0
        if runs.is_run(run_dir):  # --overwrite, or a resumed run that never checkpointed
            runs.clear(run_dir)
    created = not os.path.isdir(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    record = {
        "train": dataclasses.asdict(config),
        "data": dataset.describe(),
        "total_steps": total_steps,
        "jit_compile": bool(_choose_jit(config)),
        "distribution": distribute.describe(strategy),
        "library_versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    runs.write_config(run_dir, record)

    try:
        _fit(model, dataset, config, run_dir, start_step, total_steps, verbose, stream,
             on_window, echo, strategy)
    except BaseException:
        if fresh and not runs.has_checkpoint(run_dir):
            # Nothing worth keeping, and nothing may block a rerun.
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                runs.remove_training_files(run_dir)
        raise
    runs.save_model(model, os.path.join(run_dir, MODEL_FILE))
    sample_images = dataset.images[np.random.default_rng(config.seed).choice(
        dataset.num_images, 8, replace=False)]
    write_samples(model, tf.convert_to_tensor(sample_images), os.path.join(run_dir, SAMPLES_FILE),
                  seed=config.seed)
    echo(f"run saved in {run_dir}")
    return run_dir


def _fit(model, dataset, config, run_dir, start_step, total_steps, verbose, stream, on_window,
         echo, strategy=None):
    """Trains from ``start_step`` to ``total_steps`` in checkpoint windows."""
    if start_step >= total_steps:
        echo(f"{run_dir} already reached step {start_step} of {total_steps}")
        return
    window, callbacks = _make_callbacks(run_dir, config, start_step, total_steps, verbose,
                                        stream, on_window)
    try:
        for initial_epoch, epochs, steps_per_epoch, first_step in fit_plan(
                start_step, total_steps, min(config.checkpoint_every, total_steps)):
            # Batch order is a function of the step, so each call picks up exactly
            # where the previous one (or the interrupted run) stopped.
            # Under a strategy, each replica gets its rows of the same global batches.
            batches = distribute.distribute_batches(
                strategy, lambda first_step=first_step: dataset.as_tf_dataset(
                    config.batch_size, shuffle=True, seed=config.seed, start_batch=first_step),
                config.batch_size)
            model.fit(batches, initial_epoch=initial_epoch, epochs=epochs,
                      steps_per_epoch=steps_per_epoch, verbose=0, shuffle=False,
                      callbacks=[window, *callbacks])
    except KeyboardInterrupt:
        window.end_line()
        step = int(model.optimizer.iterations.numpy())
        if step > 0:
            _close_part_window(model, run_dir, start_step, step)
            runs.save_checkpoint(model, run_dir)
            raise TrainingError(f"interrupted at step {step}; checkpoint saved, continue "
                                f"with --resume --out {run_dir}") from None
        raise TrainingError("interrupted before the first step; nothing was saved") from None
    except distribute.collective_errors() as error:
        if strategy is None:
            raise
        window.end_line()
        raise TrainingError(distribute.collective_failure(error, run_dir)) from None
    runs.save_checkpoint(model, run_dir)


def _close_part_window(model, run_dir, start_step, step):
    """Appends the history row of a window that an interruption cut at ``step``, before
    its checkpoint: each row then holds the means over the steps since the row before.

    The trackers, reset when the window began, count every step the optimizer took (a
    Ctrl-C lands after the step that was running, before the callbacks see it), so the
    row holds what a row at the window's end holds: ``Model.get_metrics_result()``.
    Nothing is written when no step ran since ``start_step`` or the last row is at
    ``step`` already.
    """
    rows = runs.read_history(run_dir)
    if step > start_step and (not rows or rows[-1]["step"] < step):
        runs.append_history(run_dir, step, model.get_metrics_result())
