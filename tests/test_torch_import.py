"""Importing PyTorch networks of the original's architecture (``cac-jax import-torch``): logits equal to
PyTorch's for CAC and cross-entropy networks at 32x32 (1 and 3 channels) and 64x64, on state dicts made
with ``benchmarks/torch_reference.py``; the authors' released files when ``../shared`` has them; the
command end to end (import, then ``cac-jax eval``); and every refusal writing nothing."""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference as ref  # noqa: E402
from cac_jax import cli  # noqa: E402
from cac_jax import models, objectives
from cac_jax.runs import torch_import

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "weights")
MNIST_NPZ = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist.npz")


def _trained_like(num_classes=6, image_size=32, channels=3, seed=0) -> dict:
    """A reference network's state dict with BatchNorm statistics and affine parameters away from their init."""
    torch.manual_seed(seed)
    net = ref.OpenSetClassifier(num_classes=num_classes, image_size=image_size, channels=channels)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.classify.weight.normal_(0, 0.05)
    return net.state_dict()


def _jax_logits(variables, method, x_nhwc, image_size):
    model = models.create_model(model="cac_cnn", head=objectives.get(method).head, num_classes=variables["params"]["classify"]["bias"].shape[0],
                                image_size=image_size, dropout=0.2)
    return np.asarray(model.apply(variables, x_nhwc, train=False)[0])


def _torch_logits(state, x_nhwc):
    net = ref.from_released(state)
    with torch.no_grad():
        return net(torch.tensor(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))[0].numpy()


@pytest.mark.parametrize("image_size, channels, num_classes, cac", [
    (32, 3, 6, True), (32, 1, 6, False), (64, 3, 20, True), (64, 3, 20, False)])
def test_converted_network_gives_pytorch_logits(image_size, channels, num_classes, cac):
    state = _trained_like(num_classes, image_size, channels)
    if not cac:  # the closed-set classifier has no anchors
        state.pop("anchors")
    arrays = {k: v.numpy() for k, v in state.items()}
    assert torch_import.method_of(arrays) == ("cac" if cac else "ce_msp")
    assert torch_import.network_shape(arrays)["image_size"] == image_size
    x = np.random.default_rng(1).normal(size=(8, image_size, image_size, channels)).astype(np.float32)
    got = _jax_logits(torch_import.convert(arrays), torch_import.method_of(arrays), x, image_size)
    want = _torch_logits(state, x)
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    assert np.abs(want).max() > 0.1  # not a trivially small output


def _released(dataset, trial, kind):
    name = "CACclassifierAnchorLoss" if kind == "cac" else "closedSetClassifier"
    return os.path.join(WEIGHTS, dataset, f"{dataset}_{trial}_{name}.pth")


@pytest.mark.skipif(not os.path.isdir(WEIGHTS), reason="the released networks (../shared/reference/weights) are absent")
@pytest.mark.parametrize("dataset, kind", [("MNIST", "cac"), ("MNIST", "ce"), ("CIFAR10", "cac"), ("CIFAR10", "ce")])
def test_released_networks_give_pytorch_logits_on_real_images(dataset, kind):
    from cac_jax.data import augment

    state, extra = torch_import.read_state_dict(_released(dataset, 0, kind))
    assert extra["acc"] > 90 and torch_import.method_of(state) == ("cac" if kind == "cac" else "ce_msp")
    if dataset == "MNIST":
        with np.load(MNIST_NPZ) as f:
            images = f["x_test"][:256, :, :, None]
        mean, std = (0.1307,), (0.3081,)
    else:
        images = _cifar10_jpeg_test_images(256)
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = np.asarray(augment.eval_preprocess(images, image_size=32, mean=mean, std=std), np.float32)
    got = _jax_logits(torch_import.convert(state), torch_import.method_of(state), x, 32)
    want = _torch_logits({k: torch.tensor(v) for k, v in state.items()}, x)
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    assert (got.argmax(1) == want.argmax(1)).all()


def _cifar10_jpeg_test_images(n):
    """The first ``n`` test images of the shared JPEG copy, decoded with Pillow as its expand_cifar10.py does."""
    import io

    from PIL import Image

    with np.load(os.path.join(os.path.dirname(MNIST_NPZ), "cifar10_jpeg.npz")) as pack:
        header, payload, offsets = pack["jpeg_header"].tobytes(), pack["test_payload"], pack["test_offsets"]
        return np.stack([np.asarray(Image.open(io.BytesIO(header + payload[a:b].tobytes())).convert("RGB"))
                         for a, b in zip(offsets[:n], offsets[1:n + 1])])


