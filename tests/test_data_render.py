"""Behaviour of the dSprites renderer, and its match to the official animation."""

import os
from pathlib import Path

import numpy as np
import pytest

from tcvae_tf.data import render_dsprites, sprites

SQUARE, ELLIPSE, HEART = 0, 1, 2


def render_one(shape, scale, orientation, pos_x, pos_y):
    return render_dsprites(np.array([[shape, scale, orientation, pos_x, pos_y]]))[0, :, :, 0]


def centroid(image):
    """(column, row) mean of the on pixels."""
    rows, columns = np.nonzero(image)
    return columns.mean(), rows.mean()


def test_images_are_binary_uint8():
    images = render_dsprites(np.array([[s, 5, 7, 3, 20] for s in range(3)]))
    assert images.shape == (3, 64, 64, 1) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 1}


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
@pytest.mark.parametrize("orientation", [0, 7, 23])
def test_pixel_count_grows_with_scale(shape, orientation):
    counts = [render_one(shape, scale, orientation, 15, 15).sum() for scale in range(6)]
    assert all(np.diff(counts) > 0), counts
    # Area grows as scale^2: (1 / 0.5)^2 = 4, up to rasterisation.
    assert 3.3 < counts[-1] / counts[0] < 4.7


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_centroid_follows_position(shape):
    """pos_x moves the sprite right and pos_y down by 32/31 pixel per class."""
    steps = np.arange(0, 32, 3)
    along_x = np.array([centroid(render_one(shape, 4, 5, k, 10)) for k in steps])
    along_y = np.array([centroid(render_one(shape, 4, 5, 10, k)) for k in steps])
    np.testing.assert_allclose(np.polyfit(steps, along_x[:, 0], 1)[0], 32 / 31, atol=0.02)
    np.testing.assert_allclose(np.polyfit(steps, along_y[:, 1], 1)[0], 32 / 31, atol=0.02)
    assert np.ptp(along_x[:, 1]) < 0.3 and np.ptp(along_y[:, 0]) < 0.3
    first, last = along_x[0, 0], along_x[-1, 0]
    np.testing.assert_allclose(last - first, 32 * 30 / 31, atol=0.6)
    if shape != HEART:  # symmetric sprites: the centroid is the centre, 16..48 pixels
        np.testing.assert_allclose(first + 0.5, 16, atol=0.3)


def test_orientation_rotates_the_heart_counter_clockwise():
    """At orientation 0 the heart's lobes are up (its centroid lies above the rotation
    centre); increasing orientation turns it counter-clockwise on screen."""
    centre = 16 + 32 * 15 / 31 - 0.5  # in pixel-index units, like `centroid`
    for orientation in (0, 5, 10, 20, 30, 39):
        column, row = centroid(render_one(HEART, 5, orientation, 15, 15))
        angle = np.arctan2(centre - row, column - centre)  # screen angle, y up
        expected = np.pi / 2 + sprites.ORIENTATIONS[orientation]
        difference = np.angle(np.exp(1j * (angle - expected)))
        assert abs(difference) < 0.2, (orientation, angle, expected)
    upright = render_one(HEART, 5, 0, 15, 15)
    turned = render_one(HEART, 5, 20, 15, 15)  # about 185 degrees
    assert (upright != turned).sum() > 60


def test_orientation_range_wraps_around():
    for shape in range(3):
        first, last = render_one(shape, 5, 0, 9, 9), render_one(shape, 5, 39, 9, 9)
        assert (first != last).sum() <= 4


def test_the_three_shapes_differ():
    for scale, orientation in [(5, 0), (2, 13)]:
        images = [render_one(shape, scale, orientation, 15, 15).astype(bool) for shape in range(3)]
        for a in range(3):
            for b in range(a + 1, 3):
                overlap = (images[a] & images[b]).sum() / (images[a] | images[b]).sum()
                assert overlap < 0.85, (a, b, overlap)


def test_largest_square_covers_about_370_pixels():
    counts = [render_one(SQUARE, 5, orientation, 15, 15).sum() for orientation in range(40)]
    assert 355 < np.mean(counts) < 385
    assert render_one(SQUARE, 5, 0, 0, 0).sum() == 400  # 20 x 20, aligned at pos 0


