"""The whole default command's wall time under two checkouts, interleaved: what a change costs the user.

    python -m benchmarks.run_overhead --base /tmp/before [--rounds 3] [--json OUT]

Each round runs, for the base checkout and this one in turn (``PYTHONPATH`` at the checkout, the same Python):

* ``cac-jax train`` **cold**: a fresh ``HOME`` (nothing prepared, nothing compiled), into a fresh work directory;
* ``cac-jax train`` **warm**: the same ``HOME`` again, into another work directory (the data prepared and every
  program in the compilation cache);
* ``cac-jax launch --processes 2 -- train`` **job**: a warm job of two processes of one CPU device each.

It reports the median wall time of each (the process's start to its exit, as the user waits), the ratio of this
checkout's to the base's, and the sections of the runs' own ``timings``. The base checkout is any other tree of
the repository (``git worktree add /tmp/before REV``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("cold", "warm", "job")


def _run(code: Path, home: Path, args: list[str]) -> tuple[float, dict]:
    """(wall seconds, the run's own timings) of ``cac-jax ARGS --workdir W`` (``launch ... -- train`` passes the
    work directory on to its train command)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAC_JAX", "XLA_FLAGS", "JAX_"))}
    env.update(PYTHONPATH=str(code), HOME=str(home), JAX_PLATFORMS="cpu")
    workdir = Path(tempfile.mkdtemp(dir=home))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cac_jax", *args, "--workdir", str(workdir / "run"),
                          "--no-progress"], env=env, capture_output=True, text=True, cwd=home)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{code}: cac-jax {' '.join(args)} failed: {out.stderr[-2000:]}{out.stdout[-2000:]}")
    return seconds, json.loads((workdir / "run" / "results.json").read_text())["timings"]


def round_of(code: Path, scratch: Path) -> dict:
    home = Path(tempfile.mkdtemp(dir=scratch))
    try:
        cold = _run(code, home, ["train"])
        warm = _run(code, home, ["train"])
        job = _run(code, home, ["launch", "--processes", "2", "--host-devices", "1", "--", "train"])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return dict(zip(KINDS, (cold, warm, job)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the other checkout (e.g. git worktree add /tmp/before REV)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    checkouts = {"base": Path(args.base).resolve(), "this": ROOT}
    scratch = Path(tempfile.mkdtemp(prefix="run_overhead."))
    times = {name: {k: [] for k in KINDS} for name in checkouts}
    sections = {name: {} for name in checkouts}
    try:
        for r in range(args.rounds):
            for name, code in checkouts.items():
                for kind, (seconds, timings) in round_of(code, scratch).items():
                    times[name][kind].append(seconds)
                    sections[name].setdefault(kind, []).append(timings)
                print(f"round {r + 1}: {name}: " + ", ".join(f"{k} {times[name][k][-1]:.1f} s" for k in KINDS),
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {name: {k: statistics.median(v) for k, v in kinds.items()} for name, kinds in times.items()}
    report = {"rounds": args.rounds, "base": str(checkouts["base"]), "wall_s": times, "median_wall_s": median,
              "ratio_this_over_base": {k: median["this"][k] / median["base"][k] for k in KINDS},
              "timings": sections}
    print(f"\n| run | base (s) | this (s) | this / base |\n| --- | ---: | ---: | ---: |")
    for k in KINDS:
        print(f"| {k} | {median['base'][k]:.1f} | {median['this'][k]:.1f} | {report['ratio_this_over_base'][k]:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
