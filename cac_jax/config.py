"""Run configuration: one frozen dataclass fully describes a training run.

Every experiment module (``experiments/<name>.py``) returns a :class:`Config` from ``get_config()``;
the command line overrides single fields with ``--set key=value`` (parsed by the field's type, see
:func:`parse_override`). The resolved config is written to ``<workdir>/config.json`` and embedded
in ``results.json``, so a run can be re-evaluated or resumed from its work directory alone.

A *recipe* is a named set of training fields (:data:`RECIPE_FIELDS`) for a dataset and objective:
``cac2021``, the paper's (the experiment modules' own values, the default), or ``vaze2022``, the modern
protocol's (Vaze et al. 2022, :func:`vaze2022_fields`). ``--set recipe=vaze2022`` sets all of them
(:func:`apply_overrides`); other ``--set`` items still override single fields, and the report notes every
field of a run that differs from its recipe.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import types
import typing
from typing import Any

from cac_jax import objectives, storage
from cac_jax.data import external

MODELS = ("cac_cnn", "classifier32", "small_cnn")
STAGES = ("both", "1", "2")
DTYPES = ("float32", "bfloat16")
EXPERIMENTS = ("digits", "mnist", "svhn", "cifar10", "cifar_plus_10", "cifar_plus_50", "tiny_imagenet")
RECIPES = ("cac2021", "vaze2022")
# What a recipe sets. Not alpha and lbda: CAC's own hyper-parameters stay the paper's under every recipe
# (README, "The modern protocol", says why).
RECIPE_FIELDS = ("model", "batch_size", "learning_rates", "epochs", "lr_schedule", "warmup_epochs", "num_restarts",
                 "eta_min_fraction", "optimizer", "weight_decay", "momentum", "label_smoothing", "augmentation",
                 "randaugment_n", "randaugment_m", "normalisation", "dropout", "holdout_val")
# Where and how a run executes, never what it computes: they may differ between the processes of a job
# (paths, the console) or between the commands that resume or evaluate one run.
HOST_FIELDS = ("workdir", "data_dir", "npz_path", "manual_dir", "progress", "distributed", "num_devices", "tensorboard",
               "imports")
# What `eval --set` may change: where it runs, and the evaluation's own settings. Every other field says what the
# network was trained on or how its results are labelled, and is refused.
EVAL_FIELDS = HOST_FIELDS + ("eval_batch_size", "anchor_flip", "target_acceptance", "calibration", "unknowns")
# What may differ when a run resumes in its work directory: the data it reads must be the same data (the
# checkpoints record its fingerprint), and `stages` may run the rest of a run one stage at a time.
# What `eval --set` may change: the evaluation settings, and the dataset whose test sets the network is scored on,
# which the checkpoint then checks has the training data it was trained on (CIFAR+10 -> CIFAR+50).
EVAL_CHANGES = EVAL_FIELDS + ("dataset",)
RESUMABLE_FIELDS = HOST_FIELDS + ("eval_batch_size", "stages", "log_every_steps", "checkpoint_every_epochs",
                                  "checkpoint_every_steps")
MAX_SEED = 2**31 - 1  # the seed travels to the train step as int32
NUM_TRIALS = 5


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on. Tuples (not lists) keep instances hashable."""

    experiment: str = "digits"
    dataset: str = "digits"
    trial: int = 0
    split_family: str = "neal2018"
    recipe: str = "cac2021"  # which recipe the training fields come from (a label; --set recipe=... sets them)
    holdout_val: bool = True  # hold out the dataset's val fraction, select by it; False: train on all, keep the last
    data_dir: str | None = None  # TFDS data directory (prepared datasets only; nothing is downloaded)
    npz_path: str | None = None  # a local .npz in the Keras layout (mnist.npz, cifar10_jpeg.npz, ...)
    manual_dir: str | None = None  # manually placed archives (TinyImageNet)
    trainval_file: str | None = None  # the original's trainval_idxs.json, to reuse its exact val split
    method: str = "cac"  # a registered training objective (cac_jax.objectives), or a shorthand such as ce_msp
    model: str = "small_cnn"  # "cac_cnn": the paper's encoder; "small_cnn": a small net for 8x8 digits
    alpha: float = 10.0  # anchor magnitude: anchors are alpha * I
    lbda: float = 0.1  # weight of the anchor term: L = lbda * L_A + L_T
    batch_size: int = 64  # global batch, whatever the device count
    learning_rates: tuple[float, ...] = (0.01, 0.001)  # the base lr of each stage
    lr_schedule: str = "constant"  # or "cosine_warm_restarts" (cac_jax.training.schedules)
    warmup_epochs: int = 0  # cosine_warm_restarts: linear warm-up epochs at the start of a stage
    num_restarts: int = 0  # cosine_warm_restarts: restarts after the first cycle
    eta_min_fraction: float = 1e-3  # cosine_warm_restarts: the lowest lr, as a fraction of the base lr
    optimizer: str = "sgd"  # "sgd" (momentum, coupled L2) or "adam" (PyTorch's Adam, coupled L2)
    label_smoothing: float = 0.0  # ce: target 1 - s on the true class, s / (N - 1) on the others (ARPL's)
    augmentation: str = "cac2021"  # the original's crop/flip/rotation, or "randaugment" (Vaze et al.'s pipeline)
    randaugment_n: int = 1  # augmentation=randaugment: ops per image
    randaugment_m: float = 9.0  # augmentation=randaugment: magnitude, 0..30
    normalisation: str = "dataset"  # the dataset's mean/std (the original's), or "vaze2022" (CIFAR's for all)
    epochs: tuple[int, ...] = (30, 10)  # epochs of each stage
    weight_decay: float = 5e-6  # PyTorch-style coupled L2 (added to the gradient before momentum)
    momentum: float = 0.9
    dropout: float = 0.2  # channel (Dropout2d) rate at the end of each encoder block
    seed: int = 0
    workdir: str | None = None  # None -> runs/<run_name>/trial<trial>
    stages: str = "both"  # "both", or "1"/"2" to run one stage alone
    log_every_steps: int = 50
    checkpoint_every_epochs: int = 5  # "latest" every this many epochs of a stage and at its end
    checkpoint_every_steps: int = 0  # also within epochs, every this many steps (0: never)
    eval_batch_size: int = 512
    anchor_flip: bool | None = None  # add h-flipped copies when computing class means; None: dataset default
    target_acceptance: float = 0.95  # the known-acceptance rate that the rejection threshold is calibrated to
    calibration: str | None = None  # held-out known images to calibrate on (cac_jax.data.external); None: the val split
    unknowns: tuple[str, ...] = ()  # NAME=SOURCE: unknowns from other datasets to score (cac_jax.data.external)
    num_devices: int | None = None  # None: all devices
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)
    dtype: str = "float32"  # compute dtype of the network ("bfloat16" keeps float32 params and BN stats)
    progress: bool = True  # tqdm progress bars
    tensorboard: bool = False  # also write TensorBoard event files (needs tensorboardX or torch)
    imports: tuple[str, ...] = ()  # the modules / .py files the command imported (--import): an objective or
    # scores of one's own; recorded so that a later command can say what to import
    init_from: str | None = None  # a checkpoint <run>/checkpoints/stage<s>[/best|/latest]: the first stage starts
    # from its network (fresh optimiser) instead of a fresh initialisation, e.g. to continue a diverged run

    def __post_init__(self):
        _check_choice("experiment", self.experiment, EXPERIMENTS)
        _check_method(self.method, self.imports)
        _check_choice("model", self.model, MODELS)
        _check_choice("stages", self.stages, STAGES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("recipe", self.recipe, RECIPES)
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine_warm_restarts"))
        _check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        _check_choice("augmentation", self.augmentation, ("cac2021", "randaugment"))
        _check_choice("normalisation", self.normalisation, ("dataset", "vaze2022"))
        if self.randaugment_n < 0 or not 0 <= self.randaugment_m <= 30:
            raise ValueError(f"randaugment_n must be >= 0 and randaugment_m in [0, 30], got {self.randaugment_n}, "
                             f"{self.randaugment_m}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and not objectives.get(self.method).uses_label_smoothing:
            raise ValueError(f"label_smoothing={self.label_smoothing} applies to objectives that use it (ce), not to "
                             f"method={self.method!r}")
        if self.warmup_epochs < 0 or self.num_restarts < 0:
            raise ValueError(f"warmup_epochs and num_restarts must be >= 0, got {self.warmup_epochs}, "
                             f"{self.num_restarts}")
        if self.trainval_file is not None and not self.holdout_val:
            raise ValueError(f"trainval_file={self.trainval_file!r} gives a validation split, but holdout_val=false "
                             "trains on every training image")
        if len(self.learning_rates) != 2 or len(self.epochs) != 2:
            raise ValueError(
                f"learning_rates and epochs need one value per stage (2 each); got "
                f"learning_rates={self.learning_rates}, epochs={self.epochs}")
        if any(e < 0 for e in self.epochs):
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        for name in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_devices is not None and self.num_devices <= 0:
            raise ValueError(f"num_devices must be positive or None, got {self.num_devices}")
        _check_range("learning_rates", self.learning_rates, low=0.0, low_open=True)
        _check_range("alpha", self.alpha, low=0.0, low_open=True)
        _check_range("lbda", self.lbda, low=0.0)
        _check_range("weight_decay", self.weight_decay, low=0.0)
        _check_range("momentum", self.momentum, low=0.0, high=1.0)
        _check_range("dropout", self.dropout, low=0.0, high=1.0)
        _check_range("eta_min_fraction", self.eta_min_fraction, low=0.0, high=1.0, high_open=False)
        _check_range("target_acceptance", self.target_acceptance, low=0.0, high=1.0, low_open=True)
        external.check_named(self.unknowns)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must lie in 0..{MAX_SEED}, got {self.seed}")
        if not 0 <= self.trial < NUM_TRIALS:
            raise ValueError(f"trial must lie in 0..{NUM_TRIALS - 1} (each benchmark has {NUM_TRIALS} splits), "
                             f"got {self.trial}")
        if self.checkpoint_every_steps < 0:
            raise ValueError(f"checkpoint_every_steps must be >= 0 (0: never within an epoch), got "
                             f"{self.checkpoint_every_steps}")
        run = [self.epochs[s - 1] for s in ((1, 2) if self.stages == "both" else (int(self.stages),))]
        if self.stages != "2" and not sum(run):
            raise ValueError(f"epochs={self.epochs} with stages={self.stages} trains nothing, so its evaluation would be "
                             f"of an untrained network; give at least one epoch")

    @property
    def objective(self) -> str:
        """The name of the objective the network is trained with (``ce`` for the shorthands ``ce_*``)."""
        return objectives.get(self.method).name

    @property
    def run_name(self) -> str:
        """The experiment, with the split family and recipe where they are not the paper's (default paths)."""
        return "_".join([self.experiment] + [v for v, d in ((self.split_family, "neal2018"), (self.recipe, "cac2021"))
                                             if v != d])

    @property
    def resolved_workdir(self) -> str:
        return self.workdir or os.path.join("runs", self.run_name, f"trial{self.trial}")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class UnregisteredMethod(ValueError):
    """A config names a method that no registered objective provides (in this process)."""


def _check_method(method: str, imports: tuple[str, ...]) -> None:
    if method in objectives.methods():
        return
    if imports:
        hint = (f"the config names --import {' --import '.join(imports)}: give the same to this command (and check "
                f"that it registers {method!r})")
    else:
        hint = "an objective of your own: --import the module or .py file that registers it (cac_jax.objectives.register)"
    raise UnregisteredMethod(f"method={method!r} is not a registered objective ({', '.join(objectives.methods())}); "
                             f"{hint}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")


def _check_range(name, value, *, low, high=math.inf, low_open=False, high_open=True):
    """Every number of ``value`` (a number or a tuple) finite and within [low, high) (or the open/closed ends asked)."""
    for v in value if isinstance(value, (tuple, list)) else (value,):
        below = v <= low if low_open else v < low
        above = v >= high if high_open else v > high
        if not math.isfinite(v) or below or above:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise ValueError(f"{name}={value!r}: every value must be finite and lie in {interval}")


def save_config(cfg: Config, path: str) -> None:
    """Write ``cfg`` as JSON; atomically, so a reader (another process of the job) never sees half a file."""
    storage.write_json(path, cfg.to_dict())


def load_config(path: str) -> Config:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config at {path}: is this a cac-jax work directory?")
    try:
        return Config.from_dict(storage.read_json(path))
    except (TypeError, ValueError) as e:
        if isinstance(e, storage.DamagedFile):
            raise
        if isinstance(e, UnregisteredMethod):
            raise UnregisteredMethod(f"{path}: {e}") from None
        raise ValueError(f"{path} does not hold a valid cac-jax config: {e}") from None


def training_fields(config: dict) -> dict:
    """The fields of a saved config (a dict) that say what the network was trained on and how its results are
    labelled: all but :data:`EVAL_FIELDS` and the logging and checkpoint cadence; a field an earlier version did
    not write ran as its default."""
    defaults = Config().to_dict()
    skip = set(EVAL_FIELDS) | {"log_every_steps", "checkpoint_every_epochs", "checkpoint_every_steps"}
    return {k: config.get(k, d) for k, d in defaults.items() if k not in skip}


def field_diffs(old: dict, new: dict, *, ignore=()) -> list[str]:
    """``"field: old -> new"`` for every field of two saved configs (dicts) that differs, except ``ignore``; a field
    missing from either ran as its default."""
    defaults = Config().to_dict()
    return [f"{k}: {old.get(k, d)!r} -> {new.get(k, d)!r}" for k, d in defaults.items()
            if k not in ignore and old.get(k, d) != new.get(k, d)]


# Vaze et al.'s RandAugment magnitude per dataset (MODERN_PROTOCOL.md (b); N = 1 everywhere). digits, which
# they do not train, takes MNIST's.
VAZE2022_RANDAUGMENT_M = {"digits": 8, "mnist": 8, "svhn": 18, "cifar10": 6, "cifar_plus_10": 6, "cifar_plus_50": 6,
                          "tiny_imagenet": 9}


def vaze2022_fields(dataset: str, objective: str) -> dict[str, Any]:
    """Vaze et al.'s recipe (ICLR 2022; their repository at 3258f05, MODERN_PROTOCOL.md (b)) for ``dataset``:
    classifier32, batch 128, 600 epochs as one stage of cosine annealing with 2 warm restarts after 10
    warm-up epochs (eta_min = 1e-3 lr), SGD lr 0.1, momentum 0.9, weight decay 1e-4 -- TinyImageNet: Adam at
    lr 0.01 without weight decay, as their code does -- RandAugment N=1 at the dataset's magnitude, CIFAR's
    normalisation for every dataset, label smoothing 0.9 (their convention) for cross-entropy on
    TinyImageNet only, and the full training set with the last epoch's network (their split_train_val=False).
    Also ``stages="1"`` (run the one stage), which is not a recipe field."""
    if dataset not in VAZE2022_RANDAUGMENT_M:
        raise ValueError(f"recipe vaze2022 has no settings for dataset {dataset!r}; it knows "
                         f"{', '.join(VAZE2022_RANDAUGMENT_M)}")
    tiny = dataset == "tiny_imagenet"
    lr = 0.01 if tiny else 0.1
    return dict(model="classifier32", batch_size=128, learning_rates=(lr, lr), epochs=(600, 0),
                lr_schedule="cosine_warm_restarts", warmup_epochs=10, num_restarts=2, eta_min_fraction=1e-3,
                optimizer="adam" if tiny else "sgd", weight_decay=0.0 if tiny else 1e-4, momentum=0.9,
                label_smoothing=0.9 if tiny and objective == "ce" else 0.0, augmentation="randaugment",
                randaugment_n=1, randaugment_m=float(VAZE2022_RANDAUGMENT_M[dataset]), normalisation="vaze2022",
                dropout=0.2, holdout_val=False, stages="1")


def recipe_fields(recipe: str, experiment: str, dataset: str, objective: str) -> dict[str, Any]:
    """The :data:`RECIPE_FIELDS` values of ``recipe`` for a run of ``experiment`` on ``dataset`` with ``objective``."""
    _check_choice("recipe", recipe, RECIPES)
    if recipe == "vaze2022":
        return vaze2022_fields(dataset, objective)
    paper = get_experiment(experiment)
    return {k: getattr(paper, k) for k in RECIPE_FIELDS}


def saved_recipe(config: dict) -> tuple[dict, dict] | None:
    """(the run's fields, its recipe's :data:`RECIPE_FIELDS` values) of a saved config (a dict, as ``to_dict``
    gives; a field an earlier version did not write ran as its default), or None when its recipe cannot be known
    (an unknown experiment or recipe). The run's objective need not be registered in this process: the recipes
    set nothing objective-specific for any objective but ce."""
    run = {**Config().to_dict(), **config}
    method = run["method"]
    objective = objectives.get(method).name if method in objectives.methods() else method
    try:
        want = recipe_fields(run["recipe"], run["experiment"], run["dataset"], objective)
    except ValueError:
        return None
    return run, {k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}


def recipe_deviations(config: Config | dict) -> dict[str, tuple[Any, Any]]:
    """{field: (the recipe's value, the run's)} of every recipe field in which a config (or a saved one, a dict)
    departs from its recipe; {} when its recipe cannot be known."""
    known = saved_recipe(config.to_dict() if isinstance(config, Config) else config)
    if known is None:
        return {}
    run, want = known
    as_tuple = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    return {k: (as_tuple(want[k]), as_tuple(run[k])) for k in RECIPE_FIELDS if run[k] != want[k]}


def get_experiment(name: str) -> Config:
    """``experiments.<name>.get_config()``, with a clear error for an unknown name."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {EXPERIMENTS}")
    return importlib.import_module(f"experiments.{name}").get_config()


def _parse_scalar(text: str, typ, key: str):
    if typ is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={text}: expected true/false")
    try:
        return typ(text.strip())
    except ValueError:
        raise ValueError(f"--set {key}={text}: expected a value of type {typ.__name__}") from None


def parse_value(key: str, text: str) -> Any:
    """Parse ``text`` as the type of field ``key``: tuples are comma-separated, ``none`` is None."""
    hints = typing.get_type_hints(Config)
    if key not in hints:
        raise ValueError(f"unknown config key {key!r}; valid keys: {sorted(hints)}")
    typ = hints[key]
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # "X | None"
        if text.strip().lower() in ("none", "null", ""):
            return None
        typ = next(a for a in args if a is not type(None))
        args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple:
        return tuple(_parse_scalar(t, args[0], key) for t in text.split(",") if t.strip())
    return _parse_scalar(text, typ, key)


def parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> (key, parsed value)."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    return key, parse_value(key, text)


def apply_overrides(cfg: Config, items: typing.Iterable[str]) -> Config:
    """``cfg`` with the ``key=value`` items set. An item ``recipe=R`` first sets every field of recipe R (for the
    experiment, dataset and method the items give, else ``cfg``'s); the other items then override those."""
    changes = dict(parse_override(item) for item in items)
    if "recipe" in changes:
        # The other items go on top; the recipe's label smoothing must not meet a method it does not fit first.
        where = {k: changes.get(k, getattr(cfg, k)) for k in ("experiment", "dataset", "method")}
        _check_method(where["method"], changes.get("imports", cfg.imports))
        fields = recipe_fields(changes["recipe"], where["experiment"], where["dataset"], objectives.get(where["method"]).name)
        return cfg.replace(**{**fields, **changes})
    return cfg.replace(**changes) if changes else cfg
