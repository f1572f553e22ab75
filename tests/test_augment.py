"""Augmentations: shapes/range, determinism, op semantics (vs. PIL where it applies), batching, sharding."""
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image, ImageOps

from boostmis_jax.augment import (
    OPS,
    OPS_WITH_LEVEL,
    apply_op,
    cutout,
    make_views,
    strong_features,
    strong_image,
    weak_features,
    weak_image,
)
from boostmis_jax.augment import image as im
from boostmis_jax.errors import UserError


def _img(seed: int, shape) -> jnp.ndarray:
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def _keys(seed: int, n: int) -> jax.Array:
    return jax.random.split(jax.random.key(seed), n)


_CFG = ml_collections.ConfigDict(
    {"flip": True, "pad_frac": 0.125, "num_ops": 2, "magnitude": 10.0, "cutout": 0.5,
     "feat_sigma_weak": 0.05, "feat_sigma_strong": 0.2, "feat_drop": 0.2}
)


@pytest.fixture(scope="module")
def image_views():
    return jax.jit(make_views("image", _CFG))


@pytest.fixture(scope="module")
def feature_views():
    return jax.jit(make_views("features", _CFG))


# ------------------------------------------------------------------------------------ shapes and range
# (16, 12, 12, 3) is shared with the determinism and sharding tests so the jit cache is reused.
@pytest.mark.parametrize("shape", [(6, 8, 8, 1), (16, 12, 12, 3)])
def test_views_shape_dtype_range(image_views, shape):
    x = _img(0, shape)
    weak, strong = image_views(_keys(1, shape[0]), x)
    for v in (weak, strong):
        assert v.shape == x.shape and v.dtype == jnp.float32
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert float(jnp.abs(strong - weak).mean()) > 1e-3  # the two views are different images


@pytest.mark.parametrize("shape", [(2, 224, 224, 3), (8, 32, 32, 3), (8, 28, 28, 1), (3, 9, 31, 2)])
def test_other_shapes_trace(shape):
    # Tracing only (no compile): static shapes work out for every size; values are covered above.
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    keys = jax.ShapeDtypeStruct((shape[0], 2), jnp.uint32)
    for out in jax.eval_shape(make_views("image", _CFG), keys, x):
        assert out.shape == shape and out.dtype == jnp.float32


def test_determinism_and_key_dependence(image_views):
    x = _img(0, (16, 12, 12, 3))
    keys = _keys(5, 16)
    w1, s1 = image_views(keys, x)
    w2, s2 = image_views(keys, x)
    np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    w3, s3 = image_views(_keys(6, 16), x)
    assert not np.allclose(np.asarray(s1), np.asarray(s3))
    assert not np.allclose(np.asarray(w1), np.asarray(w3))


def test_weak_views_differ_across_keys():
    x = _img(0, (16, 16, 1))
    outs = jax.jit(jax.vmap(lambda k: weak_image(k, x)))(_keys(2, 8))
    flat = np.asarray(outs).reshape(8, -1)
    distinct = {row.tobytes() for row in flat}
    assert len(distinct) >= 6  # 2 flips x 5x5 offsets: collisions are rare


def test_raw_uint32_keys_match_typed_keys(feature_views):
    views = feature_views  # key handling is shared by all kinds; this one compiles fast
    x = _img(0, (16, 24))
    keys = _keys(9, 16)
    typed = views(keys, x)
    raw = views(jax.random.key_data(keys), x)
    for a, b in zip(typed, raw, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------------- weak ops
def test_flip_reverses_columns_when_it_fires():
    x = _img(0, (6, 7, 2))
    outs = np.asarray(jax.jit(jax.vmap(lambda k: weak_image(k, x, pad_frac=0.0)))(_keys(3, 16)))
    xs, xf = np.asarray(x), np.asarray(x)[:, ::-1]
    is_id = [np.array_equal(o, xs) for o in outs]
    is_flip = [np.array_equal(o, xf) for o in outs]
    assert all(a or b for a, b in zip(is_id, is_flip, strict=True))
    assert any(is_id) and any(is_flip)
    no_flip = jax.jit(jax.vmap(lambda k: weak_image(k, x, flip=False, pad_frac=0.0)))(_keys(3, 16))
    no_flip = np.asarray(no_flip)
    assert all(np.array_equal(o, xs) for o in no_flip)


def test_weak_translate_is_crop_of_reflect_padded():
    x = _img(1, (16, 16, 1))
    pad = 2  # 0.125 * 16
    padded = np.pad(np.asarray(x), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = set()
    ys = np.asarray(jax.jit(jax.vmap(lambda k: weak_image(k, x, flip=False, pad_frac=0.125)))(_keys(4, 12)))
    for y in ys:
        hits = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                if np.array_equal(padded[i:i + 16, j:j + 16], y)]
        assert hits, "output is not a crop of the reflect-padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3


# --------------------------------------------------------------------------------------- RandAugment ops
def test_ops_pool():
    assert len(OPS) == 14 and len(set(OPS)) == 14
    assert set(OPS) - set(OPS_WITH_LEVEL) == {"identity", "autocontrast", "equalize"}


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name", OPS_WITH_LEVEL)
def test_level_zero_is_identity(name, c):
    x = _img(7, (10, 10, c))
    np.testing.assert_allclose(np.asarray(apply_op(name, x, 0.0)), np.asarray(x), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in OPS_WITH_LEVEL if n != "color"])
