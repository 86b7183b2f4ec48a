"""Every op against its plain-numpy formula, with float64 gradients checked by finite differences.

The core is one table, `OPS` (in `tinygrad_rnn/op_table.py`, which `tinygrad-rnn gradcheck`
reads too): a row names an op, gives the tinygrad call and the numpy formula, the op's arity,
the value domain of its inputs and a strategy drawing its shapes (plus any shape-dependent
arguments: dims, indices, targets). `test_op` runs every row through the same checks, so
adding an op means adding one row. Below the factory are the rules a formula cannot express:
tie rules, dtype rules, error messages, dropout's randomness, large-input stability.

Every test runs on both kernel backends, and on the plain path with the numba kernels (the
`backend` fixture: plain is the textbook engine, tests/modes.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import ShapeError, Tensor
from tinygrad_rnn.op_table import OPS, draw_values, np_softmax, reduce_case
from modes import path
from tolerances import EXACT, GRADCHECK


# test_op's tolerances, (rtol, atol): the largest error seen over 3 runs of 40 draws of every
# row on both backends, as a fraction of the bound and as |error|, is given with each
# (measure: python tests/measure_tolerances.py tests/test_ops.py); its gradcheck's: 1/11, 1.3e-9
FORWARD64 = (5e-13, 5e-15)  # float64 forward against the formula: 1/24, 2.1e-16
FORWARD32 = (1e-5, 1e-5)  # float32 forward against the float64 formula: 1/50, 2.5e-7
BACKWARD32 = (1e-5, 1e-5)  # float32 gradients against float64 ones: 1/31, 5.0e-7


@pytest.fixture(autouse=True, params=["numba", "numpy", "numba-plain"])
def backend(request):
    """Both kernel backends on the fast path, and the numba kernels on the plain, textbook path
    (`tg.fast.disabled()`: the engine's own Accumulator, every op sending plain arrays)."""
    name, _, plain = request.param.partition("-")
    tg.set_backend(name)
    with path(not plain):
        yield name
    tg.set_backend("numba")



# ============================================================================ the factory
def as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def assert_same(got, expected, rtol, atol, what):
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, expected {len(expected)}"
    for g, e in zip(got, expected):
        assert isinstance(g, Tensor), f"{what}: got {type(g).__name__}, expected a Tensor"
        e = np.asarray(e)
        assert g.shape == e.shape, f"{what}: shape {g.shape}, expected {e.shape}"
        if e.dtype.kind in "iu":  # argmax/argmin indices: exact
            assert g.dtype.kind in "iu", f"{what}: indices of dtype {g.dtype}"
            np.testing.assert_array_equal(g.numpy(), e, err_msg=what)
        else:
            np.testing.assert_allclose(g.numpy(), e, rtol=rtol, atol=atol, err_msg=what, equal_nan=False)


def float_outputs(out):
    return [o for o in as_tuple(out) if isinstance(o, Tensor) and o.dtype.kind == "f"]


def seeded_backward(spec, arrays, kwargs, dtype):
    """Backward of every float output with a fixed random seed gradient; returns the inputs'
    gradients and the dtypes the gradients had when they reached the inputs (before the leaf's
    own cast could hide a widened gradient)."""
    inputs = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    arrived = []
    for t in inputs:
        t.register_hook(lambda g: arrived.append(g.dtype))
    rng = np.random.default_rng(0)
    for o in float_outputs(spec.fn(*inputs, **kwargs)):
        if o.requires_grad:
            o.backward(rng.standard_normal(o.shape).astype(dtype), retain_graph=True)
    return [t.grad for t in inputs], arrived


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.name)
@given(data=st.data())
def test_op(spec, data):
    shapes, kwargs = data.draw(spec.shapes, label="shapes and arguments")
    arrays = draw_values(data, spec.domains(), shapes)
    expected = spec.ref(*[a.copy() for a in arrays], **kwargs)

    # forward, float64: the numpy formula
    assert_same(spec.fn(*[Tensor(a.copy()) for a in arrays], **kwargs), expected, *FORWARD64, "float64 forward")

    # forward, float32: stays float32 and agrees to float32 precision
    out32 = spec.fn(*[Tensor(a.astype(np.float32)) for a in arrays], **kwargs)
    for o in float_outputs(out32):
        assert o.dtype == np.float32, f"float32 inputs gave a {o.dtype} output"
    assert_same(out32, expected, *FORWARD32, "float32 forward")

    # backward, float32: gradients stay float32 all the way and match the float64 ones.
    # Also the only backward run for empty outputs, which gradcheck has nothing to check on.
    grads32, arrived = seeded_backward(spec, arrays, kwargs, np.float32)
    grads64, _ = seeded_backward(spec, arrays, kwargs, np.float64)
    assert all(dt == np.float32 for dt in arrived), f"float32 inputs received gradients of dtypes {arrived}"
    for a, g32, g64 in zip(arrays, grads32, grads64):
        assert (g32 is None) == (g64 is None)
        if g32 is not None:
            assert g32.dtype == np.float32 and g32.shape == a.shape and g64.shape == a.shape
            # gradcheck cannot see NaN (every comparison with NaN is False), so look here
            assert np.all(np.isfinite(g64.numpy())), f"non-finite gradient {g64.numpy()}"
            np.testing.assert_allclose(g32.numpy(), g64.numpy(), *BACKWARD32, equal_nan=False)

    # backward, float64: finite differences, at the tests' tolerances (tighter than the defaults)
    inputs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    assert tg.gradcheck(lambda *ts: spec.fn(*ts, **kwargs), inputs, **GRADCHECK)


