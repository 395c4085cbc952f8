"""Jobs of several processes through JAX's distributed runtime, on this CPU: processes with host devices
and gloo collectives behave like hosts. Every job runs in subprocesses on free ports, bounded in time.

The slow tests train the digits default for 1 + 1 epochs (a checkpoint every 3 steps) as a job of
2 processes x 2 devices (through ``cac-jax launch``) and as 1 process x 4 devices, and check what a
job must do: the same results, checkpoints that evaluate on the other layout, a killed process that
stops the other within a minute and a restart that ends as the uninterrupted job, a failing process
whose error stops the others at once, sweeps that resume, and processes that disagree refused."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cac_jax import config
from cac_jax.runtime import distributed
from cac_jax.runs import launch

TRAIN = ["train", "--set", "epochs=1,1", "--set", "checkpoint_every_steps=3", "--no-progress"]
TIMEOUT = 300
METRICS = ("accuracy", "auroc", "oscr", "open_auc", "fpr95", "aupr_in", "aupr_out")


def _env(devices: int) -> dict:
    return launch.process_environment(devices)


def _cac_jax(args, devices=1, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """One process."""
    out = subprocess.run([sys.executable, "-m", "cac_jax", *map(str, args)], env=_env(devices), capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _launch(args, processes=2, devices=2, timeout=TIMEOUT, check=True) -> subprocess.CompletedProcess:
    """A job through the launcher."""
    out = subprocess.run([sys.executable, "-m", "cac_jax", "launch", "--processes", str(processes), "--host-devices",
                          str(devices), "--", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    return out


def _start(args, tmp_path, name, processes=2, devices=2, extra=None):
    """A job's processes started by hand (as on separate hosts), their output in files."""
    port = launch.free_port()
    procs = []
    for i, cmd in enumerate(launch.process_commands([str(a) for a in args], processes, port)):
        cmd += [str(a) for a in (extra or {}).get(i, [])]
        log = open(tmp_path / f"{name}.p{i}.log", "w")
        procs.append(subprocess.Popen(cmd, env=_env(devices), stdout=log, stderr=subprocess.STDOUT))
    return procs


def _log(tmp_path, name, i) -> str:
    return (tmp_path / f"{name}.p{i}.log").read_text(errors="replace")


def _results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _committed_steps(workdir, stage=1, kind="latest"):
    path = os.path.join(workdir, "checkpoints", f"stage{stage}", kind)
    return [d for d in (os.listdir(path) if os.path.isdir(path) else []) if re.fullmatch(r"\d+", d)]


def _variables(workdir):
    import jax

    from cac_jax.training import loop as train

    cfg = config.load_config(os.path.join(workdir, "config.json")).replace(workdir=str(workdir))
    ctx = train.make_context(cfg, train.load_data(cfg))
    return jax.device_get(train.checkpoint_variables(ctx, 2, "latest")[0])