def test_level_one_changes_image(name):
    x = _img(7, (10, 10, 3))
    assert float(jnp.abs(apply_op(name, x, 1.0) - x).max()) > 0.05


def test_unknown_op_is_user_error():
    with pytest.raises(UserError, match="nope"):
        apply_op("nope", _img(0, (4, 4, 1)), 0.5)


# Op tests share a few shapes so each jitted op compiles once per shape.
def _columns_image(h=10, w=10):
    cols = (jnp.arange(w, dtype=jnp.float32) + 1.0) / (w + 1.0)
    return jnp.broadcast_to(cols[None, :, None], (h, w, 1))


def test_translate_by_known_shift():
    x = _columns_image()  # w=10 -> level 1 shifts by 0.3 * 10 = 3 pixels
    right = np.asarray(apply_op("translate_x", x, 1.0))
    np.testing.assert_allclose(right[:, 3:], np.asarray(x)[:, :-3], atol=1e-5)
    np.testing.assert_allclose(right[:, :3], 0.5, atol=1e-6)
    left = np.asarray(apply_op("translate_x", x, -1.0))
    np.testing.assert_allclose(left[:, :-3], np.asarray(x)[:, 3:], atol=1e-5)
    np.testing.assert_allclose(left[:, -3:], 0.5, atol=1e-6)
    xt = jnp.transpose(x, (1, 0, 2))  # 10 rows
    down = np.asarray(apply_op("translate_y", xt, 1.0))
    np.testing.assert_allclose(down[3:], np.asarray(xt)[:-3], atol=1e-5)


def test_rotate_matches_pil_inside_the_image():
    a = (np.add.outer(np.arange(33), 2 * np.arange(33)) * 2).astype(np.uint8)  # odd size: same centre
    x = jnp.asarray(a[..., None] / 255.0, jnp.float32)
    yy, xx = np.mgrid[:33, :33]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 14**2  # away from the fill, where PIL treats edges differently
    for level, degrees in ((1.0, 30), (-0.5, -15)):
        ref = np.asarray(Image.fromarray(a).rotate(degrees, resample=Image.BILINEAR)).astype(np.float64)
        ours = np.asarray(apply_op("rotate", x, level))[..., 0] * 255.0
        np.testing.assert_allclose(ours[disc], ref[disc], atol=1.01)  # PIL rounds to uint8


def test_rotate_keeps_centre_and_fills_corners():
    x = jnp.zeros((21, 21, 1)).at[10, 10, 0].set(1.0)
    y = np.asarray(apply_op("rotate", x, 1.0))
    assert y[10, 10, 0] == pytest.approx(1.0, abs=1e-5)
    ones = jnp.ones((21, 21, 1))
    r = np.asarray(apply_op("rotate", ones, 1.0))  # 30 degrees: corners come from outside -> gray
    assert r[0, 0, 0] == pytest.approx(0.5, abs=1e-5)


def test_shear_x_moves_rows_by_their_offset():
    x = _columns_image(h=21, w=21)
    y = np.asarray(apply_op("shear_x", x, 1.0))
    np.testing.assert_allclose(y[10], np.asarray(x)[10], atol=1e-5)  # centre row untouched
    assert not np.allclose(y[0], np.asarray(x)[0])


