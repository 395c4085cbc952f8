"""The original CAC network, loss and optimiser in PyTorch, for the speed comparison only.

Written from SPEC.md §1, §3 and §4 (the authors' ``networks/openSetClassifier.py`` and
``train_cacOpenset.py``); nothing in ``cac_jax`` imports this module, and torch is imported here only.

* ``BaseEncoder``: three blocks of 3x3 convolutions without bias, each followed by
  BatchNorm2d (eps 1e-5, momentum 0.1) and LeakyReLU(0.2); the last convolution of each block has
  stride 2 and the block ends with Dropout2d(p). NCHW, as the original.
* ``OpenSetClassifier``: encoder → flatten (C, H, W order, no pooling) → Linear(128·(S/8)² → N), with the
  fixed anchors alpha·I kept as a float64 buffer (the original: a frozen float64 Parameter; a buffer
  keeps it out of ``parameters()`` and the optimiser alike).
* Init: conv kaiming_normal(fan_out, relu), BN weight 1 / bias 0, Linear weight N(0, 0.01²) and bias 0.
* ``cac_loss``: the original's float64 formulation, vectorised: d_j = ||z − alpha·e_j||_2 in float64,
  L_A = mean d_y, L_T = mean log(1 + Σ_{j≠y} exp(d_y − d_j)) with the N−1 non-target distances gathered
  (no log-sum-exp, no clamp), total λ·L_A + L_T.
* ``make_optimizer``: SGD, momentum 0.9, coupled weight decay (PyTorch's ``weight_decay``).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = ((64, 64, 128), (128, 128, 128), (128, 128, 128))


class BaseEncoder(nn.Module):
    def __init__(self, channels: int = 3, dropout: float = 0.2):
        super().__init__()
        blocks, c_in = [], channels
        for block in WIDTHS:
            layers = []
            for i, width in enumerate(block):
                stride = 2 if i == len(block) - 1 else 1
                layers += [nn.Conv2d(c_in, width, 3, stride, 1, bias=False),
                           nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.LeakyReLU(0.2)]
                c_in = width
            layers.append(nn.Dropout2d(dropout))
            blocks.append(nn.Sequential(*layers))
        self.encoder1, self.encoder2, self.encoder3 = blocks

    def forward(self, x):
        return self.encoder3(self.encoder2(self.encoder1(x)))


class OpenSetClassifier(nn.Module):
    """Returns (logits, distances to the anchors); distances are float64 as in the original."""

    def __init__(self, num_classes: int = 6, image_size: int = 32, channels: int = 3, dropout: float = 0.2,
                 alpha: float = 10.0):
        super().__init__()
        if image_size not in (32, 64):
            raise ValueError(f"the original network supports image_size 32 or 64, got {image_size}")
        self.encoder = BaseEncoder(channels, dropout)
        self.classify = nn.Linear(128 * (image_size // 8) ** 2, num_classes)
        self.register_buffer("anchors", alpha * torch.eye(num_classes, dtype=torch.float64))
        self._initialize_weights()

    def _initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        logits = self.classify(torch.flatten(self.encoder(x), 1))
        return logits, anchor_distances(logits, self.anchors)


def anchor_distances(logits, anchors):
    """The original's distance layer: (B, M) ||z_i − c_m||_2 in float64, via a (B, M, N) broadcast."""
    diff = logits.double().unsqueeze(1) - anchors.double().unsqueeze(0)
    return torch.norm(diff, 2, 2)


def identity_anchor_distances(logits, alpha: float = 10.0):
    """The same distances for the anchors alpha·I in O(B·N) memory: d_j² = ||z||² − z_j² + (z_j − alpha)²,
    in float64 (its 52-bit mantissa makes the cancellation harmless at these magnitudes). The original's
    (B, N, N) broadcast needs B·N²·8 bytes (100 GB at N = 10000), so large N uses this form."""
    z = logits.double()
    sq = z * z
    return torch.sqrt((sq.sum(1, keepdim=True) - sq + (z - alpha) ** 2).clamp_min(0.0))


def cac_loss_from_distances(distances, labels, lbda: float = 0.1):
    """(total, anchor, tuplet) as the original's CACLoss, with the non-target gather vectorised."""
    n = distances.shape[1]
    true = distances.gather(1, labels.view(-1, 1)).view(-1)
    # Column j of row i: the j-th class other than labels[i] (j < y → j, j ≥ y → j + 1).
    cols = torch.arange(n - 1, device=distances.device).unsqueeze(0)
    others = distances.gather(1, cols + (cols >= labels.view(-1, 1)).long())
    anchor = true.mean()
    tuplet = torch.log(1 + torch.exp(true.unsqueeze(1) - others).sum(1)).mean()
    return lbda * anchor + tuplet, anchor, tuplet


def cac_loss(logits, labels, anchors=None, lbda: float = 0.1, alpha: float = 10.0):
    """CAC loss of logits (B, N) float32; anchors None → alpha·I through the O(B·N) distance form."""
    d = identity_anchor_distances(logits, alpha) if anchors is None else anchor_distances(logits, anchors)
    return cac_loss_from_distances(d, labels, lbda)


def make_optimizer(model: nn.Module, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-6):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def train_step(model, optimizer, images, labels, lbda: float = 0.1):
    """One step of the original's training loop: forward, CAC loss (original distances), backward, SGD."""
    optimizer.zero_grad(set_to_none=True)
    _, distances = model(images)
    loss, _, _ = cac_loss_from_distances(distances, labels, lbda)
    loss.backward()
    optimizer.step()
    return loss


def from_released(state: dict) -> OpenSetClassifier:
    """This network, in eval mode, holding a state dict of the original's ``openSetClassifier`` or
    ``closedSetClassifier`` (the released ``.pth`` files' ``net``): their ``nn.Sequential`` names are this
    network's; their ``encoder.conv{k}``/``bn{k}`` aliases and unused ``covars`` are not loaded, ``means``
    (a CAC file's anchors) become the anchors buffer (a closed-set file keeps alpha·I, which it never uses)."""
    weight, first = state["classify.weight"], state["encoder.encoder1.0.weight"]
    model = OpenSetClassifier(num_classes=weight.shape[0], image_size=8 * int(round((weight.shape[1] / 128) ** 0.5)),
                              channels=first.shape[1])
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own}
    if "means" in state:
        loaded["anchors"] = state["means"].double()
    missing = [k for k in own if k not in loaded and k != "anchors"]
    if missing:
        raise ValueError(f"the state dict lacks {missing[:3]}: not the original's network")
    model.load_state_dict({**own, **loaded})
    return model.eval()


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
