"""The authors' released PyTorch networks as cac-jax runs: ``cac-jax import-torch FILE.pth``.

The original repository (cac-openset) ships ``<DATASET>_<trial>_CACclassifierAnchorLoss.pth`` (its
``openSetClassifier``, trained with the CAC loss) and ``<DATASET>_<trial>_closedSetClassifier.pth``
(the same network trained with cross-entropy): legacy ``torch.save`` pickles of ``{"net": state_dict,
"acc": ..., "epoch": ...}``. A bare state dict of the same network (``benchmarks/torch_reference.py``)
is read too. The conversion is exact:

* convolutions OIHW -> HWIO; the nine of the encoder are read under their ``nn.Sequential`` names
  ``encoder.encoder{1,2,3}.{0,3,6}`` (the files also hold the same tensors as ``encoder.conv{1..9}``,
  which are checked to be equal and otherwise ignored);
* BatchNorm ``weight``/``bias`` -> ``scale``/``bias``, ``running_mean``/``running_var`` -> the
  ``batch_stats`` (eps 1e-5 on both sides; ``num_batches_tracked`` is not used at evaluation);
* the linear layer's input is PyTorch's NCHW flatten (C, H, W); cac-jax flattens NHWC (H, W, C), so the
  weight's columns are permuted accordingly;
* the CAC file's ``means`` (its training anchors alpha·I) set alpha; ``covars`` and ``invcovars`` are
  left over from an earlier version of the original and unused by its evaluation, so they are dropped.

Dropout is inactive at evaluation on both sides. torch is needed only here, to read the file
(``pip install 'cac-jax[torch]'``).

The work directory it writes is an ordinary cac-jax run whose only stage is a finished stage 2:
``config.json`` (the experiment's config with the file's method, the split family the released networks
were trained on, ``cac_random2020``, unless ``--set split_family=...`` says otherwise) and an Orbax
checkpoint in ``checkpoints/stage2/{best,latest}``; ``cac-jax eval --workdir W`` evaluates it.

The trial and the experiment are the ones the file's name says (:func:`resolve_trial`,
:func:`resolve_experiment`): a network evaluated on another trial's split would mix its known and unknown
classes without any error, so a ``--trial`` or ``--experiment`` that disagrees with the name is refused, and
so is a name that says neither when none is given.
"""

from __future__ import annotations

import os
import re

import numpy as np

RELEASED_FAMILY = "cac_random2020"
# The original's dataset names (its --dataset choices, which name its weight files) and our experiments.
EXPERIMENT_OF = {"MNIST": "mnist", "SVHN": "svhn", "CIFAR10": "cifar10", "CIFAR+10": "cifar_plus_10",
                 "CIFAR+50": "cifar_plus_50", "TinyImageNet": "tiny_imagenet"}
# The original saves networks/weights/<DATASET>/<DATASET>_<trial>_<name>CACclassifierAnchorLoss.pth (and
# ..._closedSetClassifier.pth, ...), <name> being its --name, empty by default.
_RELEASED_NAME = re.compile(r"(?P<dataset>" + "|".join(re.escape(d) for d in EXPERIMENT_OF) +
                            r")_(?P<trial>\d+)(?=[_.])", re.IGNORECASE)
# The encoder's convolutions and BatchNorms in each nn.Sequential block: (conv index, bn index).
SEQUENTIAL_LAYERS = ((0, 1), (3, 4), (6, 7))


class NotACheckpoint(ValueError):
    """The file is not one of the original's networks."""


class TorchMissing(ImportError):
    """torch, needed to read the file, is not installed."""


def _torch():
    try:
        import torch
    except ImportError:
        raise TorchMissing("reading a PyTorch checkpoint needs torch: pip install 'cac-jax[torch]' "
                           "(or pip install -e '.[torch]' in a checkout)") from None
    return torch


def _released_name(path: str) -> tuple[str | None, int | None]:
    """(dataset, trial) that a file named as the original names its networks says; (None, None) otherwise."""
    match = _RELEASED_NAME.match(os.path.basename(path))
    if match is None:
        return None, None
    dataset = next(d for d in EXPERIMENT_OF if d.lower() == match["dataset"].lower())
    return dataset, int(match["trial"])