def test_op_names_are_unique():
    names = [s.name for s in OPS]
    assert len(set(names)) == len(names), "duplicate op names in the table"


# ============================================================================ tie rules
@st.composite
def tied_reduce_case(draw):
    """Values from {0, 1, 2}: ties are the common case, not the exception."""
    (s,), kw = draw(reduce_case(nonempty=True))
    x = draw(hnp.arrays(np.float64, s, elements=st.sampled_from((0.0, 1.0, 2.0))))
    return x, kw["dim"], kw["keepdim"]


def first_occurrence_grad(x, dim, argf):
    """One-hot at the first extremum of each reduced slice, in C order over the reduced dims."""
    nd = x.ndim
    if dim is None or nd == 0:
        dims = tuple(range(nd))
    else:
        dims = tuple(sorted({d % nd for d in (dim if isinstance(dim, tuple) else (dim,))}))
    keep = tuple(i for i in range(nd) if i not in dims)
    rows = np.transpose(x, keep + dims).reshape(-1, math.prod(x.shape[d] for d in dims))
    grad = np.zeros_like(rows)
    grad[np.arange(len(rows)), argf(rows, axis=1)] = 1
    return np.transpose(grad.reshape([x.shape[p] for p in keep + dims]), np.argsort(keep + dims))


@pytest.mark.parametrize("name,argf", [("max", np.argmax), ("min", np.argmin)])
@given(case=tied_reduce_case())
def test_extremum_gradient_goes_to_first_occurrence(name, argf, case):
    x_np, dim, keepdim = case
    x = Tensor(x_np.copy(), requires_grad=True)
    out = getattr(x, name)(dim, keepdim)
    values = out[0] if isinstance(out, tuple) else out
    values.backward(np.ones(values.shape))
    np.testing.assert_array_equal(x.grad.numpy(), first_occurrence_grad(x_np, dim, argf))


def test_extremum_tie_examples():
    x = Tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [0, 0, 0]])
    x.grad = None
    values, indices = x.max(dim=1)
    values.sum().backward()
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    z = Tensor([[0.0, 4.0, 0.0], [5.0, 5.0, 5.0]], requires_grad=True)
    values, indices = z.min(dim=1, keepdim=True)
    values.sum().backward()
    np.testing.assert_array_equal(indices.numpy(), [[0], [0]])
    np.testing.assert_array_equal(z.grad.numpy(), [[1, 0, 0], [1, 0, 0]])
    y = Tensor([[5.0, 5.0], [5.0, 5.0]], requires_grad=True)
    y.min(dim=(0, 1)).backward()
    np.testing.assert_array_equal(y.grad.numpy(), [[1, 0], [0, 0]])


