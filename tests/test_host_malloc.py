"""The heap setting ``cac_jax.runtime.configure()`` makes: what it does, where it is left out, the opt-out, the run record."""

import importlib.util
import os
import subprocess
import sys

import pytest

from cac_jax.runtime import host_malloc

needs_glibc = pytest.mark.skipif(host_malloc._glibc() is None, reason="mallopt is glibc's")


@pytest.mark.parametrize("environ, why", [
    ({host_malloc.ENV: "system"}, "CAC_JAX_MALLOC=system"),
    ({host_malloc.ENV: " System "}, "CAC_JAX_MALLOC=system"),
    ({"JAX_PLATFORMS": "cuda,cpu"}, "JAX_PLATFORMS=cuda,cpu (measured on the CPU)"),
])
def test_left_alone_where_not_measured_or_not_wanted(environ, why):
    assert host_malloc._apply(environ) == f"system: {why}"


def test_the_cpu_is_what_was_measured(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "jax_plugins" else None)
    assert host_malloc._not_on_the_cpu({}) == "accelerator plugin jax_plugins installed (measured on the CPU)"
    assert host_malloc._not_on_the_cpu({"JAX_PLATFORMS": "cpu"}) is None


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="CAC_JAX_MALLOC='jemalloc': the only value is 'system'"):
        host_malloc._apply({host_malloc.ENV: "jemalloc"})


# After cac_jax.runtime.configure(), the Python thread allocates, touches and frees a 96 MB block three times,
# then runs a small JAX computation; the page faults of the last round tell whether the block came back from the
# heap or from a new mmap, and JAX's config whether CPU computations run on the calling thread.
_PROBE = """
import ctypes, resource, cac_jax.runtime
cac_jax.runtime.configure(compilation_cache=False)
import jax
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(96 << 20)
    ctypes.memset(block, 1, 96 << 20)
    libc.free(block)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
assert float(jax.numpy.ones(3).sum()) == 3.0
print(cac_jax.runtime.runtime_info()["malloc"]); print(faults); print(jax.config.values["jax_cpu_enable_async_dispatch"])
"""


def _probe(**env):
    env = {**{k: v for k, v in os.environ.items() if k not in (host_malloc.ENV, "JAX_PLATFORMS")},
           "JAX_PLATFORMS": "cpu", **env}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    setting, faults, asynchronous = out.stdout.split("\n")[:3]
    return setting, int(faults), asynchronous == "True"


@needs_glibc
def test_configure_keeps_large_blocks_in_the_heap_and_runs_cpu_computations_inline():
    setting, faults, asynchronous = _probe()
    assert setting == "heap: M_MMAP_MAX=0 M_TRIM_THRESHOLD=2147483647 jax_cpu_enable_async_dispatch=False"
    assert faults < 1000 and not asynchronous  # 96 MB of fresh pages would be ~23,000 faults
    setting, faults, asynchronous = _probe(CAC_JAX_MALLOC="system")
    assert setting == "system: CAC_JAX_MALLOC=system"
    assert faults > 20_000 and asynchronous  # glibc's default: mmap and munmap every time


def test_configure_after_jax_started_claims_nothing_and_says_so():
    code = ("import warnings, jax; jax.numpy.zeros(1).block_until_ready(); import cac_jax.runtime\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always'); cac_jax.runtime.configure(compilation_cache=False)\n"
            "from cac_jax.runtime import host_malloc; print(host_malloc.in_effect()); print(*[w.message for w in caught], sep='|')")
    env = {**{k: v for k, v in os.environ.items() if k not in (host_malloc.ENV, "JAX_PLATFORMS")}, "JAX_PLATFORMS": "cpu"}
    setting, warned = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout.splitlines()[:2]
    assert setting == "system: JAX's backends started before cac_jax.runtime.configure()"
    if host_malloc._glibc() is not None:
        assert "glibc's malloc and JAX's CPU dispatch are left as they are" in warned
