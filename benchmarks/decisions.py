"""Calibrated open-set decisions of the authors' released networks, unknowns from other datasets, and the time it
all takes against the forward passes and the PyTorch harness of ``benchmarks.released_parity``.

    python -m benchmarks.decisions --dataset MNIST --npz ../shared/data/mnist.npz \\
        --trainval ../shared/reference/cac-openset/MNIST/trainval_idxs.json \\
        --unknowns fashion=../shared/data/fashion_mnist_test.npz --unknowns cifar10=data/cifar10.npz \\
        --unknowns noise=noise:gaussian
    python -m benchmarks.decisions --dataset CIFAR10 --npz data/cifar10.npz --trainval data/cifar10_trainval.json \\
        --unknowns mnist=../shared/data/mnist.npz
    python -m benchmarks.decisions --dataset MNIST --npz ../shared/data/mnist.npz \\
        --trainval ../shared/reference/cac-openset/MNIST/trainval_idxs.json \\
        --unknowns fashion=../shared/data/fashion_mnist_test.npz --timing

Decisions (the default): each network is imported (``cac-jax import-torch``, once) and evaluated (``cac-jax eval
--unknowns ...``), so calibration uses the validation images of ``--trainval`` (the original's partition); the
per-trial figures of every score at the calibrated threshold and against each set of unknowns, with the mean ±
std over the trials, go to ``<out>/<DATASET>/decisions.json`` and ``decisions.md``.

``--timing`` (trial 0, CAC network): in one process, the whole ``eval`` with every score (in process, after a
first ``eval`` has compiled its programs; its ``eval_sections`` say where the time went), the forward passes alone
(every image ``eval`` sends through the network: training images, and their flips for CIFAR, held-out knowns, test
images, each set of unknowns) and the PyTorch harness of ``released_parity`` (the CAC score alone on the training
and test images), in turn for ``--repeats`` rounds (each figure the best of its rounds; every round is kept), then
``predict`` on the 10,000 test images of ``--npz`` (cold and warm, images/s, and the programs compiled), into
``timing.json``. ``eval_over_own_fit_pass_rate`` compares each ``eval`` with its own forward passes as measured
inside it (its pass over the training images, per image, times every image it passes).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks.released_parity import EXPERIMENT, KINDS
from cac_jax import storage
from cac_jax.runs.sweep import DECISION_KEYS



def _workdir(out: str, dataset: str, trial: int, kind: str) -> str:
    return os.path.join(out, f"{dataset}_{trial}_{kind}")


def _common(npz: str, trainval: str | None) -> list[str]:
    return ["--npz", npz, "--no-progress"] + (["--set", f"trainval_file={trainval}"] if trainval else [])


def _imported(dataset, trial, kind, npz, trainval, out, weights) -> str:
    from cac_jax import cli

    workdir = _workdir(out, dataset, trial, kind)
    if not os.path.exists(os.path.join(workdir, "config.json")):
        path = os.path.join(weights, dataset, f"{dataset}_{trial}_{KINDS[kind]}.pth")
        if cli.main(["import-torch", path, "--experiment", EXPERIMENT[dataset], "--trial", str(trial),
                     "--workdir", workdir, *_common(npz, trainval)]) != 0:
            raise SystemExit(f"import-torch {path} failed")
    return workdir


def _eval_args(workdir, npz, trainval, unknowns) -> list[str]:
    return ["eval", "--workdir", workdir, *_common(npz, trainval), *[a for u in unknowns for a in ("--unknowns", u)]]


def decisions(dataset, trials, kinds, npz, trainval, unknowns, out, weights) -> dict:
    from cac_jax import cli

    rows = []
    for trial in trials:
        for kind in kinds:
            workdir = _imported(dataset, trial, kind, npz, trainval, out, weights)
            if cli.main(_eval_args(workdir, npz, trainval, unknowns)) != 0:
                raise SystemExit(f"eval of {workdir} failed")
            r = storage.read_json(os.path.join(workdir, "results.json"))
            rows.append({"trial": trial, "kind": kind, "score": r["score"], "calibration": r["calibration"],
                         "num_known_test": r["num_known_test"],
                         "scores": {name: {"auroc": m["auroc"], **{k: m["operating_point"][k] for k in DECISION_KEYS}}
                                    for name, m in r["scores"].items() if "operating_point" in m
                                    and "error" not in m["operating_point"]},
                         "unknown_sets": {name: {s: {"auroc": v["auroc"], "rejected": v["rejected"]}
                                                 for s, v in entry["scores"].items()}
                                          for name, entry in r["unknown_sets"].items()}})
    return {"dataset": dataset, "unknowns": list(unknowns), "rows": rows}


def _pm(values) -> str:
    v = 100 * np.asarray(values, np.float64)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def binomial_band(target: float, n: int) -> tuple[float, float]:
    """The range a known-acceptance rate on n test knowns stays in with about 95% probability when its expectation
    is the target (normal approximation of the binomial, ±1.96 sd)."""
    sd = np.sqrt(target * (1 - target) / n)
    return target - 1.96 * sd, target + 1.96 * sd


def markdown(table: dict) -> str:
    lines = []
    for kind in dict.fromkeys(r["kind"] for r in table["rows"]):
        rows = [r for r in table["rows"] if r["kind"] == kind]
        target, n = rows[0]["calibration"]["target"], rows[0]["num_known_test"]
        low, high = binomial_band(target, n)
        lines += [f"#### {table['dataset']} {kind} (trials {', '.join(str(r['trial']) for r in rows)}; calibrated on "
                  f"{rows[0]['calibration']['source']}; target {100 * target:g}%, binomial 95% band on {n} test knowns "
                  f"{100 * low:.2f}–{100 * high:.2f}%)", "",
                  "| score | known accepted, per trial | mean ± std | unknown rejected | CCR | macro-F1 (K + 1) | AUROC |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for score in rows[0]["scores"]:
            per = [r["scores"][score] for r in rows]
            trial = " / ".join(f"{100 * p['known_acceptance']:.2f}" for p in per)
            lines.append(f"| {score}{' (own)' if score == rows[0]['score'] else ''} | {trial} | "
                         + " | ".join(_pm([p[k] for p in per]) for k in ("known_acceptance", "unknown_rejection",
                                                                          "ccr", "macro_f1", "auroc")) + " |")
        for name in rows[0]["unknown_sets"]:
            lines += ["", f"Unknowns from another dataset: {name} (AUROC against the test knowns; rejected at the "
                          f"calibrated threshold), mean ± std over the trials:", "",
                      "| score | AUROC, per trial | mean ± std | rejected, per trial | mean ± std |",
                      "| --- | --- | --- | --- | --- |"]
            for score, _ in rows[0]["unknown_sets"][name].items():
                per = [r["unknown_sets"][name][score] for r in rows]
                lines.append(f"| {score} | " + " | ".join(
                    f"{' / '.join(f'{100 * p[k]:.1f}' for p in per)} | {_pm([p[k] for p in per])}"
                    for k in ("auroc", "rejected")) + " |")
        lines.append("")
    return "\n".join(lines)


def timing(dataset, npz, trainval, unknowns, out, weights, repeats: int = 2) -> dict:
    from benchmarks.released_parity import torch_evaluate
    from cac_jax import cli, config
    from cac_jax.data import external
    from cac_jax.evaluation import evaluate
    from cac_jax.runs import predict
    from cac_jax.training import loop as train

    workdir = _imported(dataset, 0, "cac", npz, trainval, out, weights)
    args = _eval_args(workdir, npz, trainval, unknowns)
    t0 = time.perf_counter()
    assert cli.main(args) == 0
    first = time.perf_counter() - t0

    cfg = config.apply_overrides(config.load_config(os.path.join(workdir, "config.json")),
                                 [f"npz_path={npz}"] + ([f"trainval_file={trainval}"] if trainval else []))
    data = train.load_data(cfg)
    ctx = train.make_context(cfg, data)
    variables, _ = train.checkpoint_variables(ctx, 2)
    shape = evaluate.native_shape(data)
    flip = evaluate.anchor_flip(cfg, data.dataset)
    sets = [(data.train.images, False)] + ([(data.train.images, True)] if flip else [])
    sets += [(data.val.images, False), (data.test_known.images, False), (data.test_unknown.images, False)]
    sets += [(external.read(src, shape).images, False) for _, src in external.check_named(unknowns)]
    kw = dict(mesh=ctx.mesh, image_size=data.image_size, mean=data.mean, std=data.std, batch_size=cfg.eval_batch_size)
    for images, hflip in sets:
        evaluate.forward(ctx.model, variables, images[:1], hflip=hflip, **kw)  # compiled before timing
    images_through = int(sum(len(images) for images, _ in sets))
    fit_images = len(data.train.images) * (2 if flip else 1)

    # The machine's speed drifts by 10-20% over minutes here: the three are timed in turn, round after round.
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert cli.main(args) == 0
        warm = time.perf_counter() - t0
        sections = storage.read_json(os.path.join(workdir, "results.json"))["timings"]
        t0 = time.perf_counter()
        for images, hflip in sets:
            evaluate.forward(ctx.model, variables, images, hflip=hflip, **kw)
        forward_only = time.perf_counter() - t0
        t0 = time.perf_counter()
        torch_evaluate(os.path.join(weights, dataset, f"{dataset}_0_{KINDS['cac']}.pth"), data)
        harness = time.perf_counter() - t0
        # The same eval's own pass over the training images, at its rate per image, for every image it passes:
        # its forward passes alone as measured inside that very run.
        own_rate = sections["eval_fit_pass"] / fit_images * images_through
        rounds.append({"eval_s": warm, "forward_only_s": forward_only, "pytorch_harness_s": harness,
                       "eval_over_forward": warm / forward_only, "eval_over_own_fit_pass_rate": warm / own_rate,
                       "eval_sections": sections})

    clf = predict.load(workdir)
    images = data.test_known.images if dataset != "MNIST" else np.load(npz)["x_test"]
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        clf.predict(images)
        times.append(time.perf_counter() - t0)
    best = {key: min(r[key] for r in rounds) for key in ("eval_s", "forward_only_s", "pytorch_harness_s")}
    return {"eval_first_s": first, "eval_warm_s": best["eval_s"], "images_through_network": images_through,
            "forward_only_s": best["forward_only_s"], "eval_over_forward": best["eval_s"] / best["forward_only_s"],
            "pytorch_harness_s": best["pytorch_harness_s"],
            "harness_images": fit_images + len(data.test_known) + len(data.test_unknown), "best_of": repeats,
            "rounds": rounds,
            "predict": {"images": len(images), "cold_s": times[0], "warm_s": times[1],
                        "images_per_s_warm": len(images) / times[1], "images_per_s_cold": len(images) / times[0],
                        "programs_compiled": clf.programs_compiled()}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(EXPERIMENT), required=True)
    p.add_argument("--npz", required=True, help="the dataset in Keras layout (cac-jax's --npz)")
    p.add_argument("--trainval", help="the train/val partition (the original's trainval_idxs.json layout)")
    p.add_argument("--unknowns", action="append", default=[], metavar="NAME=SOURCE")
    p.add_argument("--trials", default="0,1,2,3,4")
    p.add_argument("--kinds", default="cac,ce")
    p.add_argument("--timing", action="store_true", help="time eval, the forward passes, the harness and predict")
    p.add_argument("--repeats", type=int, default=2, help="--timing: rounds of (eval, forward passes, harness); "
                   "each figure is the best of its rounds")
    p.add_argument("--weights", default=os.path.join("..", "shared", "reference", "weights"))
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "decisions"))
    a = p.parse_args(argv)
    out = os.path.join(a.out, a.dataset)
    storage.make_dirs(out)
    if a.timing:
        result = timing(a.dataset, a.npz, a.trainval, a.unknowns, out, a.weights, a.repeats)
        storage.write_json(os.path.join(out, "timing.json"), result)
        shown = {k: v for k, v in result.items() if k != "rounds"}
        shown["rounds"] = [{k: v for k, v in r.items() if k != "eval_sections"} for r in result["rounds"]]
        print(json.dumps(shown, indent=1))
        return
    table = decisions(a.dataset, [int(t) for t in a.trials.split(",")], a.kinds.split(","), a.npz, a.trainval,
                      a.unknowns, out, a.weights)
    storage.write_json(os.path.join(out, "decisions.json"), table)
    text = markdown(table)
    storage.write_text(os.path.join(out, "decisions.md"), text)
    print(text)


if __name__ == "__main__":
    main()
