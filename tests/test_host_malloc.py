"""CAC_JAX_MALLOC: glibc's defaults unless asked, what ``heap`` does, bad values, and the run record."""

import os
import subprocess
import sys

import pytest

from cac_jax import host_malloc

needs_glibc = pytest.mark.skipif(host_malloc._glibc() is None, reason="mallopt is glibc's")


@pytest.mark.parametrize("value", [None, "", "system", " System "])
def test_glibc_defaults_unless_heap_is_asked_for(value):
    environ = {} if value is None else {host_malloc.ENV: value}
    assert host_malloc._apply(environ) == "system: glibc's defaults"


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="CAC_JAX_MALLOC='jemalloc': expected 'heap'"):
        host_malloc._apply({host_malloc.ENV: "jemalloc"})


def test_heap_outside_glibc_is_refused(monkeypatch):
    monkeypatch.setattr(host_malloc, "_glibc", lambda: None)
    with pytest.raises(ValueError, match="does not run on glibc"):
        host_malloc._apply({host_malloc.ENV: "heap"})


# A thread allocates, touches and frees a 96 MB block (larger than a thread arena's heap) three times;
# the page faults of the last round tell whether the block came back from the heap or from a new mmap.
_PROBE = """
import ctypes, resource, threading, cac_jax
from cac_jax import host_malloc, xla_setup
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def work():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(96 << 20)
        ctypes.memset(block, 1, 96 << 20)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work); t.start(); t.join()
print(xla_setup.runtime_info()["malloc"]); print(faults[-1])
"""


def _probe(value):
    env = {**{k: v for k, v in os.environ.items() if k != host_malloc.ENV}, **({host_malloc.ENV: value} if value else {})}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    setting, faults = out.stdout.split("\n")[:2]
    return setting, int(faults)


@needs_glibc
def test_heap_keeps_large_blocks_mapped_between_allocations_and_is_recorded():
    setting, faults = _probe("heap")
    assert setting == "heap: M_ARENA_MAX=1 M_MMAP_MAX=0 M_TRIM_THRESHOLD=2147483647"
    assert faults < 1000  # 96 MB of fresh pages would be ~23,000 faults
    setting, faults = _probe(None)
    assert setting == "system: glibc's defaults" and faults > 20_000  # glibc's default: mmap and munmap every time