def test_solarize_inverts_above_threshold():
    x = _img(3, (10, 10, 3))
    np.testing.assert_allclose(np.asarray(apply_op("solarize", x, 1.0)), 1.0 - np.asarray(x), atol=1e-6)
    half = np.asarray(apply_op("solarize", x, 0.5))
    thr = 0.5 * 256.0 / 255.0
    xn = np.asarray(x)
    np.testing.assert_allclose(half, np.where(xn >= thr, 1.0 - xn, xn), atol=1e-6)
    assert (xn >= thr).any() and (xn < thr).any()


def test_posterize_quantizes():
    x = _img(4, (10, 10, 1))
    y = np.asarray(apply_op("posterize", x, 1.0))  # 4 bits
    codes = np.round(y * 255.0)
    np.testing.assert_allclose(codes % 16, 0)
    assert len(np.unique(codes)) <= 16 and len(np.unique(np.asarray(x))) > 16


def test_brightness_changes_mean():
    x = jnp.full((10, 10, 3), 0.4)
    up = float(apply_op("brightness", x, 1.0).mean())
    down = float(apply_op("brightness", x, -1.0).mean())
    assert up == pytest.approx(0.4 * 1.9, abs=1e-5) and down == pytest.approx(0.4 * 0.1, abs=1e-5)


def test_color_is_identity_on_grayscale():
    x = _img(2, (10, 10, 1))
    np.testing.assert_array_equal(np.asarray(apply_op("color", x, 1.0)), np.asarray(x))


def test_histogram_ops_match_pil():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20, 3)).astype(np.uint8)
    a[:, :6] //= 4  # skewed histogram so equalize does something
    x = jnp.asarray(a / 255.0, jnp.float32)
    pil = Image.fromarray(a)
    for name, ref in (("equalize", ImageOps.equalize(pil)), ("autocontrast", ImageOps.autocontrast(pil))):
        ours = np.asarray(apply_op(name, x)) * 255.0
        # equalize is a LUT on 8-bit codes (exact); autocontrast is a float stretch (PIL truncates: +-1)
        atol = 1e-3 if name == "equalize" else 1.0 + 1e-3
        np.testing.assert_allclose(ours, np.asarray(ref).astype(np.float64), atol=atol, err_msg=name)


def test_fused_enhance_matches_single_ops():
    x = _img(8, (3, 10, 9))  # primitives are channel-first
    single = (im.color, im.contrast, im.brightness, im.sharpness)
    for i, f in enumerate((1.7, 0.2, 1.5, 0.1)):
        factors = [1.0] * 4
        factors[i] = f
        fused, ref = jax.jit(im.enhance)(x, *factors), jax.jit(single[i])(x, f)
        np.testing.assert_allclose(np.asarray(fused), np.asarray(ref), atol=1e-6)


def test_cutout_gray_square():
    x = jnp.zeros((16, 16, 1))
    areas = []
    ys = np.asarray(jax.jit(jax.vmap(lambda k: cutout(k, x, 0.5)))(_keys(11, 24)))
    for y in ys[..., 0]:
        gray = y == 0.5
        assert set(np.unique(y)) <= {0.0, 0.5}
        rows, cols = np.nonzero(gray)
        # the gray region is one axis-aligned box of at most 8x8
        assert gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
        areas.append(gray.sum())
    assert max(areas) == 64 and min(areas) >= 16
    np.testing.assert_array_equal(np.asarray(cutout(jax.random.key(0), x, 0.0)), np.asarray(x))