@pytest.mark.parametrize("fn", [tg.maximum, tg.minimum], ids=["maximum", "minimum"])
def test_binary_extremum_ties_split_the_gradient(fn):
    a = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = Tensor([1.0, 0.0, 3.0], requires_grad=True)
    fn(a, b).sum().backward()
    winner_a = 1.0 if fn is tg.maximum else 0.0
    np.testing.assert_array_equal(a.grad.numpy(), [0.5, winner_a, 0.5])
    np.testing.assert_array_equal(b.grad.numpy(), [0.5, 1 - winner_a, 0.5])
    # a broadcast side collects half of every tie it takes part in
    c = Tensor([2.0, 2.0, 2.0, 2.0], requires_grad=True)
    s = Tensor(2.0, requires_grad=True)
    fn(c, s).sum().backward()
    np.testing.assert_array_equal(c.grad.numpy(), [0.5] * 4)
    assert s.grad.item() == 2.0


# ============================================================================ dtype rules
SCALARS = [2.5, 2, np.float64(2.5), np.float32(2.5), np.int64(2)]
SCALAR_OPS = {
    "x+s": lambda x, s: x + s, "s+x": lambda x, s: s + x,
    "x-s": lambda x, s: x - s, "s-x": lambda x, s: s - x,
    "x*s": lambda x, s: x * s, "s*x": lambda x, s: s * x,
    "x/s": lambda x, s: x / s, "s/x": lambda x, s: s / x,
    "x**s": lambda x, s: x ** s, "s**x": lambda x, s: s ** x,
    "maximum(x,s)": lambda x, s: tg.maximum(x, s), "maximum(s,x)": lambda x, s: tg.maximum(s, x),
    "minimum(x,s)": lambda x, s: tg.minimum(x, s), "minimum(s,x)": lambda x, s: tg.minimum(s, x),
    "clamp(min=s)": lambda x, s: x.clamp(min=s), "clamp(max=s)": lambda x, s: x.clamp(max=s),
    "where(c,x,s)": lambda x, s: tg.where(x > 1, x, s), "where(c,s,x)": lambda x, s: tg.where(x > 1, s, x),
}


@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: f"{type(s).__name__}")
@pytest.mark.parametrize("name", SCALAR_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numbers_follow_the_tensor_dtype(name, scalar, dtype):
    x = Tensor(np.array([0.5, 1.5, 3.0], dtype), requires_grad=True)
    arrived = []
    x.register_hook(lambda g: arrived.append(g.dtype))
    out = SCALAR_OPS[name](x, scalar)
    assert out.dtype == dtype
    out.backward(np.ones(out.shape, dtype))
    assert arrived == [np.dtype(dtype)], f"the gradient reached x as {arrived}"


def test_python_floats_make_float32_and_explicit_dtypes_are_exact():
    assert Tensor(0.1).dtype == np.float32
    assert Tensor([0.1, 0.2]).dtype == np.float32
    assert tg.tensor([[1.0]]).dtype == np.float32
    assert Tensor([1, 2]).dtype == np.int64
    assert Tensor(np.zeros(2)).dtype == np.float64  # numpy arrays keep their dtype
    # an explicit float64 must not round through float32 on the way
    assert Tensor([0.1], dtype=np.float64).numpy()[0] == 0.1
    assert tg.tensor(0.1, dtype=np.float64).item() == 0.1


MIXED_DTYPE_OPS = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b), ("maximum", tg.maximum),
    ("minimum", tg.minimum), ("where", lambda a, b: tg.where(np.array([True, False]), a, b)),
    ("matmul", lambda a, b: a @ b), ("cat", lambda a, b: tg.cat([a, b])),
    ("stack", lambda a, b: tg.stack([a, b])),
]


@pytest.mark.parametrize("name,fn", MIXED_DTYPE_OPS, ids=[n for n, _ in MIXED_DTYPE_OPS])
@pytest.mark.parametrize("order", ["32,64", "64,32"])
def test_mixing_float_widths_raises_naming_the_op(name, fn, order):
    a, b = Tensor(np.ones(2, np.float32)), Tensor(np.ones(2, np.float64))
    if order == "64,32":
        a, b = b, a
    with pytest.raises(ShapeError) as e:
        fn(a, b)
    assert name in str(e.value).lower()


SHAPE_MISMATCH_OPS = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b), ("maximum", tg.maximum),
    ("minimum", tg.minimum), ("where", lambda a, b: tg.where(True, a, b)),
    ("matmul", lambda a, b: a @ b), ("cat", lambda a, b: tg.cat([a, b])),
    ("stack", lambda a, b: tg.stack([a, b])),
]


