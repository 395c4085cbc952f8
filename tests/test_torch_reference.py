"""The PyTorch reference used by benchmarks/vs_pytorch.py computes what cac-jax computes: same loss, same network size."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference as ref  # noqa: E402
from cac_jax.core import losses  # noqa: E402
from cac_jax import models


@pytest.mark.parametrize("n", [2, 6, 50])
def test_loss_matches_cac_jax(n):
    rng = np.random.default_rng(n)
    logits = (rng.normal(size=(64, n)) * 4 + 10 * np.eye(n)[rng.integers(0, n, 64)]).astype(np.float32)
    labels = rng.integers(0, n, 64)
    want = [float(v) for v in losses.cac_loss(logits, labels.astype(np.int32))]
    z, y = torch.tensor(logits), torch.tensor(labels)
    original = [float(v) for v in ref.cac_loss(z, y, anchors=10.0 * torch.eye(n, dtype=torch.float64))]
    identity = [float(v) for v in ref.cac_loss(z, y)]
    np.testing.assert_allclose(original, want, rtol=1e-5)  # float64 (PyTorch) against float32 (JAX)
    np.testing.assert_allclose(identity, original, rtol=1e-12)


def test_loss_gradient_matches_cac_jax():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(32, 6)) * 5).astype(np.float32)
    labels = rng.integers(0, 6, 32)
    want = np.asarray(jax.grad(lambda z: losses.cac_loss(z, labels.astype(np.int32))[0])(logits))
    z = torch.tensor(logits, requires_grad=True)
    ref.cac_loss(z, torch.tensor(labels))[0].backward()
    np.testing.assert_allclose(z.grad.numpy(), want, rtol=1e-4, atol=1e-7)


def test_distance_layer_matches_cac_jax():
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(16, 6)) * 5).astype(np.float32)
    z = torch.tensor(logits)
    got = ref.anchor_distances(z, 10.0 * torch.eye(6, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, np.asarray(losses.distances(logits, losses.anchors(6))), rtol=1e-5)
    np.testing.assert_allclose(ref.identity_anchor_distances(z).numpy(), got, rtol=1e-12)


@pytest.mark.parametrize("image_size,channels,n", [(32, 3, 6), (64, 3, 20)])
def test_network_matches_cac_jax(image_size, channels, n):
    net = ref.OpenSetClassifier(n, image_size, channels)
    model = models.create_model(model="cac_cnn", head="anchors", num_classes=n, image_size=image_size, dropout=0.2)
    variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), image_size, channels))
    assert ref.count_trainable(net) == models.count_params(variables["params"])
    assert net.anchors.dtype == torch.float64 and "anchors" not in dict(net.named_parameters())
    logits, dist = net.eval()(torch.zeros(2, channels, image_size, image_size))
    assert logits.shape == (2, n) and dist.shape == (2, n) and dist.dtype == torch.float64


def test_train_step_updates_parameters():
    torch.manual_seed(0)
    net = ref.OpenSetClassifier(6, 32, 3)
    opt = ref.make_optimizer(net)
    before = net.classify.weight.detach().clone()
    loss = ref.train_step(net.train(), opt, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss) and not torch.equal(before, net.classify.weight)
    assert opt.defaults["weight_decay"] == 5e-6 and opt.defaults["momentum"] == 0.9
