"""Training runs: configuration, run folders, checkpoints, resume and fault handling.

A run folder holds::

    config.json            the full TrainConfig, the data source and library versions
    history.csv            one row per logging window (``--log-every`` steps)
    tensorboard/           every loss term, per window and per step
    checkpoints/last.keras weights, optimizer state and step (written atomically)
    model.keras            the final model
    samples.png            reconstructions and prior samples at the end of training

``train(config)`` runs (or resumes) a run; the CLI is a thin shell over it.
"""

import dataclasses
import json
import math
import os
import platform
import time

from tcvae_tf.files import atomic_write, atomic_write_text

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = os.path.join("checkpoints", "last.keras")
MODEL_FILE = "model.keras"
SAMPLES_FILE = "samples.png"
PRECISIONS = ("fp32", "bf16")


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line for the user."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the run's config.json).

    The defaults are the authors' dSprites recipe: MLP, 10 latents, Adam 1e-3,
    batch 2048, 50 epochs, beta-TCVAE with MWS.
    """

    dataset: str = "dsprites"
    objective: str = "tcvae"
    alpha: float = 1.0
    beta: float = 6.0
    gamma: float = 1.0
    estimator: str = "mws"
    kl: str = "sampled"
    arch: str = "mlp"
    latent_dim: int = 10
    batch_size: int = 2048
    lr: float = 1e-3
    epochs: float | None = 50
    steps: int | None = None
    beta_warmup_steps: int = 0
    gamma_warmup_steps: int = 0
    seed: int = 0
    source: str = "auto"
    data_path: str | None = None
    subset: int | None = None
    precision: str = "fp32"
    jit_compile: str = "auto"
    checkpoint_every: int = 500
    out: str | None = None

    def validate(self):
        """Raises ValueError with a one-line message for any impossible setting."""
        from tcvae_tf import architectures, model, objectives

        choices = {
            "objective": model.OBJECTIVES, "estimator": objectives.ESTIMATORS,
            "arch": architectures.ARCHITECTURES, "kl": model.KL_KINDS, "precision": PRECISIONS,
            "jit_compile": ("auto", "on", "off"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; "
                                 f"choose one of {', '.join(allowed)}")
        for name in ("alpha", "beta", "gamma", "beta_warmup_steps", "gamma_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.estimator == "mss" and self.objective == "tcvae" and self.batch_size < 2:
            raise ValueError("the MSS estimator needs a batch size of at least 2")
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

    def total_steps(self, dataset_size):
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(self.epochs * dataset_size / self.batch_size))

    def default_out(self):
        name = f"{self.dataset}-{self.objective}-beta{self.beta:g}-{self.arch}-seed{self.seed}"
        return os.path.join("runs", name)


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


def atomic_save_model(model, path):
    """Saves a Keras model (with optimizer state) to ``path`` through a rename."""
    atomic_write(path, model.save)


def read_config(run_dir):
    """Reads a run's config.json as a dict; raises TrainingError when it is missing."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise TrainingError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise TrainingError(f"{path} is not valid JSON: {error}") from None


def load_model(run_dir, prefer_checkpoint=False):
    """Loads the trained model of a run folder (``model.keras``, else the last checkpoint)."""
    import keras

    from tcvae_tf import model as _model  # noqa: F401  (registers BetaTCVAE)

    candidates = [MODEL_FILE, CHECKPOINT_FILE]
    if prefer_checkpoint:
        candidates.reverse()
    for name in candidates:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return keras.models.load_model(path)
    raise TrainingError(f"{run_dir} holds no model ({MODEL_FILE} or {CHECKPOINT_FILE})")


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


def _append_history(path, step, logs):
    """Appends one row (the step and the window's mean loss terms) to the history CSV."""
    names = sorted(logs)
    new_file = not os.path.isfile(path) or os.path.getsize(path) == 0
    with open(path, "a") as handle:
        if new_file:
            handle.write(",".join(["step", *names]) + "\n")
        handle.write(",".join([str(step), *(f"{float(logs[n]):.6g}" for n in names)]) + "\n")


