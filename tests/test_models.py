"""The network: shapes, parameter count against the original's, initialisation, heads, channel dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cac_jax import models


def _original_param_count(num_classes, image_size, channels):
    """Trainable parameters of the original (SPEC.md §3): 9 bias-free 3x3 convs, 9 BNs, Linear with bias."""
    widths = [(channels, 64), (64, 64), (64, 128)] + [(128, 128)] * 6
    convs = sum(9 * i * o for i, o in widths)
    bns = sum(2 * o for _, o in widths)
    flat = 128 * (image_size // 8) ** 2  # 2048 at 32 px, 8192 at 64 px
    return convs + bns + flat * num_classes + num_classes


@pytest.mark.parametrize("image_size,channels,n", [(32, 3, 6), (32, 1, 6), (64, 3, 20)])
def test_cac_cnn_matches_original_shapes_and_count(image_size, channels, n):
    model = models.create_model(model="cac_cnn", head="anchors", num_classes=n, image_size=image_size, dropout=0.2)
    variables = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), image_size, channels))
    params = variables["params"]
    assert models.count_params(params) == _original_param_count(n, image_size, channels)
    assert params["classify"]["kernel"].shape == (128 * (image_size // 8) ** 2, n)
    assert params["encoder"]["Conv_0"]["kernel"].shape == (3, 3, channels, 64)
    assert "bias" not in params["encoder"]["Conv_0"]
    # The anchors are a separate, non-trainable collection of shape (N, N).
    assert "centres" not in params
    assert variables["anchors"]["centres"].shape == (n, n)
    assert len(variables["batch_stats"]["encoder"]) == 9


def test_forward_heads():
    x = jnp.zeros((2, 32, 32, 3))
    for head, has_dist in (("anchors", True), ("learnt", True), ("logits", False)):
        model = models.create_model(model="cac_cnn", head=head, num_classes=6, image_size=32, dropout=0.2)
        variables = models.init_variables(model, jax.random.key(0), 32, 3)
        logits, dist = model.apply(variables, x, train=False)
        assert logits.shape == (2, 6)
        assert (dist is not None) == has_dist
        if head == "learnt":
            np.testing.assert_allclose(variables["params"]["centres"], 10 * np.eye(6))
            assert "anchors" not in variables
        if has_dist:
            np.testing.assert_allclose(dist, np.linalg.norm(np.asarray(logits)[:, None] - 10 * np.eye(6), axis=-1),
                                       rtol=1e-5)


def test_initialisation_follows_original():
    model = models.create_model(model="cac_cnn", head="anchors", num_classes=6, image_size=32, dropout=0.2)
    params = models.init_variables(model, jax.random.key(1), 32, 3)["params"]
    k = np.asarray(params["encoder"]["Conv_4"]["kernel"])  # 128 -> 128: kaiming fan_out std sqrt(2 / (9 * 128))
    assert abs(k.std() - np.sqrt(2 / (9 * 128))) < 0.05 * np.sqrt(2 / (9 * 128))
    assert np.abs(k).max() > 2.5 * k.std()  # untruncated normal, as PyTorch's kaiming_normal_
    w = np.asarray(params["classify"]["kernel"])
    assert abs(w.std() - 0.01) < 0.001
    assert not np.asarray(params["classify"]["bias"]).any()
    bn = params["encoder"]["BatchNorm_0"]
    assert np.all(np.asarray(bn["scale"]) == 1) and not np.asarray(bn["bias"]).any()


def test_channel_dropout_drops_whole_channels():
    enc = models.Encoder(widths=((4, 8),), dropout=0.5)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 2))
    variables = enc.init(jax.random.key(1), x, train=False)
    out, _ = enc.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    fmap = np.asarray(out).reshape(3, 4, 4, 8)
    zero = (fmap == 0).all(axis=(1, 2))
    assert zero.any() and not zero.all()
    assert ((fmap != 0).all(axis=(1, 2)) | zero).all()  # each (example, channel) all kept or all dropped


def test_small_cnn_on_8x8():
    model = models.create_model(model="small_cnn", head="anchors", num_classes=6, image_size=8, dropout=0.2)
    variables = models.init_variables(model, jax.random.key(0), 8, 1)
    logits, dist = model.apply(variables, jnp.zeros((4, 8, 8, 1)), train=False)
    assert logits.shape == dist.shape == (4, 6)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="image_size=28"):
        models.create_model(model="cac_cnn", head="anchors", num_classes=6, image_size=28, dropout=0.2)
    with pytest.raises(ValueError, match="unknown model"):
        models.create_model(model="resnet", head="anchors", num_classes=6, image_size=32, dropout=0.2)
    with pytest.raises(ValueError, match="unknown head 'openmax'"):
        models.create_model(model="cac_cnn", head="openmax", num_classes=6, image_size=32, dropout=0.2)


def _classifier32(num_classes=6):
    return models.create_model(model="classifier32", head="logits", num_classes=num_classes, image_size=32,
                               dropout=0.2)


def test_classifier32_is_arpls_network():
    """ARPL / Vaze et al.'s classifier32: the CAC network's nine convolutions, average pooling to 128 features,
    a bias-free linear layer, their initialisation."""
    model = _classifier32()
    v = models.init_variables(model, jax.random.key(0), 32, 3)
    p = v["params"]
    convs = [p["encoder"][f"Conv_{i}"]["kernel"] for i in range(9)]
    assert sum(int(k.size) for k in convs) == 3 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9 + 6 * 128 * 128 * 9
    assert set(p["classify"]) == {"kernel"} and p["classify"]["kernel"].shape == (128, 6)
    assert models.count_params(p) == 997_056 + 2 * 1024 + 128 * 6
    every = np.concatenate([np.ravel(k) for k in convs[1:]])
    assert abs(every.std() - 0.05) < 0.002 and abs(every.mean()) < 0.002  # N(0, 0.05)
    scales = np.concatenate([np.ravel(p["encoder"][f"BatchNorm_{i}"]["scale"]) for i in range(9)])
    assert abs(scales.mean() - 1) < 0.005 and abs(scales.std() - 0.02) < 0.005
    assert np.abs(p["classify"]["kernel"]).max() <= 1 / np.sqrt(128)
    logits, dist, feats = model.apply(v, jnp.zeros((2, 64, 64, 3)), train=False, with_features=True)
    assert logits.shape == (2, 6) and dist is None and feats.shape == (2, 128)  # any input size: pooled


def test_classifier32_gives_pytorchs_logits():
    """The same weights in a PyTorch transcription of ARPL's models/classifier32.py, eval mode."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Classifier32(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            chans = [(3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2),
                     (128, 128, 1), (128, 128, 1), (128, 128, 2)]
            self.convs = nn.ModuleList([nn.Conv2d(i, o, 3, s, 1, bias=False) for i, o, s in chans])
            self.bns = nn.ModuleList([nn.BatchNorm2d(o) for _, o, _ in chans])
            self.drops = nn.ModuleList([nn.Dropout2d(0.2) for _ in range(3)])
            self.fc = nn.Linear(128, num_classes, bias=False)

        def forward(self, x):
            for i, (c, b) in enumerate(zip(self.convs, self.bns)):
                if i % 3 == 0:
                    x = self.drops[i // 3](x)
                x = nn.functional.leaky_relu(b(c(x)), 0.2)
            return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    model = _classifier32()
    v = models.init_variables(model, jax.random.key(1), 32, 3)
    rng = np.random.default_rng(0)
    stats = {f"BatchNorm_{i}": {"mean": rng.normal(size=w) * 0.1, "var": rng.uniform(0.5, 1.5, w)}
             for i, w in enumerate([64, 64, 128] + [128] * 6)}
    v = {**v, "batch_stats": {"encoder": {k: {n: jnp.asarray(a, jnp.float32) for n, a in s.items()}
                                          for k, s in stats.items()}}}
    net = Classifier32(6).eval()
    with torch.no_grad():
        for i in range(9):
            enc = v["params"]["encoder"]
            net.convs[i].weight.copy_(torch.from_numpy(np.transpose(np.asarray(enc[f"Conv_{i}"]["kernel"]), (3, 2, 0, 1)).copy()))
            net.bns[i].weight.copy_(torch.from_numpy(np.array(enc[f"BatchNorm_{i}"]["scale"])))
            net.bns[i].bias.copy_(torch.from_numpy(np.array(enc[f"BatchNorm_{i}"]["bias"])))
            net.bns[i].running_mean.copy_(torch.from_numpy(stats[f"BatchNorm_{i}"]["mean"].astype(np.float32)))
            net.bns[i].running_var.copy_(torch.from_numpy(stats[f"BatchNorm_{i}"]["var"].astype(np.float32)))
        net.fc.weight.copy_(torch.from_numpy(np.asarray(v["params"]["classify"]["kernel"]).T.copy()))
        x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
        want = net(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))).numpy()
    got, _ = model.apply(v, jnp.asarray(x), train=False)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
