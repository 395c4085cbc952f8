"""The encoder's convolution: the polyphase stride-2 input gradient against XLA's own, and the fallbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from cac_jax.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _dims(x, w, spec=NHWC):
    return lax.conv_dimension_numbers(x.shape, w.shape, spec)


def _loss(fn, x, w, stride, padding, spec=NHWC):
    # A fixed random cotangent, so that every output element's gradient counts with its own weight.
    y = fn(x, w, stride, padding, dimension_numbers=_dims(x, w, spec))
    return jnp.sum(y * jnp.sin(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)))


def _value_and_grads(fn, x, w, stride=(2, 2), padding=((1, 1), (1, 1)), spec=NHWC):
    return jax.jit(jax.value_and_grad(lambda x, w: _loss(fn, x, w, stride, padding, spec), argnums=(0, 1)))(x, w)


def _assert_close(got, want):
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, r = np.asarray(g), np.asarray(r)
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * (1 + np.abs(r).max()))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), half_h=st.integers(1, 5), half_w=st.integers(1, 5), c=st.integers(1, 4),
       o=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_stride2_value_and_gradients_match_xla(batch, half_h, half_w, c, o, seed):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (batch, 2 * half_h, 2 * half_w, c))
    w = jax.random.normal(kw, (3, 3, c, o))
    _assert_close(_value_and_grads(conv.conv_general_dilated, x, w), _value_and_grads(lax.conv_general_dilated, x, w))


def test_polyphase_input_grad_equals_transpose_of_the_convolution():
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 5))
    w = jax.random.normal(jax.random.key(1), (3, 3, 5, 7))
    forward = lambda x: lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC)  # noqa: E731
    g = jax.random.normal(jax.random.key(2), forward(x).shape)
    _assert_close(conv.polyphase_input_grad(g, w), jax.vjp(forward, x)[1](g)[0])


@pytest.mark.parametrize("shape,stride,padding,spec", [
    ((2, 7, 6, 3), (2, 2), ((1, 1), (1, 1)), NHWC),      # odd height
    ((2, 8, 8, 3), (1, 1), ((1, 1), (1, 1)), NHWC),      # stride 1
    ((2, 8, 8, 3), (2, 2), "SAME", NHWC),                 # padding given by name
    ((2, 8, 8, 3), (2, 2), ((0, 0), (0, 0)), NHWC),      # no padding
    ((2, 3, 8, 8), (2, 2), ((1, 1), (1, 1)), ("NCHW", "OIHW", "NCHW")),
])
def test_other_convolutions_are_xlas_own(shape, stride, padding, spec):
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), (4, 3, 3, 3) if spec[1] == "OIHW" else (3, 3, 3, 4))
    args = dict(stride=stride, padding=padding, spec=spec)
    _assert_close(_value_and_grads(conv.conv_general_dilated, x, w, **args),
                  _value_and_grads(lax.conv_general_dilated, x, w, **args))


def test_bfloat16_gradients_keep_their_dtypes():
    x = jnp.ones((2, 8, 8, 3), jnp.bfloat16)
    w = jnp.ones((3, 3, 3, 4), jnp.bfloat16)
    _, (dx, dw) = _value_and_grads(conv.conv_general_dilated, x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16


def test_gradient_also_lowers_for_cuda():
    """The non-CPU branch of lax.platform_dependent (XLA's own transpose) traces and lowers for CUDA."""
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)
    grad = jax.jit(jax.grad(lambda x, w: _loss(conv.conv_general_dilated, x, w, (2, 2), ((1, 1), (1, 1))),
                            argnums=(0, 1)))
    exported = jax.export.export(grad, platforms=("cpu", "cuda"))(x, w)
    assert "convolution" in exported.mlir_module()
