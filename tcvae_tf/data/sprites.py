"""Procedural dSprites: the three sprite outlines and a fast renderer of the factor grid.

The sprites are drawn the way a GPU rasteriser without anti-aliasing draws a filled
polygon: a pixel is on when its centre lies inside the transformed outline. Sizes,
outlines, the rotation direction and the position range were fitted to the official
dSprites animation (320 frames); the fit reproduces its squares and ellipses to within
a pixel or two per frame and its hearts to about 7 pixels per frame (3% of the sprite).

Geometry, in pixels of the 64x64 canvas (column x to the right, row y downwards, pixel
(i, j) covers [j, j+1) x [i, i+1) and is sampled at its centre (j + 0.5, i + 0.5)):

```none
centre       = (16 + 32 * pos_x, 16 + 32 * pos_y)      pos in linspace(0, 1, 32)
offset       = (j + 0.5, i + 0.5) - centre             = (X, Y)
sprite frame   u =  X cos(t) - Y sin(t)                t = orientation (radians);
               v =  X sin(t) + Y cos(t)                positive t turns the sprite
                                                       counter-clockwise on screen
square       max(|u|, |v|) <= 9.6 s                    s = scale in linspace(0.5, 1, 6)
ellipse      (u / 12.76 s)^2 + (v / 7.24 s)^2 <= 1
heart        two lobes: (|u| - 4.7 s)^2 + (v + 4.0 s)^2 <= (5.1 s)^2, joined by the
             V whose sides pass through the tip (0, 8.75 s) tangent to the lobes
```

Positions step by 32/31 pixel, so sprite centres fall on a lattice of 1/31 pixel and
every pixel-centre offset is a half-integer multiple of 1/31 pixel. The full renderer
evaluates each of the 3*6*40 = 720 (shape, scale, orientation) sprites once on that
1/31-pixel lattice and obtains all 32*32 positions by gathering from it, which is exact:
`render_dsprites` (direct evaluation at the pixel centres) gives identical images.
"""

import numpy as np

CANVAS_SIZE = 64
NUM_SHAPES = 3
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)
NUM_POSITIONS = 32

# Position: centre = POSITION_OFFSET + POSITION_SPAN * k / (NUM_POSITIONS - 1) pixels.
POSITION_OFFSET = 16
POSITION_SPAN = 32
# Offsets of pixel centres from sprite centres are (m + 0.5) / LATTICE for an integer m.
LATTICE = NUM_POSITIONS - 1

SQUARE_HALF_SIDE = 9.6
ELLIPSE_SEMI_AXES = (12.76, 7.24)  # along u (horizontal at orientation 0), along v
HEART_LOBE_RADIUS = 5.1
HEART_LOBE_CENTRE = (4.7, -4.0)  # (|u|, v) of the two lobe centres; negative v is up
HEART_TIP = 8.75  # v of the tip


def _heart_tangent():
    """Returns the inward unit normal (nu, nv) of the right side of the heart's V and the
    v coordinate where that side touches the right lobe (all at scale 1).

    The side passes through the tip (0, HEART_TIP) at distance HEART_LOBE_RADIUS from the lobe
    centre c, i.e. n . (c - tip) = radius; of the two such lines the outer one is taken.
    """
    centre_u, centre_v = HEART_LOBE_CENTRE
    to_centre = np.array([centre_u, centre_v - HEART_TIP])
    distance = np.hypot(*to_centre)
    direction = np.arctan2(to_centre[1], to_centre[0])
    spread = np.arccos(HEART_LOBE_RADIUS / distance)
    # The outer tangent has its inward normal pointing most to the left (towards the axis).
    angle = min(direction + spread, direction - spread, key=np.cos)
    normal_u, normal_v = np.cos(angle), np.sin(angle)
    touch_v = centre_v - HEART_LOBE_RADIUS * normal_v
    return normal_u, normal_v, touch_v


_HEART_NORMAL_U, _HEART_NORMAL_V, _HEART_TOUCH_V = _heart_tangent()

# Largest distance of an outline point from the sprite centre at scale 1 (square corner).
MAX_SPRITE_RADIUS = max(
    SQUARE_HALF_SIDE * np.sqrt(2.0),
    ELLIPSE_SEMI_AXES[0],
    np.hypot(*HEART_LOBE_CENTRE) + HEART_LOBE_RADIUS,
    HEART_TIP,
)


