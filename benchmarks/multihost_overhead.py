"""What a job of several processes costs against one process with the same devices: train step,
validation pass, checkpoint save and the runtime's key-value broadcast, on one experiment's real config.

    python -m benchmarks.multihost_overhead                          # digits: 1 x 4 devices against 2 x 2
    python -m benchmarks.multihost_overhead --experiment cifar10 --npz data/cifar10.npz --processes 2 --host-devices 1 --steps 10

Both layouts run here, on CPU devices (``cac_jax.runs.launch``: gloo collectives between the processes), so
the figures price JAX's CPU collectives on this machine, not a network of GPU hosts. Prints a table and,
last, one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

RESULT = "RESULT "


def measure(experiment: str, steps: int, workdir: str, npz: str | None = None) -> dict:
    """Timings of this process (a job of any size), in ms; ``npz``: the data, as ``cac-jax --npz``."""
    import jax

    from cac_jax.training import checkpoints
    from cac_jax import config
    from cac_jax.runtime import distributed
    from cac_jax.training import loop as train

    cfg = config.get_experiment(experiment).replace(workdir=workdir, progress=False)
    if npz:
        cfg = cfg.replace(npz_path=npz)
    data = train.load_data(cfg)
    ctx = train.make_context(cfg, data)
    state, sums = train.initial_state(ctx), train.zero_metrics(ctx)
    args = train.step_arguments(ctx)

    def run_steps(n, state, sums):
        for _ in range(n):
            state, sums = ctx.train_step(state, sums, *args)
        return jax.block_until_ready((state, sums))

    def timed(fn, repeats):
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        return out, 1e3 * (time.perf_counter() - t0) / repeats

    state, sums = run_steps(2, state, sums)  # compiled and warm
    (state, sums), step_ms = timed(lambda: run_steps(steps, state, sums), 1)
    train.validate(ctx, state.variables())
    _, validate_ms = timed(lambda: train.validate(ctx, state.variables()), 3)
    store = checkpoints.StageCheckpoints(workdir, 1)

    def save():
        step = int(jax.device_get(state.step))
        store.save("latest", step, state, {"benchmark": True})
        store.wait()  # the whole save, its background writing included

    save()
    _, save_ms = timed(save, 3)
    store.close()
    _, broadcast_ms = timed(lambda: distributed.broadcast("benchmark", {"value": 1.0}), 20)
    return {"processes": jax.process_count(), "devices": jax.device_count(), "step_ms": step_ms / steps,
            "validate_ms": validate_ms, "save_ms": save_ms, "broadcast_ms": broadcast_ms}


def _worker(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--experiment")
    p.add_argument("--steps", type=int)
    p.add_argument("--workdir")
    p.add_argument("--npz")
    p.add_argument("--coordinator")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    a = p.parse_args(argv)
    from cac_jax import runtime
    from cac_jax.runtime import distributed

    runtime.configure(compilation_cache=False)  # as `cac-jax train` runs

    distributed.initialize(distributed.Options(a.coordinator, a.num_processes, a.process_id))
    result = measure(a.experiment, a.steps, a.workdir, a.npz)
    if distributed.is_primary():
        print(RESULT + json.dumps(result), flush=True)


def _parse_result(text: str) -> dict:
    for line in text.splitlines():
        if RESULT in line:
            return json.loads(line.split(RESULT, 1)[1])
    raise RuntimeError(f"the benchmark's process printed no result; its output ended with:\n{text[-3000:]}")


def run(experiment: str, processes: int, host_devices: int, steps: int, workdir: str, npz: str | None = None) -> dict:
    """{"one": timings of 1 process x processes*host_devices devices, "job": of processes x host_devices}."""
    from cac_jax.runs import launch

    base = [sys.executable, "-m", "benchmarks.multihost_overhead", "--worker", "--experiment", experiment,
            "--steps", str(steps), *(["--npz", npz] if npz else [])]
    one = subprocess.run([*base, "--workdir", os.path.join(workdir, "one")], capture_output=True, text=True,
                         env=launch.process_environment(processes * host_devices))
    one = _parse_result(one.stdout + one.stderr)  # its own error first: the job's would only say that a process died
    port = launch.free_port()
    cmds = [[*base, "--workdir", os.path.join(workdir, "job"), "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(processes), "--process-id", str(i)] for i in range(processes)]
    out = io.BytesIO()
    code = launch.supervise(cmds, launch.process_environment(host_devices), out=out)
    if code:
        raise RuntimeError(f"the job failed (code {code}):\n{out.getvalue().decode(errors='replace')[-3000:]}")
    return {"one": one, "job": _parse_result(out.getvalue().decode())}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="digits")
    p.add_argument("--npz", help="the experiment's data as a Keras-layout .npz (cac-jax's --npz); digits needs none")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--host-devices", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--workdir", default=os.path.join("benchmarks", "results", "multihost_overhead"))
    a = p.parse_args(argv)
    r = run(a.experiment, a.processes, a.host_devices, a.steps, a.workdir, a.npz)
    one, job = r["one"], r["job"]
    print(f"{a.experiment}: 1 process x {one['devices']} devices against {job['processes']} processes x "
          f"{a.host_devices} devices (ms)")
    for k in ("step_ms", "validate_ms", "save_ms", "broadcast_ms"):
        ratio = f"{job[k] / one[k]:8.2f}" if one[k] > 0.01 else "        "
        print(f"  {k[:-3]:<10} {one[k]:9.2f} {job[k]:9.2f} {ratio}")
    print(json.dumps({"experiment": a.experiment, **r}))


if __name__ == "__main__":
    main()
