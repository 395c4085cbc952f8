"""Command line: ``cac-jax train`` and ``cac-jax eval`` (also ``python -m cac_jax``).

``cac-jax train`` with no arguments trains CAC on the built-in digits data (trial 0), evaluates it and
writes ``runs/digits/trial0/results.json``. Any config field can be overridden with ``--set key=value``
(repeatable; tuples comma-separated, e.g. ``--set learning_rates=0.02,0.002``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from cac_jax import config as config_lib


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cac-jax", description="Class Anchor Clustering (open-set recognition) in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (both stages by default), evaluate, write <workdir>/results.json",
                       description="Train and evaluate. A work directory holding an unfinished run is resumed "
                                   "from its latest checkpoint; one holding a finished run is left untouched.")
    t.add_argument("--experiment", default="digits", choices=config_lib.EXPERIMENTS,
                   help="experiment module under experiments/ (default: digits, built-in data)")
    t.add_argument("--trial", type=_trials, default=None, help="trial(s) 0-4, e.g. 0 or 0,1,2,3,4 (default 0)")
    t.add_argument("--workdir", help="work directory (default runs/<experiment>/trial<k>; with several trials "
                                     "<workdir>/trial<k>)")
    t.add_argument("--seed", type=int, help="random seed (init, augmentation, dropout, data order)")
    t.add_argument("--epochs", help="epochs of stage 1 and stage 2, e.g. 2,1")
    t.add_argument("--method", choices=config_lib.METHODS, help="training objective (default cac)")
    _add_common(t)

    e = sub.add_parser("eval", help="evaluate the best checkpoint of a trained run, write results.json",
                       description="Evaluate the best checkpoint of the run's last stage (accuracy, AUROC).")
    e.add_argument("--workdir", required=True, help="work directory of a trained run (holds config.json)")
    _add_common(e)
    return parser


def _common_overrides(args) -> list[str]:
    items = list(args.overrides)
    if args.data_dir:
        items.append(f"data_dir={args.data_dir}")
    if args.npz:
        items.append(f"npz_path={args.npz}")
    if args.no_progress:
        items.append("progress=false")
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
    """A readable table of per-trial results (and their mean when there are several)."""
    lines = [f"{'experiment':<15} {'method':<12} {'trial':>5} {'accuracy':>9} {'AUROC':>7}  workdir"]
    for r in rows:
        c = r["config"]
        lines.append(f"{c['experiment']:<15} {c['method']:<12} {c['trial']:>5} {r['accuracy']:>9.4f} "
                     f"{r['auroc']:>7.4f}  {r.get('workdir', '')}")
    if len(rows) > 1:
        acc = sum(r["accuracy"] for r in rows) / len(rows)
        auc = sum(r["auroc"] for r in rows) / len(rows)
        lines.append(f"{'mean':<15} {'':<12} {'':>5} {acc:>9.4f} {auc:>7.4f}")
    return "\n".join(lines)


def cmd_train(args) -> int:
    from cac_jax import train

    rows = []
    for cfg in train_configs(args):
        print(f"training {cfg.experiment} trial {cfg.trial} ({cfg.method}, {cfg.model}) in {cfg.resolved_workdir}",
              flush=True)
        results = train.run(cfg)
        print(f"  accuracy {results['accuracy']:.4f}  AUROC {results['auroc']:.4f}  "
              f"({results['total_seconds']:.1f} s)", flush=True)
        rows.append(results)
    print(format_table(rows))
    return 0


def cmd_eval(args) -> int:
    from cac_jax import train

    cfg = config_lib.load_config(os.path.join(args.workdir, "config.json"))
    cfg = config_lib.apply_overrides(cfg, _common_overrides(args)).replace(workdir=args.workdir)
    ctx = train.make_context(cfg, train.load_data(cfg))
    results = train.evaluate_run(ctx)
    results["workdir"] = os.path.abspath(args.workdir)
    path = train.write_results(args.workdir, results)
    print(format_table([results]))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cac_jax import train

    try:
        return {"train": cmd_train, "eval": cmd_eval}[args.command](args)
    except (ValueError, FileNotFoundError, train.WorkdirError, train.TrainingDiverged) as e:
        print(f"cac-jax {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
