"""Image augmentations in pure jnp, one example at a time (vmap over the batch outside).

Why this shape: the SSL train step is a single jitted function, possibly sharded over devices along the
batch axis, so every op here is a pure function of (key, one image) with static shapes. RandAugment is
written without `lax.switch` (which, under vmap, would run all 14 branches for every example):

* the geometric ops chosen for an example (rotate, shear_x/y, translate_x/y) are composed into ONE affine
  matrix (identity where not chosen) and the image is warped once, bilinearly, filling 0.5 outside;
* the color ops are cheap elementwise transforms whose parameter takes its identity value when the op was
  not chosen (brightness factor 1, solarize threshold above 1, posterize 8 bits, ...), so XLA fuses them;
  color/contrast/brightness/sharpness of one slot are a single blend (`enhance`);
* autocontrast and equalize ((near-)idempotent) are computed once and blended in with `jnp.where`;
  equalize uses a 256-bin scatter-add histogram per channel, O(HW).

Pipeline of `strong_image` (FixMatch's RandAugmentMC, reordered so the work above is done once):
weak (flip + reflect-pad translate) -> autocontrast/equalize if chosen -> per chosen slot, its color op ->
one warp for all chosen geometric ops -> Cutout (gray 0.5) -> clip to [0, 1].

Public functions (weak_image, strong_image, rand_augment, cutout, apply_op) take one (H, W, C) float image
in [0, 1]; C may be 1 (color is then the identity) or 3. The op primitives (autocontrast, equalize, enhance,
warp, ...) take channel-first (C, H, W); see the note above `_chw`.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from boostmis_jax.errors import UserError

FILL = 0.5  # gray used outside warped images and inside Cutout (FixMatch uses (127, 127, 127))

OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_IDX = {name: i for i, name in enumerate(OPS)}
# Ops whose effect depends on a level; at level 0 each is the identity.
OPS_WITH_LEVEL: tuple[str, ...] = tuple(n for n in OPS if n not in ("identity", "autocontrast", "equalize"))

MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE_FRAC = 0.3
MAX_ENHANCE = 0.9  # enhancement factors span 1 -/+ 0.9, i.e. [0.1, 1.9] (AutoAugment's range)
_LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L weights


# ----------------------------------------------------------------------------------------------- helpers
# Primitives below work on CHANNEL-FIRST (C, H, W) images: spatial slices and reductions then run over
# contiguous trailing axes. With (H, W, 3), XLA CPU fuses shifted slices of a fused producer into index
# arithmetic on a size-3 minor axis and runs ~10-30x slower. The public functions take (H, W, C) and
# transpose once at entry and exit (a bitcast for C=1).
def _chw(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.transpose(x, (2, 0, 1))


def _hwc(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.transpose(x, (1, 2, 0))


def _gray(x: jnp.ndarray) -> jnp.ndarray:
    """(1, H, W) luminance for RGB, channel mean otherwise."""
    if x.shape[0] == 3:
        return (_LUMA[0] * x[0:1] + _LUMA[1] * x[1:2]) + _LUMA[2] * x[2:3]
    return jnp.mean(x, axis=0, keepdims=True)


def _mean_gray(x: jnp.ndarray) -> jnp.ndarray:
    """Mean of `_gray(x)`: per-channel means, then the (linear) gray weights."""
    c = x.shape[0]
    weights = jnp.asarray(_LUMA if c == 3 else (1.0 / c,) * c, x.dtype)
    return jnp.sum(jnp.mean(x, axis=(1, 2)) * weights)


def _blend(degenerate: jnp.ndarray, x: jnp.ndarray, factor) -> jnp.ndarray:
    """PIL ImageEnhance semantics: factor 1 keeps x, 0 gives the degenerate image; saturate to [0, 1]."""
    return jnp.clip(degenerate + factor * (x - degenerate), 0.0, 1.0)


def _to_bins(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.int32)


# -------------------------------------------------------------------------------------------- color ops
def autocontrast(x: jnp.ndarray) -> jnp.ndarray:
    """Stretch each channel to span [0, 1]; a constant channel is left as is (as PIL does)."""
    lo = jnp.min(x, axis=(1, 2), keepdims=True)
    hi = jnp.max(x, axis=(1, 2), keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (x - lo) / jnp.where(span > 0, span, 1.0), x)


def equalize(x: jnp.ndarray) -> jnp.ndarray:
    """PIL's ImageOps.equalize per channel on 256 bins, via a scatter-add histogram (O(HW))."""
    c, h, w = x.shape
    n = h * w
    flat = _to_bins(x).reshape(c, n) + 256 * jnp.arange(c, dtype=jnp.int32)[:, None]  # (C, N) bin ids
    hist = jnp.zeros((c * 256,), jnp.int32).at[flat.reshape(-1)].add(1).reshape(c, 256)
    # Count in the last non-empty bin (PIL leaves it out of the step).
    last = jnp.take_along_axis(hist, (255 - jnp.argmax(hist[:, ::-1] > 0, axis=1))[:, None], axis=1)[:, 0]
    step = (n - last) // 255  # (C,)
    cum = jnp.cumsum(hist, axis=1) - hist  # exclusive cumulative count
    lut = jnp.clip((cum + (step // 2)[:, None]) // jnp.maximum(step, 1)[:, None], 0, 255)  # (C, 256)
    lut_flat = lut.reshape(-1).astype(x.dtype) / 255.0
    eq = jnp.take(lut_flat, flat, axis=0).reshape(c, h, w)
    return jnp.where((step > 0)[:, None, None], eq, x)


def solarize(x: jnp.ndarray, threshold) -> jnp.ndarray:
    """Invert pixels >= threshold; a threshold above 1 inverts nothing."""
    return jnp.where(x >= threshold, 1.0 - x, x)


def posterize(x: jnp.ndarray, bits) -> jnp.ndarray:
    """Keep the top `bits` of the 8-bit value; 8 bits returns x untouched (no 8-bit rounding)."""
    shift = 8 - jnp.asarray(bits, jnp.int32)
    q = jnp.exp2(shift.astype(x.dtype))
    out = jnp.floor(jnp.round(x * 255.0) / q) * q / 255.0
    return jnp.where(shift > 0, out, x)


def color(x: jnp.ndarray, factor) -> jnp.ndarray:
    """Saturation; identity for non-RGB images."""
    if x.shape[0] != 3:
        return x
    return _blend(_gray(x), x, factor)


def contrast(x: jnp.ndarray, factor) -> jnp.ndarray:
    return _blend(_mean_gray(x), x, factor)


def brightness(x: jnp.ndarray, factor) -> jnp.ndarray:
    return jnp.clip(x * factor, 0.0, 1.0)


def _smooth_degenerate(x: jnp.ndarray) -> jnp.ndarray:
    """PIL's SMOOTH filter [[1,1,1],[1,5,1],[1,1,1]]/13 inside, original pixels on the 1-pixel border."""
    _, h, w = x.shape
    rows3 = x[:, 0 : h - 2] + x[:, 1 : h - 1] + x[:, 2:h]  # separable 3x3 box sum over the interior
    box = rows3[:, :, 0 : w - 2] + rows3[:, :, 1 : w - 1] + rows3[:, :, 2:w]
    inner = jnp.pad((box + 4.0 * x[:, 1 : h - 1, 1 : w - 1]) / 13.0, ((0, 0), (1, 1), (1, 1)))
    r = jnp.arange(h)[:, None]
    col = jnp.arange(w)[None, :]
    interior = (r > 0) & (r < h - 1) & (col > 0) & (col < w - 1)
    return jnp.where(interior, inner, x)


def sharpness(x: jnp.ndarray, factor) -> jnp.ndarray:
    """PIL ImageEnhance.Sharpness; images smaller than 3x3 are left as they are."""
    _, h, w = x.shape
    if h < 3 or w < 3:
        return x
    return _blend(_smooth_degenerate(x), x, factor)


def enhance(x: jnp.ndarray, f_color, f_contrast, f_brightness, f_sharpness) -> jnp.ndarray:
    """color, contrast, brightness and sharpness in ONE fused pass.

    Each is a blend f*x + (1-f)*degenerate (brightness: degenerate 0), so when at most one factor differs
    from 1 (true for one RandAugment slot) the sum below equals that op exactly, clip included.
    """
    c, h, w = x.shape
    scale = f_contrast * f_brightness
    out = (1.0 - f_contrast) * _mean_gray(x)
    if c == 3:
        scale = scale * f_color
        out = out + (1.0 - f_color) * _gray(x)
    if h >= 3 and w >= 3:
        scale = scale * f_sharpness
        out = out + (1.0 - f_sharpness) * _smooth_degenerate(x)
    return jnp.clip(out + scale * x, 0.0, 1.0)


# --------------------------------------------------------------------------------------- geometric ops
def warp(x: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
    """Bilinear resample: output pixel p (centred (col, row) coords) reads input at m @ p; outside -> FILL.

    `m` is a 3x3 sampling (output -> input) matrix about the image centre; identity gives x back exactly.
    """
    c, h, w = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij")
    u, v = cols - cx, rows - cy
    src_x = m[0, 0] * u + m[0, 1] * v + m[0, 2] + cx
    src_y = m[1, 0] * u + m[1, 1] * v + m[1, 2] + cy
    x0f, y0f = jnp.floor(src_x), jnp.floor(src_y)
    wx, wy = src_x - x0f, src_y - y0f
    x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
    # One ring of FILL around the image; any index outside clamps onto that ring.
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=FILL).reshape(c, -1)

    def tap(yy, xx):
        idx = (jnp.clip(yy, -1, h) + 1) * (w + 2) + (jnp.clip(xx, -1, w) + 1)
        return jnp.take(padded, idx.reshape(-1), axis=1).reshape(c, h, w)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bot = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bot * wy


# ------------------------------------------------------------------------ level -> parameter mappings
def _solarize_threshold(level):
    """Level 0 -> 256/255 (nothing inverted, as PIL's threshold 256); level 1 -> 0 (everything)."""
    return (1.0 - level) * (256.0 / 255.0)


def _posterize_bits(level):
    """Level 0 -> 8 bits (identity); level 1 -> 4 bits."""
    return 8 - jnp.round(4.0 * jnp.abs(level)).astype(jnp.int32)


def _enhance_factor(level):
    """Signed level in [-1, 1] -> factor 1 + 0.9 * level."""
    return 1.0 + MAX_ENHANCE * level


_COLOR_OPS: dict[str, tuple[Callable, Callable, float]] = {
    # name: (op(x, param), level -> param, identity param)
    "solarize": (solarize, lambda lv: _solarize_threshold(jnp.abs(lv)), 256.0 / 255.0),
    "posterize": (posterize, _posterize_bits, 8),
    "color": (color, _enhance_factor, 1.0),
    "contrast": (contrast, _enhance_factor, 1.0),
    "brightness": (brightness, _enhance_factor, 1.0),
    "sharpness": (sharpness, _enhance_factor, 1.0),
}
_GEOM_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def apply_op(name: str, x: jnp.ndarray, level=1.0) -> jnp.ndarray:
    """Apply one RandAugment op at `level` in [0, 1] (negative flips the direction of signed ops).

    For tests and inspection; it runs the same primitives `strong_image` composes without branching.
    """
    if name not in OPS:
        raise UserError(f"augment op {name!r}: unknown; use one of {', '.join(OPS)}")
    x = jnp.asarray(x)
    return _apply_op(name, x, jnp.asarray(level, jnp.float32))


@partial(jax.jit, static_argnums=0)
def _apply_op(name: str, x: jnp.ndarray, level: jnp.ndarray) -> jnp.ndarray:
    y = _chw(x.astype(jnp.float32))
    if name == "autocontrast":
        y = autocontrast(y)
    elif name == "equalize":
        y = equalize(y)
    elif name in _COLOR_OPS:
        fn, to_param, _ = _COLOR_OPS[name]
        y = fn(y, to_param(level))
    elif name in _GEOM_OPS:
        amount = {n: level if n == name else jnp.zeros_like(level) for n in _GEOM_OPS}
        y = warp(y, _slot_matrix(amount, y.shape[1:]))
    return _hwc(jnp.clip(y, 0.0, 1.0)).astype(x.dtype)


# ------------------------------------------------------------------------------------- weak and strong
def _check_image(x: jnp.ndarray) -> None:
    if x.ndim != 3:
        raise UserError(f"augment: image has shape {tuple(x.shape)}; pass one (H, W, C) image (vmap over B)")


# All randomness of a call comes from ONE `jax.random.uniform` draw per example: every extra PRNG call
# adds a threefry hash to the compiled step (slower to compile and to run), and uniforms map cheaply onto
# the coin flips, integers and levels needed below.
_WEAK_U = 3  # flip, row offset, column offset
_CUT_U = 2  # centre row, centre column
_SLOT_U = 4  # op index, apply, level, sign


def _randint(u, n: int):
    """Integer uniform in [0, n) from a U[0, 1) draw."""
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def _weak(u, x: jnp.ndarray, flip: bool, pad_frac: float) -> jnp.ndarray:
    c, h, w = x.shape
    if flip:
        x = jnp.where(u[0] < 0.5, x[:, :, ::-1], x)
    ph, pw = round(pad_frac * h), round(pad_frac * w)
    if ph > 0 or pw > 0:
        padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw)), mode="reflect")
        oy, ox = _randint(u[1], 2 * ph + 1), _randint(u[2], 2 * pw + 1)
        x = jax.lax.dynamic_slice(padded, (jnp.zeros((), jnp.int32), oy, ox), (c, h, w))
    return x