def _assert_close_variables(a, b, **tol):
    import jax

    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, err_msg=jax.tree_util.keystr(path), **tol)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run as 1 process x 4 devices and as a job of 2 processes x 2 devices; wall times."""
    root = tmp_path_factory.mktemp("multihost")
    t0 = time.perf_counter()
    _cac_jax([*TRAIN, "--workdir", root / "one"], devices=4)
    t1 = time.perf_counter()
    job = _launch([*TRAIN, "--workdir", root / "two"])
    t2 = time.perf_counter()
    return {"one": root / "one", "two": root / "two", "job_output": job.stdout,
            "seconds": {"one": t1 - t0, "two": t2 - t1}}


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_all_the_devices(runs):
    one, two = _results(runs["one"]), _results(runs["two"])
    print(f"wall time: 1 process x 4 devices {runs['seconds']['one']:.1f} s, "
          f"2 processes x 2 devices {runs['seconds']['two']:.1f} s; "
          + ", ".join(f"{k} {one[k]:.4f} / {two[k]:.4f}" for k in METRICS))
    assert two["accuracy"] == one["accuracy"]
    assert two["auroc"] == pytest.approx(one["auroc"], abs=2e-3)
    assert (one["runtime"]["process_count"], two["runtime"]["process_count"]) == (1, 2)
    assert one["runtime"]["device_count"] == two["runtime"]["device_count"] == 4
    _assert_close_variables(_variables(runs["one"]), _variables(runs["two"]), rtol=1e-3, atol=1e-4)
    # Process 0 wrote every file once, and spoke for the job.
    files = sorted(os.listdir(runs["two"]))
    assert "results.1.json" not in files and {"config.json", "scores.npz", "roc.png", "metrics.jsonl"} <= set(files)
    epochs = [json.loads(line) for line in open(runs["two"] / "metrics.jsonl") if '"kind": "epoch"' in line]
    assert [(r["stage"], r["epoch"]) for r in epochs] == [(1, 1), (2, 2)]
    out = runs["job_output"]
    # Once each, from process 0: the result line and the table (AUROC), the decisions table.
    assert out.count("AUROC") == 2 and out.count("decisions at the calibrated threshold") == 1, out
    assert "[p1] process 1 of 2: output on process 0" in out
    assert "[launch] all 2 processes finished" in out


@pytest.mark.slow
def test_the_readme_launch_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cac_jax", "launch", "--processes", "2", "--host-devices", "2", "--",
                          "train", "--set", "epochs=6,2"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stdout[-4000:]
    results = _results(tmp_path / "runs" / "digits" / "trial0")
    assert results["config"]["epochs"] == [6, 2] and results["runtime"]["process_count"] == 2
    assert results["auroc"] > 0.9


@pytest.mark.slow
def test_checkpoints_evaluate_on_the_other_layout(runs):
    two_trained, one_trained = _results(runs["two"]), _results(runs["one"])
    _cac_jax(["eval", "--workdir", runs["two"], "--no-progress"])  # written by 2 processes, read by 1
    _launch(["eval", "--workdir", runs["one"], "--no-progress"])  # written by 1 process, read by 2
    for trained, workdir, processes in ((two_trained, runs["two"], 1), (one_trained, runs["one"], 2)):
        again = _results(workdir)
        assert again["runtime"]["process_count"] == processes
        for k in METRICS:
            assert again[k] == pytest.approx(trained[k], abs=1e-6), k
        assert _results_renamed(workdir) == trained


def _results_renamed(workdir) -> dict:
    with open(os.path.join(workdir, "results.1.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_a_restart_resumes(runs, tmp_path):
    workdir = tmp_path / "killed"
    procs = _start([*TRAIN, "--workdir", workdir], tmp_path, "killed")
    deadline = time.monotonic() + TIMEOUT
    while not _committed_steps(workdir) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), _log(tmp_path, "killed", 0)
        time.sleep(0.01)
    procs[1].kill()
    t0 = time.monotonic()
    try:
        code = procs[0].wait(timeout=90)
    finally:
        for p in procs:
            p.kill()
    stopped_after = time.monotonic() - t0
    print(f"the surviving process stopped {stopped_after:.1f} s after the other was killed (code {code})")
    assert code != 0 and stopped_after < 60, _log(tmp_path, "killed", 0)
    assert not os.path.exists(workdir / "results.json") and _committed_steps(workdir)
    _launch([*TRAIN, "--workdir", workdir])
    resumed, straight = _results(workdir), _results(runs["two"])
    assert {k: resumed[k] for k in METRICS} == {k: straight[k] for k in METRICS}
    _assert_close_variables(_variables(workdir), _variables(runs["two"]), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,error", [(signal.SIGINT, 130, "interrupted; the same command resumes"),
                                            (signal.SIGTERM, 143, "terminated (SIGTERM); the same command resumes")])
def test_a_process_that_fails_stops_the_others_at_once_with_its_error(tmp_path, sig, code, error):
    workdir = tmp_path / "interrupted"
    procs = _start(["train", "--no-progress", "--workdir", workdir], tmp_path, "interrupted")  # 30 + 10 epochs
    try:
        deadline = time.monotonic() + TIMEOUT
        while not _committed_steps(workdir) and time.monotonic() < deadline:
            time.sleep(0.01)
        procs[1].send_signal(sig)
        t0 = time.monotonic()
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    stopped_after = time.monotonic() - t0
    print(f"{sig.name} to process 1: both stopped {stopped_after:.1f} s later, codes {codes}")
    log = _log(tmp_path, "interrupted", 0)
    assert codes == [distributed.EXIT_PEER_FAILED, code], log
    assert stopped_after < 20
    assert f"cac-jax: error: process 1: {error}" in log and "stopping process 0 of 2 as well" in log


@pytest.mark.slow
def test_sweep_across_processes_and_its_resumption(tmp_path):
    sweep = ["sweep", "--trials", "0,1", "--epochs", "1,1", "--no-progress", "--workdir", tmp_path / "sweep"]
    first = _launch(sweep)
    summary = json.load(open(tmp_path / "sweep" / "results.json"))
    assert [r["trial"] for r in summary["per_trial"]] == [0, 1]
    for k in (0, 1):
        assert _results(tmp_path / "sweep" / f"trial{k}")["runtime"]["process_count"] == 2
    assert first.stdout.count("training in") == 2
    again = _launch(sweep)
    assert "training in" not in again.stdout and again.stdout.count("finished before, reusing") == 2
    assert json.load(open(tmp_path / "sweep" / "results.json"))["mean"] == summary["mean"]
    refused = _launch(sweep + ["--parallel", "2"], check=False)
    assert refused.returncode == 1 and "leave out --parallel" in refused.stdout  # the cause's code, not 3


@pytest.mark.slow
def test_an_objective_of_ones_own_in_a_sweep_across_processes_and_its_report(tmp_path):
    """README, "Your own loss": my_loss.py, swept over 2 trials beside cac and ce in a job of 2 processes, each
    importing it, then reported."""
    from _claims import readme

    (tmp_path / "my_loss.py").write_text(readme()[1]["my_loss.py"])
    sweep = ["sweep", "--experiment", "digits", "--method", "cac,ce,cac_ce", "--trials", "0,1", "--import",
             tmp_path / "my_loss.py", "--epochs", "1,1", "--no-progress", "--workdir", tmp_path / "mine"]
    _launch(sweep, timeout=900)
    for method in ("cac", "ce", "cac_ce"):
        for k in (0, 1):
            results = _results(tmp_path / "mine" / method / f"trial{k}")
            assert results["runtime"]["process_count"] == 2 and results["config"]["method"] == method
    report = _cac_jax(["report", tmp_path / "mine"]).stdout  # without --import: it reads results alone
    assert "| digits | cac_ce | cac | 2 |" in report and "| digits | ce | msp | 2 |" in report, report


def test_processes_that_registered_other_objectives_refuse_to_run(tmp_path):
    (tmp_path / "extra.py").write_text("from cac_jax import objectives\n\n\n@objectives.register\n"
                                       "class Extra(type(objectives.get('ce'))):\n    name = 'extra_test'\n")
    workdir = tmp_path / "w"
    procs = _start(["train", "--no-progress", "--workdir", workdir], tmp_path, "objectives",
                   extra={1: ["--import", tmp_path / "extra.py"]})
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
    assert set(codes) <= {1, distributed.EXIT_PEER_FAILED} and 1 in codes
    for i in (0, 1):
        assert re.search(r"different objectives \(registered objectives: process 0 has \{.*\}, process 1 has "
                         r"\{.*'extra_test'", _log(tmp_path, "objectives", i)), _log(tmp_path, "objectives", i)
    assert not (workdir / "checkpoints").exists()


def test_processes_started_with_different_configs_refuse_to_run(tmp_path):
    workdir = tmp_path / "mixed"
    procs = _start(["train", "--no-progress", "--workdir", workdir], tmp_path, "mixed",
                   extra={1: ["--set", "lbda=0.5"]})
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
    # Each finds the mismatch itself (1), unless the other's report reaches it first (3)
    assert set(codes) <= {1, distributed.EXIT_PEER_FAILED} and 1 in codes
    for i in (0, 1):
        assert ("different configs (lbda: process 0 has 0.1, process 1 has 0.5)" in _log(tmp_path, "mixed", i))
    assert not workdir.exists()


def test_processes_given_different_data_refuse_to_run(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (200, 28, 28), dtype=np.uint8), "y_train": np.arange(200) % 10,
              "x_test": rng.integers(0, 255, (100, 28, 28), dtype=np.uint8), "y_test": np.arange(100) % 10}
    np.savez(tmp_path / "a.npz", **arrays)
    arrays["x_train"][0, 0, 0] ^= 1  # one pixel of one image
    np.savez(tmp_path / "b.npz", **arrays)
    workdir = tmp_path / "w"
    procs = _start(["train", "--experiment", "mnist", "--no-progress", "--workdir", workdir], tmp_path, "data",
                   extra={0: ["--npz", tmp_path / "a.npz"], 1: ["--npz", tmp_path / "b.npz"]})
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
    assert set(codes) <= {1, distributed.EXIT_PEER_FAILED} and 1 in codes
    for i in (0, 1):
        assert re.search(r"different data \(data fingerprint: process 0 has '\w+', process 1 has '\w+'\)",
                         _log(tmp_path, "data", i)), _log(tmp_path, "data", i)
    assert not (workdir / "checkpoints").exists()


def test_a_job_on_a_work_directory_in_use_is_refused(tmp_path):
    """Process 0 holds the work directory's lock for the job: a job started while another command holds it stops
    at once, every process, with the holder named, and writes nothing."""
    from cac_jax import storage

    workdir = tmp_path / "w"
    with storage.workdir_lock(str(workdir), "cac-jax train --workdir w (the test)"):
        out = _launch(["train", "--no-progress", "--workdir", workdir], check=False, timeout=120)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "is in use by another cac-jax command (`cac-jax train --workdir w (the test)`" in out.stdout
    assert sorted(os.listdir(workdir)) == [storage.locks.LOCK_NAME]


def test_a_mesh_must_span_every_process(tmp_path):
    out = _launch(["train", "--no-progress", "--set", "num_devices=2", "--workdir", tmp_path / "w"], check=False)
    assert out.returncode == 1
    assert "num_devices=2 in a job of 2 processes with 4 devices: the mesh must span every process's devices" in out.stdout


def test_cluster_detection_outside_a_cluster_is_a_clear_error(tmp_path):
    env = {k: v for k, v in _env(1).items() if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))}
    out = subprocess.run([sys.executable, "-m", "cac_jax", "train", "--set", "distributed=true", "--workdir",
                          str(tmp_path / "w")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "could not join the distributed job (cluster auto-detection" in out.stderr and "--coordinator" in out.stderr


def test_launcher_stops_every_process_as_soon_as_one_fails():
    sleeper = [sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(120)"]
    failing = [sys.executable, "-c", "import sys, time; time.sleep(0.5); print('bye\\rbye again'); sys.exit(3)"]
    out = io.BytesIO()
    t0 = time.monotonic()
    assert launch.supervise([sleeper, failing], dict(os.environ), out=out) == 3
    assert time.monotonic() - t0 < 25  # the grace period for the others to end by themselves, then Ctrl-C
    text = out.getvalue().decode()
    assert "[p0] waiting\n" in text and "[p1] bye\r[p1] bye again\n" in text
    assert "[launch] process 1 exited with code 3; stopping the others" in text


def test_launcher_passes_ctrl_c_on(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "cac_jax", "launch", "--processes", "2", "--", "train",
                             "--workdir", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = b""
        while b"[p0] training digits" not in seen:
            line = proc.stdout.readline()
            assert line, seen.decode()
            seen += line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        rest = proc.stdout.read().decode()
    finally:
        proc.kill()
    assert "[launch] interrupted: passing Ctrl-C on to every process" in rest


def test_launcher_command_lines():
    cmds = launch.process_commands(["train", "--set", "epochs=1,1"], 3, 1234)
    assert [c[3:] for c in cmds] == [["train", "--set", "epochs=1,1", "--coordinator", "127.0.0.1:1234",
                                      "--num-processes", "3", "--process-id", str(i)] for i in range(3)]
    with pytest.raises(ValueError, match="not 'report'"):
        launch.process_commands(["report", "x"], 2, 1)
    with pytest.raises(ValueError, match="sets --process-id"):
        launch.process_commands(["train", "--process-id", "0"], 2, 1)
    with pytest.raises(ValueError, match="after --"):
        launch.process_commands([], 2, 1)
    env = launch.process_environment(3, {"XLA_FLAGS": "--a=1 --xla_force_host_platform_device_count=8"})
    assert env["XLA_FLAGS"] == "--a=1 --xla_force_host_platform_device_count=3" and env["JAX_PLATFORMS"] == "cpu"


def test_distributed_options_and_mismatch_messages():
    assert not distributed.Options().requested and distributed.Options(auto=True).requested
    assert distributed.Options("h:1", 2, 1).requested
    with pytest.raises(ValueError, match="all three"):
        distributed.Options(coordinator="h:1")
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.Options("h", 2, 0)
    with pytest.raises(ValueError, match=r"must lie in 0..1 .* got 2"):
        distributed.Options("h:1", 2, 2)
    same = {"a": 1, "b": [1, 2]}
    assert distributed.mismatches({0: same, 1: dict(same)}) == []
    assert distributed.mismatches({0: same, 1: {"a": 2, "b": [1, 2]}, 2: same}) == [
        "a: process 0 has 1, process 1 has 2, process 2 has 1"]
    assert distributed.mismatches({0: {"a": 1}, 1: {}}) == ["a: process 0 has 1, process 1 has None"]


def test_data_fingerprint_tells_data_apart():
    from _synthetic import synthetic_data

    from cac_jax.data import loading

    a, b = synthetic_data(), synthetic_data()
    assert loading.fingerprint(a) == loading.fingerprint(b)
    assert loading.fingerprint(synthetic_data(seed=1)) != loading.fingerprint(a)
    images = a.train.images.copy()
    images[0, 0, 0, 0] ^= 1
    changed = a.__class__(**{**a.__dict__, "train": a.train.__class__(images, a.train.labels)})
    assert loading.fingerprint(changed) != loading.fingerprint(a)
    assert loading.fingerprint(a.__class__(**{**a.__dict__, "mean": (0.3,)})) != loading.fingerprint(a)


def test_command_line_takes_the_three_flags_together():
    from cac_jax import cli

    for command in ("train", "eval", "sweep"):
        args = cli.build_parser().parse_args([command, "--coordinator", "10.0.0.1:1234", "--num-processes", "4",
                                              "--process-id", "3"])
        assert (args.coordinator, args.num_processes, args.process_id) == ("10.0.0.1:1234", 4, 3)
        assert args.heartbeat_timeout == distributed.DEFAULT_HEARTBEAT_TIMEOUT
    assert cli.main(["train", "--coordinator", "127.0.0.1:1"]) == 1  # refused before anything runs
