"""The commands the project's documents promise, and how tests/test_claims.py runs each one.

``collect()`` reads them: every line of README.md's fenced ``bash`` blocks (backslash continuations
joined, comments dropped); the command in the first-line comment of a fenced ``python`` block
(``# my_scores.py: cac-jax eval ...``: the block is that file); README.md's inline code spans that are a
script's command (``python ...``, ``bash ...``; its inline ``cac-jax`` spans are options of the fenced
commands, with placeholders); and, in the module docstrings of experiments/*.py and benchmarks/*.py and the
comment headers of benchmarks/*.sh, every indented line (a literal block's) or ``Usage:`` line that is a
command (``cac-jax``, ``python``, ``bash``, ``mkdir``).

``REGISTRY`` maps each of them, whitespace-normalised, to a ``Claim``: how the test runs it. A command
runs in a fresh work directory laid out like the repository root (``benchmarks/`` and ``tests/`` hold
links to the scripts, ``../shared`` is a stand-in of the shared folder: see test_claims.py), so paths in the
documents resolve as written, placeholders (``DATA_DIR``, ``MANUAL_DIR``, ``W``, ``OUT``) being folders
of that name.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
_COMMAND = re.compile(r"^(cac-jax|python3?|bash|mkdir|srun|gcloud|pip)\b")


def normalise(command: str) -> str:
    return " ".join(command.split())


def _drop_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _commands(lines, only_commands: bool) -> list[str]:
    """Commands of ``lines``: comments dropped, backslash continuations joined."""
    out, pending = [], ""
    for raw in lines:
        line = _drop_comment(raw).strip()
        if pending:
            line, pending = pending + " " + line, ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        usage = re.match(r"Usage:\s*", line)
        line = line[usage.end():] if usage else line
        # In prose, a command is a literal block's line (indented) or a usage line.
        if line and (not only_commands or ((usage or raw[:1].isspace()) and _COMMAND.match(line))):
            out.append(normalise(line))
    return out


def readme(path=ROOT / "README.md") -> tuple[list[str], dict[str, str]]:
    """(commands, {file name: text}) of README.md: fenced bash lines, python blocks' commands, script spans."""
    text = path.read_text()
    commands, files = [], {}
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if lang in ("bash", "sh", "shell", ""):
            commands += _commands(body.splitlines(), only_commands=False)
        elif lang == "python":
            m = re.match(r"# (\S+\.py): (.+?)(\s{2,}.*)?\n", body)
            if m:
                files[m[1]] = body
                commands.append(normalise(m[2]))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    commands += [normalise(s) for s in re.findall(r"`([^`\n]+)`", prose) if re.match(r"(python3?|bash) ", s)]
    return commands, files


def docstring_commands(path: pathlib.Path) -> list[str]:
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        return _commands(doc.splitlines(), only_commands=True)
    header = []
    for line in path.read_text().splitlines()[1:]:  # after the shebang
        if not line.startswith("#"):
            break
        header.append(line[1:])
    return _commands(header, only_commands=True)


def collect() -> dict[str, list[str]]:
    """{document (relative path): its commands, in order, without duplicates}."""
    docs = {"README.md": readme()[0]}
    for pattern in ("experiments/*.py", "benchmarks/*.py", "benchmarks/*.sh"):
        for path in sorted(ROOT.glob(pattern)):
            docs[str(path.relative_to(ROOT))] = docstring_commands(path)
    return {doc: list(dict.fromkeys(cmds)) for doc, cmds in docs.items() if cmds}


# ---- the registry -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Claim:
    """How a promised command is tested.

    ``run``: the command line run (bash, in the work directory); None: the command as written; ``"+ FLAGS"``:
    the command as written with FLAGS added. In it ``{port}`` becomes a free port, ``{work}`` (also in
    ``env``) the work directory and ``{root}`` the repository's root. ``why`` says what the quick form
    changes, or why the command cannot run here (``runs_here=False``; ``run`` is then its local equivalent,
    if any). ``elsewhere``: the test that runs it in this form. Before the run the work directory gets
    ``inputs`` (stand-ins: test_claims.INPUTS) and ``reuse``'s copies of what other commands left
    (``(dest, command, path in its work directory)``), and loses ``remove``. Afterwards the command must
    exit with ``returncode``, leave every ``expect`` glob, print every ``says`` string and pass
    ``check(work, output)``. ``xfail``: why it fails today (the test then must fail).
    """

    run: str | None = None
    why: str = ""
    runs_here: bool = True
    elsewhere: str = ""
    inputs: tuple = ()
    reuse: tuple = ()
    remove: tuple = ()
    env: dict = dataclasses.field(default_factory=dict)
    expect: tuple = ()
    says: tuple = ()
    returncode: int = 0
    check: object = None
    torch: bool = False
    xfail: str = ""
    timeout: int = 300

    def form(self, command: str) -> str | None:
        """The command line the test runs for ``command``; None when nothing runs."""
        if not self.runs_here and self.run is None or self.elsewhere:
            return None
        if self.run is None:
            return command
        return command + self.run[1:] if self.run.startswith("+ ") else self.run