def sprite_mask(shape, scale_class, orientation_class, offset_x, offset_y):
    """Tells which points lie inside one sprite.

    Args:
      shape: int, 0 square, 1 ellipse, 2 heart.
      scale_class: int in [0, 6), index into `SCALES`.
      orientation_class: int in [0, 40), index into `ORIENTATIONS`.
      offset_x: float array, horizontal offsets (pixels) of the points from the sprite
        centre, broadcastable against `offset_y`.
      offset_y: float array, vertical offsets (pixels, downwards).

    Returns:
      bool array of the broadcast shape of the offsets.
    """
    scale = SCALES[scale_class]
    angle = ORIENTATIONS[orientation_class]
    cos, sin = np.cos(angle), np.sin(angle)
    u = offset_x * cos - offset_y * sin
    v = offset_x * sin + offset_y * cos
    if shape == 0:
        half_side = SQUARE_HALF_SIDE * scale
        return (np.abs(u) <= half_side) & (np.abs(v) <= half_side)
    if shape == 1:
        semi_u, semi_v = ELLIPSE_SEMI_AXES
        return (u / (semi_u * scale)) ** 2 + (v / (semi_v * scale)) ** 2 <= 1.0
    if shape == 2:
        abs_u = np.abs(u)
        lobe_u, lobe_v = HEART_LOBE_CENTRE[0] * scale, HEART_LOBE_CENTRE[1] * scale
        tip, touch = HEART_TIP * scale, _HEART_TOUCH_V * scale
        lobes = (abs_u - lobe_u) ** 2 + (v - lobe_v) ** 2 <= (HEART_LOBE_RADIUS * scale) ** 2
        wedge = (abs_u * _HEART_NORMAL_U + (v - tip) * _HEART_NORMAL_V >= 0) & (v >= touch)
        wedge &= v <= tip
        # Between the lobe centres and the tangent points the V is wider than the lobes'
        # union only inside |u| <= lobe_u: fill that band.
        band = (abs_u <= lobe_u) & (v >= lobe_v) & (v <= touch)
        return lobes | wedge | band
    raise ValueError(f"shape class must be 0 (square), 1 (ellipse) or 2 (heart), got {shape}")


def _lattice_offsets(lattice_index):
    """Pixel offsets (m + 0.5) / LATTICE of lattice indices m (float64)."""
    return (np.asarray(lattice_index, np.float64) + 0.5) / LATTICE


def _lattice_index(pixel, position_class):
    """Lattice index m of pixel-centre offsets: (pixel + 0.5 - centre) = (m + 0.5) / LATTICE.

    With centre = 16 + 32 k / 31: 31 (pixel + 0.5 - centre) = 31 pixel - 32 k - 480.5.
    """
    pixel = np.asarray(pixel, np.int64)
    position_class = np.asarray(position_class, np.int64)
    return (
        LATTICE * pixel
        - POSITION_SPAN * position_class
        - LATTICE * POSITION_OFFSET
        + (LATTICE - 1) // 2
    )


