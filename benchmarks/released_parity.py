"""The authors' released networks evaluated twice: by cac-jax (``import-torch`` then ``eval``) and by a
PyTorch harness that follows the original's evaluation (SPEC.md §2), on the same images.

    python -m benchmarks.released_parity --dataset MNIST --npz ../shared/data/mnist.npz \\
        --trainval ../shared/reference/cac-openset/MNIST/trainval_idxs.json
    python -m benchmarks.released_parity --dataset CIFAR10 --npz data/cifar10.npz --trainval data/cifar10_trainval.json

The PyTorch side (``benchmarks/torch_reference.from_released``, eval mode): the original's test
transform (PIL Resize to 32 with bilinear interpolation, then ToTensor and the per-trial Normalize);
class means of the correctly classified 'Train' images (with horizontally flipped copies for CIFAR);
d_j = ||z − mean_j|| in float64, the CAC score min_j d_j·(1 − softmin(d)_j) and prediction argmin_j d_j;
for cross-entropy files, prediction argmax and score −max softmax; AUROC by scikit-learn with
unknowns positive. Both sides read the images cac-jax's loader gives for the split family the networks
were trained on (``cac_random2020``) and the train/val partition of ``--trainval``.

Writes ``<out>/<DATASET>/parity.json`` (per network: both sides' accuracy, AUROC, differences, cac-jax's other
metrics, seconds) and prints a table. Results are on whatever copy of the data is given: label CIFAR-10
results on the shared JPEG copy as such.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

EXPERIMENT = {"MNIST": "mnist", "CIFAR10": "cifar10"}
KINDS = {"cac": "CACclassifierAnchorLoss", "ce": "closedSetClassifier"}


def torch_inputs(images: np.ndarray, image_size: int, mean, std, flip: bool = False):
    """The original's test transform of uint8 images (n, H, W, C): PIL bilinear resize (only where the size
    differs), ToTensor, Normalize; an NCHW float32 tensor."""
    import torch
    from PIL import Image

    if images.shape[1] != image_size:
        mode = "L" if images.shape[-1] == 1 else "RGB"
        images = np.stack([np.asarray(Image.fromarray(im.squeeze(-1) if mode == "L" else im, mode)
                                      .resize((image_size, image_size), Image.BILINEAR)).reshape(image_size,
                                                                                                 image_size, -1)
                           for im in images])
    if flip:
        images = images[:, :, ::-1]
    x = torch.tensor(np.ascontiguousarray(images), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def torch_logits(net, images, image_size, mean, std, flip=False, batch=500) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(net(torch_inputs(images[i:i + batch], image_size, mean, std, flip))[0].double().numpy())
    return np.concatenate(out)


def torch_evaluate(path: str, data) -> dict:
    """The original's evaluation of the network in ``path`` on ``data`` (a cac_jax OpenSetData)."""
    import torch
    from scipy.special import softmax
    from sklearn.metrics import roc_auc_score

    from benchmarks import torch_reference

    state = torch.load(path, map_location="cpu", weights_only=True)["net"]
    net = torch_reference.from_released(state)
    torch.set_num_threads(os.cpu_count())
    kw = dict(image_size=data.image_size, mean=data.mean, std=data.std)
    known = torch_logits(net, data.test_known.images, **kw)
    unknown = torch_logits(net, data.test_unknown.images, **kw)
    if "means" in state:
        train = [torch_logits(net, data.train.images, **kw)]
        if data.dataset not in ("mnist", "svhn"):
            train.append(torch_logits(net, data.train.images, flip=True, **kw))
        train = np.concatenate(train)
        labels = np.tile(data.train.labels, len(train) // len(data.train.labels))
        keep = train.argmax(1) == labels
        # A class with no correctly classified image (only an untrained network has one) would give the
        # original a NaN anchor; like cac-jax, fall back to the mean of all its images.
        means = np.stack([train[(keep if (keep & (labels == k)).any() else True) & (labels == k)].mean(0)
                          for k in range(data.num_classes)])

        def predict_score(z):
            d = np.linalg.norm(z[:, None, :] - means[None], axis=2)
            s = d * (1 - softmax(-d, axis=1))
            return d.argmin(1), s.min(1)
    else:
        def predict_score(z):
            return z.argmax(1), -softmax(z, axis=1).max(1)

    pred, known_score = predict_score(known)
    _, unknown_score = predict_score(unknown)
    correct = int((pred == data.test_known.labels).sum())
    auroc = roc_auc_score(np.r_[np.zeros(len(known_score)), np.ones(len(unknown_score))],
                          np.r_[known_score, unknown_score])
    return {"accuracy": correct / len(pred), "correct": correct, "auroc": float(auroc)}


def run(dataset: str, trials, kinds, npz: str, trainval: str | None, out: str, weights: str) -> list[dict]:
    from cac_jax import cli
    from cac_jax import config
    from cac_jax.training import loop as train

    table = os.path.join(out, "parity.json")
    rows = []
    if os.path.exists(table):  # earlier runs' networks stay in the table unless evaluated again
        with open(table) as f:
            rows = [r for r in json.load(f) if (r["trial"], r["kind"]) not in {(t, k) for t in trials for k in kinds}]
    for trial in trials:
        for kind in kinds:
            path = os.path.join(weights, dataset, f"{dataset}_{trial}_{KINDS[kind]}.pth")
            workdir = os.path.join(out, f"{dataset}_{trial}_{kind}")
            common = ["--npz", npz, "--no-progress"] + (["--set", f"trainval_file={trainval}"] if trainval else [])
            t0 = time.perf_counter()
            if not os.path.exists(os.path.join(workdir, "config.json")):
                assert cli.main(["import-torch", path, "--experiment", EXPERIMENT[dataset], "--trial", str(trial),
                                 "--workdir", workdir, *common]) == 0
            assert cli.main(["eval", "--workdir", workdir, *common]) == 0
            t1 = time.perf_counter()
            with open(os.path.join(workdir, "results.json")) as f:
                ours = json.load(f)
            cfg = config.load_config(os.path.join(workdir, "config.json"))
            data = train.load_data(cfg)
            theirs = torch_evaluate(path, data)
            t2 = time.perf_counter()
            n = ours["num_known_test"]
            row = {"dataset": dataset, "trial": trial, "kind": kind,
                   "cac_jax": {k: ours[k] for k in ("accuracy", "auroc", "oscr", "open_auc", "fpr95", "aupr_in",
                                                   "aupr_out")},
                   "pytorch": theirs, "images_apart": int(round(abs(ours["accuracy"] - theirs["accuracy"]) * n)),
                   "auroc_diff": ours["auroc"] - theirs["auroc"], "seconds": {"cac_jax": t1 - t0, "pytorch": t2 - t1}}
            rows = [r for r in rows if (r["trial"], r["kind"]) != (trial, kind)] + [row]
            print(f"{dataset} trial {trial} {kind:>3}: accuracy {ours['accuracy']:.4f} / {theirs['accuracy']:.4f} "
                  f"({row['images_apart']} images apart), AUROC {ours['auroc']:.5f} / {theirs['auroc']:.5f} "
                  f"(diff {row['auroc_diff']:+.1e}); {t1 - t0:.0f} s / {t2 - t1:.0f} s", flush=True)
            with open(table, "w") as f:
                json.dump(sorted(rows, key=lambda r: (r["trial"], r["kind"])), f, indent=2)
    return rows


METRICS = (("accuracy", "accuracy"), ("auroc", "AUROC"), ("oscr", "OSCR"), ("open_auc", "OpenAUC"),
           ("fpr95", "FPR95"), ("aupr_in", "AUPR-in"), ("aupr_out", "AUPR-out"))


def summary(rows: list[dict]) -> str:
    """Markdown: cac-jax's metrics per kind (mean ± sample std over the trials, in %), and how far the
    PyTorch harness is from them (largest differences over the trials)."""
    lines = ["| network | trials | " + " | ".join(name for _, name in METRICS) + " | images apart (max) | "
             "AUROC diff (max abs) |", "|" + " --- |" * (len(METRICS) + 4)]
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        cells = []
        for key, _ in METRICS:
            v = 100 * np.array([r["cac_jax"][key] for r in mine])
            cells.append(f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}")
        apart = max(r["images_apart"] for r in mine)
        diff = max(abs(r["auroc_diff"]) for r in mine)
        lines.append(f"| {mine[0]['dataset']} {kind} | {','.join(str(r['trial']) for r in mine)} | "
                     + " | ".join(cells) + f" | {apart} | {diff:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(EXPERIMENT), required=True)
    p.add_argument("--npz", help="the dataset in Keras layout (cac-jax's --npz)")
    p.add_argument("--trainval", help="the train/val partition (the original's trainval_idxs.json layout)")
    p.add_argument("--trials", default="0,1,2,3,4")
    p.add_argument("--kinds", default="cac,ce")
    p.add_argument("--weights", default=os.path.join("..", "shared", "reference", "weights"))
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "released_parity"))
    p.add_argument("--report", action="store_true", help="only print the summary of the networks evaluated before")
    a = p.parse_args(argv)
    if not a.report and not a.npz:
        p.error("--npz is required (the dataset to evaluate on)")
    out = os.path.join(a.out, a.dataset)
    if a.report:
        with open(os.path.join(out, "parity.json")) as f:
            rows = json.load(f)
    else:
        os.makedirs(out, exist_ok=True)
        rows = run(a.dataset, [int(t) for t in a.trials.split(",")], a.kinds.split(","), a.npz, a.trainval, out,
                   a.weights)
    print(summary(sorted(rows, key=lambda r: (r["kind"], r["trial"]))))


if __name__ == "__main__":
    main()