def resolve_trial(path: str, given: int | None) -> int:
    """The trial a released network was trained on: the one its file name says (``MNIST_1_...pth``), or
    ``given`` (``--trial``) when the name says none. The trial picks the split the network is evaluated on,
    and a network evaluated on another trial's split mixes its known and unknown classes without any error,
    so a disagreement, or neither, is refused."""
    _, named = _released_name(path)
    if named is None:
        if given is None:
            raise ValueError(f"{path}: its name does not say the trial the network was trained on (the original's "
                             f"files are named <DATASET>_<trial>_...pth); give --trial")
        return given
    if given is not None and given != named:
        raise ValueError(f"{path} is named for trial {named} but --trial {given} was given; a network evaluated on "
                         f"another trial's split mixes known and unknown classes: drop --trial or give --trial {named}")
    return named


def resolve_experiment(path: str, given: str | None) -> str:
    """The experiment a released network belongs to: the dataset its file name says (``CIFAR+10_0_...pth`` is
    ``cifar_plus_10``), or ``given`` (``--experiment``) when the name says none; a disagreement, or neither, is
    refused. CIFAR+10 and CIFAR+50 share their networks (the original copies the CIFAR+10 files to CIFAR+50;
    only the unknown test classes differ), so either name fits either experiment."""
    dataset, _ = _released_name(path)
    if dataset is None:
        if given is None:
            raise ValueError(f"{path}: its name does not say the dataset the network was trained on (the original's "
                             f"files are named <DATASET>_<trial>_...pth); give --experiment")
        return given
    named = EXPERIMENT_OF[dataset]
    shared = {"cifar_plus_10", "cifar_plus_50"}
    if given is not None and given != named and not {given, named} <= shared:
        raise ValueError(f"{path} is named for {dataset} (experiment {named}) but --experiment {given} was given: "
                         f"drop --experiment or give --experiment {named}")
    return given or named


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict as numpy arrays, {"acc", "epoch"} where the file has them)."""
    torch = _torch()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (a pickle of anything else, or not a pickle at all)
        raise NotACheckpoint(f"{path} is not a PyTorch checkpoint torch.load can read safely: "
                             f"{str(e).splitlines()[0][:300]}") from None
    extra = {}
    if isinstance(obj, dict) and "net" in obj:
        extra = {k: float(obj[k]) if k == "acc" else int(obj[k]) for k in ("acc", "epoch") if k in obj}
        obj = obj["net"]
    if not isinstance(obj, dict) or not all(hasattr(v, "numpy") for v in obj.values()):
        raise NotACheckpoint(f"{path} holds neither a state dict nor the original's {{'net': state_dict, ...}}")
    return {k: v.detach().cpu().numpy() for k, v in obj.items()}, extra


def method_of(state: dict) -> str:
    """"cac" for the CAC open-set classifier (it stores its anchors), "ce_msp" for the closed-set one."""
    return "cac" if ("means" in state or "anchors" in state) else "ce_msp"


def _get(state: dict, key: str, path: str) -> np.ndarray:
    if key not in state:
        raise NotACheckpoint(f"{path} lacks {key!r}: it is not the original's open-set or closed-set classifier")
    return state[key]


def convert(state: dict, *, path: str = "the checkpoint") -> dict:
    """Flax variables of ``cac_jax.models`` ("cac_cnn", head by :func:`method_of`) from a PyTorch state dict."""
    params, stats, k = {}, {}, 0
    for block in (1, 2, 3):
        for conv_i, bn_i in SEQUENTIAL_LAYERS:
            w = _get(state, f"encoder.encoder{block}.{conv_i}.weight", path)
            alias = state.get(f"encoder.conv{k + 1}.weight")
            if alias is not None and not np.array_equal(alias, w):
                raise NotACheckpoint(f"{path}: encoder.conv{k + 1} and encoder.encoder{block}.{conv_i} differ; "
                                     f"the file does not come from the original's network")
            bn = f"encoder.encoder{block}.{bn_i}"
            params[f"Conv_{k}"] = {"kernel": np.transpose(w, (2, 3, 1, 0))}
            params[f"BatchNorm_{k}"] = {"scale": _get(state, f"{bn}.weight", path),
                                        "bias": _get(state, f"{bn}.bias", path)}
            stats[f"BatchNorm_{k}"] = {"mean": _get(state, f"{bn}.running_mean", path),
                                       "var": _get(state, f"{bn}.running_var", path)}
            k += 1
    weight, bias = _get(state, "classify.weight", path), _get(state, "classify.bias", path)
    n, features = weight.shape
    side = int(round((features / 128) ** 0.5))
    if 128 * side * side != features:
        raise NotACheckpoint(f"{path}: classify.weight has {features} inputs, not 128·s² for a feature map of side s")
    kernel = weight.reshape(n, 128, side, side).transpose(2, 3, 1, 0).reshape(features, n)
    variables = {"params": {"encoder": params, "classify": {"kernel": kernel, "bias": bias}},
                 "batch_stats": {"encoder": stats}}
    anchors = state.get("means", state.get("anchors"))
    if anchors is not None:
        variables["anchors"] = {"centres": np.asarray(anchors)}
    return _float32(variables)


def _float32(tree):
    if isinstance(tree, dict):
        return {k: _float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)


def network_shape(state: dict, path: str = "the checkpoint") -> dict:
    """num_classes, image_size, channels and alpha that the file's network was built for."""
    weight = _get(state, "classify.weight", path)
    first = _get(state, "encoder.encoder1.0.weight", path)
    side = int(round((weight.shape[1] / 128) ** 0.5))
    shape = {"num_classes": int(weight.shape[0]), "image_size": 8 * side, "channels": int(first.shape[1])}
    anchors = state.get("means", state.get("anchors"))
    if anchors is not None:
        anchors = np.asarray(anchors, np.float64)
        alpha = float(anchors[0, 0])
        if anchors.shape != (shape["num_classes"],) * 2 or not np.allclose(anchors, alpha * np.eye(len(anchors))):
            raise NotACheckpoint(f"{path}: its anchors are not alpha·I for {shape['num_classes']} classes")
        shape["alpha"] = alpha
    return shape


