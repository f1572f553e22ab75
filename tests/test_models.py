"""Models: the fused BatchNorm equals flax's (values, gradients, running statistics), every registered model
keeps the same variables with either BatchNorm and returns (logits, embedding) in float32, and bfloat16
models compute their convolutions in bfloat16 on float32 parameters."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boostmis_jax.defaults import get_config
from boostmis_jax.models import MODELS, build_model
from boostmis_jax.models.layers import BatchNorm, max_pool_2x2

FLAX_ACT = {"none": lambda v: v, "relu": nn.relu, "leaky_relu": lambda v: nn.leaky_relu(v, 0.1)}


class _FlaxBN(nn.Module):
    act: str
    train: bool

    @nn.compact
    def __call__(self, x):
        return FLAX_ACT[self.act](nn.BatchNorm(use_running_average=not self.train, momentum=0.9)(x))


class _FusedBN(nn.Module):
    act: str
    train: bool

    @nn.compact
    def __call__(self, x):
        return BatchNorm(use_running_average=not self.train, momentum=0.9, act=self.act, slope=0.1)(x)


def _data(shape=(6, 5, 5, 7), seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    # channel means and scales far from (0, 1), so a wrong centring or scaling shows
    x = 3.0 * jax.random.normal(k1, shape) * jnp.arange(1, shape[-1] + 1) + jnp.arange(shape[-1])
    return x, jax.random.normal(k2, shape)


def _variables(x, seed=1):
    c = x.shape[-1]
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"params": {"BatchNorm_0": {"scale": 1.0 + 0.5 * jax.random.normal(k1, (c,)),
                                       "bias": jax.random.normal(k2, (c,))}},
            "batch_stats": {"BatchNorm_0": {"mean": jnp.full((c,), 0.3), "var": jnp.full((c,), 2.0)}}}


@pytest.mark.parametrize("act", ["none", "relu", "leaky_relu"])
def test_fused_batchnorm_matches_flax_values_gradients_and_statistics(act):
    x, g = _data()
    v = _variables(x)
    outs = {}
    for name, cls in (("flax", _FlaxBN), ("fused", _FusedBN)):
        train = cls(act, True)

        def f(params, x, train=train):
            y, upd = train.apply({"params": params, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
            return jnp.sum(y * g), (y, upd["batch_stats"])

        (_, (y, stats)), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(v["params"], x)
        y_eval = cls(act, False).apply(v, x)
        outs[name] = (y, grads, stats, y_eval)
    for a, b in zip(jax.tree.leaves(outs["fused"]), jax.tree.leaves(outs["flax"])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(b))))
    # the running statistics moved (momentum 0.9 towards the batch's), i.e. the update is not a no-op
    assert not np.allclose(outs["fused"][2]["BatchNorm_0"]["mean"], 0.3)


def test_fused_batchnorm_does_not_update_statistics_at_init():
    x, _ = _data()
    v = _FusedBN("relu", True).init(jax.random.key(0), x)
    ref = _FlaxBN("relu", True).init(jax.random.key(0), x)
    assert jax.tree.structure(v) == jax.tree.structure(ref)
    np.testing.assert_array_equal(v["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    np.testing.assert_array_equal(v["batch_stats"]["BatchNorm_0"]["var"], 1.0)


def test_fused_batchnorm_bfloat16_output_float32_statistics_and_gradients():
    x, g = _data()
    v = _variables(x)
    class BN16(nn.Module):
        @nn.compact
        def __call__(self, x):
            return BatchNorm(use_running_average=False, momentum=0.9, dtype=jnp.bfloat16, act="leaky_relu",
                             slope=0.1)(x)

    def f(params, x):
        y, upd = BN16().apply({"params": params, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
        return jnp.sum(y.astype(jnp.float32) * g), (y, upd["batch_stats"])

    (_, (y, stats)), (gp, gx) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
        v["params"], x.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and gx.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves((gp, stats)))
    # and the bf16 result is the float32 one to bf16 precision
    y32 = _FusedBN("leaky_relu", True).apply({"params": v["params"], "batch_stats": v["batch_stats"]}, x,
                                             mutable=["batch_stats"])[0]
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, rtol=0.03, atol=0.03 * float(jnp.max(jnp.abs(y32))))


@pytest.mark.parametrize("shape", [(3, 8, 8, 4), (2, 7, 9, 3)])
def test_max_pool_2x2_equals_flax_max_pool_values_vjp_and_jvp_with_ties(shape):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jnp.round(jax.nn.relu(jax.random.normal(k1, shape)) * 2) / 2  # many tied maxima (zeros and halves)
    ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
    g = jax.random.normal(k2, ref(x).shape)
    np.testing.assert_array_equal(jax.vjp(max_pool_2x2, x)[1](g)[0], jax.vjp(ref, x)[1](g)[0])
    t = jax.random.normal(k3, shape)
    np.testing.assert_array_equal(jax.jvp(max_pool_2x2, (x,), (t,))[1], jax.jvp(ref, (x,), (t,))[1])
    # and forward mode composes with a transpose, as VAT uses it
    _, lin = jax.linearize(max_pool_2x2, x)
    np.testing.assert_array_equal(jax.linear_transpose(lin, x)(g)[0], jax.vjp(ref, x)[1](g)[0])


# ------------------------------------------------------------------------------------- whole models
SHAPES = {"cnn": (2, 16, 16, 1), "wrn28_2": (2, 32, 32, 3), "resnet18": (2, 32, 32, 3),
          "resnet50": (2, 32, 32, 3), "mlp": (2, 20)}


def _model(name, dtype="float32", **kw):
    cfg = get_config()
    cfg.model.name = name
    cfg.model.dtype = dtype
    cfg.model.widths = (8, 16)
    for k, val in kw.items():
        cfg.model[k] = val
    return build_model(cfg.model, 3)


def test_every_registered_model_has_a_shape_case():
    assert set(MODELS) <= set(SHAPES), sorted(set(MODELS) - set(SHAPES))


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_outputs_float32_logits_and_embedding_on_float32_params(name, dtype):
    model = _model(name, dtype)
    x = jnp.zeros(SHAPES[name], jnp.float32)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))  # shapes only: no compile
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v)), "params/batch_stats must be float32"
    (logits, emb), upd = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), v)
    assert logits.shape == (x.shape[0], 3) and logits.dtype == jnp.float32
    assert emb.ndim == 2 and emb.shape[0] == x.shape[0] and emb.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(upd))


def _conv_dtypes(fn, *args) -> set:
    """Operand dtypes of every convolution / dot in fn's jaxpr (nested jaxprs included)."""
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
                found.add((eqn.primitive.name, str(eqn.invars[0].aval.dtype)))
            for p in eqn.params.values():
                for sub in (p if isinstance(p, (tuple, list)) else [p]):
                    if hasattr(sub, "jaxpr"):
                        walk(sub.jaxpr if hasattr(sub.jaxpr, "eqns") else sub.jaxpr.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("name", ["cnn", "wrn28_2", "resnet18"])
def test_bfloat16_models_convolve_in_bfloat16_forward_and_backward(name):
    model = _model(name, "bfloat16")
    x = jnp.zeros(SHAPES[name], jnp.float32)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    v = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v)

    def loss(params):
        (logits, _), _ = model.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(logits)

    convs = {d for p, d in _conv_dtypes(jax.grad(loss), v["params"]) if p == "conv_general_dilated"}
    assert convs == {"bfloat16"}, convs
    m32 = _model(name, "float32")
    assert {d for p, d in _conv_dtypes(lambda x: m32.apply(v, x, train=False), x)
            if p == "conv_general_dilated"} == {"float32"}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_fused_and_flax_batchnorm_models_share_variables_and_outputs(name, monkeypatch):
    """Checkpoints and exported models stay valid: same variable tree; same logits in train and eval mode and
    the same running statistics (to float32 rounding)."""
    from boostmis_jax.models import layers

    x = jax.random.uniform(jax.random.key(0), SHAPES[name])
    out = {}
    for fused in (True, False):
        monkeypatch.setattr(layers, "FUSED_DEFAULT", fused)
        model = _model(name)
        v = jax.jit(lambda x, model=model: model.init(jax.random.key(1), x, train=False))(x[:1])
        (logits, emb), upd = jax.jit(lambda v, x, model=model: model.apply(v, x, train=True,
                                                                            mutable=["batch_stats"]))(v, x)
        ev = jax.jit(lambda v, x, model=model: model.apply(v, x, train=False))(
            {"params": v["params"], "batch_stats": upd["batch_stats"]}, x)
        out[fused] = (jax.tree.structure(v), (logits, emb, upd, ev))
    assert out[True][0] == out[False][0]
    for a, b in zip(jax.tree.leaves(out[True][1]), jax.tree.leaves(out[False][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * (1 + float(jnp.max(jnp.abs(b)))))


# ------------------------------------------------------------------- the XLA defaults the models run under
def test_xla_env_adds_defaults_keeps_user_flags_and_can_be_turned_off():
    from boostmis_jax import xla_env

    env = {}
    flags = xla_env.configure(env)
    assert "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution" in env["XLA_FLAGS"] == flags
    mine = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_cpu_experimental_ynn_fusion_type=",
            "JAX_PLATFORMS": "cuda"}  # (a GPU run: the CPU-only level is not added, see the next tests)
    xla_env.configure(mine)  # the user's value of the same flag wins; their other flags stay first
    assert mine["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4 --xla_cpu_experimental_ynn_fusion_type="
    off = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", xla_env.OPT_OUT: "0"}
    xla_env.configure(off)
    assert off["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_xla_env_skips_flags_the_installed_jaxlib_does_not_know():
    """An older jaxlib aborts on an unknown XLA flag: a default it does not contain is never set."""
    from boostmis_jax import xla_env

    assert xla_env.jaxlib_knows("xla_force_host_platform_device_count")
    assert not xla_env.jaxlib_knows("xla_cpu_no_such_flag_boostmis")
    assert xla_env.merged_flags("--a=1", {"xla_cpu_no_such_flag_boostmis": "1"}) == "--a=1"


def test_xla_env_sets_the_llvm_level_only_where_jax_can_run_nothing_but_cpu(tmp_path, monkeypatch):
    """xla_backend_optimization_level is read by every backend: a GPU/TPU run must keep XLA's default."""
    from boostmis_jax import xla_env

    level = "--xla_backend_optimization_level=1"
    assert level in xla_env.configure({"JAX_PLATFORMS": "cpu"})
    assert level not in xla_env.configure({"JAX_PLATFORMS": "cuda"})
    assert level not in xla_env.configure({"JAX_PLATFORMS": "cpu,tpu"})
    mine = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=3"}
    assert xla_env.configure(mine).count("xla_backend_optimization_level") == 1  # the user's level wins
    monkeypatch.setattr(xla_env, "_accelerator_plugin_installed", lambda: False)  # a CPU-only install
    assert level in xla_env.configure({})
    monkeypatch.undo()
    (tmp_path / "jax_plugins" / "xla_cuda12").mkdir(parents=True)  # how jax-cuda12-plugin installs
    (tmp_path / "jax_plugins" / "xla_cuda12" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert xla_env._accelerator_plugin_installed()
    assert level not in xla_env.configure({}) and level in xla_env.configure({"JAX_PLATFORMS": "cpu"})