def _results(path):
    def check(work, output):
        import json

        results = json.loads((work / path / "results.json").read_text())
        for k in ("accuracy", "auroc", "oscr", "open_auc", "fpr95", "aupr_in", "aupr_out"):
            assert 0 <= results[k] <= 1, (k, results[k])
        return results
    return check


def _default_run(work, output):
    """README: accuracy 0.995, AUROC 0.976 on trial 0, and the files next to results.json."""
    results = _results("runs/digits/trial0")(work, output)
    assert abs(results["accuracy"] - 0.995) <= 0.005 and abs(results["auroc"] - 0.976) <= 0.01, results
    run = work / "runs/digits/trial0"
    for name in ("config.json", "metrics.jsonl", "scores.npz", "roc.png", "score_hist.png", "logit_pca.png",
                 "training_curves.png", "checkpoints"):
        assert (run / name).exists(), name
    return results


def _config(path, **fields):
    def check(work, output):
        config = _results(path)(work, output)["config"]
        assert {k: config[k] for k in fields} == fields, config
    return check


def _same_as_plain_train(work, output):
    """experiments/digits.py: "the same as plain ``cac-jax train``" (same network: the same accuracy)."""
    import json

    plain = json.loads((work / "plain/results.json").read_text())
    ours = _results("runs/digits/trial0")(work, output)
    assert ours["accuracy"] == plain["accuracy"] and abs(ours["auroc"] - plain["auroc"]) < 1e-3


def _json_has(path, *keys):
    def check(work, output):
        import json

        data = json.loads((work / path).read_text())
        missing = [k for k in keys if k not in data]
        assert not missing, (missing, list(data))
    return check


def _own_score(work, output):
    """README: the score my_scores.py registers is computed beside the built-in ones."""
    assert "msp_t2" in _results("W")(work, output)["scores"]


def _job(path, processes):
    def check(work, output):
        assert _results(path)(work, output)["runtime"]["process_count"] == processes
    return check


def _expanded(work, output):
    import numpy as np

    with np.load(work / "data/cifar10.npz") as f:
        assert {k: f[k].shape[1:] for k in f} == {"x_train": (32, 32, 3), "y_train": (), "x_test": (32, 32, 3),
                                                  "y_test": ()}


TRAIN = "runs/digits/trial0"
DEFAULT = "cac-jax train"  # the digits run the commands that read a trained run reuse
DIGITS_SWEEP = "cac-jax sweep --experiment digits --method all"
CIFAR_SWEEPS = ("cac-jax sweep --experiment cifar10 --method ce,cac --set recipe=vaze2022 --set split_family=arpl2020 "
                "--npz data/cifar10.npz", "cac-jax sweep --experiment cifar10 --method cac --set split_family=arpl2020 "
                "--npz data/cifar10.npz")
IMPORT = ("cac-jax import-torch ../shared/reference/weights/MNIST/MNIST_0_CACclassifierAnchorLoss.pth --experiment mnist "
          "--trial 0 --workdir runs/released/mnist0_cac --npz ../shared/data/mnist.npz "
          "--set trainval_file=../shared/reference/cac-openset/MNIST/trainval_idxs.json")
CIFAR_PLUS_10 = "cac-jax train --experiment cifar_plus_10 --trial 0 --data-dir DATA_DIR"
MODERN = "bash benchmarks/modern_protocol.sh start cifar10 ../shared/data/cifar10_jpeg.npz"
EXPAND = "mkdir -p data && python ../shared/data/expand_cifar10.py data/cifar10.npz"

# The stand-in data are tiny (test_claims.INPUTS: a step or two per epoch): quick forms train 1 + 1 epochs, and
# those of the paper's network evaluate in batches of 64 (the default 512 pads a tiny set to 512 images).
EPOCHS = "--epochs 1,1"
QUICK = EPOCHS + " --set eval_batch_size=64"
QUICKLY = "1 + 1 epochs, evaluation batch 64, "
SYNTHETIC = "on synthetic data of the same layout (the real files are absent on CI, or too big for its time)"
CIFAR10_QUICK = "cac-jax train --experiment cifar10 --trial 0 --npz data/cifar10.npz " + QUICK
MNIST_PARITY = ("python -m benchmarks.released_parity --dataset MNIST --npz ../shared/data/mnist.npz "
                "--trainval ../shared/reference/cac-openset/MNIST/trainval_idxs.json")