def render_dsprites(factor_classes, chunk_size=512):
    """Renders given rows of the dSprites factor grid.

    Args:
      factor_classes: int array [n, 5] of (shape, scale, orientation, pos_x, pos_y) classes,
        each in range(3), range(6), range(40), range(32), range(32).
      chunk_size: images rendered per vectorised step (bounds the temporary memory).

    Returns:
      uint8 array [n, 64, 64, 1] with values 0 and 1, identical to the rows of the full
      rendered dataset.

    Raises:
      ValueError: `factor_classes` has the wrong shape or a class out of range.

    Example:
      >>> int(render_dsprites([[0, 5, 0, 0, 0]]).sum())   # largest square, 20 x 20 pixels
      400
    """
    classes = np.asarray(factor_classes)
    if classes.ndim != 2 or classes.shape[1] != 5:
        raise ValueError(f"factor_classes must have shape [n, 5], got {classes.shape}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"factor_classes must be integers, got dtype {classes.dtype}")
    sizes = np.array([NUM_SHAPES, len(SCALES), len(ORIENTATIONS), NUM_POSITIONS, NUM_POSITIONS])
    if classes.size and ((classes < 0).any() or (classes >= sizes).any()):
        raise ValueError(f"factor_classes out of range: classes must lie in [0, {tuple(sizes)})")
    images = np.zeros((len(classes), CANVAS_SIZE, CANVAS_SIZE, 1), np.uint8)
    pixels = np.arange(CANVAS_SIZE)
    # Images of the same sprite share the rotation: render sprite by sprite.
    sprite_ids = (classes[:, 0] * len(SCALES) + classes[:, 1]) * len(ORIENTATIONS) + classes[:, 2]
    for sprite_id in np.unique(sprite_ids):
        rows = np.flatnonzero(sprite_ids == sprite_id)
        shape, scale_class, orientation_class = classes[rows[0], :3]
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            # [n, 1, 64] column offsets and [n, 64, 1] row offsets
            offset_x = _lattice_offsets(_lattice_index(pixels[None, :], classes[chunk, 3:4]))
            offset_y = _lattice_offsets(_lattice_index(pixels[None, :], classes[chunk, 4:5]))
            mask = sprite_mask(
                shape, scale_class, orientation_class, offset_x[:, None, :], offset_y[:, :, None]
            )
            images[chunk, :, :, 0] = mask
    return images


def _sprite_window(scale_class):
    """Half-size h (pixels) of the square window around a sprite of this scale.

    Rows 16 + k - h .. 16 + k + h of position class k contain the whole sprite (its centre
    lies in [16 + k, 17 + k]).
    """
    return int(np.ceil(MAX_SPRITE_RADIUS * SCALES[scale_class])) + 1


def render_sprite_block(shape, scale_class, orientation_class, out=None):
    """Renders the 32*32 positions of one (shape, scale, orientation) sprite.

    The sprite is evaluated once on the 1/31-pixel lattice of offsets, and each position's
    pixels are gathered from it.

    Args:
      shape, scale_class, orientation_class: ints, the sprite's classes.
      out: optional uint8 array [1024, 64, 64], C-contiguous and zero-filled, to draw into.

    Returns:
      uint8 array [1024, 64, 64] in grid order (index pos_x * 32 + pos_y), values 0/1.
    """
    positions = NUM_POSITIONS
    if out is None:
        out = np.zeros((positions * positions, CANVAS_SIZE, CANVAS_SIZE), np.uint8)
    if out.shape != (positions * positions, CANVAS_SIZE, CANVAS_SIZE) or out.dtype != np.uint8:
        raise ValueError("out must be a uint8 array [1024, 64, 64]")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    half = _sprite_window(scale_class)
    width = 2 * half + 1
    # Window pixel t of position k is pixel 16 + k - half + t; its lattice index is
    # 31 (t - half) + 15 - k (see _lattice_index).
    window = np.arange(width)
    classes = np.arange(positions)
    lattice = _lattice_index(POSITION_OFFSET + classes[:, None] - half + window[None, :],
                             classes[:, None])  # [32 positions, width]
    low = lattice.min()
    offsets = _lattice_offsets(np.arange(low, lattice.max() + 1))
    fine = sprite_mask(shape, scale_class, orientation_class, offsets[None, :], offsets[:, None])
    fine = fine.view(np.uint8)
    flat = (lattice - low).reshape(-1)
    # gathered[(pos_y, t), (pos_x, s)] -> [pos_x, pos_y, t, s]
    gathered = fine[np.ix_(flat, flat)].reshape(positions, width, positions, width)
    gathered = gathered.transpose(2, 0, 1, 3)
    # Image (pos_x, pos_y), pixel (16 + pos_y - half + t, 16 + pos_x - half + s) is at flat
    # offset pos_x (32*4096 + 1) + pos_y (4096 + 64) + t 64 + s + (16 - half)(64 + 1).
    image_bytes = CANVAS_SIZE * CANVAS_SIZE
    start = (POSITION_OFFSET - half) * (CANVAS_SIZE + 1)
    flat_out = out.reshape(-1)
    view = np.lib.stride_tricks.as_strided(
        flat_out[start:],
        shape=(positions, positions, width, width),
        strides=(positions * image_bytes + 1, image_bytes + CANVAS_SIZE, CANVAS_SIZE, 1),
        writeable=True,
    )
    view[...] = gathered
    return out


def render_dsprites_grid(progress=None):
    """Renders all 737,280 dSprites images in the official row-major order.

    Args:
      progress: optional callable(done, total) called after each of the 720 sprites.

    Returns:
      uint8 array [737280, 64, 64] with values 0/1 (index = shape*245760 + scale*40960 +
      orientation*1024 + pos_x*32 + pos_y).
    """
    block = NUM_POSITIONS * NUM_POSITIONS
    num_sprites = NUM_SHAPES * len(SCALES) * len(ORIENTATIONS)
    images = np.zeros((num_sprites * block, CANVAS_SIZE, CANVAS_SIZE), np.uint8)
    sprite = 0
    for shape in range(NUM_SHAPES):
        for scale_class in range(len(SCALES)):
            for orientation_class in range(len(ORIENTATIONS)):
                render_sprite_block(
                    shape, scale_class, orientation_class,
                    out=images[sprite * block : (sprite + 1) * block],
                )
                sprite += 1
                if progress is not None:
                    progress(sprite, num_sprites)
    return images