def _cutout_u(u, x: jnp.ndarray, frac: float) -> jnp.ndarray:
    _, h, w = x.shape
    sh, sw = round(frac * h), round(frac * w)
    if sh <= 0 or sw <= 0:
        return x
    y0 = _randint(u[0], h) - sh // 2
    x0 = _randint(u[1], w) - sw // 2
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    inside = (rows >= y0) & (rows < y0 + sh) & (cols >= x0) & (cols < x0 + sw)
    return jnp.where(inside, jnp.asarray(FILL, x.dtype), x)


def _rand_augment_u(u, x: jnp.ndarray, num_ops: int, magnitude: float) -> jnp.ndarray:
    if num_ops <= 0:
        return x
    u = u.reshape(num_ops, _SLOT_U)
    idx = _randint(u[:, 0], len(OPS))
    applied = u[:, 1] < 0.5
    lo = min(1.0, float(magnitude))
    level = (lo + u[:, 2] * (float(magnitude) - lo)) / 10.0
    signed = jnp.where(u[:, 3] < 0.5, level, -level)
    chosen = applied[:, None] & (idx[:, None] == jnp.arange(len(OPS))[None, :])  # (num_ops, |OPS|)
    any_chosen = jnp.any(chosen, axis=0)

    # Histogram-based ops: idempotent, so once per example is enough.
    x = jnp.where(any_chosen[_IDX["autocontrast"]], autocontrast(x), x)
    x = jnp.where(any_chosen[_IDX["equalize"]], equalize(x), x)

    # Cheap color ops, slot by slot (order preserved); unchosen ops get their identity parameter.
    def param(k: int, name: str):
        _, to_param, ident = _COLOR_OPS[name]
        return jnp.where(chosen[k, _IDX[name]], to_param(signed[k]), ident)

    for k in range(num_ops):
        x = solarize(x, param(k, "solarize"))
        x = posterize(x, param(k, "posterize"))
        x = enhance(x, *(param(k, n) for n in ("color", "contrast", "brightness", "sharpness")))

    # All geometric ops of all slots -> one sampling matrix -> one warp.
    m = jnp.eye(3, dtype=jnp.float32)
    for k in range(num_ops):
        amount = {n: jnp.where(chosen[k, _IDX[n]], signed[k], 0.0) for n in _GEOM_OPS}
        m = m @ _slot_matrix(amount, x.shape[1:])
    return warp(x, m)