MNIST_PARITY_QUICK = MNIST_PARITY + " --trials 0 --kinds cac"
GPU_LENGTH = "GPU-length, with no shorter form: "
MODERN_TEST = "tests/test_benchmarks.py::test_the_modern_protocol_script_runs_in_the_form_its_header_gives"
LOOP_TEST = "tests/test_benchmarks.py::test_loop_vs_step_runs_in_the_form_the_readme_gives"
LOOP_WHY = "its main(), in the test's process, on 256 training and 128 validation images, 2 epochs, 2 steps"
AB_TEST = "tests/test_benchmarks.py::test_ab_times_each_arm_in_a_process_under_its_own_environment"
AB_WHY = "its main(), in the test's process, with --rounds 2 --steps 1 (and --a CAC_JAX_MALLOC= to say A's)"
OVERHEAD_TEST = "tests/test_benchmarks.py::test_multihost_overhead_times_both_layouts"
OVERHEAD_WHY = "its run(), in the test's process, on digits: 1 x 2 devices against 2 processes x 1, 2 steps"
SPEED_QUICK = "python -m benchmarks.train_step_speed --devices 1,2 --steps 1 --warmup 1 --json speed.json"
LAUNCH_TEST = "tests/test_multihost.py::test_the_readme_launch_command"
NOT_FROM_A_TEST = "the test suite itself: CI (.ci/run) runs it; a test running it would recurse"

def _decisions(path, sets):
    """README, "Using a trained network": a calibrated run, and every set of unknowns from another dataset scored."""
    def check(work, output):
        results = _results(path)(work, output)
        assert results["calibration"]["status"] == "calibrated", results["calibration"]
        assert set(results["unknown_sets"]) == set(sets), results["unknown_sets"].keys()
        for name in sets:
            assert (work / path / f"roc_unknowns_{name}.png").exists(), name
        assert (work / path / "calibration.npz").exists() and (work / path / "confusion.png").exists()
    return check


def _own_objective(work, output):
    """README, "Your own loss": the run trained cac_ce (its terms logged), reported its own score, recorded the file."""
    import json

    results = _results(TRAIN)(work, output)
    assert results["config"]["method"] == "cac_ce" and results["score"] == "cac", results["config"]
    assert results["config"]["imports"] == [str(work / "my_loss.py")], results["config"]["imports"]
    steps = [json.loads(line) for line in (work / TRAIN / "metrics.jsonl").read_text().splitlines()]
    assert all("ce_loss" in r for r in steps if r.get("kind") == "train"), steps[:2]


OWN_SWEEP = "cac-jax sweep --experiment digits --method cac,ce,cac_ce --trials 0,1 --import my_loss.py --workdir runs/sweeps/mine"
DECIDE = "python decide.py"
MNIST_UNKNOWNS = ("--unknowns fashion=../shared/data/fashion_mnist_test.npz --unknowns cifar10=data/cifar10.npz "
                  "--unknowns noise=noise:gaussian")
DECISIONS_MNIST = ("python -m benchmarks.decisions --dataset MNIST --npz ../shared/data/mnist.npz --trainval "
                   "../shared/reference/cac-openset/MNIST/trainval_idxs.json")

