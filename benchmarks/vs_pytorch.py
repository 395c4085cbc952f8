"""cac-jax against the original PyTorch formulation, on the same machine, in one run.

    python -m benchmarks.vs_pytorch [--quick] [--host-devices N] [--out PATH] [--xla-flags "..."]

Three measurements, each interleaved round by round (JAX, then PyTorch, order alternating) so that
load from other processes hits both alike; every number is the median over rounds:

1. **train step** (batch 128, 32×32×3, N = 6, CIFAR10 settings): forward + backward + SGD update.
   JAX times the project's own step, ``cac_jax.training.loop.make_train_step`` (jitted, donated state,
   on-device augmentation of uint8 images inside the step), once per mesh: 1 device and, when the
   process has several (``--host-devices``), all of them. The JAX step also augments its batch
   (crop, flip, rotation), work the PyTorch side does not do; it costs a few percent of the step.
   PyTorch (``benchmarks.torch_reference``): eager, NCHW as the original, float input,
   ``torch.set_num_threads(cores)``; the ratios are against it. ``torch_channels_last`` is the same step
   with weights and inputs in channels-last (NHWC) memory format, PyTorch's faster layout on CPUs, shown
   for reference; with ``--dtype bfloat16``, ``torch_cl_autocast_bf16`` is that step under bfloat16
   autocast, PyTorch's own mixed precision.
2. **eval** (batch 512): eval-mode forward, images/s. JAX: the evaluation's logits function
   (uint8 → resize/normalise → network); PyTorch: ``inference_mode`` forward of float input.
3. **loss kernel**: CAC loss + gradient w.r.t. the logits (batch 128) at N ∈ {10, 100, 1000, 10000}:
   JAX fast path (``cac_loss(anchors=None)``, float32, O(B·N)) against PyTorch float64 in O(B·N)
   (``identity_anchor_distances``) and, where its (B, N, N) broadcast fits ``--max-broadcast-bytes``,
   the original's broadcast distance layer.

Processes: JAX runs in this process, PyTorch in worker processes (``TorchWorker``) that this one asks
for one timed block at a time, so the interleaving is the same. A process of its own gives PyTorch its own
malloc settings. Contender ``torch`` always runs with glibc's defaults, as the original does. Where
``cac_jax.runtime.configure()`` has kept large blocks in the heap in this process (``cac_jax.runtime.host_malloc``; the
default on a CPU), a second worker, ``torch_same_malloc``, runs the NCHW step and eval with the same
malloc settings, so that the gain from the allocator and the gain from JAX can be told apart.

Host devices: XLA's CPU client is one device by default; ``--host-devices N`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX is imported, and the batch is split
over an N-device mesh. The JAX side runs with the XLA CPU flags that ``cac_jax.runtime.configure()`` adds
(``cac_jax.runtime.xla_setup``; the printed XLA_FLAGS show it); ``--xla-flags`` can override it. On a GPU the devices are the GPUs; timing uses ``block_until_ready`` and
``torch.cuda.synchronize``, and both frameworks pick the accelerator automatically.

Writes JSON (default ``benchmarks/results/vs_pytorch.json``) and prints a table; the last line is
``train_step_ratio_jax_over_torch=<x>``: the median step time of the JAX step that ``cac-jax train``
would use in this process (mesh over all devices) divided by PyTorch's (``torch``); where
``torch_same_malloc`` runs, the line before it, ``train_step_ratio_jax_over_torch_same_malloc=<x>``,
divides by its.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

BATCH = 128
EVAL_BATCH = 512
NUM_CLASSES = 6
IMAGE_SIZE = 32
CHANNELS = 3
CIFAR10 = dict(image_size=IMAGE_SIZE, scale_min=0.8, flip=0.5, rotate=10.0,
               mean=(0.4858, 0.4771, 0.4326), std=(0.2422, 0.2374, 0.2547))
LOSS_CLASSES = (10, 100, 1000, 10000)
NUM_BATCHES = 4  # distinct input batches cycled through, so no step sees the previous step's buffers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and steps (about a minute on 2 CPU cores)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "vs_pytorch.json"))
    p.add_argument("--host-devices", type=int, default=None,
                   help="XLA host (CPU) device count, set before JAX is imported; default: XLA's (1)")
    p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the JAX side, e.g. '--xla_cpu_multi_thread_eigen=false'")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype of the JAX network (bfloat16: GPU mixed precision; slow on CPU)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per measurement")
    p.add_argument("--steps", type=int, default=None,
                   help="train steps per round (default: CPU 3, --quick 1; accelerator 50, --quick 20)")
    p.add_argument("--eval-batches", type=int, default=None,
                   help="eval batches per round (default: CPU 2, --quick 1; accelerator 20, --quick 5)")
    p.add_argument("--max-broadcast-bytes", type=float, default=None,
                   help="largest (B, N, N) float64 broadcast for the original PyTorch distance layer")
    p.add_argument("--skip", nargs="*", default=(), choices=("train", "eval", "loss"), help="measurements to leave out")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    if args.rounds is None:
        args.rounds = 3 if quick else 9
    args.loss_repeats = 3 if quick else 9
    args.max_broadcast_bytes = args.max_broadcast_bytes or (2e8 if quick else 1.1e9)
    if args.host_devices is not None and args.host_devices < 1:
        p.error(f"--host-devices must be >= 1, got {args.host_devices}")
    for name in ("rounds", "steps", "eval_batches"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def default_repeats(args, backend: str) -> None:
    """Fill in steps per round and eval batches per round for the backend JAX found.

    A step of this network is ~0.5-1 s on 2 CPU cores, so the CPU times few steps per round; on an
    accelerator a step is milliseconds, and a block of a few steps would time mostly Python and the
    host-device round trip."""
    cpu = backend == "cpu"
    if args.steps is None:
        args.steps = (1 if args.quick else 3) if cpu else (20 if args.quick else 50)
    if args.eval_batches is None:
        args.eval_batches = (1 if args.quick else 2) if cpu else (5 if args.quick else 20)


def configure_xla(host_devices: int | None, extra_flags: str) -> None:
    """Put the host device count and extra flags into XLA_FLAGS; only possible before JAX is imported."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    if host_devices is not None:
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={host_devices}")
    flags += extra_flags.split()
    new = " ".join(flags)
    if "jax" in sys.modules:
        if new != os.environ.get("XLA_FLAGS", ""):
            raise RuntimeError("--host-devices/--xla-flags must be applied before JAX is imported; "
                               "run `python -m benchmarks.vs_pytorch` in a fresh process")
        return
    os.environ["XLA_FLAGS"] = new


