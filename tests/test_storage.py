"""Atomic writes, readers that name a damaged file, and the work directory's lock (cac_jax.storage)."""

import json
import os
import subprocess
import sys
import time

import pytest

from cac_jax import storage


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    storage.write_json(str(path), {"auroc": 0.9})
    with pytest.raises(KeyboardInterrupt):
        with storage.atomic_open(str(path)) as f:
            f.write('{"auroc": 0.')
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"auroc": 0.9}
    assert os.listdir(tmp_path) == ["results.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_write_to_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "scores.npz"
    path.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(storage.StorageError, match=f"cannot write {path}: No space left on device .the disk is full"):
        with storage.atomic_open(str(path), "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["scores.npz"]


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b'{"auroc": 0.9', "not valid JSON"),
                                             (b"[1, 2]", "a JSON list, not an object"), (b"\xff\xfe", "not valid JSON")])
def test_a_damaged_json_file_is_named(tmp_path, content, reason):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(storage.DamagedFile, match=f"{path} is damaged or incomplete .{reason}"):
        storage.read_json(str(path), advice="evaluate again")
    with pytest.raises(FileNotFoundError):
        storage.read_json(str(tmp_path / "absent.json"))


def test_a_torn_log_line_is_dropped_with_a_warning_and_cut_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    with pytest.warns(storage.CacJaxWarning, match=f"{path}: skipped 1 unreadable line.s. .line 3"):
        assert storage.read_jsonl(str(path)) == [{"step": 1}, {"step": 2}]
    with pytest.warns(storage.CacJaxWarning, match="dropped a torn last line .15 bytes"):
        storage.repair_jsonl_tail(str(path))
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    storage.repair_jsonl_tail(str(path))  # a whole file is left as it is
    assert storage.read_jsonl(str(tmp_path / "absent.jsonl")) == []


def test_set_aside_keeps_every_copy(tmp_path):
    path = tmp_path / "results.json"
    for text in ("a", "b"):
        path.write_text(text)
        storage.set_aside(str(path))
    assert (tmp_path / "results.json.damaged").read_text() == "a"
    assert (tmp_path / "results.json.damaged.1").read_text() == "b"


HOLD = """
import sys, time
from cac_jax import storage
with storage.workdir_lock(sys.argv[1], "cac-jax train --workdir W"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(workdir, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_first_and_a_killed_one_leaves_no_stale_lock(tmp_path):
    workdir = tmp_path / "run"
    proc = _holder(workdir, 60)
    try:
        with pytest.raises(storage.WorkdirBusy, match=rf"{workdir} is in use by another cac-jax command "
                                                      rf"\(`cac-jax train --workdir W`, process {proc.pid} on host "):
            with storage.workdir_lock(str(workdir)):
                pass
    finally:
        proc.kill()  # as kill -9: the kernel drops its lock
        proc.wait()
    with storage.workdir_lock(str(workdir), "second"):
        with storage.workdir_lock(str(workdir), "nested, in the same process"):  # a sweep's trial in its sweep
            pass
        info = json.loads((workdir / storage.locks.LOCK_NAME).read_text())
        assert info["command"] == "second" and info["pid"] == os.getpid()


def test_a_file_where_the_work_directory_should_be(tmp_path):
    (tmp_path / "run").write_text("the user's")
    with pytest.raises(storage.StorageError, match="a file stands where a directory is needed"):
        with storage.workdir_lock(str(tmp_path / "run")):
            pass
    assert (tmp_path / "run").read_text() == "the user's"


def test_file_lock_waits_for_the_other_preparer(tmp_path):
    code = ("import sys, time\nfrom cac_jax import storage\n"
            "with storage.file_lock(sys.argv[1], 'digits'):\n    print('held', flush=True)\n    time.sleep(1.5)\n")
    lock = tmp_path / "data" / ".prepare.lock"
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    said, t0 = [], time.monotonic()
    with storage.file_lock(str(lock), "digits", announce=said.append):
        waited = time.monotonic() - t0
    proc.wait()
    assert waited > 0.5 and len(said) == 1 and "that is preparing digits" in said[0]
