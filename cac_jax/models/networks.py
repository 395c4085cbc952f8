"""The networks: the original CAC encoder (SPEC.md §3), a small digits encoder, and three heads.

Encoder blocks are 3x3 convolutions without bias (``cac_jax.models.conv``: a faster CPU gradient for stride
2), each followed by BatchNorm (PyTorch eps 1e-5 and momentum 0.1, i.e. Flax ``momentum=0.9``) and
LeakyReLU(0.2); the last convolution of every block
has stride 2 and the block ends with channel dropout (PyTorch ``Dropout2d``). The feature map is
flattened (no pooling) into a Linear layer with one output per known class: the logits z ∈ R^N.

Heads (``head``):

* ``"anchors"`` (CAC): distances d_j = ||z - c_j||_2 to fixed anchors c_j = alpha·e_j. The anchors
  live in the ``"anchors"`` variable collection, not in ``"params"``, so the optimiser never sees them.
* ``"learnt"`` (the paper's learnt-centre ablation): the same distances, but the centres are a
  trained parameter ``params["centres"]`` initialised to alpha·I.
* ``"logits"`` (cross-entropy baseline): the logits only.

Initialisation follows the original: convolutions kaiming-normal (fan_out, ReLU gain, untruncated),
BatchNorm scale 1 / bias 0, Linear weight N(0, 0.01²) and bias 0.

``model="classifier32"`` is the variant of the same nine convolutions that ARPL and Vaze et al. train
(``models/classifier32.py``; MODERN_PROTOCOL.md (b)): Dropout2d(0.2) on the input image and before the
second and third blocks (not after each block), global average pooling (features 128-d, any input size),
a bias-free linear layer, convolutions initialised N(0, 0.05²), BatchNorm scale N(1, 0.02²) and bias 0,
the linear layer PyTorch's default U(±1/sqrt(128)).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cac_jax.models import conv
from cac_jax.core import losses
from cac_jax.objectives import HEADS

# Channel widths per block; the last conv of each block has stride 2.
CAC_CNN_WIDTHS = ((64, 64, 128), (128, 128, 128), (128, 128, 128))
SMALL_CNN_WIDTHS = ((32, 64), (64, 64))

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(fan_out, relu)
_dense_init = nn.initializers.normal(stddev=0.01)
_arpl_conv_init = nn.initializers.normal(stddev=0.05)


def _arpl_bn_scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _torch_linear_init(key, shape, dtype=jnp.float32):  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / jnp.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


VARIANTS = ("cac", "arpl")


class Encoder(nn.Module):
    """Conv-BN-LeakyReLU blocks, stride 2 at the end of each block. ``variant="cac"``: Dropout2d after each
    block, the feature map flattened; ``"arpl"`` (classifier32): Dropout2d before each block (the first on the
    input image), the feature map averaged over space."""

    widths: Sequence[Sequence[int]]
    dropout: float
    dtype: jnp.dtype = jnp.float32
    variant: str = "cac"

    @nn.compact
    def __call__(self, x, *, train: bool):
        arpl = self.variant == "arpl"
        conv_init = _arpl_conv_init if arpl else _conv_init
        scale_init = _arpl_bn_scale_init if arpl else nn.initializers.ones

        def dropout2d(x):  # on NHWC: one Bernoulli draw per (example, channel), broadcast over H and W
            return nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)

        for block in self.widths:
            if arpl:
                x = dropout2d(x)
            for i, width in enumerate(block):
                stride = 2 if i == len(block) - 1 else 1
                x = nn.Conv(width, (3, 3), strides=stride, padding=1, use_bias=False, kernel_init=conv_init,
                            dtype=self.dtype, conv_general_dilated=conv.conv_general_dilated)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=scale_init,
                                 dtype=self.dtype)(x)
                x = nn.leaky_relu(x, negative_slope=0.2)
            if not arpl:
                x = dropout2d(x)
        return jnp.mean(x, axis=(1, 2)) if arpl else x.reshape(x.shape[0], -1)


class OpenSetClassifier(nn.Module):
    """Encoder -> Linear(N) -> head. Returns ``(logits, distances)``, distances None for "logits"; with
    ``with_features=True`` ``(logits, distances, features)``, features the flattened encoder output (the
    penultimate activations the linear layer sees)."""

    num_classes: int
    widths: Sequence[Sequence[int]] = CAC_CNN_WIDTHS
    dropout: float = 0.2
    head: str = "anchors"
    alpha: float = 10.0
    dtype: jnp.dtype = jnp.float32
    variant: str = "cac"

    @nn.compact
    def __call__(self, x, *, train: bool = False, with_features: bool = False):
        features = Encoder(self.widths, self.dropout, self.dtype, self.variant, name="encoder")(x, train=train)
        arpl = self.variant == "arpl"
        logits = nn.Dense(self.num_classes, use_bias=not arpl, kernel_init=_torch_linear_init if arpl else _dense_init,
                          bias_init=nn.initializers.zeros, dtype=self.dtype, name="classify")(features).astype(jnp.float32)
        extra = (features,) if with_features else ()
        if self.head == "logits":
            return logits, None, *extra
        init = lambda *_: losses.anchors(self.num_classes, self.alpha)  # noqa: E731
        if self.head == "anchors":
            centres = self.variable("anchors", "centres", init).value
        elif self.head == "learnt":
            centres = self.param("centres", init)
        else:
            raise ValueError(f"head={self.head!r} is not one of {HEADS}")
        return logits, losses.distances(logits, centres), *extra


# Cached: the train state holds ``model.apply``, and bound methods compare their module by identity, so an equal
# but new module (a resumed run, the next trial of a sweep in the same process) would compile the train step again.
@functools.lru_cache(maxsize=None)
def create_model(*, model: str, head: str, num_classes: int, image_size: int, dropout: float,
                 alpha: float = 10.0, dtype: str = "float32") -> OpenSetClassifier:
    """The network named by ``model`` ("cac_cnn", "classifier32" or "small_cnn") with ``head`` (one of :data:`HEADS`:
    a training objective declares its own)."""
    variant = "cac"
    if model == "cac_cnn":
        if image_size not in (32, 64):
            raise ValueError(f"the CAC network supports 32x32 or 64x64 inputs, got image_size={image_size}")
        widths = CAC_CNN_WIDTHS
    elif model == "classifier32":
        widths, variant = CAC_CNN_WIDTHS, "arpl"
    elif model == "small_cnn":
        widths = SMALL_CNN_WIDTHS
    else:
        raise ValueError(f"unknown model {model!r}; choose 'cac_cnn', 'classifier32' or 'small_cnn'")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return OpenSetClassifier(num_classes=num_classes, widths=widths, dropout=dropout,
                             head=head, alpha=float(alpha), dtype=jnp.dtype(dtype), variant=variant)


def init_variables(model: OpenSetClassifier, key: jax.Array, image_size: int, channels: int) -> dict:
    """All variable collections (params, batch_stats, and anchors for the CAC head)."""
    dummy = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
    return model.init({"params": key, "dropout": key}, dummy, train=False)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
