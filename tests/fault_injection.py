"""Faults and bad inputs, tried as a careless or unlucky user would, each with the outcome it gets.

Every case drives the ``cac-jax`` command (``python -m cac_jax``) in subprocesses, on digits or small synthetic
data made here, injects its fault (a kill, a flipped bit, a truncated file, a full or read-only file system, two
commands at once, a bad setting or label) and classifies what the user gets:

======================  ===================================================================================
``one_line``            the command fails with one clear line naming the problem (the file, field or value)
``recovered``           the fault is absorbed: the rerun ends with the uninterrupted run's results
``harmless``            the odd input is accepted and gives the right result
``bad_message``         a traceback, a misleading message, or a hang
``corrupted``           a file the user kept is left corrupted
``wrong``               a silently wrong result: a number that looks right and is not
======================  ===================================================================================

``tests/test_faults.py`` asserts each case's expected outcome. The same cases tabulate any version of the code:

    python tests/fault_injection.py                      # this checkout
    python tests/fault_injection.py --code /tmp/before   # another checkout (e.g. git worktree add /tmp/before REV)

(``--json FILE`` also writes every case's outcome and detail). The commands run with ``PYTHONPATH`` at the code
under test, the same Python environment, and shared caches (prepared digits, compiled programs) so that each
case costs seconds.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUTCOMES = {"one_line": "one clear line naming the problem", "recovered": "fault absorbed, the rerun recovered exactly",
            "harmless": "odd input accepted harmlessly", "bad_message": "traceback, misleading message, or hang",
            "corrupted": "a user file left corrupted", "wrong": "a silently wrong result"}
EPOCHS = ("--epochs", "2,1")  # a short digits run: 51 steps
LONG = ("--epochs", "20,1", "--set", "checkpoint_every_epochs=1")  # long enough to be stopped in stage 1
METRICS = ("accuracy", "auroc", "oscr", "fpr95")


class Unavailable(Exception):
    """The case cannot run on this machine (says why)."""


@dataclasses.dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def errors(self) -> list[str]:
        """stderr's lines but warnings and the lines JAX or Orbax print while working."""
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("cac-jax: warning")
                and "W0000" not in line and not line.startswith(("WARNING:", "I1", "W1", "E1"))]