def _make_callbacks(run_dir, log_every, start_step):
    import keras
    import numpy as np

    class Guard(keras.callbacks.Callback):
        """Stops on a non-finite loss (naming the step) and checkpoints every window."""

        def __init__(self):
            super().__init__()
            self.step = start_step

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                raise TrainingError(
                    f"non-finite loss ({float(loss)}) at step {self.step}; the last good "
                    f"checkpoint is kept in {os.path.join(run_dir, CHECKPOINT_FILE)}")

        def on_epoch_end(self, epoch, logs=None):
            atomic_save_model(self.model, os.path.join(run_dir, CHECKPOINT_FILE))
            _append_history(os.path.join(run_dir, HISTORY_FILE), self.step, logs or {})

    return Guard(), [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"),
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def train(config, resume=False, overwrite=False, verbose=1, echo=print):
    """Runs (or resumes) a training run described by ``config``.

    Args:
      config: a TrainConfig.
      resume: continue the run in ``config.out`` from its last checkpoint (its stored
        config wins, except for the number of steps/epochs to reach).
      overwrite: allow starting afresh in a folder that already holds a run.
      verbose: Keras progress-bar verbosity.
      echo: where to print one-line status messages.

    Returns:
      The run folder.
    """
    run_dir = config.out or config.default_out()
    has_run = os.path.isfile(os.path.join(run_dir, CONFIG_FILE))
    if resume:
        if not has_run:
            raise TrainingError(f"nothing to resume: {run_dir} holds no run")
        stored = read_config(run_dir)["train"]
        # The stored run wins; only a new length (--steps or --epochs) is taken over.
        if config.steps is not None:
            stored.update(steps=config.steps, epochs=None)
        elif config.epochs is not None and config.epochs != stored.get("epochs"):
            stored.update(epochs=config.epochs, steps=None)
        config = TrainConfig(**{k: v for k, v in stored.items()
                                if k in TrainConfig.__dataclass_fields__})
    elif has_run and not overwrite:
        raise TrainingError(f"{run_dir} already holds a run; use --resume to continue it or "
                            f"--overwrite to start again")
    config.out = run_dir
    config.validate()

    import keras
    import numpy as np
    import tensorflow as tf

    from tcvae_tf import data as data_lib
    from tcvae_tf.model import BetaTCVAE

    dataset = data_lib.load_dataset(config.dataset, source=config.source, path=config.data_path,
                                    log=echo)
    if config.subset is not None and config.subset < dataset.num_images:
        rng = np.random.default_rng(config.seed)
        dataset = dataset.subset(np.sort(rng.choice(dataset.num_images, config.subset,
                                                    replace=False)))
    echo(f"data: {dataset.name} ({dataset.source}), {dataset.num_images} images")
    if config.batch_size > dataset.num_images:
        raise TrainingError(f"batch size {config.batch_size} exceeds the "
                            f"{dataset.num_images} images of the dataset")
    total_steps = config.total_steps(dataset.num_images)
    log_every = min(config.checkpoint_every, total_steps)

    _set_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    checkpoint = os.path.join(run_dir, CHECKPOINT_FILE)
    if resume and os.path.isfile(checkpoint):
        model = keras.models.load_model(checkpoint)
        start_step = int(model.optimizer.iterations.numpy())
        echo(f"resuming {run_dir} at step {start_step}")
    else:
        if resume:
            echo(f"{run_dir} has no checkpoint yet; starting at step 0")
        model = BetaTCVAE(
            latent_dim=config.latent_dim, arch=config.arch,
            image_shape=dataset.image_shape, objective=config.objective, alpha=config.alpha,
            beta=config.beta, gamma=config.gamma, estimator=config.estimator,
            dataset_size=dataset.num_images, kl=config.kl,
            beta_warmup_steps=config.beta_warmup_steps,
            gamma_warmup_steps=config.gamma_warmup_steps)
        model.compile(optimizer=keras.optimizers.Adam(config.lr), jit_compile=_choose_jit(config))
        start_step = 0
        if os.path.isdir(run_dir) and overwrite:
            for name in (HISTORY_FILE, CHECKPOINT_FILE, MODEL_FILE, SAMPLES_FILE):
                if os.path.exists(os.path.join(run_dir, name)):
                    os.remove(os.path.join(run_dir, name))
        os.makedirs(run_dir, exist_ok=True)
    record = {
        "train": dataclasses.asdict(config),
        "data": dataset.describe(),
        "total_steps": total_steps,
        "jit_compile": bool(_choose_jit(config)),
        "library_versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(os.path.join(run_dir, CONFIG_FILE), json.dumps(record, indent=2) + "\n")

    remaining = total_steps - start_step
    if remaining <= 0:
        echo(f"{run_dir} already reached step {start_step} of {total_steps}")
    else:
        guard, callbacks = _make_callbacks(run_dir, log_every, start_step)
        try:
            for initial_epoch, epochs, steps_per_epoch, first_step in fit_plan(
                    start_step, total_steps, log_every):
                # Batch order is a function of the step, so each call picks up exactly
                # where the previous one (or the interrupted run) stopped.
                batches = dataset.as_tf_dataset(config.batch_size, shuffle=True,
                                                seed=config.seed, start_batch=first_step)
                model.fit(batches, initial_epoch=initial_epoch, epochs=epochs,
                          steps_per_epoch=steps_per_epoch, verbose=verbose,
                          callbacks=[guard, *callbacks])
        except KeyboardInterrupt:
            atomic_save_model(model, checkpoint)
            raise TrainingError(f"interrupted at step {guard.step}; checkpoint saved, continue "
                                f"with --resume --out {run_dir}") from None
        atomic_save_model(model, checkpoint)
    atomic_save_model(model, os.path.join(run_dir, MODEL_FILE))
    sample_images = dataset.images[np.random.default_rng(config.seed).choice(
        dataset.num_images, 8, replace=False)]
    write_samples(model, tf.convert_to_tensor(sample_images), os.path.join(run_dir, SAMPLES_FILE),
                  seed=config.seed)
    echo(f"run saved in {run_dir}")
    return run_dir
