"""Benchmark command lines: argument checks, repeat counts per backend, and the PyTorch worker processes."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import vs_pytorch


@pytest.mark.parametrize("argv, backend, steps, eval_batches", [
    ([], "cpu", 3, 2), (["--quick"], "cpu", 1, 1), ([], "gpu", 50, 20), (["--quick"], "gpu", 20, 5),
    (["--steps", "7", "--eval-batches", "4"], "gpu", 7, 4),
])
def test_repeats_follow_the_backend_unless_given(argv, backend, steps, eval_batches):
    args = vs_pytorch.parse_args(argv)
    vs_pytorch.default_repeats(args, backend)
    assert (args.steps, args.eval_batches) == (steps, eval_batches)


@pytest.mark.parametrize("flag", ["--steps", "--eval-batches", "--rounds"])
def test_non_positive_repeats_are_refused(flag, capsys):
    with pytest.raises(SystemExit):
        vs_pytorch.parse_args([flag, "0"])
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_torch_workers_run_pytorch_under_the_malloc_they_are_given():
    """PyTorch runs in worker processes, each under the malloc setting it is given ("torch" with glibc's
    defaults, as the original runs, "torch_same_malloc" with cac_jax's); they answer timing and loss requests."""
    pytest.importorskip("torch")
    from cac_jax.runtime import host_malloc

    args = vs_pytorch.parse_args(["--quick", "--steps", "1", "--eval-batches", "1"])
    workers = [vs_pytorch.TorchWorker(args, malloc=choice) for choice in ("system", "")]
    try:
        system, same = (w.info["malloc"] for w in workers)
        assert system == "system: CAC_JAX_MALLOC=system"
        environ = {k: v for k, v in os.environ.items() if k != host_malloc.ENV}
        expected = "heap" if host_malloc._glibc() and not host_malloc._not_on_the_cpu(environ) else "system"
        assert same.split(":")[0] == expected
        assert workers[0].timer("step")() > 0
        loss = workers[0].loss(10, broadcast=False)
        assert loss() > 0 and loss.value > 0
    finally:
        for w in workers:
            w.close()
    assert [w.proc.returncode for w in workers] == [0] * len(workers)


def test_the_jax_contender_runs_under_cac_jax_cpu_settings():
    """The benchmark starts JAX itself (to pick repeats for its backend), so it must set cac_jax's CPU dispatch
    first: otherwise it times JAX slower than `cac-jax train` runs."""
    from cac_jax.runtime import host_malloc

    code = ("from benchmarks import vs_pytorch; from cac_jax.runtime import host_malloc; "
            "args = vs_pytorch.parse_args(['--quick']); vs_pytorch.start_jax(args); "
            "print(args.steps, host_malloc.in_effect())")
    env = {**{k: v for k, v in os.environ.items() if k not in (host_malloc.ENV, "JAX_PLATFORMS", "XLA_FLAGS")},
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip()
    steps, setting = out.split(" ", 1)
    assert steps == "1"
    if host_malloc._glibc() is not None:
        assert setting == "heap: M_MMAP_MAX=0 M_TRIM_THRESHOLD=2147483647 jax_cpu_enable_async_dispatch=False"


@pytest.mark.parametrize("argv, message", [
    (["--b", "CAC_JAX_MALLOC"], "'CAC_JAX_MALLOC' is not NAME=VALUE"),
    (["--b", "=system"], "'=system' is not NAME=VALUE"),
    (["--a", "X=1", "--b", "X=1"], "--a and --b set the same environment"),
    (["--b", "X=1", "--rounds", "0"], "--rounds must be >= 1, got 0"),
])
def test_ab_arguments_are_checked(argv, message, capsys):
    from benchmarks import cpu_settings_ab

    with pytest.raises(SystemExit):
        cpu_settings_ab.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_ab_times_each_arm_in_a_process_under_its_own_environment(tmp_path):
    """The heap setting, on and off: each worker records its own malloc outcome, and the page faults show it."""
    from benchmarks import cpu_settings_ab
    from cac_jax.runtime import host_malloc

    out = tmp_path / "ab.json"
    report = cpu_settings_ab.main(["--rounds", "2", "--steps", "1", "--a", f"{host_malloc.ENV}=",
                                   "--b", f"{host_malloc.ENV}=system", "--out", str(out)])
    a, b = report["arms"]["A"], report["arms"]["B"]
    assert b["malloc"] == "system: CAC_JAX_MALLOC=system" and b["rounds"] == 2
    assert report["step_ratio_b_over_a"] == pytest.approx(b["median_s"] / a["median_s"])
    assert out.exists()
    if a["malloc"].startswith("heap"):  # glibc, on the CPU
        assert a["faults_per_step"] < 20_000 < b["faults_per_step"]


@pytest.mark.slow
def test_multihost_overhead_times_both_layouts(tmp_path):
    from benchmarks import multihost_overhead

    r = multihost_overhead.run("digits", 2, 1, steps=2, workdir=str(tmp_path))
    assert (r["one"]["processes"], r["one"]["devices"]) == (1, 2)
    assert (r["job"]["processes"], r["job"]["devices"]) == (2, 2)
    for layout in ("one", "job"):
        assert all(r[layout][k] > 0 for k in ("step_ms", "validate_ms", "save_ms"))


@pytest.mark.slow
def test_loop_vs_step_runs_in_the_form_the_readme_gives(tmp_path, capsys):
    from benchmarks import loop_vs_step

    out = tmp_path / "loop.json"
    assert loop_vs_step.main(["--train-images", "256", "--val-images", "128", "--epochs", "2", "--steps", "2",
                              "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["steps_per_epoch"] == 2 and result["epochs"] == 2
    assert result["step_ms"] > 0 and result["loop_ms_per_step"] > 0 and result["loop_over_step"] > 0
    assert {"train", "validate", "checkpoint"} <= set(result["loop_timings"])
    assert "loop / step" in capsys.readouterr().out


@pytest.mark.slow
def test_the_modern_protocol_script_runs_in_the_form_its_header_gives(tmp_path):
    """benchmarks/modern_protocol.sh start (which runs `run` detached) and wait, as on a GPU, shortened on
    digits: three sweeps and the report."""
    env = {**os.environ, "RUNS": str(tmp_path), "PYTHON": sys.executable,
           "EXTRA": "--epochs 2,0 --set warmup_epochs=1 --set eval_batch_size=256"}
    root = os.path.join(os.path.dirname(__file__), "..")

    def script(*args):
        return subprocess.run(["bash", "benchmarks/modern_protocol.sh", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)

    started = script("start", "digits", "-", "0", "1")
    assert started.returncode == 0 and "started; log in" in started.stdout, started.stderr
    waited = script("wait", "540")
    assert "all runs ended" in waited.stdout, waited.stdout[-3000:]
    log = (tmp_path / "digits.log").read_text()
    assert "vaze2022 sweeps (ce, cac):" in log and "cac2021 sweep (cac):" in log, log[-3000:]
    for sweep_dir in ("vaze2022/ce", "vaze2022/cac", "cac2021/cac"):
        results = json.loads((tmp_path / "digits" / sweep_dir / "results.json").read_text())
        assert results["trials"] == [0] and results["config"]["split_family"] == "arpl2020"
        assert results["config"]["recipe"] == sweep_dir.split("/")[0]
    report = (tmp_path / "digits" / "report.md").read_text()
    assert "### splits arpl2020, recipe vaze2022" in report and "### splits arpl2020, recipe cac2021" in report
    assert "| digits | ce | max_logit | 1 |" in report and "shortened (epochs 2,0 of 600,0)" in report
    assert "shortened (epochs 2,0 of 30,10)" in report
    out = tmp_path / "out"
    assert script("pack", str(out)).returncode == 0 and (out / "runs.tar.gz").exists()
    assert script().returncode == 2


def test_winograd_convolution_equals_the_direct_one():
    """benchmarks.conv_winograd times F(2x2, 3x3) against XLA's convolution: it must compute the same thing, on
    any even size (not only square), any channel counts; an odd size is refused by name."""
    import jax
    import numpy as np

    from benchmarks import conv_winograd

    for shape, out in (((3, 6, 8, 5), 7), ((1, 2, 2, 1), 1), ((2, 32, 32, 64), 64)):
        kx, kw = jax.random.split(jax.random.PRNGKey(sum(shape)))
        x = jax.random.normal(kx, shape)
        w = jax.random.normal(kw, (3, 3, shape[-1], out))
        np.testing.assert_allclose(conv_winograd.winograd(x, w), conv_winograd.direct(x, w), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="even height and width, got 5x8"):
        conv_winograd.winograd(jax.numpy.zeros((1, 5, 8, 2)), jax.numpy.zeros((3, 3, 2, 2)))