def _slot_matrix(amount: dict, shape) -> jnp.ndarray:
    """Rotate @ shear @ translate sampling matrix for an (H, W) image from signed levels (0 where an op is
    not chosen).

    A slot holds at most one op, so the product is exactly that op's matrix; written out in scalars so
    XLA sees a handful of fused scalar ops instead of five 3x3 matrices and selects per slot.
    """
    h, w = shape[0], shape[1]
    t = jnp.deg2rad(-MAX_ROTATE_DEG * amount["rotate"])  # positive = counter-clockwise, as PIL's rotate
    c, s = jnp.cos(t), jnp.sin(t)
    a, b = MAX_SHEAR * amount["shear_x"], MAX_SHEAR * amount["shear_y"]
    tx = MAX_TRANSLATE_FRAC * w * amount["translate_x"]
    ty = MAX_TRANSLATE_FRAC * h * amount["translate_y"]
    l00, l01 = c + s * b, c * a + s
    l10, l11 = c * b - s, c - s * a
    z, o = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack([
        jnp.stack([l00, l01, -(l00 * tx + l01 * ty)]),
        jnp.stack([l10, l11, -(l10 * tx + l11 * ty)]),
        jnp.stack([z, z, o]),
    ])


def weak_image(key: jax.Array, x: jnp.ndarray, *, flip: bool = True, pad_frac: float = 0.125) -> jnp.ndarray:
    """Random horizontal flip (p=0.5) + reflect-pad by pad_frac*size and random integer crop (translate)."""
    _check_image(x)
    u = jax.random.uniform(key, (_WEAK_U,))
    return _hwc(_weak(u, _chw(x.astype(jnp.float32)), flip, pad_frac)).astype(x.dtype)