def _synthetic_mnist(path):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (300, 28, 28), dtype=np.uint8), y_train=np.arange(300) % 10,
             x_test=rng.integers(0, 255, (100, 28, 28), dtype=np.uint8), y_test=np.arange(100) % 10)


def _save_original_format(path, state, acc=97.5, epoch=12):
    torch.save({"net": state, "acc": acc, "epoch": epoch}, path)


def test_import_then_eval_end_to_end(tmp_path, capsys):
    npz, pth, workdir = tmp_path / "mnist.npz", tmp_path / "MNIST_0_CACclassifierAnchorLoss.pth", tmp_path / "w"
    _synthetic_mnist(npz)
    state = _trained_like(6, 32, 1)
    state["means"] = state.pop("anchors")  # the original's name for the anchors
    state["covars"] = torch.zeros(6, 6, 6, dtype=torch.float64)  # unused, present in the released files
    _save_original_format(pth, state)
    common = ["--npz", str(npz), "--no-progress"]
    assert cli.main(["import-torch", str(pth), "--experiment", "mnist", "--workdir", str(workdir), *common]) == 0
    out = capsys.readouterr().out
    assert "method cac, 6 classes, 32x32x1, split family cac_random2020" in out and "97.50%" in out
    cfg = json.loads((workdir / "config.json").read_text())
    assert (cfg["method"], cfg["split_family"], cfg["model"], cfg["stages"]) == ("cac", "cac_random2020", "cac_cnn", "2")
    assert cli.main(["eval", "--workdir", str(workdir), *common]) == 0
    results = json.loads((workdir / "results.json").read_text())
    for k in ("accuracy", "auroc", "oscr", "open_auc", "fpr95", "aupr_in", "aupr_out"):
        assert 0 <= results[k] <= 1
    assert (workdir / "scores.npz").exists() and (workdir / "roc.png").exists()
    # The original's evaluation of the same file on the same images (benchmarks.released_parity) agrees.
    from benchmarks import released_parity
    from cac_jax import config
    from cac_jax.training import loop as train

    data = train.load_data(config.load_config(str(workdir / "config.json")))
    theirs = released_parity.torch_evaluate(str(pth), data)
    assert abs(theirs["accuracy"] - results["accuracy"]) * results["num_known_test"] <= 1
    assert theirs["auroc"] == pytest.approx(results["auroc"], abs=5e-4)
    # A second import into the same directory is refused, and changes nothing.
    before = sorted(os.listdir(workdir))
    assert cli.main(["import-torch", str(pth), "--experiment", "mnist", "--workdir", str(workdir), *common]) == 1
    assert "already holds a run" in capsys.readouterr().err and sorted(os.listdir(workdir)) == before
    # Another split family when asked.
    other = tmp_path / "neal"
    assert cli.main(["import-torch", str(pth), "--experiment", "mnist", "--workdir", str(other),
                     "--set", "split_family=neal2018", *common]) == 0
    assert json.loads((other / "config.json").read_text())["split_family"] == "neal2018"


def test_files_that_do_not_fit_are_refused_and_nothing_is_written(tmp_path, capsys):
    npz = tmp_path / "mnist.npz"
    _synthetic_mnist(npz)
    common = ["--experiment", "mnist", "--trial", "0", "--npz", str(npz), "--no-progress"]  # names without a trial
    cases = {}
    (tmp_path / "garbage.pth").write_bytes(b"not a pickle")
    cases["garbage.pth"] = "is not a PyTorch checkpoint"
    torch.save({"net": {"something": torch.zeros(3)}}, tmp_path / "other.pth")
    cases["other.pth"] = "lacks 'classify.weight': it is not the original's open-set or closed-set classifier"
    _save_original_format(tmp_path / "classes.pth", _trained_like(4, 32, 1))
    cases["classes.pth"] = "does not fit experiment mnist (num_classes: file 4 vs mnist 6)"
    _save_original_format(tmp_path / "rgb.pth", _trained_like(6, 32, 3))
    cases["rgb.pth"] = "channels: file 3 vs mnist 1"
    _save_original_format(tmp_path / "big.pth", _trained_like(6, 64, 1))
    cases["big.pth"] = "image_size: file 64 vs mnist 32"
    for name, message in cases.items():
        workdir = tmp_path / f"w_{name}"
        assert cli.main(["import-torch", str(tmp_path / name), "--workdir", str(workdir), *common]) == 1, name
        assert message in capsys.readouterr().err, name
        assert not workdir.exists(), name
    assert cli.main(["import-torch", str(tmp_path / "absent.pth"), *common]) == 1
    assert "no checkpoint file at" in capsys.readouterr().err