@pytest.mark.parametrize("name,fn", SHAPE_MISMATCH_OPS, ids=[n for n, _ in SHAPE_MISMATCH_OPS])
def test_shape_mismatch_names_the_op_and_both_shapes(name, fn):
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError) as e:
        fn(a, b)
    msg = str(e.value)
    assert name in msg.lower() and "(2, 3)" in msg and "(4, 5)" in msg, msg


def test_matmul_rejects_0d_operands():
    with pytest.raises(ShapeError, match="(?i)matmul"):
        Tensor(np.ones(())) @ Tensor(np.ones(3))


def test_expand_refuses_minus_one_in_a_new_leading_dim():
    with pytest.raises(ValueError, match="-1"):
        Tensor(np.ones(3)).expand(-1, 3)


@pytest.mark.parametrize("targets,bad", [([0, 3], "3"), ([-2, 1], "-2"), ([7, -100], "7")])
def test_cross_entropy_out_of_range_target_names_the_target(targets, bad):
    logits = Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises((IndexError, ValueError), match=rf"target {bad}\b"):
        F.cross_entropy(logits, np.array(targets))
    # (N, C, d) logits: the target is named just the same
    with pytest.raises((IndexError, ValueError), match=rf"target {bad}\b"):
        F.cross_entropy(Tensor(np.zeros((2, 3, 1))), np.array(targets)[:, None])


def test_cross_entropy_rejects_bad_targets_and_reductions():
    logits = Tensor(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"\(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match="integer"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ShapeError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")


@pytest.mark.parametrize("bad", [3, 10, -1])
def test_embedding_out_of_range_index(bad):
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises((IndexError, ValueError), match=rf"index {bad}\b"):
        F.embedding(np.array([0, bad, 1]), w)
    with pytest.raises((TypeError, ValueError), match="integer"):
        F.embedding(np.array([0.0]), w)


def test_one_hot_values_and_errors():
    np.testing.assert_array_equal(F.one_hot(np.array([2, 0, 2]), 3).numpy(), np.eye(3)[[2, 0, 2]])
    assert F.one_hot(np.array([1, 3])).shape == (2, 4)  # num_classes inferred from the max
    assert F.one_hot(Tensor([[0, 1]]), 2).dtype == np.float32
    assert F.one_hot(np.array(1), 2).shape == (2,)
    with pytest.raises(IndexError, match="index 5"):
        F.one_hot(np.array([0, 5]), 3)
    with pytest.raises(IndexError, match="index -1"):
        F.one_hot(np.array([0, -1]), 3)
    with pytest.raises(TypeError, match="integers"):
        F.one_hot(np.array([0.0]), 3)


@pytest.mark.parametrize("make", [
    lambda: Tensor([1, 2], requires_grad=True),
    lambda: tg.tensor(np.array([True, False]), requires_grad=True),
    lambda: tg.arange(3, requires_grad=True),
    lambda: tg.zeros(2, dtype=np.int64, requires_grad=True),
    lambda: Tensor(np.ones(2)).long().requires_grad_(),
], ids=["list", "bool", "arange", "zeros", "requires_grad_"])
def test_integer_tensors_cannot_require_grad(make):
    with pytest.raises(TypeError, match="floating-point"):
        make()


# ============================================================================ repeated indices
def test_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3, 0, 1, 0])
    m = Tensor(np.ones((2, 3)), requires_grad=True)
    (m[:, np.array([1, 1])] * 2).sum().backward()
    np.testing.assert_array_equal(m.grad.numpy(), [[0, 4, 0], [0, 4, 0]])
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    F.embedding(np.array([[2, 2], [2, 0]]), w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [0, 0], [3, 3]])


# ============================================================================ dropout
def test_dropout_scales_kept_elements_and_gradient_is_the_mask():
    p = 0.3
    tg.manual_seed(1)
    x = tg.randn(4000, requires_grad=True)
    y = F.dropout(x, p)
    assert y.dtype == np.float32
    kept = y.numpy() != 0
    assert 0.25 < 1 - kept.mean() < 0.35  # ~p of 4000 dropped; 5 sigma is about +-0.036
    # largest errors seen over 3 seeds: 1/9 and 1/42 of rtol 1e-6 (float32; measured as test_op's)
    np.testing.assert_allclose(y.numpy()[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    y.backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p), rtol=1e-6)