@dataclasses.dataclass
class Env:
    """Where a case runs: its own directory, the code under test, and the caches all cases share."""

    dir: Path
    code: Path
    shared: Path

    def environ(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAC_JAX", "XLA_FLAGS", "JAX_"))}
        env.update(PYTHONPATH=str(self.code), CAC_JAX_DATA_DIR=str(self.shared / "data"),
                   CAC_JAX_COMPILATION_CACHE=str(self.shared / "jax_cache"), JAX_PLATFORMS="cpu")
        env.update(extra)
        return env

    def command(self, *args) -> list[str]:
        return [sys.executable, "-m", "cac_jax", *map(str, args)]

    def run(self, *args, timeout: float = 300, env: dict | None = None, prefix: tuple = ()) -> Result:
        """``cac-jax ARGS`` (train/eval get --no-progress), its output, None as the code when it hung."""
        args = list(args)
        if args and args[0] in ("train", "eval", "sweep", "import-torch") and "--no-progress" not in args:
            args.append("--no-progress")
        proc = subprocess.Popen([*prefix, *self.command(*args)], cwd=self.dir, env=env or self.environ(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            return Result(proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return Result(None, out, err)

    def start(self, *args, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args, "--no-progress"), cwd=self.dir, env=env or self.environ(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def path(self, *parts) -> Path:
        return self.dir.joinpath(*parts)


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    group: str  # the heading the case belongs to
    expected: str  # the outcome the code must give
    fn: Callable[[Env], Outcome]
    run_by: str = ""  # the test that runs the same thing, where tests/test_faults.py leaves it out


CASES: list[Case] = []


def case(group: str, expected: str, run_by: str = ""):
    def register(fn):
        CASES.append(Case(fn.__name__, group, expected, fn, run_by))
        return fn

    return register


# --- classification helpers ---------------------------------------------------------------------------------

def failed_clearly(r: Result, *needles: str) -> Outcome:
    """``one_line`` if the command failed with one line that names every needle, else ``bad_message``."""
    if r.timed_out:
        return Outcome("bad_message", "hung (killed after its timeout)")
    lines = r.errors()
    if r.returncode == 0:
        return Outcome("bad_message", "succeeded where it should have refused")
    if "Traceback" in r.stderr:
        return Outcome("bad_message", f"traceback of {len(r.stderr.splitlines())} lines, ending "
                                      f"{lines[-1][:160] if lines else ''!r}")
    if len(lines) != 1:
        return Outcome("bad_message", f"{len(lines)} lines of error output: {' / '.join(lines)[:300]}")
    missing = [n for n in needles if n not in lines[0]]
    if missing:
        return Outcome("bad_message", f"the message does not name {missing}: {lines[0][:300]!r}")
    return Outcome("one_line", lines[0][:300])


def results(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def same_numbers(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and all(a.get(k) == b.get(k) for k in METRICS)


def numbers(r: dict | None) -> str:
    return "none" if r is None else ", ".join(f"{k} {r.get(k)!s:.8}" for k in METRICS)


_REFERENCES: dict[tuple, dict] = {}


def reference(env: Env, *args) -> dict:
    """results.json of an uninterrupted ``cac-jax train ARGS`` (computed once per argument list)."""
    key = (str(env.code), *map(str, args))
    if key not in _REFERENCES:
        workdir = env.shared / f"reference{len(_REFERENCES)}"
        shutil.rmtree(workdir, ignore_errors=True)
        r = env.run("train", "--workdir", workdir, *args)
        if r.returncode != 0:
            raise RuntimeError(f"the reference run {args} failed: {r.stderr[-2000:]}")
        _REFERENCES[key] = results(workdir / "results.json")
    return _REFERENCES[key]


def trained(env: Env, name: str = "run", *args) -> Path:
    """A finished short digits run in the case's directory (a copy of a shared one: training costs seconds)."""
    key = "_".join(["trained", *map(str, args)]).replace("/", "_").replace("=", "-").replace(",", "-")
    source = env.shared / key
    if not (source / "results.json").exists():
        shutil.rmtree(source, ignore_errors=True)
        r = env.run("train", "--workdir", source, *EPOCHS, *args)
        if r.returncode != 0:
            raise RuntimeError(f"training {args} failed: {r.stderr[-2000:]}")
    target = env.path(name)
    shutil.copytree(source, target)
    return target


def make_npz(path: Path, *, n_train=240, n_test=120, seed=0, classes=10, labels_train=None, labels_test=None) -> Path:
    """A small Keras-layout MNIST-like npz: each class a bright blob at its own place on noise."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n, given in (("train", n_train, labels_train), ("test", n_test, labels_test)):
        y = np.arange(n) % classes if given is None else np.asarray(given)
        x = rng.integers(0, 60, (len(y), 28, 28), dtype=np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + (int(k) % 5) * 5, 2 + (int(k) // 5) * 12
            x[i, r:r + 4, c:c + 4] = 250
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y.astype(np.int64)
    np.savez(path, **arrays)
    return path


NPZ_ARGS = ("--experiment", "mnist", "--epochs", "1,1", "--set", "batch_size=32", "--set", "eval_batch_size=64")


def flip_bit(path: Path, fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def newest_step(directory: Path) -> Path:
    return max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def in_namespace(env: Env, script: str, timeout: float = 600) -> None:
    """Run ``script`` (sh, in the case's directory) in a private mount namespace, where tmpfs mounts (a full or a
    read-only file system) are allowed; :func:`ns_command` runs a command in it and :func:`ns_result` reads what it
    gave."""
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            break
    else:
        raise Unavailable("mount namespaces are not available here (unshare -m and unshare -rm both fail)")
    subprocess.run([*prefix, "sh", "-c", script], cwd=env.dir, env=env.environ(), capture_output=True, text=True,
                   timeout=timeout)


def ns_command(env: Env, tag: str, *args, environ: str = "") -> str:
    """The shell line that runs ``cac-jax ARGS`` in :func:`in_namespace`, its output kept under ``tag``."""
    return f"{environ} {sh(*env.command(*args, '--no-progress'))} > {tag}.out 2> {tag}.err; echo $? > {tag}.rc"


def ns_result(env: Env, tag: str) -> Result:
    read = lambda ext: env.path(f"{tag}.{ext}").read_text() if env.path(f"{tag}.{ext}").exists() else ""  # noqa: E731
    code = read("rc").strip()
    return Result(int(code) if code else -1, read("out"), read("err"))


def sh(*args) -> str:
    import shlex

    return " ".join(shlex.quote(str(a)) for a in args)


# --- the silently wrong results and corrupted files ---------------------------------------------------------

@case("silently wrong", "recovered")
def sweep_averages_a_half_trained_trial(env):
    """An interrupted sweep (its trial 1 trained stage 1 only), then `eval --checkpoint .../stage1/latest`: the
    rerun sweep must not average that stage-1 result in."""
    sweep = env.path("sweep")
    env.run("train", "--workdir", sweep / "trial1", "--trial", "1", *EPOCHS, "--set", "stages=1")
    env.run("eval", "--checkpoint", sweep / "trial1" / "checkpoints" / "stage1" / "latest")
    r = env.run("sweep", "--trials", "0,1", "--workdir", sweep, *EPOCHS)
    got = results(sweep / "results.json")
    want = reference(env, "--trial", "1", *EPOCHS)
    if r.returncode != 0 or got is None:
        return failed_clearly(r)
    trial1 = next(t for t in got["per_trial"] if t["trial"] == 1)
    if same_numbers(trial1, want):
        return Outcome("recovered", "trial 1 was finished and its final result averaged")
    return Outcome("wrong", f"the sweep averaged trial 1 at {numbers(trial1)}; its final result is {numbers(want)}")


def _eval_relabels(env, setting: str, needle: str, check) -> Outcome:
    run = trained(env)
    before = results(run / "results.json")
    r = env.run("eval", "--workdir", run, "--set", setting)
    if r.returncode != 0:
        return failed_clearly(r, needle)
    return Outcome("wrong", check(results(run / "results.json"), before))


@case("silently wrong", "one_line")
def eval_set_trial_evaluates_another_split(env):
    return _eval_relabels(env, "trial=1", "trial", lambda after, before: (
        f"the trial-0 network was evaluated on trial 1's split: AUROC {after['auroc']:.4f}, results.json says trial "
        f"{after['config']['trial']}"))


@case("silently wrong", "one_line")
def eval_set_split_family_evaluates_other_splits(env):
    return _eval_relabels(env, "split_family=arpl2020", "split_family", lambda after, before: (
        f"a neal2018 network evaluated on arpl2020's split: AUROC {after['auroc']:.4f}"))


@case("silently wrong", "one_line")
def eval_set_experiment_relabels_digits_as_mnist(env):
    def check(after, before):
        report = env.run("report", env.path("run"))
        beside = "99.1" in report.stdout
        return (f"digits numbers labelled {after['config']['experiment']!r}"
                + (", and `report` sets them beside MNIST's published 99.1" if beside else ""))

    return _eval_relabels(env, "experiment=mnist", "experiment", check)


@case("silently wrong", "one_line")
def eval_set_alpha_records_what_was_not_trained(env):
    return _eval_relabels(env, "alpha=5", "alpha", lambda after, before: (
        f"results.json records alpha={after['config']['alpha']} for a network trained with 10"))


@case("silently wrong", "one_line")
def resume_with_other_data_mixes_two_datasets(env):
    a, b = make_npz(env.path("a.npz"), seed=1), make_npz(env.path("b.npz"), seed=2)
    run = env.path("run")
    env.run("train", "--workdir", run, "--npz", a, *NPZ_ARGS, "--set", "stages=1")
    r = env.run("train", "--workdir", run, "--npz", b, *NPZ_ARGS)
    if r.returncode != 0:
        return failed_clearly(r, "other data")
    return Outcome("wrong", f"stage 1 trained on {a.name}, stage 2 on {b.name}; results.json names only "
                            f"{results(run / 'results.json')['config']['npz_path']}")


@case("silently wrong", "recovered")
def resume_with_a_copy_of_the_same_data(env):
    a = make_npz(env.path("a.npz"), seed=1)
    copy = env.path("copy.npz")
    shutil.copy(a, copy)
    run = env.path("run")
    env.run("train", "--workdir", run, "--npz", a, *NPZ_ARGS, "--set", "stages=1")
    r = env.run("train", "--workdir", run, "--npz", copy, *NPZ_ARGS)
    want = reference(env, "--npz", a, *NPZ_ARGS)
    got = results(run / "results.json")
    if r.returncode == 0 and same_numbers(got, want):
        return Outcome("recovered", "the same data in another file resumed to the uninterrupted results")
    return failed_clearly(r) if r.returncode else Outcome("wrong", f"{numbers(got)} vs {numbers(want)}")


def _nonsense(env, setting: str) -> Outcome:
    r = env.run("train", "--workdir", env.path("run"), *EPOCHS, "--set", setting)
    field = setting.split("=")[0]
    if r.returncode == 0:
        got = results(env.path("run", "results.json"))
        return Outcome("wrong", f"--set {setting} trained to the end without a word: AUROC {got['auroc']:.4f}")
    return failed_clearly(r, field)


for _setting in ("learning_rates=-0.01,0.001", "learning_rates=0,0", "lbda=-1", "weight_decay=-1", "dropout=1.5",
                 "epochs=0,0", "momentum=1.5", "alpha=0"):
    def _make(setting):
        def fn(env):
            return _nonsense(env, setting)

        fn.__name__ = "nonsense_" + setting.replace("=", "_").replace(",", "_").replace("-", "minus").replace(".", "p")
        fn.__doc__ = f"--set {setting} must be refused before any work."
        return fn

    case("silently wrong", "one_line")(_make(_setting))


def _bad_labels(env, label: int) -> Outcome:
    labels = np.arange(240) % 10
    labels[::17] = label
    npz = make_npz(env.path("bad.npz"), labels_train=labels)
    r = env.run("train", "--workdir", env.path("run"), "--npz", npz, *NPZ_ARGS)
    if r.returncode == 0:
        return Outcome("wrong", f"{int((labels == label).sum())} training images labelled {label} were dropped "
                                f"without a word")
    return failed_clearly(r, "bad.npz", str(label))


@case("silently wrong", "one_line")
def label_42_in_y_train(env):
    return _bad_labels(env, 42)


@case("silently wrong", "one_line")
def label_minus_1_in_y_train(env):
    return _bad_labels(env, -1)


def _released_file(env, name: str) -> Path:
    """A network of the original's architecture saved as the original names its files."""
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks import torch_reference as ref

    torch.manual_seed(0)
    net = ref.OpenSetClassifier(num_classes=6, image_size=32, channels=1)
    path = env.path(name)
    torch.save({"net": net.state_dict(), "acc": 50.0, "epoch": 3}, path)
    return path


def _torch_available() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise Unavailable("torch is not installed (pip install -e '.[torch]')") from None


@case("silently wrong", "harmless")
def import_torch_without_trial_takes_it_from_the_name(env):
    _torch_available()
    pth = _released_file(env, "MNIST_1_CACclassifierAnchorLoss.pth")
    npz = make_npz(env.path("mnist.npz"))
    r = env.run("import-torch", pth, "--experiment", "mnist", "--workdir", env.path("imported"), "--npz", npz,
                "--set", "batch_size=32")
    if r.returncode != 0:
        return failed_clearly(r)
    trial = json.loads(env.path("imported", "config.json").read_text())["trial"]
    if trial == 1:
        return Outcome("harmless", "imported as trial 1, as its name says")
    return Outcome("wrong", f"MNIST_1_... imported as trial {trial}")


@case("silently wrong", "one_line")
def import_torch_with_a_trial_its_name_contradicts(env):
    _torch_available()
    pth = _released_file(env, "MNIST_1_CACclassifierAnchorLoss.pth")
    npz = make_npz(env.path("mnist.npz"))
    r = env.run("import-torch", pth, "--experiment", "mnist", "--trial", "0", "--workdir", env.path("imported"),
                "--npz", npz, "--set", "batch_size=32")
    if r.returncode == 0:
        return Outcome("wrong", "MNIST_1_... imported as trial 0")
    return failed_clearly(r, "trial")


@case("silently wrong", "recovered")
def bit_flip_in_the_best_checkpoint(env):
    run = trained(env)
    before = results(run / "results.json")
    best = newest_step(run / "checkpoints" / "stage2" / "best")
    flip_bit(largest_file(best / "state"), 0.6)
    r = env.run("eval", "--workdir", run)
    after = results(run / "results.json")
    if r.returncode != 0:
        return failed_clearly(r, "checkpoint")
    if same_numbers(after, before):
        return Outcome("recovered", "the damage was found and the stage's best state read from its copy: "
                                    + (r.stderr.strip().splitlines() or ["(no warning)"])[0][:200])
    return Outcome("wrong", f"one flipped bit changed the results: {numbers(before)} -> {numbers(after)}")


def _interrupted_run(env, name="run") -> Path:
    """A digits run killed in stage 1 once it has written two `latest` checkpoints."""
    run = env.path(name)
    proc = env.start("train", "--workdir", run, *LONG)
    latest = run / "checkpoints" / "stage1" / "latest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_dir() and len([p for p in latest.iterdir() if p.name.isdigit()]) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    return run


def _resumed_after(env, damage) -> Outcome:
    """A run killed in stage 1, ``damage`` done to the largest file of its newest ``latest`` checkpoint, then the
    same command again: it must end with the uninterrupted run's results."""
    run = _interrupted_run(env)
    damage(largest_file(newest_step(run / "checkpoints" / "stage1" / "latest") / "state"))
    r = env.run("train", "--workdir", run, *LONG)
    want, got = reference(env, *LONG), results(run / "results.json")
    if r.returncode == 0 and same_numbers(got, want):
        return Outcome("recovered", "resumed to the uninterrupted results")
    if r.returncode == 0:
        return Outcome("wrong", f"resumed from a damaged checkpoint: {numbers(got)} vs {numbers(want)}")
    if "non-finite" in r.stderr:
        return Outcome("bad_message", "restored garbage, then blamed the learning rate: " + r.errors()[-1][:200])
    return failed_clearly(r, "checkpoint")


@case("silently wrong", "recovered")
def damaged_latest_checkpoint(env):
    return _resumed_after(env, lambda path: flip_bit(path, 0.3))


@case("silently wrong", "recovered")
def truncated_results_json_then_train(env):
    run = trained(env)
    want = results(run / "results.json")
    truncate(run / "results.json", 0.4)
    r = env.run("train", "--workdir", run, *EPOCHS)
    got = results(run / "results.json")
    if r.returncode == 0 and same_numbers(got, want):
        return Outcome("recovered", "the damaged file was set aside and the run evaluated again")
    if "already holds a finished run" in r.stderr:
        return Outcome("bad_message", "a truncated results.json is taken as a finished run: " + r.errors()[-1][:200])
    return failed_clearly(r, "results.json")


@case("silently wrong", "recovered")
def truncated_trial_results_then_sweep(env):
    sweep = env.path("sweep")
    shutil.copytree(trained(env, "t0"), sweep / "trial0")
    truncate(sweep / "trial0" / "results.json", 0.4)
    r = env.run("sweep", "--trials", "0", "--workdir", sweep, *EPOCHS)
    got = results(sweep / "results.json")
    want = reference(env, *EPOCHS)
    if r.returncode == 0 and got and same_numbers(got["per_trial"][0], want):
        return Outcome("recovered", "the trial was evaluated again")
    return failed_clearly(r, "results.json")


@case("silently wrong", "one_line")
def truncated_results_json_then_report(env):
    run = trained(env)
    truncate(run / "results.json", 0.4)
    return failed_clearly(env.run("report", run), "results.json")


@case("silently wrong", "recovered")
def torn_line_in_metrics_log(env):
    """Half a line at the end of metrics.jsonl (a full disk), then `train` resumes and `eval` runs."""
    run = _interrupted_run(env)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "loss": 0.5, "ste')
    r = env.run("train", "--workdir", run, *LONG)
    e = env.run("eval", "--workdir", run)
    want = reference(env, *LONG)
    if r.returncode == 0 and e.returncode == 0 and same_numbers(results(run / "results.json"), want):
        return Outcome("recovered", "the torn line was dropped with a warning naming metrics.jsonl")
    return failed_clearly(r if r.returncode else e, "metrics.jsonl")


@case("silently wrong", "one_line")
def truncated_scores_npz_then_plots(env):
    run = trained(env)
    truncate(run / "scores.npz", 0.5)
    return failed_clearly(env.run("plots", run), "scores.npz")


# --- concurrency ----------------------------------------------------------------------------------------------

def _two_at_once(env, first: tuple, second: tuple, workdir: Path) -> Outcome:
    a = env.start(*first)
    deadline = time.monotonic() + 120
    while not (workdir / "config.json").exists() and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    b = env.run(*second, timeout=240)
    try:
        out, err = a.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(a.pid, signal.SIGKILL)
        return Outcome("bad_message", "the first command hung")
    if a.returncode != 0:
        return Outcome("bad_message", f"the first command died: {err.strip().splitlines()[-1][:200] if err.strip() else ''}")
    return failed_clearly(b, "in use")


@case("concurrency", "one_line")
def two_trains_on_one_workdir(env):
    run = env.path("run")
    args = ("train", "--workdir", run, "--epochs", "6,2")
    return _two_at_once(env, args, args, run)


@case("concurrency", "one_line")
def train_then_eval_while_it_trains(env):
    run = env.path("run")
    return _two_at_once(env, ("train", "--workdir", run, "--epochs", "6,2"), ("eval", "--workdir", run), run)


@case("concurrency", "one_line")
def two_sweeps_on_one_directory(env):
    sweep = env.path("sweep")
    args = ("sweep", "--trials", "0", "--workdir", sweep, "--epochs", "6,2")
    return _two_at_once(env, args, args, sweep / "trial0")


@case("concurrency", "harmless")
def two_first_runs_prepare_one_dataset_at_once(env):
    data = env.path("fresh_data")
    environ = env.environ(CAC_JAX_DATA_DIR=str(data))
    procs = [env.start("train", "--workdir", env.path(f"run{i}"), *EPOCHS, env=environ) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    failed = [(p, o) for p, o in zip(procs, outs) if p.returncode != 0]
    if not failed:
        same = same_numbers(results(env.path("run0", "results.json")), results(env.path("run1", "results.json")))
        return Outcome("harmless" if same else "wrong", "both prepared-or-waited and trained" +
                       ("" if same else ", with different results"))
    p, (out, err) = failed[0]
    return failed_clearly(Result(p.returncode, out, err))


# --- corrupted caches and checkpoints ---------------------------------------------------------------------------

def _prepared_digits(env, data: Path) -> Path:
    env.run("train", "--workdir", env.path("first"), *EPOCHS, env=env.environ(CAC_JAX_DATA_DIR=str(data)))
    shards = sorted((data / "cac_digits").rglob("*.array_record*"))
    if not shards:
        raise RuntimeError(f"no prepared digits in {data}")
    return max(shards, key=lambda p: p.stat().st_size)


def _corrupted_cache(env, damage) -> Outcome:
    data = env.path("data")
    damage(_prepared_digits(env, data))
    r = env.run("train", "--workdir", env.path("run"), *EPOCHS, env=env.environ(CAC_JAX_DATA_DIR=str(data)))
    if r.returncode == 0:
        same = same_numbers(results(env.path("run", "results.json")), reference(env, *EPOCHS))
        return Outcome("recovered" if same else "wrong", "the damaged prepared data was rebuilt" if same else
                       "trained on damaged data")
    return failed_clearly(r, str(data))


@case("corrupted caches", "recovered")
def truncated_prepared_dataset(env):
    return _corrupted_cache(env, lambda shard: truncate(shard, 0.3))


@case("corrupted caches", "recovered")
def bit_flip_in_prepared_dataset(env):
    return _corrupted_cache(env, lambda shard: flip_bit(shard, 0.5))


@case("corrupted caches", "recovered")
def truncated_checkpoint_file(env):
    return _resumed_after(env, lambda path: truncate(path, 0.3))


@case("corrupted caches", "one_line")
def every_checkpoint_of_a_stage_damaged(env):
    run = trained(env)
    for kind in ("best", "latest"):
        for step in (run / "checkpoints" / "stage2" / kind).iterdir():
            if step.name.isdigit():
                truncate(largest_file(step / "state"), 0.3)
                if (step / "best").is_dir():
                    truncate(largest_file(step / "best"), 0.3)
    return failed_clearly(env.run("eval", "--workdir", run), "stage2")


@case("corrupted caches", "recovered")
def full_disk_during_a_checkpoint_save(env):
    """The disk fills during training (a 3 MB file system); once space is freed the same command resumes."""
    args = ("train", "--workdir", "disk/run", *EPOCHS)
    in_namespace(env, "mkdir -p disk && mount -t tmpfs -o size=3m tmpfs disk && "
                      f"{ns_command(env, 'full', *args)}; mount -o remount,size=200m disk && "
                      f"{ns_command(env, 'freed', *args)}; cp disk/run/results.json results.json")
    first, second = ns_result(env, "full"), ns_result(env, "freed")
    clear = failed_clearly(first, "No space left")
    if clear.kind != "one_line":
        return Outcome("bad_message", "when the disk filled: " + clear.detail)
    if second.returncode == 0 and same_numbers(results(env.path("results.json")), reference(env, *EPOCHS)):
        return Outcome("recovered", f"{clear.detail[:120]}...; the rerun resumed to the uninterrupted results")
    return Outcome("bad_message", f"the rerun after freeing space: {failed_clearly(second).detail}")


# --- messages ----------------------------------------------------------------------------------------------------

@case("messages", "one_line")
def divergence_before_the_first_checkpoint(env):
    """The divergence message must not promise a checkpoint that does not exist, and its advice must work."""
    r = env.run("train", "--workdir", env.path("run"), *EPOCHS, "--set", "learning_rates=1e30,1e30",
                "--set", "log_every_steps=1")
    out = failed_clearly(r, "non-finite")
    if out.kind != "one_line":
        return out
    line = r.errors()[0]
    promised = [w.rstrip(".,;)") for w in line.split() if "/checkpoints/" in w]
    missing = [p for p in promised if not Path(p).exists()]
    if missing:
        return Outcome("bad_message", f"the message promises {missing}, which does not exist")
    # Follow the advice with a learning rate that works: in the directory it names, or in the same one.
    where = env.path("again") if "another work directory" in line else env.path("run")
    again = env.run("train", "--workdir", where, *EPOCHS, "--set", "learning_rates=0.01,0.001")
    if again.returncode != 0:
        return Outcome("bad_message", f"its advice fails: {failed_clearly(again).detail}")
    return out


@case("messages", "one_line")
def divergence_after_a_checkpoint_and_its_advice(env):
    """Diverging in stage 2: the message names stage 1's best and a command that continues from it, which works."""
    run = env.path("run")
    r = env.run("train", "--workdir", run, *EPOCHS, "--set", "learning_rates=0.01,1e30", "--set", "log_every_steps=1")
    out = failed_clearly(r, "non-finite")
    if out.kind != "one_line":
        return out
    line = r.errors()[0]
    if "init_from=" not in line:
        return Outcome("bad_message", f"no way to continue from the checkpoint it kept: {line[:300]}")
    start = line.split("init_from=")[1].split()[0].rstrip(".,;)")
    if not Path(start).exists():
        return Outcome("bad_message", f"the message promises {start}, which does not exist")
    again = env.run("train", "--workdir", env.path("again"), *EPOCHS, "--set", f"init_from={start}", "--set",
                    "stages=2", "--set", "learning_rates=0.01,0.001")
    if again.returncode != 0:
        return Outcome("bad_message", f"its advice fails: {failed_clearly(again).detail}")
    return out


@case("messages", "one_line")
def read_only_workdir(env):
    in_namespace(env, "mkdir -p ro && mount -t tmpfs -o ro tmpfs ro && "
                      + ns_command(env, "r", "train", "--workdir", "ro/run", *EPOCHS))
    return failed_clearly(ns_result(env, "r"), "ro/run", "Read-only")


@case("messages", "one_line")
def eval_of_a_run_on_a_read_only_place(env):
    trained(env, "ro")
    in_namespace(env, "mount --bind ro ro && mount -o remount,bind,ro ro && "
                      + ns_command(env, "r", "eval", "--workdir", "ro"))
    return failed_clearly(ns_result(env, "r"), "ro", "Read-only")


@case("messages", "one_line")
def read_only_home(env):
    """No CAC_JAX_DATA_DIR and a read-only HOME: the digits cannot be prepared where they would go by default."""
    in_namespace(env, "mkdir -p home && mount -t tmpfs -o ro tmpfs home && "
                      + ns_command(env, "r", "train", "--workdir", "run", *EPOCHS,
                                   environ="HOME=$PWD/home CAC_JAX_DATA_DIR= CAC_JAX_COMPILATION_CACHE="))
    return failed_clearly(ns_result(env, "r"), "home", "CAC_JAX_DATA_DIR")


@case("messages", "one_line")
def missing_workdir_for_eval(env):
    return failed_clearly(env.run("eval", "--workdir", env.path("nowhere")), "nowhere")


@case("messages", "one_line")
def file_where_the_workdir_should_be(env):
    env.path("blocked").write_text("a file of the user's\n")
    r = env.run("train", "--workdir", env.path("blocked"), *EPOCHS)
    if env.path("blocked").read_text() != "a file of the user's\n":
        return Outcome("corrupted", "the user's file was changed")
    return failed_clearly(r, "blocked")


@case("messages", "one_line")
def empty_test_split(env):
    npz = make_npz(env.path("empty.npz"), labels_test=np.zeros(0, np.int64))
    return failed_clearly(env.run("train", "--workdir", env.path("run"), "--npz", npz, *NPZ_ARGS), "test")


@case("messages", "one_line")
def known_class_missing_from_the_test_split(env):
    labels_test = np.arange(120) % 10
    labels_test[labels_test == 5] = 3  # trial 0's known classes are 0, 1, 2, 4, 5, 9: no 5 left
    npz = make_npz(env.path("missing.npz"), labels_test=labels_test)
    return failed_clearly(env.run("train", "--workdir", env.path("run"), "--npz", npz, *NPZ_ARGS), "test", "[5]")


@case("messages", "one_line")
def huge_seed(env):
    return failed_clearly(env.run("train", "--workdir", env.path("run"), *EPOCHS, "--seed", "99999999999"), "seed")


@case("messages", "recovered")
def ctrl_c_then_the_same_command(env):
    run = env.path("run")
    args = ("train", "--workdir", run, *LONG)
    proc = env.start(*args)
    latest = run / "checkpoints" / "stage1" / "latest"
    deadline = time.monotonic() + 240
    while not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Outcome("bad_message", f"hung after Ctrl-C (killed 120 s later); it printed {err.strip()[-200:]!r}")
    first = Result(proc.returncode, out, err)
    if first.returncode == 0:
        return Outcome("bad_message", "Ctrl-C was swallowed: the run finished anyway")
    lines = first.errors()
    if "Traceback" in err or len(lines) != 1 or "interrupted" not in lines[0]:
        return Outcome("bad_message", f"Ctrl-C printed {len(err.splitlines())} lines: {' / '.join(lines)[-200:]}")
    r = env.run(*args)
    if r.returncode == 0 and same_numbers(results(run / "results.json"), reference(env, *args[3:])):
        return Outcome("recovered", f"{lines[0]}; the same command resumed to the uninterrupted results")
    return failed_clearly(r)


@case("messages", "recovered")
def kill_9_then_the_same_command(env):
    return _resumed_after(env, lambda path: None)


@case("messages", "one_line")
def damaged_config_json(env):
    run = trained(env)
    truncate(run / "config.json", 0.5)
    return failed_clearly(env.run("eval", "--workdir", run), "config.json")


@case("promised commands", "harmless", run_by="tests/test_claims.py (every command the README gives)")
def vs_pytorch_quick_as_the_readme_gives(env):
    _torch_available()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.vs_pytorch", "--quick"], cwd=env.code,
                          env=env.environ(), capture_output=True, text=True, timeout=900)
    if proc.returncode == 0:
        return Outcome("harmless", "ran")
    return failed_clearly(Result(proc.returncode, proc.stdout, proc.stderr))


# --- the table ---------------------------------------------------------------------------------------------------

def run_case(c: Case, code: Path, shared: Path, keep: Path | None = None) -> Outcome:
    directory = Path(tempfile.mkdtemp(prefix=f"{c.name}.", dir=keep))
    try:
        return c.fn(Env(directory, code, shared))
    except Unavailable as e:
        return Outcome("unavailable", str(e))
    finally:
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", default=str(ROOT), help="the checkout to test (default: this one)")
    parser.add_argument("--json", help="also write every case's outcome and detail here")
    parser.add_argument("-k", dest="only", help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    shared = Path(tempfile.mkdtemp(prefix="faults."))
    rows, counts = [], collections.Counter()
    try:
        for c in CASES:
            if args.only and args.only not in c.name:
                continue
            t0 = time.monotonic()
            out = run_case(c, Path(args.code).resolve(), shared)
            counts[out.kind] += 1
            rows.append({"case": c.name, "group": c.group, "outcome": out.kind, "expected": c.expected,
                         "detail": out.detail, "seconds": round(time.monotonic() - t0, 1)})
            print(f"{c.name:<48} {out.kind:<12} {time.monotonic() - t0:6.1f} s  {out.detail[:140]}", flush=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    print("\n| outcome | count |\n| --- | ---: |")
    for kind, text in {**OUTCOMES, "unavailable": "could not be staged here"}.items():
        if counts[kind] or kind in OUTCOMES:
            print(f"| {text} | {counts[kind]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