def import_checkpoint(path: str, cfg) -> tuple[dict, str]:
    """Write the run directory ``cfg.resolved_workdir`` for the network in ``path``; returns (info, workdir).

    ``cfg`` is the experiment's config with the user's overrides; the method and alpha come from the file.
    Nothing is written when the file does not fit the experiment or the directory holds a run. ``cfg``'s
    split family is used as it is: the command line sets the released networks' one unless told otherwise."""
    import jax

    from cac_jax.training import checkpoints
    from cac_jax import models
    from cac_jax.runs.run import WorkdirError
    from cac_jax.training import loop as train
    from cac_jax.training import state as train_state
    from cac_jax import config as config_lib
    from cac_jax.training import mesh as mesh_lib

    # The command line resolves both from the file name; a caller's own config is checked against it here.
    resolve_trial(path, cfg.trial)
    resolve_experiment(path, cfg.experiment)
    state, extra = read_state_dict(path)
    shape = network_shape(state, path)
    cfg = cfg.replace(method=method_of(state), model="cac_cnn", stages="2",
                      alpha=shape.get("alpha", cfg.alpha))
    workdir = cfg.resolved_workdir
    if os.path.exists(os.path.join(workdir, "config.json")) or os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise WorkdirError(f"{workdir} already holds a run; import into a new --workdir")
    data = train.load_data(cfg)
    expected = {"num_classes": data.num_classes, "image_size": data.image_size, "channels": data.channels}
    diffs = [f"{k}: file {shape[k]} vs {cfg.experiment} {v}" for k, v in expected.items() if shape[k] != v]
    if diffs:
        raise NotACheckpoint(f"{path} does not fit experiment {cfg.experiment} ({'; '.join(diffs)})")
    ctx = train.make_context(cfg, data)
    variables = convert(state, path=path)
    template = jax.eval_shape(lambda: models.init_variables(ctx.model, jax.random.key(0), data.image_size,
                                                            data.channels))
    mismatched = [jax.tree_util.keystr(p) for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(template),
                                                                jax.tree.leaves(variables)) if a.shape != b.shape]
    if jax.tree.structure(template) != jax.tree.structure(variables) or mismatched:
        raise NotACheckpoint(f"{path} does not fit the {cfg.experiment} network ({mismatched or 'other layers'})")
    st = train_state.restart(ctx.model, variables, ctx.tx, mesh_lib.replicated(ctx.mesh))
    epoch = int(extra.get("epoch", 0))
    meta = {"stage": 2, "start_epoch": epoch, "step": 0, "epochs_done": epoch, "steps_per_epoch": ctx.steps_per_epoch,
            "best_value": None, "best_epoch": epoch, "finished": True, "signature": ctx.signature,
            "imported_from": os.path.abspath(path), "imported_accuracy": extra.get("acc")}
    os.makedirs(workdir, exist_ok=True)
    config_lib.save_config(cfg, os.path.join(workdir, "config.json"))
    store = checkpoints.StageCheckpoints(workdir, 2)
    store.save("best", 0, st, meta)
    store.wait()  # ``best`` before the ``latest`` that says the stage is finished
    store.save("latest", 0, st, meta)
    store.close()
    return {"method": cfg.method, "split_family": cfg.split_family, **shape, **extra}, workdir

