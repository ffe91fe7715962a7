"""Figures of a trained model: latent traversals, reconstructions, latents versus factors.

- ``traversals``: decode a seed image's posterior mean with one latent swept over
  [-range, range] (prior standard deviations), one row per latent, latents sorted by
  their average KL(q(z_d|x) || p(z_d)) in closed form (normal posterior and prior only);
  optionally an animated GIF of the same sweep.
- ``reconstructions``: inputs above the decoded posterior means.
- ``latent-factors`` (dSprites, the paper's figure 7): for each active latent, its
  posterior mean averaged over the other factors, as a heat map over (pos_x, pos_y) and
  as curves over scale and over orientation, one curve per shape.

```none
KL_d   = mean_n 0.5 * (loc_nd^2 + exp(2 log_scale_nd) - 1) - log_scale_nd
mean_d(v_a, v_b) = mean of loc_nd over the images n with factors (a, b) = (v_a, v_b)
```

Figures are drawn with matplotlib's Agg canvas (no display needed) and written through a
temporary file and a rename. Importing this module imports neither TensorFlow nor
matplotlib.

References:
  Chen, Li, Grosse, Duvenaud. Isolating Sources of Disentanglement in VAEs. NeurIPS 2018.
  Higgins et al. beta-VAE. ICLR 2017 (latent traversals).
"""

import math
import numbers
import os

import numpy as np

from tcvae_tf import evaluation, runs
from tcvae_tf.files import atomic_write

KINDS = ("traversals", "reconstructions", "latent-factors")
FILE_NAMES = runs.PLOT_NAMES
SHAPE_NAMES = ("square", "ellipse", "heart")  # dSprites shape classes 0, 1, 2
DSPRITES_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
ORDER_IMAGES = 10000  # images encoded to sort latents by KL
ACTIVE_THRESHOLD = 0.01  # variance of the posterior mean above which a latent is active
# The kinds that sort latents by the closed-form KL to N(0, 1): refused for models whose
# posterior or prior is not normal.
NORMAL_KINDS = ("traversals",)
DEFAULT_NUM_IMAGES = {"traversals": 3, "reconstructions": 10, "latent-factors": None}
DEFAULT_RANGE, DEFAULT_STEPS = 3.0, 10  # traversal sweep
MAX_FIGURE_TILES = 2048  # images in a traversal or reconstruction figure (~1 GB to draw)
_SEPARATOR = 0.5  # grey between tiles


# -- pure helpers ----------------------------------------------------------------------------


def latent_kl(loc, log_scale):
    """Average analytic KL(q(z_d|x) || Normal(0, 1)) of each latent, for a normal q(z_d|x).

    Args:
      loc: array [N, D], posterior means.
      log_scale: array [N, D], posterior log standard deviations.

    Returns:
      float64 array [D].
    """
    loc = np.asarray(loc, np.float64)
    log_scale = np.asarray(log_scale, np.float64)
    return np.mean(0.5 * (loc * loc + np.exp(2.0 * log_scale) - 1.0) - log_scale, axis=0)


def latent_order(loc, log_scale):
    """Latents sorted by decreasing average KL (ties by index).

    Returns:
      (order, kl): int array [D] and the float64 array [D] of ``latent_kl``.
    """
    kl = latent_kl(loc, log_scale)
    return np.argsort(-kl, kind="stable"), kl


def active_latents(loc, max_latents=None, threshold=ACTIVE_THRESHOLD):
    """Latents whose posterior mean varies, by decreasing variance.

    Args:
      loc: array [N, D], posterior means.
      max_latents: keep at most this many.
      threshold: Var_n(loc_nd) above which latent d is active.

    Returns:
      A list of latent indices; the single most varying latent when none is active.
    """
    variance = np.asarray(loc, np.float64).var(axis=0)
    order = np.argsort(-variance, kind="stable")
    latents = [int(d) for d in order if variance[d] > threshold] or [int(order[0])]
    return latents[:max_latents] if max_latents is not None else latents