REGISTRY: dict[str, Claim] = {
    # ---- README.md
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && cac-jax train": Claim(
        runs_here=False, run=DEFAULT, why="makes a virtual environment and installs from the package index (no "
        "network here; CI's .ci/run installs the same way); its last command, cac-jax train, runs",
        check=_default_run),
    "python -m pytest -q": Claim(runs_here=False, why=NOT_FROM_A_TEST),
    DEFAULT: Claim(says=("AUROC",), check=_default_run),
    "cac-jax train --experiment mnist --trial 0,1,2,3,4 --npz ../shared/data/mnist.npz": Claim(
        run="cac-jax train --experiment mnist --trial 0,1 --npz ../shared/data/mnist.npz " + QUICK,
        why="2 trials, " + QUICKLY + SYNTHETIC,
        expect=("runs/mnist/trial0/results.json", "runs/mnist/trial1/results.json")),
    "cac-jax train --experiment cifar10 --trial 0 --npz data/cifar10.npz --epochs 10,5": Claim(
        run=CIFAR10_QUICK, why=QUICKLY + SYNTHETIC, inputs=("data/cifar10.npz",),
        check=_results("runs/cifar10/trial0")),
    "cac-jax train --method ce": Claim(run="+ " + EPOCHS, why="1 + 1 epochs", check=_config(TRAIN, method="ce")),
    "cac-jax train --set batch_size=32 --set learning_rates=0.02,0.002": Claim(
        run="+ " + EPOCHS, why="1 + 1 epochs", check=_config(TRAIN, batch_size=32, learning_rates=[0.02, 0.002])),
    "cac-jax eval --workdir runs/digits/trial0": Claim(
        reuse=((TRAIN, DEFAULT, TRAIN),), expect=(TRAIN + "/results.1.json",), check=_results(TRAIN)),
    "cac-jax launch --processes 2 --host-devices 2 -- train": Claim(
        elsewhere=LAUNCH_TEST, why="in the quick form the README gives next (--set epochs=6,2)"),
    "cac-jax --help; cac-jax train --help": Claim(says=("usage: cac-jax [-h]", "usage: cac-jax train", "--experiment")),
    CIFAR_SWEEPS[0]: Claim(
        run="+ --trials 0 --epochs 2,0 --set warmup_epochs=1 --set eval_batch_size=64",
        why="trial 0, 2 epochs, evaluation batch 64, " + SYNTHETIC,
        inputs=("data/cifar10.npz",), expect=("runs/sweeps/cifar10_arpl2020_vaze2022/ce/results.json",
                                              "runs/sweeps/cifar10_arpl2020_vaze2022/cac/results.json")),
    CIFAR_SWEEPS[1]: Claim(
        run="+ --trials 0 " + QUICK, why="trial 0, " + QUICKLY + SYNTHETIC, inputs=("data/cifar10.npz",),
        expect=("runs/sweeps/cifar10_arpl2020/cac/results.json",)),
    "cac-jax report runs/sweeps/cifar10_arpl2020_vaze2022 runs/sweeps/cifar10_arpl2020": Claim(
        reuse=(("runs/sweeps/cifar10_arpl2020_vaze2022", CIFAR_SWEEPS[0], "runs/sweeps/cifar10_arpl2020_vaze2022"),
               ("runs/sweeps/cifar10_arpl2020", CIFAR_SWEEPS[1], "runs/sweeps/cifar10_arpl2020")),
        says=("recipe vaze2022", "recipe cac2021", "max_logit", "shortened")),
    MODERN: Claim(
        run="mkdir -p runs/modern && bash benchmarks/modern_protocol.sh run cifar10 ../shared/data/cifar10_jpeg.npz 0 1 "
            ">> runs/modern/cifar10.log 2>&1; s=$?; cat runs/modern/cifar10.log; exit $s",
        env={"EXTRA": QUICK, "RECIPES": "cac2021", "TMPDIR": "{work}"},
        why="`run` into the log, as `start` runs it but not detached (start and wait: " + MODERN_TEST + "), on "
        "trial 0 in one process, the paper-recipe sweep only, " + QUICKLY + SYNTHETIC + "; TMPDIR keeps the "
        "expanded copy apart",
        expect=("cifar10_jpeg_q75.npz", "runs/modern/cifar10/cac2021/cac/results.json",
                "runs/modern/cifar10/report.md")),
    "cac-jax eval --workdir W --import my_scores.py": Claim(
        inputs=("my_scores.py",), reuse=(("W", DEFAULT, TRAIN),), check=_own_score),
    "cac-jax train --import my_loss.py --method cac_ce": Claim(
        run="+ " + EPOCHS, why="1 + 1 epochs", inputs=("my_loss.py",), check=_own_objective),
    OWN_SWEEP: Claim(
        run="+ " + EPOCHS, why="1 + 1 epochs", inputs=("my_loss.py",),
        expect=tuple(f"runs/sweeps/mine/{m}/trial{k}/results.json" for m in ("cac", "ce", "cac_ce") for k in (0, 1))),
    "cac-jax report runs/sweeps/mine": Claim(
        reuse=(("runs/sweeps/mine", OWN_SWEEP, "runs/sweeps/mine"),), says=("| digits | cac_ce | cac |", "| digits | ce |")),
    "python -m pytest -q test_my_loss.py": Claim(inputs=("my_loss.py", "test_my_loss.py"), says=("1 passed",),
                                                 timeout=600),
    DIGITS_SWEEP: Claim(
        run="+ --trials 0 " + EPOCHS, why="trial 0, 1 + 1 epochs",
        expect=tuple(f"runs/sweeps/digits/{m}/results.json" for m in ("cac", "cac_learnt", "ce"))),
    "cac-jax report runs/sweeps/digits": Claim(
        reuse=(("runs/sweeps/digits", DIGITS_SWEEP, "runs/sweeps/digits"),), says=("| digits |", "cac_learnt")),
    "cac-jax plots runs/sweeps/digits/cac/trial0": Claim(
        reuse=(("runs/sweeps/digits", DIGITS_SWEEP, "runs/sweeps/digits"),),
        remove=("runs/sweeps/digits/cac/trial0/*.png",),
        expect=tuple(f"runs/sweeps/digits/cac/trial0/{p}.png"
                     for p in ("roc", "score_hist", "logit_pca", "training_curves"))),
    "pip install -e '.[torch]'": Claim(runs_here=False, why="installs from the package index (no network here); "
                                       "CI's .ci/run installs the torch extra"),
    IMPORT: Claim(torch=True, why=SYNTHETIC + ": a network of the original's architecture saved as the released "
                  "files are (test_torch_import.py reads the real ones)",
                  expect=("runs/released/mnist0_cac/config.json",)),
    "cac-jax eval --workdir runs/digits/trial0 --unknowns noise=noise:gaussian --unknowns flat=noise:uniform": Claim(
        reuse=((TRAIN, DEFAULT, TRAIN),), says=("decisions at the calibrated threshold", "unknowns 'flat'"),
        check=_decisions(TRAIN, ("noise", "flat"))),
    "cac-jax eval --workdir runs/released/mnist0_cac --npz ../shared/data/mnist.npz " + MNIST_UNKNOWNS: Claim(
        torch=True, reuse=(("runs/released/mnist0_cac", IMPORT, "runs/released/mnist0_cac"),),
        inputs=("data/cifar10.npz",), why=SYNTHETIC, check=_decisions("runs/released/mnist0_cac",
                                                                      ("fashion", "cifar10", "noise"))),
    DECIDE: Claim(inputs=("decide.py",), reuse=((TRAIN, DEFAULT, TRAIN),), says=("p = ",),
                  expect=("some_digits.npz",)),
    "cac-jax predict --workdir runs/digits/trial0 some_digits.npz": Claim(
        reuse=((TRAIN, DEFAULT, TRAIN), ("some_digits.npz", DECIDE, "some_digits.npz")),
        says=("8 images:", "accepted as known"), expect=("predictions.csv", "predictions.json")),
    DECISIONS_MNIST + " " + MNIST_UNKNOWNS: Claim(
        run="+ --trials 0 --kinds cac", torch=True, inputs=("data/cifar10.npz",),
        why="trial 0's CAC network, " + SYNTHETIC, says=("Unknowns from another dataset: fashion",),
        expect=("benchmarks/results/decisions/MNIST/decisions.json", "benchmarks/results/decisions/MNIST/decisions.md")),
    "python -m benchmarks.decisions --dataset CIFAR10 --npz data/cifar10.npz --trainval data/cifar10_trainval.json "
    "--unknowns mnist=../shared/data/mnist.npz": Claim(
        run="+ --trials 0 --kinds cac", torch=True, inputs=("data/cifar10.npz", "data/cifar10_trainval.json"),
        why="trial 0's CAC network, " + SYNTHETIC, says=("Unknowns from another dataset: mnist",)),
    DECISIONS_MNIST + " --unknowns fashion=../shared/data/fashion_mnist_test.npz --timing": Claim(
        torch=True, why=SYNTHETIC, says=("pytorch_harness_s", "programs_compiled"),
        expect=("benchmarks/results/decisions/MNIST/timing.json",)),
    "cac-jax eval --workdir runs/released/mnist0_cac --npz ../shared/data/mnist.npz": Claim(
        torch=True, reuse=(("runs/released/mnist0_cac", IMPORT, "runs/released/mnist0_cac"),),
        expect=("runs/released/mnist0_cac/scores.npz", "runs/released/mnist0_cac/roc.png"),
        check=_results("runs/released/mnist0_cac")),
    "cac-jax train --experiment cifar10 --npz data/cifar10.npz --workdir /shared/runs/c10 --coordinator 10.0.0.1:1234 "
    "--num-processes 2 --process-id 0": Claim(
        runs_here=False, why="needs a second host, host 0 at 10.0.0.1 and a file system both see; runs as its two "
        "processes on this machine (coordinator 127.0.0.1, a local work directory), 1 + 1 epochs " + SYNTHETIC,
        run="A='cac-jax train --experiment cifar10 --npz data/cifar10.npz --workdir c10 --coordinator 127.0.0.1:{port} "
            "--num-processes 2 --epochs 1,1'; $A --process-id 1 > p1.log 2>&1 & $A --process-id 0; a=$?; wait $!; "
            "b=$?; cat p1.log; exit $((a | b))",
        inputs=("data/cifar10.npz",), check=_job("c10", 2)),
    "srun --nodes=2 --ntasks-per-node=1 cac-jax train --experiment cifar10 --npz data/cifar10.npz --workdir "
    "/shared/runs/c10 --set distributed=true": Claim(
        runs_here=False, why="needs SLURM (srun) and its nodes; JAX reads the job's layout from SLURM's variables, "
        "after which it is the plain-hosts job, run here as two local processes"),
    'gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command "cd cac-jax && .venv/bin/cac-jax train '
    '--experiment cifar10 --npz data/cifar10.npz --workdir /shared/runs/c10 --set distributed=true"': Claim(
        runs_here=False, why="needs a Cloud TPU pod slice and gcloud credentials"),
    "cac-jax launch --processes 2 --host-devices 2 -- train --set epochs=6,2": Claim(elsewhere=LAUNCH_TEST),
    "python -m benchmarks.released_parity": Claim(
        run=MNIST_PARITY_QUICK, torch=True, why="names the benchmark: runs as its docstring's MNIST command (below)",
        expect=("benchmarks/results/released_parity/MNIST/parity.json",)),
    "python -m benchmarks.loop_vs_step": Claim(
        elsewhere=LOOP_TEST, why="CIFAR-10's sizes are GPU-length on a CPU: " + LOOP_WHY),
    "bash benchmarks/gpu_reproduce.sh bench OUT": Claim(
        runs_here=False, why=GPU_LENGTH + "vs_pytorch at full length twice (its timeouts: 240 + 180 s); "
        "python -m benchmarks.vs_pytorch --quick runs below"),
    'python -m pytest -q -m "not slow"': Claim(runs_here=False, why=NOT_FROM_A_TEST),
    "python -m benchmarks.loss_scaling": Claim(
        run="+ --classes 10 100 --batch 128 --repeats 2", why="2 sizes, 2 repeats (the full sweep takes 80 s)",
        expect=("runs/benchmarks/loss_scaling.json",)),
    "python -m benchmarks.conv_winograd": Claim(
        run="+ --batch 2 --rounds 1", why="batch 2, 1 round", says=("stride1_layers_winograd_speedup=",),
        expect=("benchmarks/results/conv_winograd.json",)),
    "python -m benchmarks.pipeline_throughput": Claim(
        run="+ --steps 2", why="2 train steps", expect=("benchmarks/results/pipeline_throughput.json",)),
    "python -m benchmarks.train_step_speed": Claim(
        run=SPEED_QUICK, why="1 step, and --json, as the docstring's second command"),
    "python -m benchmarks.loop_vs_step [--train-images N --val-images M --epochs E --steps S]": Claim(
        elsewhere=LOOP_TEST, why=LOOP_WHY),
    "python -m benchmarks.cpu_settings_ab --b NAME=VALUE ...": Claim(
        run="python -m benchmarks.cpu_settings_ab --b XLA_FLAGS=--xla_cpu_prefer_vector_width=512 --rounds 1 --steps 1",
        why="as its docstring's second command, 1 round of 1 step", says=("step_ratio_b_over_a=",),
        expect=("benchmarks/results/cpu_settings_ab.json",)),
    "python -m benchmarks.vs_pytorch [--quick] [--host-devices 2]": Claim(
        run="python -m benchmarks.vs_pytorch --quick", torch=True, why="--quick",
        says=("train_step_ratio_jax_over_torch=",), expect=("benchmarks/results/vs_pytorch.json",)),
    "python -m benchmarks.released_parity --dataset MNIST --npz ... --trainval ...": Claim(
        run=MNIST_PARITY_QUICK, torch=True, why="as its docstring's MNIST command (below)",
        expect=("benchmarks/results/released_parity/MNIST/parity.json",)),
    "python -m benchmarks.multihost_overhead [--experiment E] [--npz FILE] [--processes 2] [--host-devices 2]": Claim(
        elsewhere=OVERHEAD_TEST, why=OVERHEAD_WHY + "; the cifar10 form runs below"),
    "python tests/fault_injection.py [--code DIR]": Claim(
        run="python tests/fault_injection.py --code {root} -k huge_seed", says=("huge_seed", "one_line"),
        why="one case (the suite of cases runs in tests/test_faults.py), DIR this checkout"),
    "bash benchmarks/gpu_reproduce.sh": Claim(returncode=2, says=("bash benchmarks/gpu_reproduce.sh bench OUT",),
                                              why="names the script, which lists its commands and exits 2"),
    "bash benchmarks/modern_protocol.sh run|start EXPERIMENT DATA [TRIALS] [PARALLEL]": Claim(
        elsewhere=MODERN_TEST, why="start (which runs run) on digits, trial 0, shortened"),

    # ---- experiments/*.py
    EXPAND: Claim(check=_expanded, why=SYNTHETIC + " (a JPEG pack of 500 images); the script is the shared one "
                  "when present"),
    "cac-jax train --experiment cifar10 --trial 0 --npz data/cifar10.npz": Claim(
        run=CIFAR10_QUICK, why=QUICKLY + SYNTHETIC, inputs=("data/cifar10.npz",),
        check=_results("runs/cifar10/trial0")),
    CIFAR_PLUS_10: Claim(run="+ " + QUICK, why=QUICKLY + SYNTHETIC, inputs=("DATA_DIR",),
                         check=_results("runs/cifar_plus_10/trial0")),
    "cac-jax train --experiment cifar_plus_50 --trial 0 --data-dir DATA_DIR": Claim(
        run="+ " + QUICK, why=QUICKLY + SYNTHETIC, inputs=("DATA_DIR",), check=_results("runs/cifar_plus_50/trial0")),
    "cac-jax eval --workdir runs/cifar_plus_10/trial0 --set dataset=cifar_plus_50": Claim(
        inputs=("DATA_DIR",), reuse=(("runs/cifar_plus_10/trial0", CIFAR_PLUS_10, "runs/cifar_plus_10/trial0"),),
        check=_config("runs/cifar_plus_10/trial0", dataset="cifar_plus_50")),
    "cac-jax train --experiment digits --trial 0": Claim(
        reuse=(("plain", DEFAULT, TRAIN),), check=_same_as_plain_train),
    "cac-jax train --experiment mnist --trial 0 --npz ../shared/data/mnist.npz": Claim(
        run="+ " + QUICK, why=QUICKLY + SYNTHETIC, check=_results("runs/mnist/trial0")),
    "cac-jax train --experiment svhn --trial 0 --data-dir DATA_DIR": Claim(
        run="+ " + QUICK, why=QUICKLY + SYNTHETIC, inputs=("DATA_DIR",), check=_results("runs/svhn/trial0")),
    "cac-jax train --experiment tiny_imagenet --trial 0 --set manual_dir=MANUAL_DIR": Claim(
        run="+ " + QUICK + " --set batch_size=16", why=QUICKLY + "batch 16, " + SYNTHETIC + " (2 images a class)",
        inputs=("MANUAL_DIR",), check=_results("runs/tiny_imagenet/trial0")),

    # ---- benchmarks/*.py
    "python -m benchmarks.cpu_settings_ab --b CAC_JAX_MALLOC=system": Claim(elsewhere=AB_TEST, why=AB_WHY),
    "python -m benchmarks.cpu_settings_ab --b XLA_FLAGS=--xla_cpu_prefer_vector_width=512": Claim(
        run="+ --rounds 1 --steps 1", why="1 round of 1 step", says=("step_ratio_b_over_a=",),
        expect=("benchmarks/results/cpu_settings_ab.json",)),
    "python -m benchmarks.loop_vs_step --train-images 1024 --val-images 256 --epochs 2 --steps 8": Claim(
        elsewhere=LOOP_TEST, why=LOOP_WHY),
    "python -m benchmarks.loss_scaling --out runs/benchmarks/loss_scaling.json": Claim(
        run="+ --classes 10 100 --batch 128 --repeats 2", why="2 sizes, 2 repeats (the full sweep takes 80 s)",
        expect=("runs/benchmarks/loss_scaling.json",)),
    "python -m benchmarks.multihost_overhead": Claim(elsewhere=OVERHEAD_TEST, why=OVERHEAD_WHY),
    "python -m benchmarks.multihost_overhead --experiment cifar10 --npz data/cifar10.npz --processes 2 --host-devices 1 "
    "--steps 10": Claim(
        run="python -m benchmarks.multihost_overhead --experiment cifar10 --npz data/cifar10.npz --processes 2 "
            "--host-devices 1 --steps 1", why="1 step, " + SYNTHETIC, inputs=("data/cifar10.npz",),
        says=('"job": {"processes": 2, "devices": 2',)),
    "python benchmarks/pipeline_throughput.py [--out PATH] [--steps N] [--mnist-npz PATH]": Claim(
        run="python benchmarks/pipeline_throughput.py --out pt.json --steps 2 --mnist-npz ../shared/data/mnist.npz",
        why="every option, N=2, " + SYNTHETIC,
        check=_json_has("pt.json", "pipeline_images_per_s", "train_step_images_per_s", "mnist_npz_cached_load_s")),
    MNIST_PARITY: Claim(run=MNIST_PARITY_QUICK, torch=True, why="trial 0's CAC network, " + SYNTHETIC,
                        expect=("benchmarks/results/released_parity/MNIST/parity.json",)),
    "python -m benchmarks.released_parity --dataset CIFAR10 --npz data/cifar10.npz --trainval data/cifar10_trainval.json":
        Claim(run="+ --trials 0 --kinds cac", torch=True, why="trial 0's CAC network, " + SYNTHETIC,
              inputs=("data/cifar10.npz", "data/cifar10_trainval.json"),
              expect=("benchmarks/results/released_parity/CIFAR10/parity.json",)),
    "python -m benchmarks.run_overhead --base /tmp/before [--rounds 3] [--json OUT]": Claim(
        run="python -m benchmarks.run_overhead --base {root} --rounds 1 --json OUT",
        why="1 round, this checkout against itself (no second checkout here)", says=("| warm |",),
        check=_json_has("OUT", "ratio_this_over_base")),
    "python -m benchmarks.run_overhead --base /tmp/before": Claim(
        run="python -m benchmarks.run_overhead --base {root} --rounds 1 --json OUT",
        why="1 round, this checkout against itself (no second checkout here); the run of the form above",
        says=("| warm |",)),
    "bash .ci/run": Claim(runs_here=False, why=NOT_FROM_A_TEST),
    "python -m benchmarks.train_step_speed --devices 1,2 --steps 20 --json speed.json": Claim(
        run=SPEED_QUICK, why="1 step", says=("steps/s",), expect=("speed.json",)),
    'python -m benchmarks.vs_pytorch [--quick] [--host-devices N] [--out PATH] [--xla-flags "..."]': Claim(
        run="python -m benchmarks.vs_pytorch --quick", torch=True, why="--quick (as the README's)",
        says=("train_step_ratio_jax_over_torch=",), expect=("benchmarks/results/vs_pytorch.json",)),

    # ---- benchmarks/*.sh
    "bash benchmarks/gpu_reproduce.sh loop OUT": Claim(
        runs_here=False, why=GPU_LENGTH + "loop_vs_step on CIFAR-10's sizes (its CPU form runs above)"),
    "bash benchmarks/gpu_reproduce.sh cifar10-sweep DATA": Claim(
        runs_here=False, why=GPU_LENGTH + "5 CIFAR-10 trials of 150 + 50 epochs at once, detached"),
    "bash benchmarks/gpu_reproduce.sh mnist DATA": Claim(
        runs_here=False, why=GPU_LENGTH + "5 MNIST trials of 35 + 35 epochs at once, detached"),
    "bash benchmarks/gpu_reproduce.sh cifar10 DATA [DTYPE]": Claim(
        runs_here=False, why=GPU_LENGTH + "CIFAR-10 trial 0, 150 + 50 epochs, detached"),
    "bash benchmarks/gpu_reproduce.sh wait SECONDS": Claim(
        run="bash benchmarks/gpu_reproduce.sh wait 1", env={"RUNS": "runs/modern"},
        reuse=(("runs/modern", MODERN, "runs/modern"),), why="on the runs of the modern protocol's script (above)",
        says=("cac2021 sweep (cac):",)),
    "bash benchmarks/gpu_reproduce.sh pack OUT": Claim(
        env={"RUNS": "runs/modern"}, reuse=(("runs/modern", MODERN, "runs/modern"),),
        why="on the runs of the modern protocol's script (above)", expect=("OUT/runs.tar.gz",)),
    "bash benchmarks/modern_protocol.sh run EXPERIMENT DATA [TRIALS] [PARALLEL]": Claim(
        elsewhere=MODERN_TEST, why="start runs it, on digits, trial 0, shortened"),
    "bash benchmarks/modern_protocol.sh start EXPERIMENT DATA [TRIALS] [PARALLEL]": Claim(
        elsewhere=MODERN_TEST, why="on digits, trial 0, shortened"),
    "bash benchmarks/modern_protocol.sh wait SECONDS": Claim(elsewhere=MODERN_TEST),
    "bash benchmarks/modern_protocol.sh pack OUT": Claim(elsewhere=MODERN_TEST),
}