# ----------------------------------------------------------------------------------------------- timing

def interleave(contenders: dict, rounds: int) -> dict:
    """Run every contender once per round, rotating the order; {name: [seconds per unit, one per round]}.

    A contender is a callable returning the seconds per unit of work (step, image, call) of one timed block."""
    names = list(contenders)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            times[n].append(contenders[n]())
    return times


def summarise(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "rounds": len(times),
            "times_s": list(times)}


# ----------------------------------------------------------------------------------------------- JAX side

def jax_setup(args):
    import jax
    import numpy as np

    from cac_jax import config
    from cac_jax.evaluation import evaluate
    from cac_jax.training import mesh as mesh_lib
    from cac_jax.training import loop as train
    from cac_jax.training import state as train_state

    cfg = config.get_experiment("cifar10").replace(dtype=args.dtype, progress=False)
    data = types.SimpleNamespace(num_classes=NUM_CLASSES, channels=CHANNELS, **CIFAR10)
    model = train.build_model(cfg, data)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_BATCHES, BATCH, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (NUM_BATCHES, BATCH)).astype(np.int32)
    eval_images = rng.integers(0, 256, (EVAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.uint8)

    def fresh_state(mesh):
        tx = train_state.make_optimizer(momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return train_state.create(model, cfg.seed, image_size=IMAGE_SIZE, channels=CHANNELS, tx=tx,
                                  sharding=mesh_lib.replicated(mesh))

    def step_contender(mesh):
        """The project's own training step on ``mesh`` (the uint8 images on the device, as in training; the
        batch gathered and augmented inside the step)."""
        step = train.make_train_step(model, cfg, data, mesh)
        rep = mesh_lib.replicated(mesh)
        state = fresh_state(mesh)
        sums = jax.device_put({k: np.zeros((), np.float32) for k in train.metric_names(cfg.method)}, rep)
        arrays = jax.device_put({"images": images.reshape(-1, *images.shape[2:]), "labels": labels.reshape(-1)}, rep)
        (order,) = mesh_lib.put_batches(mesh, np.arange(NUM_BATCHES * BATCH, dtype=np.int32).reshape(NUM_BATCHES, BATCH))
        rng, lr = jax.device_put((np.asarray([cfg.seed, 1], np.int32), np.float32(cfg.learning_rates[0])), rep)
        box = {"state": state, "sums": sums}

        def run(n):
            for _ in range(n):
                box["state"], box["sums"] = step(box["state"], box["sums"], arrays, order, rng, lr)
            jax.block_until_ready((box["state"], box["sums"]))

        t = time.perf_counter()
        run(1)  # compile + first step
        compile_s = time.perf_counter() - t
        cache = _cache_size(step)

        def timed():
            t0 = time.perf_counter()
            run(args.steps)
            return (time.perf_counter() - t0) / args.steps

        timed.info = {"compile_and_first_step_s": compile_s, "devices": int(mesh.devices.size)}
        timed.check = lambda: {"compilations_after_warmup": _cache_size(step) - cache if cache is not None else None,
                               "loss_finite": bool(np.isfinite(float(jax.device_get(box["sums"]["loss"]))))}
        return timed

    def eval_contender(mesh):
        fn = evaluate._forward_fn(model, mesh, IMAGE_SIZE, CIFAR10["mean"], CIFAR10["std"], False, model.dtype, None)
        variables = fresh_state(mesh).variables()
        bs = mesh_lib.eval_batch_size(EVAL_BATCH, mesh)
        (batch,) = mesh_lib.put_batch(mesh, eval_images[:bs])
        jax.block_until_ready(fn(variables, batch, None))

        def timed():
            t0 = time.perf_counter()
            outs = [fn(variables, batch, None) for _ in range(args.eval_batches)]
            jax.block_until_ready(outs)
            return (time.perf_counter() - t0) / (args.eval_batches * bs)

        timed.info = {"devices": int(mesh.devices.size), "batch": bs}
        return timed

    def loss_contender(n):
        from cac_jax.core import losses

        fn = jax.jit(jax.value_and_grad(lambda z, y: losses.cac_loss(z, y)[0]))
        z, y = (jax.device_put(a) for a in loss_inputs(n))
        jax.block_until_ready(fn(z, y))
        calls = _calls_per_block(n)

        def timed():
            t0 = time.perf_counter()
            outs = [fn(z, y) for _ in range(calls)]
            jax.block_until_ready(outs)
            return (time.perf_counter() - t0) / calls

        timed.value = float(fn(z, y)[0])
        return timed

    meshes = {1: mesh_lib.make_mesh(1)}
    if len(jax.devices()) > 1:
        meshes[len(jax.devices())] = mesh_lib.make_mesh(None)
    return types.SimpleNamespace(meshes=meshes, step=step_contender, eval=eval_contender, loss=loss_contender,
                                 default_devices=len(jax.devices()))


def compare(contenders: dict, rounds: int) -> dict:
    """Interleave the contenders (one named "torch") and summarise each, with its time ratios to torch."""
    times = interleave(contenders, rounds)
    torch_times = times["torch"]
    rows = {}
    for name, ts in times.items():
        row = summarise(ts)
        row["ratio_vs_torch"] = row["median_s"] / statistics.median(torch_times)
        # Per-round ratios (same round, adjacent in time) are robust to load drifting between rounds.
        row["median_paired_ratio"] = statistics.median(a / b for a, b in zip(ts, torch_times))
        # On a loaded machine the least-disturbed round of each is the closest to its unloaded speed.
        row["min_ratio"] = row["min_s"] / min(torch_times)
        row.update(getattr(contenders[name], "info", {}))
        if hasattr(contenders[name], "check"):
            row.update(contenders[name].check())
        rows[name] = row
    return rows


def _cache_size(fn):
    size = getattr(fn, "_cache_size", None)
    return size() if callable(size) else None


def _calls_per_block(n: int) -> int:
    return max(1, min(20, 200_000 // (BATCH * n)))


def loss_inputs(n: int):
    """The logits (float32, spread like a trained network's) and labels both sides time the loss on."""
    import numpy as np

    r = np.random.default_rng(n)
    return (r.normal(size=(BATCH, n)) * 5).astype(np.float32), r.integers(0, n, BATCH).astype(np.int32)


# ----------------------------------------------------------------------------------------------- PyTorch side

def torch_setup(args):
    import numpy as np
    import torch

    from benchmarks import torch_reference as ref

    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    ys = [torch.as_tensor(rng.integers(0, NUM_CLASSES, BATCH), device=device) for _ in range(NUM_BATCHES)]

    def trainer(memory_format, autocast=False):
        """A timed train step of a fresh model whose weights and inputs use ``memory_format``; ``autocast``
        runs it under bfloat16 autocast (PyTorch's mixed precision, the counterpart of ``--dtype bfloat16``)."""
        torch.manual_seed(0)
        model = ref.OpenSetClassifier(NUM_CLASSES, IMAGE_SIZE, CHANNELS).to(device, memory_format=memory_format)
        opt = ref.make_optimizer(model)
        xs = [torch.randn(BATCH, CHANNELS, IMAGE_SIZE, IMAGE_SIZE, device=device).contiguous(memory_format=memory_format)
              for _ in range(NUM_BATCHES)]
        box = {"i": 0}

        def run(n):
            for _ in range(n):
                i = box["i"] % NUM_BATCHES
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    ref.train_step(model, opt, xs[i], ys[i])
                box["i"] += 1
            sync()

        def step():
            model.train()  # the eval measurement switches the shared model to eval mode
            t0 = time.perf_counter()
            run(args.steps)
            return (time.perf_counter() - t0) / args.steps

        model.train()
        run(1)  # warm-up (allocator, kernels)
        return model, step

    model, step = trainer(torch.contiguous_format)
    _, step_channels_last = trainer(torch.channels_last)
    step_autocast = trainer(torch.channels_last, autocast=True)[1] if args.dtype == "bfloat16" else None

    def eval_():
        model.eval()
        x = torch.randn(EVAL_BATCH, CHANNELS, IMAGE_SIZE, IMAGE_SIZE, device=device)
        with torch.inference_mode():
            model(x)
            sync()
            t0 = time.perf_counter()
            for _ in range(args.eval_batches):
                model(x)
            sync()
        return (time.perf_counter() - t0) / (args.eval_batches * EVAL_BATCH)

    def loss_contender(n, broadcast: bool):
        z_np, y_np = loss_inputs(n)
        z = torch.tensor(z_np, device=device).requires_grad_(True)
        y = torch.tensor(y_np, device=device).long()
        anchors = 10.0 * torch.eye(n, dtype=torch.float64, device=device) if broadcast else None

        def call():
            z.grad = None
            loss = ref.cac_loss(z, y, anchors)[0]
            loss.backward()
            return loss.detach()

        call()
        calls = _calls_per_block(n)

        def timed():
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            sync()
            return (time.perf_counter() - t0) / calls

        timed.value = float(call())
        return timed

    return types.SimpleNamespace(step=step, step_channels_last=step_channels_last, step_autocast=step_autocast,
                                 eval=eval_, loss=loss_contender,
                                 device=device, sync=sync)


def serve_torch(args) -> None:
    """The ``--torch-worker`` process: times PyTorch contenders on request, one JSON line in, one line out.

    Its malloc is what ``CAC_JAX_MALLOC`` in its environment asks for (``host_malloc.apply`` below; JAX runs
    nothing here)."""
    from cac_jax.runtime import host_malloc

    host_malloc.apply()

    reply = worker_replies()
    import torch

    tc = torch_setup(args)
    timers = {"step": tc.step, "step_channels_last": tc.step_channels_last, "eval": tc.eval}
    if tc.step_autocast is not None:
        timers["step_autocast"] = tc.step_autocast
    device = torch.cuda.get_device_name(0) if tc.device.type == "cuda" else _cpu_name()
    reply({"ready": {"device": device, "device_type": tc.device.type, "num_threads": torch.get_num_threads(),
                     "num_interop_threads": torch.get_num_interop_threads(), "torch": torch.__version__,
                     "malloc": host_malloc.in_effect()}})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "loss":
            name = f"loss_{request['n']}_{'broadcast' if request['broadcast'] else 'identity'}"
            timers[name] = tc.loss(request["n"], request["broadcast"])
            reply({"name": name, "value": timers[name].value})
        else:
            reply({"s": timers[request["op"]]()})


def worker_replies():
    """In a worker process: the function that sends one JSON line to the process that started it. The
    worker's ``sys.stdout`` goes to stderr from here on, so stray prints from libraries cannot corrupt the replies."""
    protocol, sys.stdout = sys.stdout, sys.stderr

    def reply(obj):
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    return reply


class Worker:
    """A benchmark process of its own (``python -m <module> <argv>`` under ``env``), timed on request from this
    one: one JSON line in, one line out. Its first line is ``{"ready": info}``.

    A process of its own is what a setting made at process start needs (glibc's malloc, XLA_FLAGS, JAX's CPU
    dispatch), and it keeps one framework's threads and allocator out of another's."""

    def __init__(self, module: str, argv: list[str], env: dict, name: str):
        self.name = name
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([sys.executable, "-m", module, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        self.info = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited with status {self.proc.wait()} (its error is printed above)")
        return json.loads(line)

    def request(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def timer(self, op: str):
        """A contender for :func:`interleave`: one timed block of ``op`` in the worker."""
        return lambda: self.request(op=op)["s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


class TorchWorker(Worker):
    """PyTorch in a worker process. ``malloc`` is the ``CAC_JAX_MALLOC`` value it runs under
    (``cac_jax.runtime.host_malloc``): "system" for glibc's defaults, as the original runs, "" for those
    ``cac_jax.runtime.configure()`` makes."""

    def __init__(self, args, malloc: str):
        from cac_jax.runtime import host_malloc

        super().__init__("benchmarks.vs_pytorch", ["--torch-worker", "--dtype", args.dtype, "--steps", str(args.steps),
                                                   "--eval-batches", str(args.eval_batches)],
                         {**os.environ, host_malloc.ENV: malloc}, name="PyTorch")

    def loss(self, n: int, broadcast: bool):
        reply = self.request(op="loss", n=n, broadcast=broadcast)
        timed = self.timer(reply["name"])
        timed.value = reply["value"]
        return timed


# ----------------------------------------------------------------------------------------------- report

def environment(workers: dict) -> dict:
    import flax
    import jax
    import optax

    from cac_jax.runtime import host_malloc

    dev = jax.devices()[0]
    torch_info = workers["torch"].info
    return {
        "jax_backend": jax.default_backend(), "jax_device": getattr(dev, "device_kind", str(dev)),
        "jax_device_count": len(jax.devices()), "torch_device": torch_info["device"],
        "torch_device_type": torch_info["device_type"], "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "torch_num_threads": torch_info["num_threads"], "torch_num_interop_threads": torch_info["num_interop_threads"],
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax_malloc": host_malloc.in_effect(),
        "torch_malloc": {name: worker.info["malloc"] for name, worker in workers.items()},
        "versions": {"jax": jax.__version__, "jaxlib": getattr(__import__("jaxlib"), "__version__", None),
                     "flax": flax.__version__, "optax": optax.__version__, "torch": torch_info["torch"],
                     "python": platform.python_version()},
        "platform": platform.platform(), "load_average_at_start": os.getloadavg(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.torch_worker:
        serve_torch(args)
        return {}
    jx = start_jax(args)
    from cac_jax.runtime import host_malloc

    workers = {"torch": TorchWorker(args, malloc="system")}
    if host_malloc.in_effect().startswith("heap"):
        workers["torch_same_malloc"] = TorchWorker(args, malloc="")
    try:
        report = measure(args, jx, workers)
    finally:
        for worker in workers.values():
            worker.close()
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    print_table(report)
    if args.out:
        print(f"wrote {args.out}")
    same = report.get("train_step_ratio_jax_over_torch_same_malloc")
    if same is not None:
        print(f"train_step_ratio_jax_over_torch_same_malloc={same:.3f}")
    print(f"train_step_ratio_jax_over_torch={report['train_step_ratio_jax_over_torch']:.3f}")
    return report


def start_jax(args):
    """Start JAX as every cac-jax run does (cac_jax's XLA flags, malloc and CPU dispatch in place before the
    backend starts), fill in the repeats for its backend, and return the JAX contenders."""
    configure_xla(args.host_devices, args.xla_flags)
    import cac_jax.runtime

    cac_jax.runtime.configure(compilation_cache=False)  # before default_backend() starts the backend
    import jax

    default_repeats(args, jax.default_backend())
    return jax_setup(args)


def measure(args, jx, workers: dict) -> dict:
    """The three measurements; PyTorch's contenders run in ``workers`` ("torch": glibc's default malloc,
    "torch_same_malloc", where present: the malloc settings ``cac_jax.runtime.configure()`` makes)."""
    torch_ = workers["torch"]
    report = {"settings": {"batch": BATCH, "eval_batch": EVAL_BATCH, "num_classes": NUM_CLASSES,
                           "image": [IMAGE_SIZE, IMAGE_SIZE, CHANNELS], "rounds": args.rounds, "steps_per_round": args.steps,
                           "eval_batches_per_round": args.eval_batches,
                           "quick": args.quick, "jax_dtype": args.dtype, "host_devices_requested": args.host_devices},
              "environment": environment(workers)}
    t_start = time.perf_counter()
    default = f"jax_{jx.default_devices}dev"
    if "train" not in args.skip:
        contenders = {f"jax_{n}dev": jx.step(mesh) for n, mesh in jx.meshes.items()}
        contenders["torch"] = torch_.timer("step")
        contenders["torch_channels_last"] = torch_.timer("step_channels_last")
        if "torch_same_malloc" in workers:
            contenders["torch_same_malloc"] = workers["torch_same_malloc"].timer("step")
        if args.dtype == "bfloat16":
            contenders["torch_cl_autocast_bf16"] = torch_.timer("step_autocast")
        rows = compare(contenders, args.rounds)
        for row in rows.values():
            row["steps_per_s"] = 1.0 / row["median_s"]
        report["train_step"] = rows
        report["train_step_default"] = default
        report["train_step_fastest_jax"] = min((n for n in rows if n.startswith("jax_")),
                                               key=lambda n: rows[n]["median_s"])
    if "eval" not in args.skip:
        contenders = {f"jax_{n}dev": jx.eval(mesh) for n, mesh in jx.meshes.items()}
        contenders["torch"] = torch_.timer("eval")
        if "torch_same_malloc" in workers:
            contenders["torch_same_malloc"] = workers["torch_same_malloc"].timer("eval")
        rows = compare(contenders, args.rounds)
        for row in rows.values():
            row["images_per_s"] = 1.0 / row["median_s"]
            row["throughput_ratio_jax_over_torch"] = 1.0 / row["ratio_vs_torch"]
        report["eval"] = rows
    if "loss" not in args.skip:
        rows = []
        for n in LOSS_CLASSES:
            j = jx.loss(n)
            contenders = {"jax_fast_f32": j, "torch_f64_identity": torch_.loss(n, broadcast=False)}
            if BATCH * n * n * 8 <= args.max_broadcast_bytes:
                contenders["torch_f64_original_broadcast"] = torch_.loss(n, broadcast=True)
            times = interleave(contenders, args.loss_repeats)
            row = {"classes": n, "batch": BATCH}
            for name, ts in times.items():
                row[f"{name}_median_s"] = statistics.median(ts)
                row[f"{name}_loss"] = contenders[name].value
            for name in contenders:
                if name.startswith("torch"):
                    row[f"ratio_jax_over_{name}"] = row["jax_fast_f32_median_s"] / row[f"{name}_median_s"]
            row["max_rel_loss_diff"] = max(abs(c.value - j.value) / abs(c.value) for c in contenders.values())
            rows.append(row)
        report["loss_kernel"] = rows
    report["benchmark_seconds"] = time.perf_counter() - t_start
    steps = report.get("train_step", {})
    report["train_step_ratio_jax_over_torch"] = steps[default]["ratio_vs_torch"] if steps else float("nan")
    if "torch_same_malloc" in steps:
        report["train_step_ratio_jax_over_torch_same_malloc"] = (
            steps[default]["median_s"] / steps["torch_same_malloc"]["median_s"])
    return report


def print_table(report: dict) -> None:
    env = report["environment"]
    print(f"JAX {env['versions']['jax']} on {env['jax_device_count']}x {env['jax_device']} ({env['jax_backend']}); "
          f"PyTorch {env['versions']['torch']} on {env['torch_device']} ({env['torch_num_threads']} threads); "
          f"XLA_FLAGS='{env['xla_flags']}'")
    print(f"malloc: JAX process {env['jax_malloc']}; PyTorch processes "
          + ", ".join(f"\"{name}\" {malloc}" for name, malloc in env["torch_malloc"].items()))
    if "train_step" in report:
        print(f"\ntrain step, batch {BATCH} (ratio = median step time / PyTorch's; < 1 means JAX faster)")
        print(f"{'':24s}{'median ms':>10s}{'min ms':>9s}{'steps/s':>9s}{'ratio':>8s}{'paired':>8s}{'min/min':>8s}")
        for name, r in report["train_step"].items():
            print(f"{name:24s}{r['median_s'] * 1e3:10.1f}{r['min_s'] * 1e3:9.1f}{r['steps_per_s']:9.2f}"
                  f"{r['ratio_vs_torch']:8.3f}{r['median_paired_ratio']:8.3f}{r['min_ratio']:8.3f}")
        print(f"default (what `cac-jax train` uses here): {report['train_step_default']}; "
              f"fastest JAX: {report['train_step_fastest_jax']}")
    if "eval" in report:
        print(f"\neval forward, batch {EVAL_BATCH} (ratio = JAX images/s / PyTorch's; > 1 means JAX faster)")
        for name, r in report["eval"].items():
            print(f"{name:24s}{r['images_per_s']:10.0f} img/s{r['throughput_ratio_jax_over_torch']:8.3f}")
    if "loss_kernel" in report:
        print(f"\nloss + gradient, batch {BATCH} (ratio = JAX time / PyTorch time)")
        print(f"{'N':>6s}{'jax ms':>9s}{'torch f64 ms':>13s}{'ratio':>7s}{'orig bcast ms':>14s}{'ratio':>7s}")
        for r in report["loss_kernel"]:
            b = r.get("torch_f64_original_broadcast_median_s")
            bs = f"{b * 1e3:14.3f}{r['ratio_jax_over_torch_f64_original_broadcast']:7.3f}" if b else f"{'skipped':>14s}{'':7s}"
            print(f"{r['classes']:6d}{r['jax_fast_f32_median_s'] * 1e3:9.3f}{r['torch_f64_identity_median_s'] * 1e3:13.3f}"
                  f"{r['ratio_jax_over_torch_f64_identity']:7.3f}{bs}")


if __name__ == "__main__":
    main()