def traversal_codes(base, latents, values):
    """Codes of a traversal: each base code with one latent replaced by each value.

    Args:
      base: array [S, D], the codes traversed from (posterior means of seed images).
      latents: L latent indices.
      values: array [T], the values given to the traversed latent.

    Returns:
      float32 array [S, L, T, D]: codes[s, l, t] = base[s] with dimension latents[l] set
      to values[t].
    """
    base = np.asarray(base, np.float32)
    latents = np.asarray(latents, np.int64)
    values = np.asarray(values, np.float32)
    codes = np.broadcast_to(base[:, None, None, :],
                            (len(base), len(latents), len(values), base.shape[1])).copy()
    for position, latent in enumerate(latents):
        codes[:, position, :, latent] = values
    return codes


def grouped_means(values, factor_classes, factor_indices):
    """Mean of per-image values over the images sharing each combination of some factors.

    Averages over every other factor (on a full factorial grid this is the marginal
    average over the other factors' values).

    Args:
      values: array [N] or [N, D].
      factor_classes: integer array [N, K].
      factor_indices: the m factors to group by.

    Returns:
      (means, labels): float64 array [V_1, ..., V_m] (+ [D]) with NaN for combinations no
      image has, and the sorted class labels of each grouping factor.

    Example:
      >>> means, labels = grouped_means(loc, classes, [4, 3])   # [32, 32, D] over (y, x)
    """
    values = np.asarray(values, np.float64)
    factor_classes = np.asarray(factor_classes)
    if len(values) != len(factor_classes):
        raise ValueError(f"{len(values)} values for {len(factor_classes)} rows of factor "
                         f"classes")
    columns, labels = [], []
    for k in factor_indices:
        label, column = np.unique(factor_classes[:, k], return_inverse=True)
        labels.append(label)
        columns.append(column.reshape(-1))
    sizes = tuple(len(label) for label in labels)
    flat = np.ravel_multi_index(columns, sizes)
    cells = math.prod(sizes)
    counts = np.bincount(flat, minlength=cells).astype(np.float64)
    matrix = values.reshape(len(values), -1)
    sums = np.stack([np.bincount(flat, weights=matrix[:, j], minlength=cells)
                     for j in range(matrix.shape[1])], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return means.reshape(*sizes, *values.shape[1:]), labels


def tile_mosaic(tiles, gap=1, block_gap=0, block_size=None):
    """Arranges image tiles [R, C, H, W, ch] on a grid with grey separators.

    Args:
      tiles: array [R, C, H, W, ch] with values in [0, 1].
      gap: pixels between neighbouring tiles.
      block_gap: extra pixels after every ``block_size`` columns.
      block_size: columns per block (None: one block).

    Returns:
      float32 array [R*H + (R-1)*gap, C*W + ..., ch].
    """
    rows, cols, height, width, channels = tiles.shape
    block_size = block_size or cols
    x_offsets = [c * (width + gap) + (c // block_size) * block_gap for c in range(cols)]
    canvas = np.full((rows * (height + gap) - gap, x_offsets[-1] + width, channels), _SEPARATOR,
                     np.float32)
    for r in range(rows):
        y = r * (height + gap)
        for c in range(cols):
            canvas[y:y + height, x_offsets[c]:x_offsets[c] + width] = tiles[r, c]
    return canvas


# -- writing ---------------------------------------------------------------------------------


def _save_figure(figure, path, dpi=100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
    return os.fspath(path)


def _show_image(axis, image):
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")


def _as_float_images(images):
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be an array [B, 64, 64, C], got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("no images to plot")
    return images.astype(np.float32)


def _decode_probs(evaluable, codes, batch_size=1024):
    """sigmoid(decoder logits) for codes [..., D]: array [..., H, W, C] in [0, 1]."""
    import tensorflow as tf

    flat = codes.reshape(-1, codes.shape[-1])
    parts = [tf.sigmoid(evaluable.decode(flat[i:i + batch_size])).numpy()
             for i in range(0, len(flat), batch_size)]
    return np.concatenate(parts).reshape(*codes.shape[:-1], *evaluable.image_shape)


def _check_traversal(value_range, steps):
    if (isinstance(value_range, bool) or not isinstance(value_range, numbers.Real)
            or not math.isfinite(value_range) or value_range <= 0):
        raise ValueError(f"traversal range must be a positive number, got {value_range!r}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 2:
        raise ValueError(f"traversal steps must be an integer >= 2, got {steps!r}")
    return float(value_range), int(steps)


def _check_figure_size(num_images, num_latents=None, steps=None):
    """Refuses a figure of more than ``MAX_FIGURE_TILES`` images (drawing takes ~0.5 MB each):
    reconstructions of ``num_images`` inputs, or a traversal when ``num_latents`` is given."""
    if num_latents is None:
        count, what = 2 * num_images, f"{num_images} inputs and their reconstructions"
    else:
        count = num_images * num_latents * steps
        what = f"{num_images} seed images x {num_latents} latents x {steps} steps"
    if count > MAX_FIGURE_TILES:
        raise ValueError(f"{what} make {count} images, more than the {MAX_FIGURE_TILES} a "
                         f"figure holds: use fewer")


# -- figures ---------------------------------------------------------------------------------


def _mosaic_figure(mosaic, margin_left, margin_bottom, margin_width, margin_height):
    """A figure showing ``mosaic`` at 100 pixels per inch inside margins given in inches."""
    from matplotlib.figure import Figure

    height, width = mosaic.shape[0] / 100, mosaic.shape[1] / 100
    figure = Figure(figsize=(width + margin_width, height + margin_height))
    axis = figure.add_axes([margin_left / (width + margin_width),
                            margin_bottom / (height + margin_height),
                            width / (width + margin_width), height / (height + margin_height)])
    _show_image(axis, mosaic)
    return figure, axis


def plot_traversals(evaluable, images, path, latents=None, kl=None, value_range=3.0, steps=10,
                    title=None):
    """Writes a PNG of latent traversals from seed images.

    One row per latent; one block of ``steps`` columns per seed image, the latent swept over
    linspace(-range, range, steps) while the others keep the image's posterior mean.

    Args:
      evaluable: an ``tcvae_tf.evaluation.Evaluable``.
      images: float or uint8 array [S, 64, 64, C] in [0, 1], the seed images.
      path: PNG to write.
      latents: latent indices, in display order (default: all, by index).
      kl: optional array [D] of per-latent KL shown in the row labels.
      value_range: the sweep covers [-value_range, value_range].
      steps: number of values in the sweep.
      title: figure title (default: a description of the sweep).

    Returns:
      ``path``.
    """

    images = _as_float_images(images)
    latents, values, probs = _traversal_probs(evaluable, images, latents, value_range, steps)
    value_range, steps = float(values[-1]), len(values)
    num_seeds = len(images)
    tiles = probs.transpose(1, 0, 2, 3, 4, 5).reshape(
        len(latents), num_seeds * steps, *evaluable.image_shape)
    mosaic = tile_mosaic(tiles, gap=1, block_gap=8, block_size=steps)

    figure, axis = _mosaic_figure(mosaic, margin_left=1.4, margin_bottom=0.2, margin_width=1.6,
                                  margin_height=0.9)
    tile_h, tile_w = evaluable.image_shape[:2]
    axis.set_yticks([r * (tile_h + 1) + tile_h / 2 for r in range(len(latents))])
    axis.set_yticklabels([f"z{d}" + ("" if kl is None else f"  KL {kl[d]:.2f}")
                          for d in latents], fontsize=8)
    axis.set_xticks([c * (tile_w + 1) + tile_w / 2 for c in range(steps)])
    # enough decimals that neighbouring values differ: 1 for the default sweep, 2 at +/-0.2
    decimals = max(1, -math.floor(math.log10(values[1] - values[0])))
    axis.set_xticklabels([f"{v:+.{decimals}f}" for v in values], fontsize=7)
    axis.xaxis.tick_top()
    for spine in axis.spines.values():
        spine.set_visible(False)
    figure.suptitle(title or (f"{evaluable.name}: each latent swept over [-{value_range:g}, "
                              f"{value_range:g}] from {num_seeds} seed image(s)"
                              + ("; rows sorted by KL" if kl is not None else "")),
                    fontsize=9, x=0.01, ha="left", y=0.995)
    return _save_figure(figure, path)


def _traversal_probs(evaluable, images, latents, value_range, steps):
    """Decodes every seed image with each latent swept: (latents, values, probs [S, L, T, ...])."""
    value_range, steps = _check_traversal(value_range, steps)
    latents = list(range(evaluable.latent_dim)) if latents is None else list(latents)
    _check_figure_size(len(images), len(latents), steps)
    values = np.linspace(-value_range, value_range, steps)
    base = evaluable.encode(images)[0].numpy()
    return latents, values, _decode_probs(evaluable, traversal_codes(base, latents, values))


def write_traversal_gif(evaluable, images, path, latents=None, value_range=3.0, steps=10,
                        frame_ms=120, zoom=2):
    """Writes an animated GIF of traversals: rows are seed images, columns latents.

    Frame t shows every latent set to the t-th value of linspace(-range, range, steps);
    the animation runs forward then back and loops.

    Args:
      evaluable: an ``Evaluable``.
      images: array [S, 64, 64, C] in [0, 1], the seed images.
      path: GIF to write.
      latents: latent indices, in column order (default: all).
      value_range, steps: the sweep, as in ``plot_traversals``.
      frame_ms: duration of a frame in milliseconds.
      zoom: integer upscaling of the pixels.

    Returns:
      ``path``.
    """
    from PIL import Image

    images = _as_float_images(images)
    latents, values, probs = _traversal_probs(evaluable, images, latents, value_range, steps)
    value_range, steps = float(values[-1]), len(values)
    frames = []
    for t in list(range(steps)) + list(range(steps - 2, 0, -1)):
        mosaic = tile_mosaic(probs[:, :, t], gap=2)
        pixels = np.round(np.clip(mosaic, 0.0, 1.0) * 255).astype(np.uint8)
        pixels = pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)
        frames.append(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels))

    def write(tmp):
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(frame_ms), loop=0)

    return atomic_write(path, write)


def plot_reconstructions(evaluable, images, path, per_row=10):
    """Writes a PNG of inputs and their reconstructions from the posterior mean.

    Args:
      evaluable: an ``Evaluable``.
      images: array [n, 64, 64, C] in [0, 1].
      path: PNG to write.
      per_row: images per pair of rows (input row above reconstruction row).

    Returns:
      ``path``.
    """

    images = _as_float_images(images)
    _check_figure_size(len(images))
    loc = evaluable.encode(images)[0].numpy()
    reconstructions = _decode_probs(evaluable, loc)
    count = len(images)
    cols = min(per_row, count)
    pairs = -(-count // cols)
    tiles = np.full((2 * pairs, cols, *evaluable.image_shape), _SEPARATOR, np.float32)
    for i in range(count):
        tiles[2 * (i // cols), i % cols] = images[i]
        tiles[2 * (i // cols) + 1, i % cols] = reconstructions[i]
    mosaic = tile_mosaic(tiles, gap=1)
    figure, axis = _mosaic_figure(mosaic, margin_left=1.2, margin_bottom=0.1, margin_width=1.3,
                                  margin_height=0.5)
    tile_h = evaluable.image_shape[0]
    axis.set_yticks([r * (tile_h + 1) + tile_h / 2 for r in range(2 * pairs)])
    axis.set_yticklabels(["input", "reconstruction"] * pairs, fontsize=8)
    axis.set_xticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    figure.suptitle(f"{evaluable.name}: reconstructions from the posterior mean", fontsize=9,
                    x=0.01, ha="left", y=0.995)
    return _save_figure(figure, path)


def _cell_edges(centres):
    """(first, last) cell edges of evenly spaced cell centres, for ``imshow(extent=...)``."""
    step = (centres[-1] - centres[0]) / (len(centres) - 1) if len(centres) > 1 else 1.0
    return centres[0] - step / 2, centres[-1] + step / 2


def _factor_index(factor_names, name, dataset_name):
    names = [str(n) for n in factor_names]
    if name not in names:
        raise ValueError(f"the latent-factors figure needs the dSprites factors "
                         f"{', '.join(DSPRITES_FACTORS)}; {dataset_name} has {', '.join(names)}")
    return names.index(name)


def plot_latent_factors(loc, factor_classes, factor_values, factor_names, path, latents=None,
                        title=None, dataset_name="the dataset"):
    """Writes the paper's latent-versus-factor figure for dSprites.

    One row per latent: its posterior mean averaged over the other factors as a heat map
    over (pos_x, pos_y) (y downwards, as in the images), and as curves over scale and over
    orientation, one curve per shape.

    Args:
      loc: array [N, D], posterior means of the images (the full grid, or any subset).
      factor_classes: integer array [N, K].
      factor_values: array [N, K], the factor values (axes of the curves).
      factor_names: the K names; must include shape, scale, orientation, pos_x, pos_y.
      path: PNG to write.
      latents: latent indices to show, in order (default: the active latents, those with
        Var(loc_d) > 0.01, by decreasing variance; the most varying one if none is).
      title: figure title.
      dataset_name: used in error messages.

    Returns:
      ``path``.

    Raises:
      ValueError: missing factors or mismatched lengths.
    """
    from matplotlib.figure import Figure

    loc = np.asarray(loc, np.float64)
    factor_classes = np.asarray(factor_classes)
    factor_values = np.asarray(factor_values, np.float64)
    if loc.ndim != 2 or len(loc) == 0:
        raise ValueError(f"loc must be a non-empty array [N, D], got shape {loc.shape}")
    if not len(loc) == len(factor_classes) == len(factor_values):
        raise ValueError(f"{len(loc)} codes, {len(factor_classes)} factor classes and "
                         f"{len(factor_values)} factor values: lengths differ")
    shape, scale, orientation, pos_x, pos_y = (
        _factor_index(factor_names, name, dataset_name) for name in DSPRITES_FACTORS)
    latents = active_latents(loc) if latents is None else [int(d) for d in latents]

    position, _ = grouped_means(loc, factor_classes, [pos_y, pos_x])  # [Y, X, D]
    by_scale, (shapes, _) = grouped_means(loc, factor_classes, [shape, scale])  # [S, V, D]
    by_orientation, _ = grouped_means(loc, factor_classes, [shape, orientation])
    scale_values = grouped_means(factor_values[:, scale], factor_classes, [scale])[0]
    orientation_values = grouped_means(factor_values[:, orientation], factor_classes,
                                       [orientation])[0]
    x_values = grouped_means(factor_values[:, pos_x], factor_classes, [pos_x])[0]
    y_values = grouped_means(factor_values[:, pos_y], factor_classes, [pos_y])[0]
    shape_labels = [SHAPE_NAMES[int(s)] if 0 <= int(s) < len(SHAPE_NAMES) else f"shape {s}"
                    for s in shapes]

    rows = len(latents)
    figure = Figure(figsize=(10.5, 2.3 * rows + 0.6))
    axes = figure.subplots(rows, 3, squeeze=False)
    for row, d in enumerate(latents):
        heat_axis, scale_axis, orientation_axis = axes[row]
        image = heat_axis.imshow(
            position[:, :, d], cmap="viridis", origin="upper", interpolation="nearest",
            extent=(*_cell_edges(x_values), *_cell_edges(y_values)[::-1]),
            aspect="auto")
        figure.colorbar(image, ax=heat_axis, fraction=0.046, pad=0.04)
        heat_axis.set_ylabel(f"z{d}\npos_y", fontsize=9)
        for s, label in enumerate(shape_labels):
            scale_axis.plot(scale_values, by_scale[s, :, d], marker=".", label=label)
            orientation_axis.plot(orientation_values, by_orientation[s, :, d], label=label)
        scale_axis.set_ylabel(f"mean of z{d}", fontsize=8)
        if row == rows - 1:
            heat_axis.set_xlabel("pos_x", fontsize=9)
            scale_axis.set_xlabel("scale", fontsize=9)
            orientation_axis.set_xlabel("orientation (radians)", fontsize=9)
        if row == 0:
            heat_axis.set_title("position (mean over shape, scale, orientation)", fontsize=9)
            scale_axis.set_title("scale (mean over orientation, position)", fontsize=9)
            orientation_axis.set_title("orientation (mean over scale, position)", fontsize=9)
            orientation_axis.legend(fontsize=7, loc="best")
        for axis in axes[row]:
            axis.tick_params(labelsize=7)
    figure.suptitle(title or "posterior means of the latents versus the factors",
                    fontsize=10)
    figure.tight_layout()
    return _save_figure(figure, path)


# -- from a model reference ------------------------------------------------------------------


def default_output(evaluable, kind, extension=".png"):
    """Default figure path: in the run folder, or ``NAME-vVERSION-KIND`` in the cwd for zoo
    models."""
    file_name = FILE_NAMES[kind] + extension
    if evaluable.kind == "run":
        return os.path.join(evaluable.path, file_name)
    return f"{evaluable.name}-v{evaluable.version}-{file_name}"


def make_plot(ref, kind, out=None, value_range=None, steps=None, num_images=None, seed=0,
              gif=False, max_latents=None, zoo_root=None, version=None, source=None,
              data_path=None, batch_size=1024, progress=None, echo=None):
    """Draws one kind of figure of a run or a zoo model.

    Args:
      ref: run folder or zoo model name.
      kind: one of ``KINDS``.
      out: PNG path ending in .png (default: ``default_output``); the GIF goes next to it
        (.gif).
      value_range, steps: traversals only: sweep over [-value_range, value_range] in
        ``steps`` values (default 3 and 10).
      num_images: seed images (traversals, default 3), images shown (reconstructions,
        default 10) or images encoded (latent-factors, default the whole dataset).
      seed: seed of the image choice.
      gif: traversals only: also write an animated GIF.
      max_latents: traversals and latent-factors: show at most this many latents (the
        first by KL or variance).
      zoo_root, version: for zoo models.
      source, data_path: override the training config's data source and file.
      batch_size: images per encoder call.
      progress: optional callable(stage, done, total) for the encoding passes.
      echo: optional callable(str) for one-line messages about the data loading.

    Returns:
      The list of files written.

    Raises:
      ValueError, FileNotFoundError, tcvae_tf.training.TrainingError,
      tcvae_tf.zoo.ZooError: with one-line messages; ValueError before the dataset loads
        for a kind of ``NORMAL_KINDS`` of a model whose posterior or prior is not normal.

    Example:
      >>> make_plot("runs/dsprites-tcvae-beta6-mlp-seed0", "traversals", gif=True)
    """
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    traversal_only = {"GIF": gif or None, "range": value_range, "steps": steps}
    for name, value in traversal_only.items():
        if value is not None and kind != "traversals":
            raise ValueError(f"the {name} option applies to traversals only")
    if max_latents is not None and kind == "reconstructions":
        raise ValueError("the latents option applies to traversals and latent-factors only")
    if out is not None and not os.fspath(out).lower().endswith(".png"):
        raise ValueError(f"{os.fspath(out)}: the figure is a PNG; give a file name ending "
                         f"in .png")
    if kind == "traversals":
        value_range, steps = _check_traversal(
            DEFAULT_RANGE if value_range is None else value_range,
            DEFAULT_STEPS if steps is None else steps)
    if num_images is None:
        num_images = DEFAULT_NUM_IMAGES[kind]
    if num_images is not None and (isinstance(num_images, bool) or int(num_images) != num_images
                                   or num_images < 1):
        raise ValueError(f"number of images must be a positive integer, got {num_images!r}")
    if max_latents is not None and (int(max_latents) != max_latents or max_latents < 1):
        raise ValueError(f"max latents must be a positive integer, got {max_latents!r}")

    evaluable = evaluation.load_evaluable(ref, zoo_root=zoo_root, version=version)
    if kind in NORMAL_KINDS:
        others = " and ".join(other for other in KINDS if other not in NORMAL_KINDS)
        evaluation.check_normal_families(
            evaluable, f"{kind} sort the latents by a closed-form KL that assumes normal "
                       f"ones ({others} do not)")
    dataset = evaluation.load_evaluation_dataset(evaluable, source=source, data_path=data_path,
                                                 echo=echo)
    out = os.fspath(out) if out is not None else default_output(evaluable, kind)
    rng = np.random.default_rng(seed)
    total = dataset.num_images

    def encode(indices, stage):
        stage_progress = None if progress is None else (
            lambda done, count: progress(stage, done, count))
        images = dataset.images if indices is None else dataset.images[indices]
        return evaluation.encode_dataset(evaluable, images, batch_size=batch_size,
                                         with_log_likelihood=False, seed=seed,
                                         progress=stage_progress, pixel_max=dataset.pixel_max)

    if kind == "latent-factors":
        for name in DSPRITES_FACTORS:  # before the encoding pass
            _factor_index(dataset.factor_names, name, dataset.name)
        indices = None
        if num_images is not None and num_images < total:
            indices = np.sort(rng.choice(total, int(num_images), replace=False))
        encoding = encode(indices, "encode")
        classes = dataset.factor_classes if indices is None else dataset.factor_classes[indices]
        values = dataset.factor_values if indices is None else dataset.factor_values[indices]
        latents = active_latents(encoding.loc, max_latents)
        return [plot_latent_factors(
            encoding.loc, classes, values, dataset.factor_names, out, latents=latents,
            title=f"{evaluable.name}: posterior means versus the factors of {dataset.name} "
                  f"({len(encoding.loc)} images)",
            dataset_name=dataset.name)]

    count = min(int(num_images), total)
    if kind == "reconstructions":
        _check_figure_size(count)
    else:
        _check_figure_size(count, len(range(evaluable.latent_dim)[:max_latents]), steps)
    chosen = np.sort(rng.choice(total, count, replace=False))
    images = dataset.images[chosen].astype(np.float32) / dataset.pixel_max
    if kind == "reconstructions":
        return [plot_reconstructions(evaluable, images, out)]

    sample = np.sort(rng.choice(total, min(ORDER_IMAGES, total), replace=False))
    encoding = encode(sample, "sort latents")
    order, kl = latent_order(encoding.loc, encoding.log_scale)
    latents = [int(d) for d in order[:max_latents]]
    written = [plot_traversals(evaluable, images, out, latents=latents, kl=kl,
                               value_range=value_range, steps=steps)]
    if gif:
        gif_path = os.path.splitext(out)[0] + ".gif"
        written.append(write_traversal_gif(evaluable, images, gif_path, latents=latents,
                                           value_range=value_range, steps=steps))
    return written