def test_without_torch_a_clear_message(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert cli.main(["import-torch", str(tmp_path / "x.pth"), "--experiment", "mnist", "--trial", "0"]) == 1
    assert "needs torch: pip install 'cac-jax[torch]'" in capsys.readouterr().err


@pytest.mark.parametrize("path, given, trial", [
    ("MNIST_1_CACclassifierAnchorLoss.pth", None, 1),
    ("weights/MNIST/MNIST_1_closedSetClassifier.pth", 1, 1),
    ("CIFAR+10_4_CACclassifierAnchorLoss.pth", None, 4),
    ("TinyImageNet_2_myTestCACclassifierAnchorLoss.pth", None, 2),  # the original's --name myTest
    ("mnist_3.pth", None, 3),
    ("network.pth", 2, 2),
    ("CIFAR100_1_net.pth", 0, 0),  # not one of the original's datasets: the name says nothing
])
def test_trial_from_the_file_name(path, given, trial):
    assert torch_import.resolve_trial(path, given) == trial


def test_trial_disagreeing_with_the_file_name_or_unknown_is_refused():
    with pytest.raises(ValueError) as e:
        torch_import.resolve_trial("w/MNIST_1_CACclassifierAnchorLoss.pth", 0)
    assert str(e.value) == ("w/MNIST_1_CACclassifierAnchorLoss.pth is named for trial 1 but --trial 0 was given; a "
                            "network evaluated on another trial's split mixes known and unknown classes: drop --trial "
                            "or give --trial 1")
    with pytest.raises(ValueError) as e:
        torch_import.resolve_trial("net.pth", None)
    assert str(e.value) == ("net.pth: its name does not say the trial the network was trained on (the original's files "
                            "are named <DATASET>_<trial>_...pth); give --trial")


@pytest.mark.parametrize("path, given, experiment", [
    ("MNIST_0_CACclassifierAnchorLoss.pth", None, "mnist"),
    ("SVHN_0_closedSetClassifier.pth", "svhn", "svhn"),
    ("CIFAR10_3_CACclassifierAnchorLoss.pth", None, "cifar10"),
    ("CIFAR+10_0_CACclassifierAnchorLoss.pth", None, "cifar_plus_10"),
    ("CIFAR+50_0_CACclassifierAnchorLoss.pth", None, "cifar_plus_50"),
    ("CIFAR+10_0_CACclassifierAnchorLoss.pth", "cifar_plus_50", "cifar_plus_50"),  # the same networks
    ("tinyimagenet_0_closedSetClassifier.pth", None, "tiny_imagenet"),
    ("net.pth", "digits", "digits"),
])
def test_experiment_from_the_file_name(path, given, experiment):
    assert torch_import.resolve_experiment(path, given) == experiment


def test_experiment_disagreeing_with_the_file_name_or_unknown_is_refused():
    with pytest.raises(ValueError) as e:
        torch_import.resolve_experiment("CIFAR10_0_CACclassifierAnchorLoss.pth", "mnist")
    assert str(e.value) == ("CIFAR10_0_CACclassifierAnchorLoss.pth is named for CIFAR10 (experiment cifar10) but "
                            "--experiment mnist was given: drop --experiment or give --experiment cifar10")
    with pytest.raises(ValueError, match="MNIST .experiment mnist. but --experiment digits"):
        torch_import.resolve_experiment("MNIST_0_CACclassifierAnchorLoss.pth", "digits")
    with pytest.raises(ValueError, match=r"net.pth: its name does not say the dataset .*; give --experiment$"):
        torch_import.resolve_experiment("net.pth", None)


def test_import_of_a_file_named_for_another_trial_is_refused(tmp_path, capsys):
    npz, pth, workdir = tmp_path / "mnist.npz", tmp_path / "MNIST_1_CACclassifierAnchorLoss.pth", tmp_path / "w"
    _synthetic_mnist(npz)
    _save_original_format(pth, _trained_like(6, 32, 1))
    assert cli.main(["import-torch", str(pth), "--experiment", "mnist", "--trial", "2", "--workdir", str(workdir),
                     "--npz", str(npz), "--no-progress"]) == 1
    assert f"{pth} is named for trial 1 but --trial 2 was given" in capsys.readouterr().err
    assert not workdir.exists()
