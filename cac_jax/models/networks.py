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
* ``"softmax"`` (cross-entropy baseline): the logits only.

Initialisation follows the original: convolutions kaiming-normal (fan_out, ReLU gain, untruncated),
BatchNorm scale 1 / bias 0, Linear weight N(0, 0.01²) and bias 0.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cac_jax.models import conv
from cac_jax.core import losses

# Channel widths per block; the last conv of each block has stride 2.
CAC_CNN_WIDTHS = ((64, 64, 128), (128, 128, 128), (128, 128, 128))
SMALL_CNN_WIDTHS = ((32, 64), (64, 64))
HEADS = ("anchors", "learnt", "softmax")

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(fan_out, relu)
_dense_init = nn.initializers.normal(stddev=0.01)


class Encoder(nn.Module):
    """Conv-BN-LeakyReLU blocks, stride 2 at the end of each block, Dropout2d after each block."""

    widths: Sequence[Sequence[int]]
    dropout: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        for block in self.widths:
            for i, width in enumerate(block):
                stride = 2 if i == len(block) - 1 else 1
                x = nn.Conv(width, (3, 3), strides=stride, padding=1, use_bias=False, kernel_init=_conv_init,
                            dtype=self.dtype, conv_general_dilated=conv.conv_general_dilated)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype)(x)
                x = nn.leaky_relu(x, negative_slope=0.2)
            # Dropout2d on NHWC: one Bernoulli draw per (example, channel), broadcast over H and W.
            x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
        return x.reshape(x.shape[0], -1)


class OpenSetClassifier(nn.Module):
    """Encoder -> Linear(N) -> head. Returns ``(logits, distances)``, distances None for "softmax"; with
    ``with_features=True`` ``(logits, distances, features)``, features the flattened encoder output (the
    penultimate activations the linear layer sees)."""

    num_classes: int
    widths: Sequence[Sequence[int]] = CAC_CNN_WIDTHS
    dropout: float = 0.2
    head: str = "anchors"
    alpha: float = 10.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False, with_features: bool = False):
        features = Encoder(self.widths, self.dropout, self.dtype, name="encoder")(x, train=train)
        logits = nn.Dense(self.num_classes, kernel_init=_dense_init, bias_init=nn.initializers.zeros,
                          dtype=self.dtype, name="classify")(features).astype(jnp.float32)
        extra = (features,) if with_features else ()
        if self.head == "softmax":
            return logits, None, *extra
        init = lambda *_: losses.anchors(self.num_classes, self.alpha)  # noqa: E731
        if self.head == "anchors":
            centres = self.variable("anchors", "centres", init).value
        elif self.head == "learnt":
            centres = self.param("centres", init)
        else:
            raise ValueError(f"head={self.head!r} is not one of {HEADS}")
        return logits, losses.distances(logits, centres), *extra


def head_for_method(method: str) -> str:
    """CAC trains against fixed anchors, cac_learnt against learnt centres, ce and ce_* with softmax."""
    if method == "cac":
        return "anchors"
    if method == "cac_learnt":
        return "learnt"
    if method == "ce" or method.startswith("ce_"):
        return "softmax"
    raise ValueError(f"unknown method {method!r}")


def create_model(*, model: str, method: str, num_classes: int, image_size: int, dropout: float,
                 alpha: float = 10.0, dtype: str = "float32") -> OpenSetClassifier:
    """The network named by ``model`` ("cac_cnn" or "small_cnn") with the head of ``method``."""
    if model == "cac_cnn":
        if image_size not in (32, 64):
            raise ValueError(f"the CAC network supports 32x32 or 64x64 inputs, got image_size={image_size}")
        widths = CAC_CNN_WIDTHS
    elif model == "small_cnn":
        widths = SMALL_CNN_WIDTHS
    else:
        raise ValueError(f"unknown model {model!r}; choose 'cac_cnn' or 'small_cnn'")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return OpenSetClassifier(num_classes=num_classes, widths=widths, dropout=dropout,
                             head=head_for_method(method), alpha=float(alpha), dtype=jnp.dtype(dtype))


def init_variables(model: OpenSetClassifier, key: jax.Array, image_size: int, channels: int) -> dict:
    """All variable collections (params, batch_stats, and anchors for the CAC head)."""
    dummy = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
    return model.init({"params": key, "dropout": key}, dummy, train=False)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
