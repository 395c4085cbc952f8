"""Command line (also ``python -m cac_jax``): ``train``, ``eval``, ``sweep``, ``report``, ``plots``,
``import-torch``, ``launch``.

``cac-jax train`` with no arguments trains CAC on the built-in digits data (trial 0), evaluates it and
writes ``runs/digits/trial0/results.json``. Any config field can be overridden with ``--set key=value``
(repeatable; tuples comma-separated, e.g. ``--set learning_rates=0.02,0.002``).

* ``cac-jax eval --workdir W`` (or ``--checkpoint W/checkpoints/stage2/best``) re-evaluates a trained run.
* ``cac-jax sweep --experiment digits --method cac`` runs trials 0-4 into ``runs/sweeps/digits/cac``
  (``--method all`` (cac, cac_learnt, ce) or ``--method cac,ce``: one sweep per method, each in ``<root>/<method>``;
  every network is scored by every score).
* ``cac-jax report runs/sweeps/digits`` tabulates sweeps next to the paper's numbers.
* ``cac-jax plots W`` redraws a run's (or a sweep's) plots from its saved test scores.
* ``cac-jax import-torch FILE.pth --experiment mnist --trial 0 --workdir W`` turns one of the authors'
  released PyTorch networks into a run that ``cac-jax eval --workdir W`` evaluates (:mod:`cac_jax.runs.torch_import`).
* ``train``, ``eval`` and ``sweep`` join a job of several processes (hosts) with ``--coordinator HOST:PORT
  --num-processes N --process-id I`` or, on a cluster JAX detects, ``--set distributed=true``
  (:mod:`cac_jax.runtime.distributed`); ``cac-jax launch --processes 2 --host-devices 2 -- train`` runs such a job
  on this machine (:mod:`cac_jax.runs.launch`).

Every failure ends the command with one line on stderr, ``cac-jax <command>: error: ...``, naming the file, field
or value at fault and what to do (exit code 1; Ctrl-C: "interrupted", 130; SIGTERM: 143). ``--debug`` (or
``CAC_JAX_DEBUG=1``) prints the traceback before it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
import warnings

from cac_jax import config as config_lib
from cac_jax import storage
from cac_jax.runs import errors
from cac_jax.runtime import distributed, interrupts


def _trials(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--trial expects integers like 0 or 0,1,2 (got {text!r})") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (repeatable); e.g. --set batch_size=32. "
                        f"Keys: {', '.join(f.name for f in dataclasses.fields(config_lib.Config))}")
    p.add_argument("--data-dir", help="TFDS data directory holding prepared datasets (nothing is downloaded)")
    p.add_argument("--npz", help="a local .npz file with the data (Keras layout: mnist.npz, cifar10_jpeg.npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--unknowns", action="append", default=[], metavar="NAME=SOURCE",
                   help="also score unknowns from another dataset (repeatable): a Keras-layout .npz (its x_test), an "
                        "image folder, tfds:NAME (prepared) or noise:gaussian / noise:uniform")
    p.add_argument("--calibration", metavar="SOURCE",
                   help="held-out known images to calibrate the rejection threshold on (default: the run's "
                        "validation split); same forms as --unknowns' SOURCE")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module (a name, or a path to a .py file) first, e.g. one that registers an objective "
                        "(cac_jax.objectives.register) or scores (cac_jax.evaluation.scores.register) of your own; "
                        "repeatable, and recorded in the run's config")


def _add_distributed(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several processes (hosts)", "start the same command on every process with these "
                             "three (or, on SLURM, Open MPI or Cloud TPU, none of them and --set distributed=true)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, where the coordinator listens")
    g.add_argument("--num-processes", type=_positive, metavar="N", help="number of processes in the job")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
    g.add_argument("--heartbeat-timeout", type=_positive, default=distributed.DEFAULT_HEARTBEAT_TIMEOUT,
                   metavar="S", help="seconds after which a silent process counts as dead and the others stop "
                                     f"(default {distributed.DEFAULT_HEARTBEAT_TIMEOUT})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cac-jax", description="Class Anchor Clustering (open-set recognition) in JAX.")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of a failure before its one-line message (also CAC_JAX_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (both stages by default), evaluate, write <workdir>/results.json",
                       description="Train and evaluate. A work directory holding an unfinished run is resumed "
                                   "from its latest checkpoint; one holding a finished run is left untouched.")
    t.add_argument("--experiment", default="digits", choices=config_lib.EXPERIMENTS,
                   help="experiment module under experiments/ (default: digits, built-in data)")
    t.add_argument("--trial", type=_trials, default=None, help="trial(s) 0-4, e.g. 0 or 0,1,2,3,4 (default 0)")
    t.add_argument("--workdir", help="work directory (default runs/<experiment>[_<split family>][_<recipe>]/trial<k>; with several trials "
                                     "<workdir>/trial<k>)")
    t.add_argument("--seed", type=int, help="random seed (init, augmentation, dropout, data order)")
    t.add_argument("--epochs", help="epochs of stage 1 and stage 2, e.g. 2,1")
    t.add_argument("--method", help="training objective: cac (the default), cac_learnt, ce, a shorthand ce_msp / "
                                    "ce_max_logit / ce_distance, or one of your own registered by an --import")
    _add_common(t)
    _add_distributed(t)

    e = sub.add_parser("eval", help="evaluate the best checkpoint of a trained run, write results.json",
                       description="Evaluate a trained run from its files alone (config.json and checkpoints) and "
                                   "write results.json (accuracy, AUROC, OSCR, OpenAUC, FPR95, AUPR-in/out), "
                                   "scores.npz and the plots. An earlier results.json is renamed, never overwritten.")
    e.add_argument("--workdir", help="work directory of a trained run (holds config.json and checkpoints/); with "
                                     "--checkpoint: where to write the outputs (default: the checkpoint's run)")
    e.add_argument("--checkpoint", help="a checkpoint directory <run>/checkpoints/stage<s>[/best|/latest] "
                                        "(default: the best checkpoint of the run's last stage)")
    e.add_argument("--config", help="config.json to use (default: the run's own)")
    _add_common(e)
    _add_distributed(e)

    s = sub.add_parser("sweep", help="train and evaluate a method on trials 0-4, write mean and std",
                       description="Run trials into <workdir>/trial<k>, one after another or --parallel N at "
                                   "a time. A trial with a "
                                   "results.json is not rerun; an interrupted one resumes from its checkpoint. "
                                   "Writes <workdir>/results.json (per trial, mean, sample std), results.md, roc.png.")
    s.add_argument("--experiment", default="digits", choices=config_lib.EXPERIMENTS)
    s.add_argument("--method", default="cac",
                   help="as train's --method, several comma-separated, or 'all': one network per registered objective "
                        "(cac, cac_learnt, ce and those of --import), each scored by every score (default cac)")
    s.add_argument("--trials", type=_trials, default=[0, 1, 2, 3, 4], help="trials, e.g. 0,1,2,3,4 (the default)")
    s.add_argument("--workdir", help="sweep directory (default runs/sweeps/<experiment>[_<split family>][_<recipe>]/"
                                     "<method>, naming the family and recipe where not the paper's; with several "
                                     "methods <workdir>/<method>)")
    s.add_argument("--seed", type=int, help="random seed")
    s.add_argument("--epochs", help="epochs of stage 1 and stage 2, e.g. 2,1 (fewer than the experiment's: "
                                    "the report marks the sweep as shortened)")
    s.add_argument("--parallel", type=_positive, default=1,
                   help="train this many trials at once, each in its own process with its log in "
                        "<workdir>/trial<k>/train.log (fills an accelerator that one small trial leaves idle; "
                        "no gain on a CPU); default 1")
    _add_common(s)
    _add_distributed(s)

    r = sub.add_parser("report", help="Markdown table of sweeps next to the paper's numbers",
                       description="Tabulate sweep results (mean ± std over trials) next to the published AUROC "
                                   "of CAC and of the softmax baseline. A directory without results.json is "
                                   "searched one level down (e.g. runs/sweeps/digits holds one sweep per method).")
    r.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR")
    r.add_argument("--output", help="also write the table to this file")

    pl = sub.add_parser("plots", help="redraw the plots of a run or a sweep from its saved scores",
                        description="Redraw roc.png, score_hist.png, logit_pca.png, training_curves.png of a run "
                                    "(from scores.npz and metrics.jsonl), or roc.png of a sweep.")
    pl.add_argument("workdir")

    it = sub.add_parser("import-torch", help="turn one of the authors' released PyTorch networks into a run",
                        description="Convert a network released with the original (cac-openset: "
                                    "<DATASET>_<trial>_CACclassifierAnchorLoss.pth or _closedSetClassifier.pth) into "
                                    "a cac-jax work directory (config.json and an Orbax checkpoint) that "
                                    "`cac-jax eval --workdir W` evaluates. The method comes from the file (CAC or "
                                    "cross-entropy), the split family is the one these networks were trained on "
                                    "(cac_random2020) unless --set split_family=... says otherwise. Needs torch "
                                    "(pip install 'cac-jax[torch]').")
    it.add_argument("checkpoint", metavar="CHECKPOINT.pth")
    it.add_argument("--experiment", choices=config_lib.EXPERIMENTS,
                    help="the benchmark the network was trained on (default: from the file name, e.g. MNIST_...)")
    it.add_argument("--trial", type=int, default=None,
                    help="the trial (split) the network was trained on (default: from the file name, e.g. MNIST_1_...)")
    it.add_argument("--workdir", help="the new work directory (default runs/imported/<file name>)")
    _add_common(it)

    pr = sub.add_parser("predict", help="classify images with a trained run: a known class, or unknown",
                        description="Accept each image as one of the run's known classes or reject it as unknown, "
                                    "at the threshold calibrated on held-out knowns (calibration.npz, written by "
                                    "train and eval). Writes one row per image to PREFIX.csv and PREFIX.json.")
    pr.add_argument("--workdir", required=True, help="work directory of a trained, evaluated run")
    pr.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="a Keras-layout .npz (its x_test), an image file (PNG, JPEG, ...) or a folder of them")
    pr.add_argument("--score", help="the open-set score to decide by (default: the run's own)")
    pr.add_argument("--output", default="predictions", metavar="PREFIX",
                    help="where to write PREFIX.csv and PREFIX.json (default ./predictions; earlier files are kept "
                         "as PREFIX.<n>.*)")
    pr.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help="a module or .py file registering a score of your own (repeatable)")

    la = sub.add_parser("launch", help="try a multi-host job on this machine: N processes sharing its CPU",
                        description="Start a cac-jax command as a job of several processes on this machine, "
                                    "each with its own CPU devices, connected by JAX's distributed runtime "
                                    "(the code path of a job over several hosts). Output lines are prefixed "
                                    "[p<i>]; Ctrl-C stops every process; the launcher exits non-zero as soon "
                                    "as one process fails. Example: cac-jax launch --processes 2 "
                                    "--host-devices 2 -- train --set epochs=6,2")
    la.add_argument("--processes", type=_positive, default=2, help="number of processes (default 2)")
    la.add_argument("--host-devices", type=_positive, default=1, help="CPU devices per process (default 1)")
    la.add_argument("job", nargs=argparse.REMAINDER, metavar="COMMAND", help="-- then the cac-jax command: train, eval or sweep "
                                                               "with its options")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def sweep_methods(text: str) -> list[str]:
    """The methods of ``sweep --method``: registered ones (after --import), comma-separated, or ``all`` objectives."""
    from cac_jax import objectives

    methods = list(objectives.names()) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in objectives.methods()]
    if bad or not methods:
        raise ValueError(f"--method {text}: unknown method(s) {bad or text!r}; choose from "
                         f"{', '.join(objectives.methods())} or all (an objective of your own: --import its file)")
    return methods


def _common_overrides(args) -> list[str]:
    items = list(args.overrides)
    if args.data_dir:
        items.append(f"data_dir={args.data_dir}")
    if args.npz:
        items.append(f"npz_path={args.npz}")
    if args.no_progress:
        items.append("progress=false")
    if args.unknowns:
        if any("," in item for item in args.unknowns):
            raise ValueError(f"--unknowns {next(i for i in args.unknowns if ',' in i)!r}: a source path may not hold a "
                             f"comma (rename it or link it)")
        items.append("unknowns=" + ",".join(args.unknowns))
    if args.calibration:
        items.append(f"calibration={args.calibration}")
    if args.imports:
        # Files as absolute paths: a later command (eval, a sweep's trial process) may run elsewhere.
        imports = [os.path.abspath(m) if m.endswith(".py") else m for m in args.imports]
        if any("," in m for m in imports):
            raise ValueError(f"--import {next(m for m in imports if ',' in m)!r}: a path may not hold a comma")
        items.append("imports=" + ",".join(imports))
    return items


def train_configs(args) -> list[config_lib.Config]:
    base = config_lib.get_experiment(args.experiment)
    items = _common_overrides(args)
    for flag, key in (("seed", "seed"), ("epochs", "epochs"), ("method", "method")):
        if getattr(args, flag) is not None:
            items.insert(0, f"{key}={getattr(args, flag)}")
    base = config_lib.apply_overrides(base, items)
    trials = args.trial or [base.trial]
    cfgs = []
    for k in trials:
        workdir = args.workdir
        if workdir and len(trials) > 1:
            workdir = os.path.join(workdir, f"trial{k}")
        cfgs.append(base.replace(trial=k, workdir=workdir or base.workdir))
    return cfgs


def format_table(rows: list[dict]) -> str:
    """A readable table of per-trial results (and their mean when there are several); metrics missing
    from an older results.json are left blank."""
    from cac_jax.evaluation.evaluate import METRIC_NAMES

    def cells(get):
        return " ".join(f"{get(k):>{max(len(n), 6)}.4f}" if get(k) is not None else " " * max(len(n), 6)
                        for k, n in METRIC_NAMES.items())

    head = " ".join(f"{n:>{max(len(n), 6)}}" for n in METRIC_NAMES.values())
    lines = [f"{'experiment':<15} {'method':<12} {'trial':>5} {head}  workdir"]
    for r in rows:
        c = r["config"]
        lines.append(f"{c['experiment']:<15} {c['method']:<12} {c['trial']:>5} {cells(r.get)}  {r.get('workdir', '')}")
    if len(rows) > 1:
        def mean(k):
            values = [r[k] for r in rows if k in r]
            return sum(values) / len(values) if len(values) == len(rows) else None

        lines.append(f"{'mean':<15} {'':<12} {'':>5} {cells(mean)}")
    return "\n".join(lines)


def format_decisions(results: dict) -> str:
    """The decisions of one run: every score at its calibrated threshold (K + 1 classes), and the sets of unknowns
    from other datasets (AUROC, and the fraction rejected at that threshold)."""
    from cac_jax.runs.sweep import DECISION_NAMES

    cal = results.get("calibration")
    if not cal:
        return ""
    own = results.get("score")
    label = {name: name + (" (own)" if name == own else "") for name in results["scores"]}
    width = max(map(len, label.values()), default=5) + 1
    if cal["status"] == "calibrated":
        lines = [f"decisions at the calibrated threshold: {100 * cal['target']:g}% of held-out knowns accepted, "
                 f"calibrated on {cal['source']}",
                 f"{'score':<{width}} " + " ".join(f"{h:>17}" for h in DECISION_NAMES.values())]
        for name, m in results["scores"].items():
            point = m.get("operating_point") or {}
            cells = [f"{point[k]:>17.4f}" if isinstance(point.get(k), float) else f"{'-':>17}" for k in DECISION_NAMES]
            lines.append(f"{label[name]:<{width}} " + " ".join(cells))
    else:
        lines = [f"uncalibrated: {cal['source']}"]
    for name, entry in (results.get("unknown_sets") or {}).items():
        lines.append(f"unknowns '{name}' ({entry['n']} images of {entry['source']}): AUROC, and the fraction rejected "
                     f"at the calibrated threshold")
        for score, m in entry["scores"].items():
            rejected = f"{m['rejected']:.4f}" if m["rejected"] is not None else "uncalibrated"
            lines.append(f"  {label.get(score, score):<{width}} AUROC {m['auroc']:.4f}  rejected {rejected}")
    return "\n".join(lines)


def cmd_train(args) -> int:
    from cac_jax.runs.run import train_and_report

    rows = [train_and_report(cfg) for cfg in train_configs(args)]
    print(format_table(rows))
    if len(rows) == 1:
        print(format_decisions(rows[0]))
    return 0


def cmd_eval(args) -> int:
    from cac_jax.runs import eval_run

    results, path = eval_run.evaluate_run_dir(args.workdir, checkpoint=args.checkpoint, config_path=args.config,
                                              overrides=_common_overrides(args))
    from cac_jax.runtime import timing

    print(format_table([results]))
    print(format_decisions(results))
    prov = results["provenance"]
    if prov["status"] != "final":
        print(f"PARTIAL result ({'; '.join(prov['partial_because'])}): not the run's final result, and marked so in "
              f"results.json and by `cac-jax report`")
    print(f"wrote {path} (and scores.npz, plots) in {os.path.dirname(os.path.abspath(path))}; "
          f"{timing.summary(results['timings'])}")
    return 0


def cmd_sweep(args) -> int:
    from cac_jax.runs import sweep

    flags = [f"{flag}={getattr(args, flag)}" for flag in ("seed", "epochs") if getattr(args, flag) is not None]
    methods = sweep_methods(args.method)
    for method in methods:
        # Per method: a recipe's settings may depend on the objective (label smoothing for ce only).
        base = config_lib.apply_overrides(config_lib.get_experiment(args.experiment),
                                          [*flags, *_common_overrides(args), f"method={method}"])
        workdir = args.workdir
        if workdir is None:
            workdir = sweep.default_workdir(base)
        elif len(methods) > 1:
            workdir = os.path.join(workdir, method)
        result = sweep.run_sweep(base, args.trials, workdir, parallel=args.parallel,
                                 log=lambda m: print(m, flush=True))
        print(sweep.sweep_markdown(result))
        print(f"wrote {os.path.join(workdir, 'results.json')} and results.md", flush=True)
    return 0


def cmd_report(args) -> int:
    from cac_jax.runs import report

    text = report.report(args.sweeps)
    print(text, end="")
    if args.output:
        storage.write_text(args.output, text)
    return 0


def cmd_plots(args) -> int:
    from cac_jax.evaluation import evaluate
    from cac_jax.runs import plots
    from cac_jax.runs import sweep

    results = os.path.join(args.workdir, "results.json")
    scores = os.path.join(args.workdir, evaluate.SCORES_FILE)
    if os.path.exists(scores):
        written = plots.write_run_plots(args.workdir, evaluate.load_outputs(scores),
                                        storage.read_json(results) if os.path.exists(results) else None)
    elif os.path.exists(results):
        written = [sweep.write_sweep_roc(args.workdir, storage.read_json(results))]
    else:
        raise FileNotFoundError(f"{args.workdir} holds neither {evaluate.SCORES_FILE} (a run) nor results.json "
                                f"(a sweep): evaluate it first")
    print("wrote " + ", ".join(p for p in written if p))
    return 0


def cmd_import_torch(args) -> int:
    from cac_jax.runs import torch_import

    experiment = torch_import.resolve_experiment(args.checkpoint, args.experiment)
    trial = torch_import.resolve_trial(args.checkpoint, args.trial)
    items = [f"split_family={torch_import.RELEASED_FAMILY}", f"trial={trial}", *_common_overrides(args)]
    cfg = config_lib.apply_overrides(config_lib.get_experiment(experiment), items)
    stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
    cfg = cfg.replace(workdir=args.workdir or os.path.join("runs", "imported", stem))
    try:
        info, workdir = torch_import.import_checkpoint(args.checkpoint, cfg)
    except torch_import.TorchMissing as e:
        print(f"cac-jax import-torch: error: {e}", file=sys.stderr)
        return 1
    acc = f", validation accuracy {info['acc']:.2f}% in the original" if "acc" in info else ""
    print(f"imported {args.checkpoint}: method {info['method']}, {info['num_classes']} classes, "
          f"{info['image_size']}x{info['image_size']}x{info['channels']}, split family {info['split_family']}{acc}")
    print(f"wrote {workdir}; evaluate it with: cac-jax eval --workdir {workdir}")
    return 0


def cmd_predict(args) -> int:
    import collections

    from cac_jax.runs import predict

    clf = predict.load(args.workdir, score=args.score)
    images, names = clf.read_inputs(args.inputs)
    result = clf.predict(images, what=", ".join(args.inputs))
    paths = predict.write_predictions(args.output, result.rows(names))
    counts = collections.Counter(result.decision)
    if result.accepted is None:
        print(f"uncalibrated run: closed-set predictions only ({clf.calibration.meta['source']})")
    else:
        print(f"{len(result)} images: {int(result.accepted.sum())} accepted as known, "
              f"{int((~result.accepted).sum())} rejected as unknown (score {result.score_name}, threshold "
              f"{result.threshold:.4g}, calibrated to accept {100 * clf.calibration.target:g}% of knowns)")
    print("  " + ", ".join(f"{name}: {n}" for name, n in sorted(counts.items())))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


def cmd_launch(args) -> int:
    from cac_jax.runs import launch

    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    return launch.launch(command, args.processes, args.host_devices)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "report": cmd_report, "plots": cmd_plots,
            "import-torch": cmd_import_torch, "launch": cmd_launch, "predict": cmd_predict}
# The commands that compute: they get cac-jax's CPU settings and the compilation cache (runtime.configure).
COMPUTING_COMMANDS = ("train", "eval", "sweep", "import-torch", "predict")


def join_job(args) -> None:
    """Join the distributed job that ``args`` name (``--coordinator ...`` or ``--set distributed=true``) before
    any JAX computation. Process 0 speaks for the job: the others print their errors, nothing on stdout."""
    if not hasattr(args, "coordinator"):
        return
    auto = any(config_lib.parse_override(item) == ("distributed", True) for item in args.overrides)
    distributed.initialize(distributed.Options(coordinator=args.coordinator, num_processes=args.num_processes,
                                               process_id=args.process_id, auto=auto,
                                               heartbeat_timeout=args.heartbeat_timeout))
    if distributed.process_count() > 1 and not distributed.is_primary():
        print(f"process {distributed.process_index()} of {distributed.process_count()}: output on process 0",
              flush=True)
        sys.stdout = open(os.devnull, "w")


RESUMING_COMMANDS = ("train", "sweep")
EXIT_GRACE_S = 60  # after a failure, the longest the interpreter may take to end


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    if issubclass(category, storage.CacJaxWarning):
        print(f"cac-jax: warning: {message}", file=sys.stderr, flush=True)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("CAC_JAX_DEBUG", "").strip() not in ("", "0")
    warnings.showwarning = _show_warning
    if not debug:
        # What fails in a library's background (Orbax's save and restore threads, their asyncio loops, finalisers)
        # reaches the command as an error of its own, which says it in one line; their tracebacks, logged or
        # printed as "ignored" on the way, would bury it. --debug keeps them.
        for library in ("absl", "asyncio"):  # asyncio: "Task exception was never retrieved", with a traceback
            logging.getLogger(library).setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)
        sys.unraisablehook = threading.excepthook = lambda *_: None
    try:
        if args.command in COMPUTING_COMMANDS:
            from cac_jax import runtime

            runtime.configure()
        join_job(args)
        if args.command in COMPUTING_COMMANDS:
            # After joining a job: JAX's distributed runtime installs a SIGTERM handler of its own.
            interrupts.install()  # Ctrl-C and SIGTERM (a scheduler's stop) end the run, never swallowed
        from cac_jax.runs.run import import_user_module

        for module in getattr(args, "imports", ()):
            import_user_module(module)
        code = COMMANDS[args.command](args)
        interrupts.check()  # a Ctrl-C swallowed on its way up does not make a success
        return code
    except BaseException as e:  # noqa: BLE001  (every failure, Ctrl-C included, ends in one line)
        return _fail(args, e, debug)


def _fail(args, error: BaseException, debug: bool) -> int:
    message, code = errors.failure_message(error, resumes=args.command in RESUMING_COMMANDS)
    where = (f" (process {distributed.process_index()} of {distributed.process_count()})"
             if distributed.in_job() else "")

    def print_error():
        if debug:
            import traceback

            traceback.print_exception(error)
        hint = distributed.peer_hint(error) if distributed.in_job() else ""
        stopped = isinstance(error, (KeyboardInterrupt, errors.Terminated))  # not an error of the command's
        prefix = f"cac-jax {args.command}{'' if stopped else ': error'}{where}"
        print(f"{prefix}: {message}{hint}", file=sys.stderr, flush=True)

    if distributed.in_job():  # end this process at once: the others must not wait for it
        known = isinstance(error, (*errors.USER_ERRORS, KeyboardInterrupt, errors.Terminated))
        distributed.leave_failed_job(message, code, print_error, echo=not known)
    print_error()
    _state["quiet_exit"] = not debug
    return code


_state = {"quiet_exit": False}


def entry() -> None:
    """The ``cac-jax`` console command and ``python -m cac_jax``: :func:`main`, then its exit code. After a failure's
    one line, the interpreter's shutdown stays silent (a background save cut short by Ctrl-C would otherwise print
    its own traceback as its threads end); ``--debug`` keeps it."""
    code = main()
    if code and _state["quiet_exit"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    if code:
        # The failure is said and the run's saves are waited for (its finally blocks); a library thread left
        # stuck at exit (once in CI, after a Ctrl-C) must not keep the shell or the scheduler waiting.
        watchdog = threading.Timer(EXIT_GRACE_S, os._exit, args=(code,))
        watchdog.daemon = True
        watchdog.start()
    sys.exit(code)


if __name__ == "__main__":
    entry()