def test_strong_without_ops_is_weak_plus_cutout():
    x = _img(5, (12, 12, 3))
    plain = partial(strong_image, num_ops=0, flip=False, pad_frac=0.0)
    y = jax.jit(partial(plain, cutout=0.0))(jax.random.key(0), x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    z = np.asarray(jax.jit(partial(plain, cutout=0.5))(jax.random.key(0), x))
    changed = z != np.asarray(x)
    assert changed.any() and np.all(z[changed] == 0.5)


def test_magnitude_zero_only_histogram_ops_act():
    # All magnitude ops are the identity at level 0, so only autocontrast/equalize can change the image;
    # on an image already spanning [0, 1] with a flat histogram both are (near) identities.
    x = (jnp.arange(256, dtype=jnp.float32) / 255.0).reshape(8, 32, 1)  # non-square on purpose
    f = jax.jit(jax.vmap(partial(im.rand_augment, num_ops=3, magnitude=0.0), in_axes=(0, None)))
    ys = np.asarray(f(_keys(1, 16), x))
    np.testing.assert_allclose(ys, np.broadcast_to(np.asarray(x), ys.shape), atol=1e-5)


def test_rand_augment_applies_ops_with_probability():
    # Per slot: an op with p=0.5, 1/14 of them identity, so ~(0.5 + 0.5/14)^2 = 29% of images stay as is.
    x = _img(6, (10, 12, 3))
    f = jax.jit(jax.vmap(partial(im.rand_augment, num_ops=2, magnitude=10.0), in_axes=(0, None)))
    ys = np.asarray(f(_keys(2, 64), x))
    unchanged = int(np.sum(np.all(np.abs(ys - np.asarray(x)) < 1e-6, axis=(1, 2, 3))))
    assert 5 <= unchanged <= 35
    assert float(ys.min()) >= 0.0 and float(ys.max()) <= 1.0


# ------------------------------------------------------------------------------------------- features
def test_feature_views_noise_and_dropout():
    d = 20000
    w = np.asarray(weak_features(jax.random.key(0), jnp.zeros((d,)), sigma=0.05))
    assert w.std() == pytest.approx(0.05, rel=0.05) and abs(w.mean()) < 0.005
    s = np.asarray(strong_features(jax.random.key(1), jnp.ones((d,)), sigma=0.0, drop=0.3))
    assert (s == 0).mean() == pytest.approx(0.3, abs=0.02)
    np.testing.assert_allclose(s[s != 0], 1.0 / 0.7, rtol=1e-6)
    s2 = np.asarray(strong_features(jax.random.key(1), jnp.ones((d,)), sigma=0.2, drop=0.0))
    assert s2.std() == pytest.approx(0.2, rel=0.05)


def test_feature_make_views(feature_views):
    x = jnp.ones((16, 24))
    weak, strong = feature_views(_keys(0, 16), x)
    assert weak.shape == strong.shape == x.shape
    assert float(jnp.abs(weak - 1).std()) < 0.1
    assert float((strong - 1).std()) > 3 * float((weak - 1).std())
    assert not np.allclose(np.asarray(weak[0]), np.asarray(weak[1]))


# ------------------------------------------------------------------------------------- sharding/errors
@pytest.mark.parametrize("kind,shape", [("image", (16, 12, 12, 3)), ("features", (16, 24))])
def test_sharded_equals_unsharded(image_views, feature_views, kind, shape):
    devices = jax.devices()
    n = len(devices)
    batch = shape[0] if shape[0] % n == 0 else 2 * n
    x = _img(0, (batch, *shape[1:]))
    keys = _keys(1, batch)
    views = make_views(kind, _CFG)
    ref = (image_views if kind == "image" else feature_views)(keys, x)  # jit cache shared with other tests
    mesh = Mesh(np.array(devices), ("data",))
    sh = NamedSharding(mesh, P("data"))
    xs, ks = jax.device_put(x, sh), jax.device_put(keys, sh)
    out = jax.jit(views, out_shardings=(sh, sh))(ks, xs)
    assert out[0].sharding.is_equivalent_to(sh, x.ndim)
    for a, b in zip(out, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_unknown_kind_and_bad_config_are_user_errors():
    with pytest.raises(UserError, match="audio"):
        make_views("audio", _CFG)
    with pytest.raises(UserError, match=r"aug\.magnitude"):
        make_views("image", {"magnitude": 30.0})
    with pytest.raises(UserError, match=r"aug\.feat_drop"):
        make_views("features", {"feat_drop": 1.0})
    views = make_views("image", {})
    keys = jnp.zeros((3, 2), jnp.uint32)
    with pytest.raises(UserError, match="one key per example"):
        views(keys, jnp.zeros((4, 8, 8, 1)))
    with pytest.raises(UserError, match="float32"):
        views(keys, jnp.zeros((3, 8, 8, 1), jnp.uint8))
    with pytest.raises(UserError, match="B, H, W, C"):
        views(keys, jnp.zeros((3, 8, 8)))


def test_a_partial_aug_section_reads_the_defaults_from_defaults_py(monkeypatch):
    """make_views("image") with no config builds the views of defaults.py's `aug` values (no second default
    kept in views.py): changing the one default changes what a partial section gets."""
    from boostmis_jax.augment import views as V

    assert V._get({}, "pad_frac") == 0.125 and V._get({"pad_frac": 0.25}, "pad_frac") == 0.25
    shipped = dict(V.section_defaults("aug"))
    monkeypatch.setattr(V, "section_defaults", lambda name: {**shipped, "num_ops": 99})
    with pytest.raises(UserError, match="num_ops"):  # 99 is out of range: the default came from there
        V.make_views("image")
