"""Does a process-wide setting make cac-jax's CIFAR train step faster here? An interleaved A/B.

    python -m benchmarks.cpu_settings_ab --b CAC_JAX_MALLOC=system        # cac-jax's heap setting, on (A) and off (B)
    python -m benchmarks.cpu_settings_ab --b XLA_FLAGS=--xla_cpu_prefer_vector_width=512

Settings made when a process starts (glibc's malloc, ``XLA_FLAGS``, JAX's CPU dispatch) cannot be switched
inside one process, so each arm is a worker process of its own: the environment of this one, with the
``--a`` / ``--b`` assignments replacing those variables (``cac_jax.runtime.configure()`` then adds its XLA flag and
malloc setting as usual, unless the assignment sets them). Each worker starts JAX as ``benchmarks.vs_pytorch`` does (so as every
cac-jax run does), builds the project's own train step (batch 128, 32x32x3, N = 6, on-device augmentation)
on one device, and times one block of ``--steps`` steps per request; the arms alternate in order, round by
round, so that load from other processes hits both alike. Per block it also reads ``getrusage``: page
faults and system time per step show what a malloc setting does.

Writes JSON (default ``benchmarks/results/cpu_settings_ab.json``) and prints a table; the last line is
``step_ratio_b_over_a=<x>`` (median step time of B / median step time of A; < 1 means B is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys

from benchmarks import vs_pytorch

MODULE = "benchmarks.cpu_settings_ab"


def assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not name.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (an environment variable and its value)")
    return name, value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", type=assignment, nargs="*", default=[], metavar="NAME=VALUE",
                   help="environment of arm A (default: this process's, unchanged)")
    p.add_argument("--b", type=assignment, nargs="*", default=[], metavar="NAME=VALUE",
                   help="environment of arm B")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=3, help="train steps per timed block")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "cpu_settings_ab.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.worker and dict(args.a) == dict(args.b):
        p.error("--a and --b set the same environment: there is nothing to compare")
    return args


def serve(steps: int) -> None:
    """The ``--worker`` process: one timed block of train steps per request, with its page faults and system time."""
    reply = vs_pytorch.worker_replies()
    jx = vs_pytorch.start_jax(vs_pytorch.parse_args(["--steps", str(steps)]))
    from cac_jax.runtime import host_malloc

    step = jx.step(jx.meshes[1])
    reply({"ready": {"compile_and_first_step_s": step.info["compile_and_first_step_s"],
                     "malloc": host_malloc.in_effect(), "xla_flags": os.environ.get("XLA_FLAGS", "")}})
    for _ in sys.stdin:
        before = resource.getrusage(resource.RUSAGE_SELF)
        seconds = step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        reply({"s": seconds, "faults": (after.ru_minflt - before.ru_minflt) / steps,
               "sys_s": (after.ru_stime - before.ru_stime) / steps})


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        serve(args.steps)
        return {}
    arms = {"A": dict(args.a), "B": dict(args.b)}
    workers, blocks = {}, {name: [] for name in arms}
    try:
        for name, env in arms.items():  # one after the other: compiling in parallel would slow both
            workers[name] = vs_pytorch.Worker(MODULE, ["--worker", "--steps", str(args.steps)], {**os.environ, **env},
                                              name=f"arm {name}")

        def contender(name):
            def timed():
                blocks[name].append(workers[name].request(op="step"))
                return blocks[name][-1]["s"]
            return timed

        vs_pytorch.interleave({name: contender(name) for name in arms}, args.rounds)
    finally:
        for worker in workers.values():
            worker.close()
    report = {"settings": {"rounds": args.rounds, "steps_per_round": args.steps, "batch": vs_pytorch.BATCH},
              "arms": {name: {"environment": arms[name], **workers[name].info,
                              **vs_pytorch.summarise([b["s"] for b in blocks[name]]),
                              "faults_per_step": statistics.median(b["faults"] for b in blocks[name]),
                              "sys_s_per_step": statistics.median(b["sys_s"] for b in blocks[name])}
                       for name in arms}}
    a, b = (report["arms"][n] for n in arms)
    report["step_ratio_b_over_a"] = b["median_s"] / a["median_s"]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    print(f"{args.rounds} interleaved rounds of {args.steps} CIFAR train steps (batch {vs_pytorch.BATCH}, 1 device)")
    print(f"{'arm':4s}{'median ms':>10s}{'min ms':>9s}{'faults/step':>12s}{'sys s/step':>11s}{'compile s':>10s}  environment")
    for name, row in report["arms"].items():
        env = " ".join(f"{k}={v}" for k, v in arms[name].items()) or "(unchanged)"
        print(f"{name:4s}{row['median_s'] * 1e3:10.1f}{row['min_s'] * 1e3:9.1f}{row['faults_per_step']:12.0f}"
              f"{row['sys_s_per_step']:11.3f}{row['compile_and_first_step_s']:10.2f}  {env}")
        print(f"{'':4s}malloc: {row['malloc']}; XLA_FLAGS='{row['xla_flags']}'")
    if args.out:
        print(f"wrote {args.out}")
    print(f"step_ratio_b_over_a={report['step_ratio_b_over_a']:.3f}")
    return report


if __name__ == "__main__":
    main()