def test_dropout_identity_cases():
    x = Tensor(np.arange(5.0), requires_grad=True)
    for y in (F.dropout(x, 0.0), F.dropout(x, 0.7, training=False)):
        np.testing.assert_array_equal(y.numpy(), x.numpy())
    assert np.all(F.dropout(x, 1.0).numpy() == 0)
    with pytest.raises(ValueError, match="p must be"):
        F.dropout(x, 1.5)


def test_dropout_is_reproducible_under_manual_seed():
    x = tg.ones(64, 8)
    tg.manual_seed(123)
    a = F.dropout(x, 0.5).numpy()
    tg.manual_seed(123)
    b = F.dropout(x, 0.5).numpy()
    tg.manual_seed(124)
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    tg.manual_seed(7)
    r1 = tg.randn(5).numpy()
    tg.manual_seed(7)
    np.testing.assert_array_equal(r1, tg.randn(5).numpy())


# ============================================================================ stability
LARGE = np.concatenate([np.linspace(-1e3, 1e3, 41), [-89.0, -88.0, 88.0, 89.0, -710.0, 710.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = Tensor(LARGE.astype(dtype), requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow on the way either
        y = x.sigmoid()
        y.backward(np.ones(y.shape, dtype))
    ref = scipy.special.expit(LARGE)
    assert y.dtype == dtype and np.all(np.isfinite(y.numpy()))
    # below the smallest normal number precision runs out, hence atol=tiny; largest error
    # seen: 2.4e-38 (float64, 1/5 of the bound), none in float32 (measured as test_op's)
    np.testing.assert_allclose(y.numpy(), ref.astype(dtype), rtol=1e-6, atol=np.finfo(dtype).tiny)
    assert np.all(np.isfinite(x.grad.numpy()))
    # y * (1 - y) cannot resolve 1 - y below eps once y rounds to 1 (PyTorch's formula does the
    # same), so the derivative is held to eps relative to its peak of 1/4, not to its own size.
    # The largest error seen is far smaller, 1.9e-22 (at x = 50, where the derivative is
    # 1.9e-22 and y already rounds to 1): this grid has no x near 37, where it would be eps/2.
    # Where the derivative exceeds eps it came out exact (EXACT allows 4 ulp).
    dref = (ref * scipy.special.expit(-LARGE)).astype(dtype)
    np.testing.assert_allclose(x.grad.numpy(), dref, rtol=EXACT[np.dtype(dtype)], atol=np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_is_stable_for_large_logits(dtype):
    z = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -1000.0]], dtype)
    shifted = z - z.max(axis=1, keepdims=True)  # the same math where exp cannot overflow
    lse = np.log(np.exp(shifted).sum(axis=1)) + z.max(axis=1)
    # logsumexp, softmax and the loss came out exact on both backends (EXACT allows 4 ulp);
    # log_softmax's z - lse rounds at the size of z: largest error seen 0.25 eps * max |z|
    # (float32), 0.17 (float64), on both backends
    np.testing.assert_allclose(Tensor(z).logsumexp(1).numpy(), lse, rtol=EXACT[np.dtype(dtype)])
    np.testing.assert_allclose(Tensor(z).softmax(1).numpy(), np_softmax(shifted, 1),
                               rtol=EXACT[np.dtype(dtype)], atol=1e-30)
    np.testing.assert_allclose(Tensor(z).log_softmax(1).numpy(), z - lse[:, None], rtol=0,
                               atol=4 * np.finfo(dtype).eps * np.abs(z).max())
    logits = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(logits, np.array([2, 0]))
    loss.backward()
    np.testing.assert_allclose(loss.item(), np.mean([lse[0] - z[0, 2], lse[1] - z[1, 0]]), rtol=EXACT[np.dtype(dtype)])
    assert np.all(np.isfinite(logits.grad.numpy()))


def test_split_round_trips_through_cat():
    for n in (0, 1, 5):
        x = Tensor(np.arange(float(n)), requires_grad=True)
        pieces = x.split(2)
        assert len(pieces) == max(1, -(-n // 2))
        tg.cat(pieces).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.ones(n))