def test_no_sprite_is_clipped_at_extreme_positions():
    """Every sprite at the four corner positions stays off the border pixels and keeps the
    pixel count it has at the centre, up to rasterisation."""
    corners = [(0, 0), (0, 31), (31, 0), (31, 31)]
    rows = [(shape, scale, orientation, x, y)
            for shape in range(3) for scale in range(6) for orientation in range(40)
            for x, y in corners + [(15, 15)]]
    images = render_dsprites(np.array(rows))[..., 0].reshape(720, 5, 64, 64)
    border = np.concatenate([images[..., 0, :], images[..., -1, :], images[..., :, 0],
                             images[..., :, -1]], axis=-1)
    assert not border.any()
    # Positions 0 and 31 put the centre on whole pixels 16 and 48: the corner images are
    # the same sprite moved by 32 pixels, unclipped.
    for corner, (x, y) in enumerate(corners[1:], start=1):
        moved = np.roll(images[:, 0], (32 * y // 31, 32 * x // 31), axis=(1, 2))
        np.testing.assert_array_equal(images[:, corner], moved)
    counts = images.sum(axis=(2, 3)).astype(np.int64)
    relative = np.abs(counts[:, 0] - counts[:, 4]) / counts[:, 4]
    assert relative.max() < 0.25 and relative.mean() < 0.05


@pytest.mark.parametrize("sprite", [(SQUARE, 5, 5), (ELLIPSE, 0, 13), (HEART, 3, 27)])
def test_block_renderer_matches_direct_rendering(sprite):
    block = sprites.render_sprite_block(*sprite)
    classes = np.array([[*sprite, x, y] for x in range(32) for y in range(32)])
    np.testing.assert_array_equal(block, render_dsprites(classes)[..., 0])


def test_render_rejects_bad_classes():
    with pytest.raises(ValueError, match="shape"):
        render_dsprites(np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="out of range"):
        render_dsprites(np.array([[3, 0, 0, 0, 0]]))


# -- the official animation ---------------------------------------------------------------

def _gif_path():
    candidates = [os.environ.get("TCVAE_TF_DSPRITES_GIF")]
    here = Path(__file__).resolve()
    candidates += [str(parent / "shared/reference/dsprites/dsprites.gif")
                   for parent in here.parents[:3]]
    candidates.append("/work/shared/reference/dsprites/dsprites.gif")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _gif_factor_classes():
    """(shape, scale, orientation, pos_x, pos_y) of each of the animation's 320 frames.

    Per shape (heart, ellipse, square) the animation grows, shrinks and grows the sprite at
    pos (0, 0), turns it through the 40 orientations and (heart only) walks it down, right,
    up and left along the position range, then shrinks it.
    """
    frames = []
    for shape in (HEART, ELLIPSE, SQUARE):
        grow = [(shape, s, 0, 0, 0) for s in range(6)]
        frames += grow + grow[::-1] + grow + [(shape, 5, 0, 0, 0)]
        frames += [(shape, 5, o, 0, 0) for o in range(1, 40)] + [(shape, 5, 0, 0, 0)]
        if shape == HEART:
            frames += [(shape, 5, 0, 0, y) for y in range(1, 32)] + [(shape, 5, 0, 0, 31)]
            frames += [(shape, 5, 0, x, 31) for x in range(1, 32)] + [(shape, 5, 0, 31, 31)]
            frames += [(shape, 5, 0, 31, y) for y in range(30, -1, -1)] + [(shape, 5, 0, 31, 0)]
            frames += [(shape, 5, 0, x, 0) for x in range(30, -1, -1)] + [(shape, 5, 0, 0, 0)]
        frames += [(shape, s, 0, 0, 0) for s in range(4, -1, -1)]
    return np.array(frames)


@pytest.mark.skipif(_gif_path() is None, reason="the official dsprites.gif is not available")
def test_matches_the_official_animation():
    from PIL import Image, ImageSequence

    with Image.open(_gif_path()) as gif:
        frames = np.stack([np.array(frame.convert("L")) > 127
                           for frame in ImageSequence.Iterator(gif)])
    classes = _gif_factor_classes()
    assert frames.shape == (320, 64, 64) and len(classes) == 320
    rendered = render_dsprites(classes)[..., 0].astype(bool)
    wrong = (rendered != frames).sum(axis=(1, 2))
    on = frames.sum(axis=(1, 2))
    for shape, mean_limit in [(SQUARE, 1.0), (ELLIPSE, 2.0), (HEART, 10.0)]:
        rows = classes[:, 0] == shape
        assert wrong[rows].mean() < mean_limit, (shape, wrong[rows].mean())
        assert (wrong[rows] / on[rows]).max() < 0.1