def cutout(key: jax.Array, x: jnp.ndarray, frac: float = 0.5) -> jnp.ndarray:
    """Fill a (frac*H) x (frac*W) box at a uniformly random centre with gray (clipped at the borders)."""
    _check_image(x)
    return _hwc(_cutout_u(jax.random.uniform(key, (_CUT_U,)), _chw(x), frac))


def rand_augment(key: jax.Array, x: jnp.ndarray, *, num_ops: int = 2, magnitude: float = 10.0) -> jnp.ndarray:
    """FixMatch RandAugmentMC: num_ops ops drawn uniformly (with replacement), each applied with p=0.5 at
    level v/10 with v ~ U(1, magnitude); geometric and enhancement ops get a random sign."""
    _check_image(x)
    u = jax.random.uniform(key, (max(num_ops, 0) * _SLOT_U,))
    return _hwc(_rand_augment_u(u, _chw(x.astype(jnp.float32)), num_ops, magnitude)).astype(x.dtype)


def strong_image(
    key: jax.Array,
    x: jnp.ndarray,
    *,
    num_ops: int = 2,
    magnitude: float = 10.0,
    cutout: float = 0.5,
    flip: bool = True,
    pad_frac: float = 0.125,
) -> jnp.ndarray:
    """weak_image, then RandAugmentMC, then Cutout of a cutout*size gray square; output clipped to [0, 1]."""
    _check_image(x)
    n_ra = max(num_ops, 0) * _SLOT_U
    u = jax.random.uniform(key, (_WEAK_U + n_ra + _CUT_U,))
    y = _weak(u[:_WEAK_U], _chw(x.astype(jnp.float32)), flip, pad_frac)
    y = _rand_augment_u(u[_WEAK_U : _WEAK_U + n_ra], y, num_ops, magnitude)
    y = _cutout_u(u[_WEAK_U + n_ra :], y, cutout)
    return _hwc(jnp.clip(y, 0.0, 1.0)).astype(x.dtype)
